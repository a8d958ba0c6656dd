"""Correlated randomness from the crypto provider (the dealer), described declaratively.

A :class:`MaterialSpec` lists *items*: uniformly random values (arithmetic ring elements or
XOR-shared bits) and *derived* values the dealer computes from them (a Beaver product, the
bits of a mask, ...). Every party shares a ChaCha20 key with the dealer, set up once when
the cluster starts. For each item, parties ``0 .. n-2`` draw their share from that key
(one keystream per spec, labelled ``(op_id, sub)``); the last party does the same for random items, and for
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
from functools import lru_cache, reduce
from math import prod
from operator import add, xor

import numpy as np
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


@lru_cache(maxsize=1024)
def _layout(spec: MaterialSpec) -> tuple[int, int, list[int], list[int]]:
    """Element counts of the ring items and of the bit items, in item order."""
    ring = [prod(i.shape) for i in spec.items if not i.bits]
    bits = [prod(i.shape) for i in spec.items if i.bits]
    return sum(ring), sum(bits), ring, bits


def draw_all(prg: Prg, spec: MaterialSpec, op_id: int) -> list[torch.Tensor]:
    """Every item of ``spec`` drawn from one ChaCha20 stream labelled ``(op_id, sub)``.

    One keystream per spec (not per item) keeps the cost of a draw at one cipher setup:
    first all ring items (8 bytes per element), then all bit items packed together. The
    layout is the same for every holder of the key, so the dealer and the party agree.
    """
    n_ring, n_bits, ring, bits = _layout(spec)
    raw = prg.random_bytes(8 * n_ring + (n_bits + 7) // 8, (op_id, spec.sub))
    rings = iter(
        torch.frombuffer(bytearray(raw[: 8 * n_ring]), dtype=DTYPE).split(ring) if n_ring else ()
    )
    packed = np.frombuffer(raw, np.uint8, offset=8 * n_ring)
    bools = iter(
        torch.from_numpy(np.unpackbits(packed)[:n_bits].view(np.bool_)).split(bits)
        if n_bits
        else ()
    )
    return [next(bools if i.bits else rings).view(i.shape) for i in spec.items]


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
    for item, drawn in zip(spec.items, draw_all(prg, spec, op_id), strict=True):
        if item.derived and rank == n_parties - 1:
            out[item.name] = next(fixes)
        else:
            out[item.name] = drawn
    return out


def dealer_corrections(spec: MaterialSpec, prgs: Sequence[Prg], op_id: int) -> list[torch.Tensor]:
    """What the dealer sends the last party: for each derived item, the derived secret minus
    (or XOR) the other parties' PRG shares."""
    draws = [draw_all(p, spec, op_id) for p in prgs]
    secrets: dict[str, torch.Tensor] = {}
    for index, item in enumerate(spec.items):
        if not item.derived:
            combine = xor if item.bits else add
            secrets[item.name] = reduce(combine, [d[index] for d in draws])
    derived = spec.derive(secrets)
    fixes = []
    for index, item in enumerate(spec.items):
        if item.derived:
            value = derived[item.name].to(item.dtype)
            for d in draws[:-1]:
                value = value ^ d[index] if item.bits else value - d[index]
            fixes.append(value.contiguous())
    return fixes
