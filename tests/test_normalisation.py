"""The range-normalised functions (log, reciprocal, sqrt, rsqrt, division by a shared
tensor) keep every local truncation at or below 2**33 raw at base 2 / 16 bits over their
documented domains, edges included (failure probability <= 2**-31 per element: README,
"Truncation failure"), instrumented with :class:`tests.test_edges_at_scale.TruncationTap`
(both parties' shares of every truncated value, paired by op)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from test_edges_at_scale import LOG_LO, TOP, TruncationTap, U, enc

from protocols import kinds
from training.testing import reveal, start_cluster


def _inputs(lo: float, hi: float, points: list[float], n: int = 6_000) -> torch.Tensor:
    """Log-spaced magnitudes over [lo, hi] plus the edge points, encoded at 2/16."""
    g = torch.Generator().manual_seed(11)
    grid = torch.logspace(math.log10(lo), math.log10(hi), n, dtype=torch.float64)
    jitter = 1 + (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 1e-3
    x = torch.cat([torch.tensor(points, dtype=torch.float64), (grid * jitter).clamp(lo, hi)])
    return enc(x).float()


def _numerators(n: int) -> torch.Tensor:
    """x / y's numerators: [-2, 2] (its documented range), the ends first."""
    return torch.cat([torch.tensor([2.0, -2.0]), torch.linspace(-2, 2, n - 2)])


POS = [0.0, -1.0, -TOP, U, 2 * U, LOG_LO, LOG_LO - U, 1.0, 2.0, 4.0, 2.0**14, TOP]
CASES: list[tuple[str, Any, Any]] = [
    ("log", lambda c, s: s.log(), _inputs(LOG_LO, TOP, POS)),
    ("reciprocal", lambda c, s: s.reciprocal(), torch.cat([x := _inputs(LOG_LO, TOP, POS), -x])),
    ("sqrt", lambda c, s: s.sqrt(), _inputs(U, TOP, POS)),
    ("rsqrt", lambda c, s: s.rsqrt(), _inputs(LOG_LO, TOP, POS)),
    (
        "div",
        lambda c, s: c.share(_numerators(s.shape[0]), precision=16, base=2) / s,
        torch.cat([x := _inputs(LOG_LO, TOP, POS), -x]),
    ),
]


@pytest.mark.parametrize(("name", "fn", "x"), CASES, ids=[c[0] for c in CASES])
async def test_every_truncation_at_most_2_33(
    name: str, fn: Any, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    tap = TruncationTap()
    monkeypatch.setattr(kinds, "truncate_local", tap)
    async with start_cluster(2, seed=5) as c:
        await reveal(fn(c, c.share(x, precision=16, base=2)))
    assert tap.unpaired == 0 and not tap.pending, (tap.unpaired, list(tap.pending))
    worst = max(tap.raw.values())
    print(name, sorted(((math.log2(v + 1), k) for k, v in tap.raw.items()), reverse=True)[:6])
    assert worst <= 2**33, f"{name}: a truncation of 2**{math.log2(worst):.6f} raw"
