"""Every typed control message, in one place: msgspec structs encoded as msgpack.

* coordinator -> parties: :class:`Batch` of :class:`Command`;
* coordinator -> provider: :class:`Requests` of :class:`DealerRequest`;
* party -> coordinator: :class:`Reply` (a barrier reached, or a refused reveal);
* endpoint -> peers: :class:`Heartbeat` (liveness, metered apart);
* TLS records (:mod:`actors.tls`): :class:`Session`, :class:`Ready`, :class:`Failure`,
  :class:`MeterReport`.

(Parties also exchange :class:`actors.policy.RevealPolicy` at start.) Structs are arrays on
the wire where the field order is fixed (commands: ``[kind, op, ins, outs, params,
target]``, the target a tagged :class:`Recipient`, :class:`FromParty` or :class:`Folder`);
a decoding error names the field that is wrong (``Expected `int`, got `str` - at
`$[1][0][1]```). Nothing is pickled.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, TypeVar

import msgspec

from protocols.errors import ProtocolError
from protocols.params import Params

from .phase import Phase
from .stats import ActorStats


class Recipient(msgspec.Struct, frozen=True, array_like=True, tag=1):
    """reveal: who receives the shares (the coordinator or a party)."""

    name: str


class FromParty(msgspec.Struct, frozen=True, array_like=True, tag=2):
    """input: the party that shares its own local tensor ``tensor``."""

    owner: str
    tensor: str


class Folder(msgspec.Struct, frozen=True, array_like=True, tag=3):
    """save / load: the checkpoint folder (inside each party's checkpoint root)."""

    path: str


Target = Recipient | FromParty | Folder


class Command(msgspec.Struct, frozen=True, array_like=True):
    """One operation for a party: run ``kind`` on tensors ``ins``, store ``outs``. What a
    command is aimed at is one typed field, ``target`` (a reveal's recipient, an input's
    owner and tensor, a checkpoint's folder), so no field means two things and a command
    costs one byte for it when it has none (msgspec 0.23 writes every field of an array
    struct, defaults included)."""

    kind: str
    op: int
    ins: tuple[int, ...] = ()
    outs: tuple[int, ...] = ()
    params: Params | None = None
    target: Target | None = None

    @property
    def to(self) -> str | None:
        """reveal: the recipient."""
        return self.target.name if isinstance(self.target, Recipient) else None

    @property
    def owner(self) -> str | None:
        """input from a party: the party (None: the coordinator sends the shares)."""
        return self.target.owner if isinstance(self.target, FromParty) else None

    @property
    def tensor(self) -> str | None:
        """input from :attr:`owner`: the name of the owner's local tensor."""
        return self.target.tensor if isinstance(self.target, FromParty) else None

    @property
    def directory(self) -> str | None:
        """save / load: the checkpoint folder."""
        return self.target.path if isinstance(self.target, Folder) else None


class Batch(msgspec.Struct, frozen=True, array_like=True):
    """Commands sent together, with the depth floor they start from (see the meter)."""

    floor: int
    ops: list[Command]


class DealerRequest(msgspec.Struct, frozen=True, array_like=True):
    """What the dealer learns of an op: its id, kind, operand and result shapes, and the
    public parameters its material depends on (never a public operand)."""

    op: int
    kind: str
    shapes: list[tuple[int, ...]]
    out: tuple[int, ...]
    d: int = 1
    """The truncation divisor (:attr:`protocols.params.Params.d`)."""
    keep: int = 0
    """dropout: the keep units (:attr:`protocols.params.Params.keep`); 0 otherwise."""

    def params(self) -> Params:
        """The op's public parameters as far as the dealer knows them."""
        return Params(d=self.d, keep=self.keep)


class Requests(msgspec.Struct, frozen=True, array_like=True):
    items: list[DealerRequest]


class Reply(msgspec.Struct, frozen=True, array_like=True):
    """A party's control answer: a barrier reached (with the largest depth it has seen),
    or a refused reveal."""

    depth: int = 0
    denied: str | None = None
    malformed: bool = False
    """The refusal is of a malformed command (e.g. a wrong shape), not of the policy."""


_ENC = msgspec.msgpack.Encoder()
T = TypeVar("T")
_DECODERS: dict[type, msgspec.msgpack.Decoder[Any]] = {}


def encode_control(obj: msgspec.Struct) -> bytes:
    return _ENC.encode(obj)


def decode_control(body: bytes, kind: type[T], what: str) -> T:
    """Decode and validate; ProtocolError naming the field that is wrong."""
    dec = _DECODERS.get(kind)
    if dec is None:
        dec = _DECODERS[kind] = msgspec.msgpack.Decoder(kind)
    try:
        return dec.decode(body)  # type: ignore[no-any-return]
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"{what}: malformed {kind.__name__}: {exc}") from None


# -- liveness ------------------------------------------------------------------------------


class Heartbeat(msgspec.Struct, frozen=True, array_like=True):
    """What an endpoint tells its peers about its actor, a few times per timeout."""

    busy: int
    """Operations the actor is running (0: idle)."""
    waiting: list[str]
    """Actors it is blocked on right now (bounded waits only)."""
    stray: list[str]
    """Senders of messages that arrived and were not asked for (yet)."""
    waited: list[float]
    """For each of ``waiting``: seconds its oldest current wait has lasted (a cycle of
    waits is a deadlock only once its waits are old: in a multi-round exchange any snapshot
    shows the parties waiting on each other)."""


# -- TLS sessions ----------------------------------------------------------------------------


class Session(msgspec.Struct, frozen=True):
    """What the coordinator tells every node when it opens a session. Nothing in it
    grants access: reveal rules are each node's own, and a seed is for the provider only
    (a party gets ``seed=None`` and ``seeded=True``) and refused unless the node allows it.
    Unknown fields are ignored."""

    id: str
    protocols: str
    seed: int | None
    timeout: float
    chaos_seed: int = 0
    chaos_crash: tuple[str, int] | None = None
    chaos_delay: float = 0.0
    seeded: bool = False


class Ready(msgspec.Struct, frozen=True):
    """A node's answer to the session: the shapes of the named tensors it holds, or why it
    refuses the session."""

    session: str
    catalog: dict[str, list[int]]
    refused: str | None = None


class Failure(msgspec.Struct, frozen=True):
    actor: str
    kind: str
    message: str


class MeterReport(msgspec.Struct, frozen=True, array_like=True):
    sent: dict[int, int]
    received: dict[int, int]
    messages_sent: int
    messages_received: int
    online_depth: int
    header_bytes: int
    heartbeat_bytes: int
    online_messages: int
    ops: dict[int, list[int]]

    def stats(self) -> ActorStats:
        return ActorStats(
            MappingProxyType({Phase(k): v for k, v in self.sent.items()}),
            MappingProxyType({Phase(k): v for k, v in self.received.items()}),
            self.messages_sent,
            self.messages_received,
            self.online_depth,
            self.header_bytes,
            self.heartbeat_bytes,
            self.online_messages,
        )
