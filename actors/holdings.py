"""What a party holds: values with their owners (:class:`Slot`), its own plaintext inputs
encoded, its private checkpoint files, and the errors a party raises about them."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import trio

from protocols import Share
from protocols.errors import ProtocolError

from .messages import Command

NOBODY: frozenset[str] = frozenset()


def shares_file(directory: str | Path, party: str) -> Path:
    """Where ``party`` keeps its own shares of a checkpoint in ``directory``."""
    return Path(directory) / f"{party}.shares.pt"


class CheckpointRefused(ProtocolError):
    """A save or load names a folder outside the party's checkpoint root (a node's
    ``checkpoints`` setting), or the party has no root at all."""


class OwnInputError(ProtocolError):
    """A party's own tensor cannot be shared (not finite, too large). The party's peers and
    the coordinator get only :attr:`public`, which says nothing about the values."""

    def __init__(self, party: str, detail: str) -> None:
        super().__init__(f"{party}: {detail}")
        self.party = party

    @property
    def public(self) -> str:
        return f"{self.party}: its own input could not be encoded"


class OpReused(ProtocolError):
    """A command or dealer request names an op id this actor has already seen in this
    session: refused before anything is computed or sent (op ids key the dealer material
    and the PRG streams, so a reused id would reuse masks)."""


def encode_local(values: torch.Tensor, scale: int, party: str, name: str) -> torch.Tensor:
    """``party``'s own plaintext tensor ``name`` in fixed point (``round(v * scale)``)."""
    t = values.to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise OwnInputError(party, f"{name!r}: not finite")
    e = torch.round(t * scale)
    if bool((e.abs() >= 2**62).any()):
        raise OwnInputError(party, f"{name!r}: too large for the ring at scale {scale}")
    return e.to(torch.int64)


def checkpoint_dir(party: str, root: Path | None, op: int, cmd: Command) -> Path:
    """The folder a save/load command names, inside ``party``'s checkpoint ``root`` (None:
    any path, for one trusted process); CheckpointRefused outside it."""
    if cmd.directory is None:
        raise ProtocolError(f"{party}: {cmd.kind} {op} names no directory")
    if root is None:
        return Path(cmd.directory)
    root = root.resolve()
    path = (root / cmd.directory).resolve()
    if not path.is_relative_to(root):
        raise CheckpointRefused(
            f"{party}: {cmd.kind} {op} names {cmd.directory!r}, outside its checkpoint root "
            f"{root} (a node's 'checkpoints' setting)"
        )
    return path


def write_private(path: Path, obj: object) -> None:
    """``torch.save`` to a file only this user can read (0600, also if it existed), in a
    folder created 0700."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "wb") as f:
        torch.save(obj, f)


class Slot:
    """A value a party holds or will hold, with the parties whose inputs it derives from."""

    __slots__ = ("_event", "callbacks", "owners", "share")

    def __init__(self, owners: frozenset[str]) -> None:
        self.share: Share | None = None
        self.owners = owners
        self.callbacks: list[Callable[[], None]] = []
        self._event: trio.Event | None = None  # made only if a task has to wait

    @property
    def ready(self) -> bool:
        return self.share is not None

    def set(self, share: Share) -> None:
        self.share = share
        if self._event is not None:
            self._event.set()
        callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            cb()

    async def get(self) -> Share:
        if self.share is None:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        assert self.share is not None
        return self.share


def save_own(path: Path, party: str, values: list[torch.Tensor], slots: Sequence[Slot]) -> None:
    """A party's own shares ``values`` of ``slots`` and their owners, to its private file."""
    owners = [sorted(s.owners) for s in slots]
    write_private(path, {"party": party, "shares": values, "owners": owners})


def load_own(path: Path, party: str, parties: Sequence[str], outs: Sequence[Slot], op: int) -> None:
    """Set ``outs`` (depth 0) and their owners from ``party``'s file written by
    :func:`save_own`, refusing a file that is not that party's or records no owners."""
    try:
        saved = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise ProtocolError(f"{party}: no checkpoint shares at {path}") from None
    values = saved.get("shares") if isinstance(saved, dict) else None
    owners = saved.get("owners") if isinstance(saved, dict) else None
    if saved.get("party") != party or not isinstance(values, list):
        raise ProtocolError(f"{party}: {path} does not hold this party's shares")
    if not isinstance(owners, list) or len(owners) != len(values):
        raise ProtocolError(f"{party}: {path} does not record the shares' owners")
    if len(values) != len(outs):
        raise ProtocolError(
            f"{party}: {path} holds {len(values)} shares, load {op} expects {len(outs)}"
        )
    for slot, value, owned in zip(outs, values, owners, strict=True):
        if not isinstance(value, torch.Tensor) or value.dtype != torch.int64:
            raise ProtocolError(f"{party}: {path} holds a non-share")
        if not isinstance(owned, list) or not set(owned) <= set(parties):
            raise ProtocolError(f"{party}: {path} records owners that are not parties")
        slot.owners = frozenset(owned)
        slot.set(Share(value, 0))
