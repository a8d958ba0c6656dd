"""Additive n-out-of-n secret sharing over Z_2^64 and the opening of masked values.

``share`` splits a secret into ``n`` shares: ``n-1`` uniform draws from a cryptographic PRG
and a last share that makes the sum come out. Any ``n-1`` shares are jointly uniform and
independent of the secret. ``open_ring`` / ``open_bits`` are the one interactive primitive
every protocol here uses: each party sends its share of a *masked* value to every other
party in one round.

Cost of ``open_ring`` on N ring elements: 1 online round, ``8 * N * (n-1)`` bytes sent by
each party. ``open_bits`` on N bits: 1 round, ``ceil(N/8) * (n-1)`` bytes per party per
tensor (bits travel packed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .context import PartyContext
from .prg import Prg


def share(secret: torch.Tensor, n_parties: int, prg: Prg) -> list[torch.Tensor]:
    """Split an int64 tensor into ``n_parties`` additive shares."""
    if n_parties < 2:
        raise ValueError(f"sharing needs at least 2 parties, got {n_parties}")
    shape = tuple(secret.shape)
    shares = [prg.ring(shape) for _ in range(n_parties - 1)]
    last = secret.to(torch.int64).clone()
    for s in shares:
        last -= s
    return [*shares, last]


def reconstruct(shares: Sequence[torch.Tensor]) -> torch.Tensor:
    total = shares[0].clone()
    for s in shares[1:]:
        total += s
    return total


async def _open(
    ctx: PartyContext,
    step: str,
    values: Sequence[torch.Tensor],
    depth: int,
    combine: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> tuple[list[torch.Tensor], int]:
    sent_depth = depth + 1
    values = [v.contiguous() for v in values]
    peers = [p for p in range(ctx.n_parties) if p != ctx.rank]
    for p in peers:
        await ctx.send(p, step, values, sent_depth)
    totals = list(values)
    out_depth = sent_depth
    expect = [(tuple(v.shape), v.dtype) for v in values]
    for p in peers:
        msg = await ctx.recv(p, step, expect)
        totals = [combine(t, m) for t, m in zip(totals, msg.tensors, strict=True)]
        out_depth = max(out_depth, msg.depth)
    return totals, out_depth


async def open_ring(
    ctx: PartyContext, step: str, values: Sequence[torch.Tensor], depth: int
) -> tuple[list[torch.Tensor], int]:
    """Open additively shared ring tensors (already masked!) in one round."""
    return await _open(ctx, step, values, depth, torch.add)


async def open_bits(
    ctx: PartyContext, step: str, values: Sequence[torch.Tensor], depth: int
) -> tuple[list[torch.Tensor], int]:
    """Open XOR-shared bool tensors (already masked!) in one round."""
    return await _open(ctx, step, values, depth, torch.bitwise_xor)
