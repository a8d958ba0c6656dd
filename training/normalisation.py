"""Range normalisation by powers of two for the smooth functions of
:mod:`training.range_reduction` (log, reciprocal, sqrt, rsqrt): ``x = m 2**k`` with m in
[1, 2) (or [1, 4): ``step=2``) from a few comparison levels (:class:`Norm`), and the
precision helpers they use (reading a share's ring integers at another precision,
lowering a precision).

Why a search: one comparison per power of two (the former reduction) cost 24 comparisons
per element for the default domains, and at 10**5 elements, where the default suite
compares with the carry tree, those comparisons were nearly all of the time (~0.1 s
each). The search takes 6 in 3 levels; its products with the comparison bits are exact
(a bit has precision 0), its divisions by powers of two are exact reinterpretations
followed by one local truncation of a value below 2**34 raw.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    """x = m * 2**k with m in [1, 2**step), by a search over the exponent.

    ``step`` w > 1 searches k in steps of w (k - klo a multiple of w): the levels of
    :func:`search_levels` for ``ceil(span / w)``, scaled by w, and m in [1, 2**w). Step 2
    (reciprocal, sqrt, rsqrt): 5 comparisons (6 for sqrt's wider domain) where step 1
    takes 7 (8), and 2**(k/2) an integer power for even k.

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

    def __init__(
        self, x: SharedTensor, domain: tuple[int, int], *, below: bool = False, step: int = 1
    ) -> None:
        klo, khi = domain
        f = x.fp.precision
        self.klo, self.below, self.f, self.step = klo, below, f, step
        units = search_levels(max(-(-(khi - klo) // step), 1))
        self.levels = [(s * step, r) for s, r in units]
        q = f + 2  # z's precision between levels: 2 guard bits for m (< 2**step)
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
            if j == 0 and self.c is not None:
                # the clamp in the first level's round: below the domain (0, negatives) z
                # is 1 from here on, so no later level truncates a garbage value
                out: Any = self.c * (zq - 1.0) + 1.0  # the bits imply c
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
        self,
        y: SharedTensor,
        a: float,
        c: float = 0.0,
        *,
        low_zero: bool = False,
        ymax: float = 2.0,
        factor: SharedTensor | None = None,
    ) -> SharedTensor:
        """y * 2**(c + a k) for the selected k, a in {1, -1, 1/2, -1/2}, |y| <= ``ymax``;
        ``low_zero``: 0 below the domain. Every truncation stays below 2**33 raw:

        * a level with a s not an integer (s odd, |a| = 1/2) and the irrational part of
          2**(c + a klo) scale y first: public integer coefficients round(2**h 2**b) on y
          and on its products with the level's bits (exact), one truncation by 2**b;
        * each other level's factor 2**(a s t - min) is linear in its bits, an integer at
          precision 0; the factors of the levels after the first are multiplied exactly;
        * the product P = y * (those factors, and ``factor``: reciprocal's sign) is taken
          once (exact); the first level's values of t are grouped so that within a group
          the exponent spans few bits: P read at ``lose`` fewer bits (a local truncation
          whose unit, times the group's largest power, is at most one unit of the result)
          times the group's indicators times 2**(e + lose + T) (exact integers), divided
          by 2**T: one truncation below 2**33 raw, none where T = 0.
        The groups are one product op each, side by side (2 for 1/x and x / y on the
        default domain); 2 rounds after y."""
        f = self.f
        extra = max(0, y.prec - f)  # y read at f + extra bits: its raw is y 2**(f + extra)
        e0: float = c + a * self.klo - extra
        ints: list[tuple[list[int], list[SharedTensor]]] = []
        halves: list[tuple[list[float], list[SharedTensor]]] = []
        for (s, r), bits in zip(self.levels, self.bits, strict=True):
            if (a * s).is_integer():
                g = int(a * s)
                mn = min(0, g * r)
                e0 += mn
                ints.append(([g * t - mn for t in range(r + 1)], bits))
            else:
                halves.append(([a * s * t for t in range(r + 1)], bits))
        zero_bit = self.c if low_zero else None
        if not halves and not float(e0).is_integer():
            halves.append(([0.0], []))
        for exps, bits in halves:
            phi = e0 - math.floor(e0)
            hs = [phi + x for x in exps]
            n = math.floor(min(hs))
            e0 = math.floor(e0) + n
            coeffs = [2.0 ** (h - n) for h in hs]
            y = _select_scale(y, bits, coeffs, ymax)
            ymax *= max(coeffs)
        e0i = int(e0)
        if not ints:
            if factor is not None:
                y = y * factor
            out = y * zero_bit if zero_bit is not None else y
            out = out * 2**e0i if e0i >= 0 else out / 2 ** (-e0i)
            return reinterpret(out, f) if extra else out
        rest: Any = factor  # an integer share of magnitude 1 (reciprocal's sign), or None
        rest_max = 0
        for iexps, ibits in ints[1:]:
            level = _indicator_sum(ibits, [2**x for x in iexps], None)
            rest = level if rest is None else rest * level
            rest_max += max(iexps)
        exps1, bits1 = ints[0]
        # P = y rest once (an exact product); a group of the first level's t reads P at
        # ``lose`` fewer bits (a local truncation: its unit times 2**(e + lose) <= 1 unit
        # of the result) and multiplies by its indicators times 2**(e + lose + shift)
        # (exact integers), then divides by 2**shift: the product stays below 2**33 raw
        p_all = y * rest if rest is not None else y
        limit = COEFF_BITS - y.prec - math.log2(ymax) - rest_max

        def fits(grp: list[int]) -> bool:
            es = [e0i + exps1[u] for u in grp]
            lose = max(0, -max(es))
            return max(es) + lose + max(0, -min(es) - lose) - lose <= limit

        groups: list[list[int]] = []
        for t in range(len(exps1)):
            if groups and fits([*groups[-1], t]):
                groups[-1].append(t)
            else:
                groups.append([t])
        total: Any = None
        for grp in groups:
            es = [e0i + exps1[t] for t in grp]
            lose = max(0, -max(es))
            shift = max(0, -min(es) - lose)
            vals = [
                2 ** (e0i + exps1[t] + lose + shift) if t in grp else 0 for t in range(len(exps1))
            ]
            d = _indicator_sum(bits1, vals, zero_bit)
            pg = lower(p_all, p_all.prec - lose) if lose else p_all
            term = pg._op("mul", [d], pg.shape, Params(d=2**shift), prec=f)
            total = term if total is None else total + term
        assert total is not None
        return total


def _indicator_sum(bits: list[SharedTensor], vals: Sequence[Any], first: Any) -> Any:
    """sum_t [level's t] vals[t], linear in the bits ([t] = b_t - b_(t+1), b_0 = 1 or
    ``first``): ``vals[0] b_0 + sum_t b_t (vals[t] - vals[t-1])``, integers at precision 0."""
    out: Any = vals[0] if first is None else (first * vals[0] if vals[0] else None)
    for t, bt in enumerate(bits, start=1):
        diff = vals[t] - vals[t - 1]
        if diff:
            term = bt * diff
            out = term if out is None else term + out
    if out is None:
        return 0
    return out


COEFF_BITS = 33
"""Sums of products of a value with public integer coefficients are held below 2**33 raw
and truncated once."""


def _select_scale(
    y: SharedTensor, bits: list[SharedTensor], coeffs: list[float], ymax: float
) -> Any:
    """y * coeffs[t] for the level's t: integer coefficients round(c 2**b) times y and its
    exact products with the bits (1 round if there are bits), one truncation by 2**b of a
    value below 2**33 raw (b from ``ymax`` and the largest coefficient)."""
    f = y.prec
    b = math.floor(COEFF_BITS - f - math.log2(ymax * max(coeffs)))
    ints = [round(cf * 2**b) for cf in coeffs]
    acc: Any = y * ints[0]
    for t, bt in enumerate(bits, start=1):
        diff = ints[t] - ints[t - 1]
        if diff:
            acc = acc + (y * bt) * diff
    return acc._op("trunc", [], acc.shape, Params(d=2**b))
