"""The :class:`protocols.PartyContext` a party gives one protocol run: sends and receives
tagged by op id, checked against what the protocol expects, and dealer material (PRG-derived
shares, one correction from the provider)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from protocols import party_material
from protocols.context import Expect, Received
from protocols.errors import ProtocolError
from protocols.material import MaterialSpec

from .envelope import Phase

if TYPE_CHECKING:
    from .party import Party


def check_expect(tensors: Sequence[torch.Tensor], expect: Expect, what: str) -> None:
    if len(tensors) != len(expect):
        raise ProtocolError(f"{what}: expected {len(expect)} tensors, got {len(tensors)}")
    for t, (shape, dtype) in zip(tensors, expect, strict=True):
        if t.dtype != dtype or t.shape != tuple(shape):  # torch.Size equals its tuple
            raise ProtocolError(
                f"{what}: expected {dtype} {tuple(shape)}, got {t.dtype} {tuple(t.shape)}"
            )


class OpContext:
    """The :class:`protocols.PartyContext` of one party for one op."""

    __slots__ = ("_party", "bytes_sent", "dealer_bytes", "op_id")

    def __init__(self, party: Party, op_id: int) -> None:
        self._party = party
        self.op_id = op_id
        self.bytes_sent = 0
        self.dealer_bytes = 0

    @property
    def rank(self) -> int:
        return self._party.rank

    @property
    def n_parties(self) -> int:
        return len(self._party.parties)

    async def send(self, peer: int, step: str, tensors: Sequence[torch.Tensor], depth: int) -> None:
        p = self._party
        self.bytes_sent += await p.endpoint.send(
            p.parties[peer], f"{self.op_id}/{step}", Phase.ONLINE, depth, tensors=tensors
        )

    async def recv(self, peer: int, step: str, expect: Expect) -> Received:
        p = self._party
        env = await p.mailbox.recv(p.parties[peer], f"{self.op_id}/{step}")
        if env.phase != Phase.ONLINE:
            raise ProtocolError(f"{p.name}: {env.tag!r} from {env.sender} is not an online message")
        tensors = env.tensors()
        check_expect(tensors, expect, f"{p.name}: {env.tag!r} from {env.sender}")
        return Received(tensors, env.depth)

    async def material(self, spec: MaterialSpec) -> dict[str, torch.Tensor]:
        p = self._party
        fixes: tuple[torch.Tensor, ...] = ()
        expected = spec.received(self.rank, self.n_parties)
        if expected:
            env = await p.mailbox.recv(p.provider, f"{self.op_id}/{spec.step()}")
            if env.phase != Phase.OFFLINE:
                raise ProtocolError(f"{p.name}: dealer message {env.tag!r} in wrong phase")
            fixes = env.tensors()
            self.dealer_bytes += env.payload_bytes
            expect = [(i.shape, i.dtype) for i in expected]
            check_expect(fixes, expect, f"{p.name}: dealer material {env.tag!r}")
        assert p.prg is not None
        return party_material(spec, self.rank, self.n_parties, p.prg, self.op_id, fixes)
