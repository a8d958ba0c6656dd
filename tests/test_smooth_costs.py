"""Dealer bytes and rounds of the range-normalised functions (reciprocal, x / y, sqrt,
rsqrt) at a size where every comparison takes the carry tree (the in-process default
above 205 elements), asserted equal to their closed forms, and their results against
float64 torch within docs/ops.md's tolerances.

Closed forms per element (2 parties, N a multiple of 64; ``protocols/compare.py``):
DReLU 27.5 dealer bytes, ReLU 35.5, a product 8. The exponent search in steps of 2
(:class:`training.normalisation.Norm`, ``step=2``) takes 4 comparisons in 3 levels plus
the clamp bit on the default domain (sqrt's wider one: 5 plus the clamp)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from training.testing import cost, reveal, start_cluster

N = 1024
U = 2.0**-16
DRELU, RELU, MUL = 27.5, 35.5, 8.0


def _enc(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x * 2**16) / 2**16


def _logspace(lo: float, hi: float, n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    return _enc(torch.exp(t * (math.log(hi) - math.log(lo)) + math.log(lo))).clamp(lo, hi)


def _numerators(n: int = N) -> torch.Tensor:
    g = torch.Generator().manual_seed(8)
    return _enc(torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2)


TOP = 32767.0
CASES: list[tuple[str, Any, Any, Any, float, int, Any]] = [
    # name, input, op on shares, torch, dealer bytes per element, rounds, tolerance
    (
        "reciprocal",
        torch.cat([_logspace(2.0**-8, TOP)[: N // 2], -_logspace(2.0**-8, TOP)[: N // 2]]),
        lambda c, s: s.reciprocal(),
        lambda x: 1 / x,
        RELU + 5 * DRELU + 16 * MUL,  # |x|, 4 + 1 comparisons, 16 products
        38,
        lambda ref: 7e-5 * ref.abs() + 2 * U,  # docs: relative 7e-5
    ),
    (
        "div",
        _logspace(0.05, TOP),
        lambda c, s: c.share(_numerators().float(), precision=16, base=2) / s,
        lambda x: _numerators() / x,
        RELU + 5 * DRELU + 17 * MUL,  # the numerator's sign and product: 1 more
        39,
        lambda ref: 1.4e-3 * ref.abs() + 2 * U,  # docs: relative 1.4e-3 (y >= 0.05)
    ),
    (
        "sqrt",
        _logspace(U, TOP),
        lambda c, s: s.sqrt(),
        torch.sqrt,
        6 * DRELU + 15 * MUL,  # 5 + 1 comparisons; search 6, degree 7: 6, 2**(k/2): 3
        29,
        lambda ref: 1.3e-4 + 1e-4 * ref,  # docs: 1.3e-4 absolute on [0, 10]
    ),
    (
        "rsqrt",
        _logspace(2.0**-8, TOP),
        lambda c, s: s.rsqrt(),
        torch.rsqrt,
        5 * DRELU + 15 * MUL,  # search 5, degree 8: 7, 2**(-k/2): 3
        29,
        lambda ref: 1.5e-4 * ref + 2 * U,  # docs: relative 1.5e-4, 2 u above 2^14
    ),
]


@pytest.mark.parametrize(
    ("name", "x", "fn", "ref", "dealer", "rounds", "tol"), CASES, ids=[c[0] for c in CASES]
)
async def test_dealer_bytes_rounds_and_accuracy(
    name: str, x: torch.Tensor, fn: Any, ref: Any, dealer: float, rounds: int, tol: Any
) -> None:
    async with start_cluster(2, seed=4) as c:
        s = c.share(x.float(), precision=16, base=2)
        await c.flush()
        y, stats = await cost(c, lambda: fn(c, s))
        got = await reveal(y)
    want = ref(x)
    assert stats.offline_bytes == dealer * N, (name, stats.offline_bytes / N)
    assert stats.online_rounds == rounds, (name, stats.online_rounds)
    worst = float(((got - want).abs() / tol(want)).max())
    assert worst <= 1.0, (name, worst)
