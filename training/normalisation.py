"""Range normalisation by powers of two for the smooth functions of
:mod:`training.range_reduction` (log, reciprocal, sqrt, rsqrt): ``x = m 2**k`` with m in
[1, 2) from a few comparison levels (:class:`Norm`), and the precision helpers they use
(reading a share's ring integers at another precision, lowering a precision).

Why a search: one comparison per power of two (the former reduction) cost 24 comparisons
per element for the default domains, and at 10**5 elements, where the default suite
compares with the carry tree, those comparisons were nearly all of the time (~0.1 s
each). The search takes 6 in 3 levels; its products with the comparison bits are exact
(a bit has precision 0), its divisions by powers of two are exact reinterpretations
followed by one local truncation of a value below 2**34 raw.
"""

from __future__ import annotations

import math
from typing import Any

from protocols.params import Params

from .shaping import cat
from .tensor import SharedTensor


def reinterpret(x: SharedTensor, prec: int) -> SharedTensor:
    """The same ring integers read at another precision (x * base**(prec - x.prec)):
    a free local op; used to divide by a power of two without losing a bit."""
    return x._op("trunc", [], x.shape, Params(d=1), prec=prec)


def lower(x: SharedTensor, prec: int) -> SharedTensor:
    """x at a lower precision (one local truncation)."""
    if prec >= x.prec:
        return x
    return x._op("trunc", [], x.shape, Params(d=x.fp.base ** (x.prec - prec)), prec=prec)


def search_levels(span: int) -> list[tuple[int, int]]:
    """Levels ``(s, r)`` of the exponent search for z in [1, 2**span): a level compares z
    with 2**s, 2**2s, .. 2**rs in one op and leaves z below 2**s; the last has s = 1.
    Fewest comparisons among the searches of at most 3 levels (fewest levels on a tie):
    span 23 (the default domains): (8, 2), (2, 3), (1, 1), 6 comparisons in 3 levels."""
    if span <= 1:
        return []
    best: tuple[tuple[int, int], list[tuple[int, int]]] | None = None
    for s1 in range(1, span + 1):
        for s0 in range(s1, span + 1, s1):
            chain = sorted({s0, s1, 1}, reverse=True)
            levels = []
            for i, st in enumerate(chain):
                above = chain[i - 1] if i else None
                r = (above // st - 1) if above is not None else math.ceil(span / st) - 1
                levels.append((st, r))
            levels = [(st, r) for st, r in levels if r > 0]
            top_s, top_r = levels[0] if levels else (1, 0)
            cover = (top_r + 1) * top_s
            if cover < span or not levels or levels[-1][0] != 1:
                continue
            key = (sum(r for _, r in levels), len(levels))
            if best is None or key < best[0]:
                best = (key, levels)
    assert best is not None
    return best[1]


_PUBLIC_RAW_BITS = 30
"""Public thresholds are encoded below 2**30 raw (the encoder refuses 2**31)."""


def _above(z: SharedTensor, e: int) -> SharedTensor:
    """z - 2**e, whose sign is the comparison bit [z >= 2**e]. A threshold too large to
    encode at z's precision (Adam's rsqrt: 2**32 at precision 0) is compared on z / 2**d
    (one local truncation): its one-unit error can only flip the bit within a unit of
    the threshold, where m then lands a unit outside [1, 2) (the fits extend there)."""
    d = e + z.prec - _PUBLIC_RAW_BITS
    if d <= 0:
        return z - float(2**e)
    return z / 2**d - float(2 ** (e - d))


class Norm:
    """x = m * 2**k with m in [1, 2), by a search over the exponent.

    With z = x * 2**-klo (x's ring integers read at f + klo fractional bits: exact) and
    the levels of :func:`search_levels`: a level compares z with 2**s .. 2**rs (one
    comparison op of r N elements, 1 round with FSS) and selects, by the telescoping sum
    over its bits, z / 2**(t s) for the largest t with z >= 2**(t s) (z's ring integers
    read at t s more bits, then one local truncation of a value below 2**34 raw, and
    exact products with the bits: 1 round). After the levels ``m = z`` and ``k = klo +
    sum s t``. The default domains take 6 comparisons per element in 3 levels, where one
    comparison per power of two took 24.

    ``below=True`` (the functions' default domains) adds the bit c = [z >= 1] to the first
    level's op: an input below 2**klo (0, a negative value, or one too small for the
    function's accuracy) has every bit 0 and gets ``m = 1`` (in the last level's round:
    ``1 + c (z - 1)``) and the constants of k = klo (or ``low``), a documented clamp
    instead of the garbage an unnormalised ``m`` would give.

    Constants: :meth:`linear` (``a + b k``, local) and :meth:`times_pow2` (``y * 2**(c +
    a k)`` for a in {1, -1, 1/2, -1/2}: each level's factor ``2**(a s t)`` as an exact
    integer at precision 0, one product per level, one division by a power of two, one
    product with y)."""

    def __init__(self, x: SharedTensor, domain: tuple[int, int], *, below: bool = False) -> None:
        klo, khi = domain
        f = x.fp.precision
        self.klo, self.below, self.f = klo, below, f
        self.levels = search_levels(max(khi - klo, 1))
        q = f + 2  # z's precision between levels: 2 guard bits for m
        z = reinterpret(x, f + klo) if f + klo >= 0 else x * 2 ** (-klo - f)
        self.bits: list[list[SharedTensor]] = []
        self.c: SharedTensor | None = None
        for j, (s, r) in enumerate(self.levels):
            diffs = [_above(z, s * t).unsqueeze(0) for t in range(1, r + 1)]
            if j == 0 and below:
                diffs.append((z - 1.0).unsqueeze(0))
            d = (diffs[0] if len(diffs) == 1 else cat(diffs)).drelu()
            bits = [d[t] for t in range(r)]
            if j == 0 and below:
                self.c = d[r]
            zq = z._at_prec(q) if z.prec <= q else lower(z, q)
            last = j == len(self.levels) - 1
            if last and self.c is not None:
                out: Any = self.c * (zq - 1.0) + 1.0  # bits imply c: 1 + c (z_new - 1)
            else:
                out = zq
            prev = zq
            for t, bt in enumerate(bits, start=1):
                w = lower(reinterpret(z, z.prec + s * t), q)
                out = out + bt * (w - prev)
                prev = w
            z = out
            self.bits.append(bits)
        if not self.levels and below:  # a one-exponent domain: only the clamp
            self.c = (z - 1.0).drelu()
            z = self.c * (z._at_prec(q) - 1.0) + 1.0
        self.m = lower(z, f)

    def exponent(self) -> Any:
        """k - klo = sum s t, an integer share at precision 0 (linear in the bits)."""
        out: Any = None
        for (s, _), bits in zip(self.levels, self.bits, strict=True):
            for bt in bits:
                term = bt * s
                out = term if out is None else out + term
        return out

    def linear(self, a: float, slope: float) -> SharedTensor:
        """a + slope k for the selected k (local)."""
        return self.exponent() * float(slope) + float(a + slope * self.klo)

    def times_pow2(
        self, y: SharedTensor, a: float, c: float = 0.0, *, low_zero: bool = False
    ) -> SharedTensor:
        """y * 2**(c + a k) for the selected k, a in {1, -1, 1/2, -1/2}; ``low_zero``
        (a > 0): 0 below the domain. Each level's factor 2**(a s t) (a < 0: 2**(|a| s (r -
        t)), so that it stays an integer) is linear in its bits and the factors are
        multiplied at precision 0 (exact, no truncation); the product D is read at the
        precision that makes it the constant and divided down to f bits (exact where the
        constant is a multiple of 2**-f); a level with a s not an integer (s = 1, |a| =
        1/2) and an irrational power of 2 left over are applied to the result, where they
        are scalings of a value of the result's size."""
        d: Any = None
        total = 0
        halves: list[tuple[int, list[SharedTensor]]] = []
        for (s, r), bits in zip(self.levels, self.bits, strict=True):
            if not (a * s).is_integer():
                halves.append((s, bits))
                continue
            g = int(abs(a) * s)
            first = self.c if (low_zero and d is None and self.c is not None) else None
            if a > 0:  # 1 + sum_t b_t (2**(g t) - 2**(g (t - 1)))
                factor: Any = first if first is not None else 1
                for t, bt in enumerate(bits, start=1):
                    factor = bt * (2 ** (g * t) - 2 ** (g * (t - 1))) + factor
            else:  # 2**(g r) + sum_t b_t (2**(g (r - t)) - 2**(g (r - t + 1)))
                factor = 2 ** (g * r)
                for t, bt in enumerate(bits, start=1):
                    factor = bt * (2 ** (g * (r - t)) - 2 ** (g * (r - t + 1))) + factor
                total += g * r
            d = factor if d is None else d * factor
        # the constant is D * 2**pe
        pe = c + a * self.klo - total
        p = -math.floor(pe)
        frac = pe + p
        if d is None:
            const: Any = 2.0 ** (-p)
        elif p >= 0:
            const = lower(reinterpret(d, p), self.f) if p > self.f else reinterpret(d, p)
        else:
            const = d * 2 ** (-p)
        out = lower(y * const, self.f)
        for s, bits in halves:
            prev_v, delta = 1.0, out
            for t, bt in enumerate(bits, start=1):
                v = 2.0 ** (a * s * t)
                delta = delta + (out * bt) * (v - prev_v)
                prev_v = v
            out = delta
        if frac:
            out = out * 2.0**frac
        if low_zero and self.c is not None and d is None:
            out = out * self.c
        return out
