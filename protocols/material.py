"""Correlated randomness from the crypto provider (the dealer), described declaratively.

A :class:`MaterialSpec` lists *items*: uniformly random values (arithmetic ring elements or
XOR-shared bits) and *derived* values the dealer computes from them (a Beaver product, the
bits of a mask, ...). Every party shares a ChaCha20 key with the dealer, set up once when
the cluster starts. For each item, parties ``0 .. n-2`` draw their share from that key
under the label ``(op_id, stream)``; the last party does the same for random items, and for
derived items receives a *correction* from the dealer, the only material sent per op. This
is CrypTen's trusted-third-party trick generalised to n parties: with 2 parties a Beaver
triple costs 8 bytes per element of the product, sent to one party.

Kinds are open-ended: a protocol builds its spec from shapes alone, and the dealer calls
the same builder (through :mod:`protocols.registry`) from the op kind and shapes, which
are all it ever receives.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import reduce
from operator import add, xor

import torch

from .prg import Prg
from .ring import DTYPE


@dataclass(frozen=True, slots=True)
class Item:
    """One tensor of dealer material."""

    name: str
    shape: tuple[int, ...]
    bits: bool = False
    """XOR-shared bools instead of additively shared ring elements."""
    derived: bool = False
    """Computed by the dealer from earlier items; its last share is a correction message."""

    @property
    def dtype(self) -> torch.dtype:
        return torch.bool if self.bits else DTYPE


Derive = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True, slots=True)
class MaterialSpec:
    """The material one protocol step needs. ``sub`` separates several specs in one op."""

    kind: str
    sub: int
    items: tuple[Item, ...]
    derive: Derive = field(compare=False, repr=False)

    @property
    def corrections(self) -> tuple[Item, ...]:
        return tuple(i for i in self.items if i.derived)

    def step(self) -> str:
        return f"dealer{self.sub}"

    def label(self, op_id: int, index: int) -> tuple[int, int]:
        return (op_id, (self.sub << 16) | index)


def _draw(prg: Prg, item: Item, label: tuple[int, int]) -> torch.Tensor:
    return prg.bits(item.shape, label) if item.bits else prg.ring(item.shape, label)


def party_material(
    spec: MaterialSpec,
    rank: int,
    n_parties: int,
    prg: Prg,
    op_id: int,
    corrections: Sequence[torch.Tensor] = (),
) -> dict[str, torch.Tensor]:
    """A party's share of ``spec``; the last party passes the dealer's corrections."""
    out: dict[str, torch.Tensor] = {}
    fixes = iter(corrections)
    for index, item in enumerate(spec.items):
        if item.derived and rank == n_parties - 1:
            out[item.name] = next(fixes)
        else:
            out[item.name] = _draw(prg, item, spec.label(op_id, index))
    return out


def dealer_corrections(spec: MaterialSpec, prgs: Sequence[Prg], op_id: int) -> list[torch.Tensor]:
    """What the dealer sends the last party: for each derived item, the derived secret minus
    (or XOR) the other parties' PRG shares."""
    secrets: dict[str, torch.Tensor] = {}
    for index, item in enumerate(spec.items):
        if not item.derived:
            combine = xor if item.bits else add
            shares = [_draw(p, item, spec.label(op_id, index)) for p in prgs]
            secrets[item.name] = reduce(combine, shares)
    derived = spec.derive(secrets)
    fixes = []
    for index, item in enumerate(spec.items):
        if item.derived:
            combine = xor if item.bits else add
            others = [_draw(p, item, spec.label(op_id, index)) for p in prgs[:-1]]
            value = derived[item.name]
            if others:
                if item.bits:
                    value = value ^ reduce(combine, others)
                else:
                    value = value - reduce(combine, others)
            fixes.append(value.to(item.dtype).contiguous())
    return fixes
