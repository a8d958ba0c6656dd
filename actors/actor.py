"""What every actor shares: numbered control batches and named failures."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import trio

from protocols.errors import ActorTimeout, PartyFailure, ProtocolError, SmpcError

from .envelope import Phase
from .mailbox import Mailbox
from .messages import Batch, Requests

B = TypeVar("B")


def first_error(exc: BaseException) -> BaseException:
    """The most informative leaf of a (possibly nested) exception group."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = [first_error(e) for e in exc.exceptions]
        for leaf in leaves:
            if isinstance(leaf, PartyFailure):
                return leaf
        timeouts = [leaf for leaf in leaves if isinstance(leaf, ActorTimeout)]
        if timeouts:
            # Several actors may time out in the same instant along one wait chain; the
            # root cause is the timeout whose silent actor did not itself time out.
            noticed = {t.noticed_by for t in timeouts}
            roots = [t for t in timeouts if t.awaited not in noticed]
            return max(roots or timeouts, key=lambda t: len(t.chain))
        for leaf in leaves:
            if not isinstance(leaf, trio.Cancelled):
                return leaf
        return leaves[0]
    return exc


@contextmanager
def failures_named(actor: str) -> Iterator[None]:
    """Re-raise any failure inside as PartyFailure naming ``actor`` (timeouts and failures
    of other actors pass through: they already name the one to blame)."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every failure is reported, named
        err = first_error(exc)
        if isinstance(err, ActorTimeout | PartyFailure):
            raise err from None
        raise PartyFailure(actor, err) from err


async def _batches(
    mailbox: Mailbox, sender: str, prefix: str, kind: type[B]
) -> AsyncGenerator[B, None]:
    """The control batches ``<prefix>/0``, ``<prefix>/1``, ... from ``sender``, in order,
    forever, each decoded as ``kind``."""
    seq = 0
    while True:
        env = await mailbox.recv(sender, f"{prefix}/{seq}", timeout=None)
        seq += 1
        if env.phase != Phase.CONTROL:
            raise ProtocolError(f"{mailbox.owner}: {prefix} batch in phase {env.phase.name}")
        yield env.control(kind)


def control_batches(mailbox: Mailbox, sender: str) -> AsyncGenerator[Batch, None]:
    """The command batches ``cmd/0``, ``cmd/1``, ... from ``sender``."""
    return _batches(mailbox, sender, "cmd", Batch)


def request_batches(mailbox: Mailbox, sender: str) -> AsyncGenerator[Requests, None]:
    """The dealer request batches ``req/0``, ``req/1``, ... from ``sender``."""
    return _batches(mailbox, sender, "req", Requests)


_MALFORMED = (KeyError, TypeError, ValueError, IndexError, AttributeError)


class malformed:  # noqa: N801 - used as a function: ``with malformed(...)``
    """Turn the lookup and type errors of a malformed command into a ProtocolError.

    A class, not a ``@contextmanager``: it wraps every command a party runs, and a
    generator-based manager costs several Python calls per use."""

    __slots__ = ("actor", "item", "what")

    def __init__(self, actor: str, what: str, item: Any) -> None:
        self.actor, self.what, self.item = actor, what, item

    def __enter__(self) -> None:
        return None

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc is None or not isinstance(exc, _MALFORMED) or isinstance(exc, SmpcError):
            return
        raise ProtocolError(
            f"{self.actor}: malformed {self.what} {str(self.item)[:120]}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
