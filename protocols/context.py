"""What a protocol sees of the party running it.

Protocols are coroutines over a :class:`PartyContext`; they import nothing from
``actors``. The actor layer implements this interface on top of its mailbox and network,
and a test can implement it with anything else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec
import torch

from .material import MaterialSpec


class Share(msgspec.Struct, frozen=True):
    """One party's additive share of a secret ring tensor (a frozen msgspec struct: every op
    makes several, at a fifth of a frozen dataclass's cost)."""

    value: torch.Tensor
    """int64 share; the secret is the sum over all parties modulo 2**64."""
    depth: int = 0
    """Online rounds of communication the value depends on (see DESIGN: metering)."""


class Received(msgspec.Struct, frozen=True):
    """A message a protocol received from a peer."""

    tensors: tuple[torch.Tensor, ...]
    depth: int
    """Dependency depth the sender stamped on the message."""


Expect = Sequence[tuple[tuple[int, ...], torch.dtype]]


class PartyContext(Protocol):
    """One party's view of one operation (one op id)."""

    @property
    def rank(self) -> int:
        """This party's index, 0 .. n_parties-1."""
        ...

    @property
    def n_parties(self) -> int: ...

    @property
    def op_id(self) -> int: ...

    async def send(self, peer: int, step: str, tensors: Sequence[torch.Tensor], depth: int) -> None:
        """Send tensors to party ``peer``, tagged ``(op_id, step)``, stamped with ``depth``."""
        ...

    async def recv(self, peer: int, step: str, expect: Expect) -> Received:
        """Receive the message tagged ``(op_id, step)`` from ``peer``; its tensors must match
        ``expect`` (shapes and dtypes) or a ProtocolError is raised."""
        ...

    async def material(self, spec: MaterialSpec) -> dict[str, torch.Tensor]:
        """This party's share of the dealer material ``spec`` for this op."""
        ...
