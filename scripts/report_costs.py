"""Closed forms, literature anchors, network projections and growth fits for the report.

Nothing here measures: this module holds the *documented* costs (the docstrings of
protocols/beaver.py, protocols/truncate.py and the closed-form functions of
protocols/compare.py), the anchor figures quoted from DESIGN.md, and the arithmetic the
report applies to measured numbers (projections, least-squares fits). The measured
figures come from :mod:`report_measure`; the report always prints both side by side.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

from protocols import drelu_offline_bytes, drelu_online_bytes
from protocols.compare import DRELU_ROUNDS

Shape = tuple[int, ...]


# -- closed forms ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class OpCost:
    """Cost of one interactive op: rounds, online bytes *each* party sends, dealer bytes."""

    rounds: int
    online_per_party: int
    offline: int

    def __add__(self, other: OpCost) -> OpCost:
        """Sequential composition (the truncation runs after the product)."""
        return OpCost(
            self.rounds + other.rounds,
            self.online_per_party + other.online_per_party,
            self.offline + other.offline,
        )


ZERO = OpCost(0, 0, 0)


def truncation_cost(n_out: int, n_parties: int, divisor: int) -> OpCost:
    """protocols/truncate.py: local (free) with 2 parties, 1 round + 8 N (n-1) with n >= 3."""
    if divisor == 1 or n_parties == 2:
        return ZERO
    return OpCost(1, 8 * n_out * (n_parties - 1), 8 * n_out)


def matmul_out(x: Shape, y: Shape) -> Shape:
    """torch.matmul's result shape for the 1-D and 2-D cases the report uses."""
    if len(x) == 1 and len(y) == 1:
        return ()
    if len(x) == 1:
        return (*y[:-2], y[-1])
    if len(y) == 1:
        return x[:-1]
    batch = _broadcast(x[:-2], y[:-2])
    return (*batch, x[-2], y[-1])


def _broadcast(a: Shape, b: Shape) -> Shape:
    n = max(len(a), len(b))
    a2, b2 = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    return tuple(max(i, j) for i, j in zip(a2, b2, strict=True))


def closed_form(
    kind: str,
    shapes: Sequence[Sequence[int]],
    n_parties: int,
    params: Mapping[str, Any] | None = None,
) -> OpCost:
    """Documented cost of one command of ``kind`` on inputs of ``shapes`` (frontend op kinds,
    as in actors/executor.py: products include their one truncation by ``params["d"]``)."""
    p = dict(params or {})
    d = int(p.get("d", 1))
    n = n_parties
    s = [tuple(int(v) for v in sh) for sh in shapes]
    if kind in ("mul", "matmul"):
        out = _broadcast(s[0], s[1]) if kind == "mul" else matmul_out(s[0], s[1])
        n_out = prod(out)
        beaver = OpCost(1, 8 * (prod(s[0]) + prod(s[1])) * (n - 1), 8 * n_out)
        return beaver + truncation_cost(n_out, n, d)
    if kind == "square":
        n_x = prod(s[0])
        return OpCost(1, 8 * n_x * (n - 1), 8 * n_x) + truncation_cost(n_x, n, d)
    if kind == "scale":
        pub = tuple(p["pub"]["shape"]) if "pub" in p else ()
        return truncation_cost(prod(_broadcast(s[0], pub)), n, d)
    if kind == "matmul_pub":
        pub = tuple(p["pub"]["shape"])
        out = matmul_out(pub, s[0]) if p.get("left") else matmul_out(s[0], pub)
        return truncation_cost(prod(out), n, d)
    if kind == "trunc":
        return truncation_cost(prod(s[0]), n, d)
    if kind in ("drelu", "relu"):
        n_x = prod(s[0])
        relu = kind == "relu"
        return OpCost(
            DRELU_ROUNDS,
            drelu_online_bytes(n_x, n, with_relu=relu),
            drelu_offline_bytes(n_x, with_relu=relu),
        )
    raise ValueError(f"no closed form for op kind {kind!r}")


# -- anchors quoted from DESIGN.md ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Anchor:
    """One row of DESIGN.md's "known costs" table (2 parties, 64-bit ring, per element)."""

    op: str
    """Which of our protocols it compares with."""
    source: str
    rounds: float | None
    online_per_party: float | None
    """Bytes per element per party, when the table gives a number."""
    offline: float | None
    """Dealer bytes per element, when the table gives a number."""
    as_written: str
    """The table row as DESIGN.md gives it (rounds; online; dealer)."""


ANCHORS: tuple[Anchor, ...] = (
    Anchor("mul", "CrypTen Beaver mul", 1, 16, 8, "1; 16 per party; 8 to party 0 (PRG seeds)"),
    Anchor("matmul", "Beaver matmul", 1, None, None, "1; 8(mk + kn) per party; 8mn to party 0"),
    Anchor("truncate", "SecureML local truncation", 0, 0, 0, "0; 0; 0"),
    Anchor("relu", "CrypTen (A2B adder)", 9, 232, 120, "9; 232 per party; ~120"),
    Anchor("relu", "SecureNN (seed's default)", 10, 704, None, "10; ~704; helper online"),
    Anchor("relu", "AriaNN FSS (l=32)", 2, 3 * 32 / 8, 920, "2; 3l bits; ~920 key per party"),
    Anchor("relu", "FSS gates (Boyle et al. 2021)", 1, 16, 2100, "1; 16; ~2.1 KB key"),
)
"""Literature figures from DESIGN.md; never measured here, always labelled as quoted."""


def matmul_anchor(m: int, k: int, n: int) -> tuple[float, float]:
    """The Beaver matmul anchor per *output* element: (online per party, dealer)."""
    return 8 * (m * k + k * n) / (m * n), 8.0


# -- network profiles and projection ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Profile:
    """A network for projections: one-way latency (s) and bandwidth (bit/s, None = inf)."""

    name: str
    latency: float
    bandwidth: float | None


LAN = Profile("LAN", 0.2e-3, 10e9)
WAN = Profile("WAN", 40e-3, 100e6)


@dataclass(frozen=True, slots=True)
class Projection:
    """time = rounds x latency + wire bytes of the busiest party / bandwidth + compute."""

    profile: str
    latency_s: float
    bandwidth_s: float
    compute_s: float
    offline_s: float
    """Dealer bytes over the same link, reported apart (preprocessing, not on the path)."""

    @property
    def total_s(self) -> float:
        return self.latency_s + self.bandwidth_s + self.compute_s


def project(
    profile: Profile,
    rounds: int,
    wire_bytes_per_party: int,
    compute_s: float,
    offline_bytes: int = 0,
) -> Projection:
    bw = profile.bandwidth
    per_bit = 0.0 if bw is None else 8.0 / bw
    return Projection(
        profile.name,
        rounds * profile.latency,
        wire_bytes_per_party * per_bit,
        compute_s,
        offline_bytes * per_bit,
    )


# -- growth fits -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Fit:
    """Least-squares fits of ``y(x)`` over the points with ``x >= x_min``."""

    x_min: int
    x_max: int
    points: int
    exponent: float
    """Slope of log y on log x (0 when y is constant, 1 when linear)."""
    slope: float
    """Of the straight-line fit ``y = slope * x + intercept``."""
    intercept: float

    def fixed_share(self, x: float) -> float:
        """Share of ``y(x)`` that the straight-line fit attributes to the fixed overhead."""
        y = self.slope * x + self.intercept
        return self.intercept / y if y else 0.0


def fit(xs: Sequence[float], ys: Sequence[float], x_min: float = 0) -> Fit:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if x >= x_min and x > 0]
    if len(pts) < 2:
        raise ValueError(f"a fit needs at least 2 points with x >= {x_min}, got {len(pts)}")
    px = [float(x) for x, _ in pts]
    py = [float(y) for _, y in pts]
    if all(y > 0 for y in py):
        exponent = _slope([math.log(x) for x in px], [math.log(y) for y in py])
    else:
        exponent = math.nan
    slope = _slope(px, py)
    intercept = sum(py) / len(py) - slope * sum(px) / len(px)
    return Fit(int(min(px)), int(max(px)), len(pts), exponent, slope, intercept)


def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
