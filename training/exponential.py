"""exp: the clamp, one local truncation that splits t = x log2 e + 16 into j + u exactly,
the ``digits`` lookup of 2^j (:mod:`protocols.lookup`) and a degree-5 fit of 2^u (base 2);
the former 3-level search at base 10; softmax's exp for z <= 0 by squarings. Split from
:mod:`training.range_reduction` (log, reciprocal, sqrt, rsqrt, sin, cos) along its job."""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from protocols import shapes as S
from protocols.errors import UnsupportedOperation
from protocols.lookup import DIGIT_BITS, digit_bits
from protocols.lookup import rows as lookup_rows
from protocols.params import Params, Pub

from .activations import clamp
from .approximation import (
    expect_shared,
    fit,
    frac_bits,
    poly,
    powers,
    require_bits,
)
from .normalisation import lower, reinterpret, search_levels
from .operands import public
from .registry import implements
from .shaping import cat
from .tensor import SharedTensor


def exp_domain(x: SharedTensor) -> tuple[int, float]:
    """[lo, hi] to which ``exp``'s input is clamped: below the integer lo, e^x is under
    the resolution (e^lo < u/4); hi = ln(0.99 max_value) (10.38 at 2/16): above it e^x
    does not encode (|v| < 2**31 / scale), so exp saturates there, documented and tested
    (``tests/test_functional.py::test_exp_saturates_where_the_encoding_ends``)."""
    f = frac_bits(x)
    lo = -math.ceil(f * math.log(2)) - 1
    hi = math.floor(math.log(0.99 * x.fp.max_value) * 1000) / 1000
    return lo, hi


_EXP_PRODUCT_BITS = 44
"""Products in ``exp`` stay below 2**44 raw (local truncation fails with probability
|x| / 2**64, here < 2**-20 per element)."""


@implements(torch.exp, methods=("exp",))
def exp(x: SharedTensor) -> SharedTensor:
    """e^x. Base 2 (:func:`_exp_pow2`): a clamp (2 ReLUs in one round), t = x log2 e
    split into an integer j and an exact u in (-1, 1) by one local truncation, 2**j from
    a digit lookup (no comparison), 2**u by a degree-5 polynomial: clamp + 5 rounds.
    Base 10: :func:`_exp_search` (13 rounds with FSS comparisons). Backward g y."""
    x = expect_shared(x, "exp")
    require_bits(x, "exp")
    with torch.no_grad():
        y = _exp_pow2(x) if x.fp.base == 2 else _exp_search(x)
    return x._record(y, [x], lambda g: (g * y,))


def exp_pow2_domain(x: SharedTensor) -> tuple[float, float, int, int]:
    """(lo, hi, J, B) of the base-2 exp: the input is clamped to [lo, hi] with ``lo = -J
    ln 2`` (J = f rounded up to a multiple of 8: 16 at 2/16, lo = -11.09, where e^lo is one
    unit: below it the result is off by at most a unit) and hi as :func:`exp_domain`;
    j = x log2 e + J (or one more) lies in [0, 2**B) (B = 5 at 2/16)."""
    f = frac_bits(x)
    big_j = 8 * math.ceil(f / 8)
    lo = -big_j * math.log(2)
    hi = exp_domain(x)[1]
    jmax = math.floor((hi - lo) * math.log2(math.e)) + 1  # the truncation may round up
    return lo, hi, big_j, max(jmax.bit_length(), DIGIT_BITS + 1)


EXP_DEGREE = 5
"""2**u on (-1, 1): the degree-5 least-squares fit is within 4e-6 relative (degree 4:
8e-5, more than the encoding's unit allows at p = 1/2)."""


def _mul_at(a: SharedTensor, b: SharedTensor, prec: int) -> SharedTensor:
    """a * b (Beaver) truncated to precision ``prec`` (base 2): the raw product holds
    a.prec + b.prec fractional bits."""
    d = 2 ** (a.prec + b.prec - prec)
    shape = S.broadcast("mul", a.shape, b.shape)
    return a._op("mul", [b], shape, Params(d=d), prec=prec)


def _exp_pow2(x: SharedTensor) -> SharedTensor:
    """e^x = 2**(t - J) for t = x log2 e + J, at base 2 with f fractional bits (2/16:
    f = 16, J = 16, B = 5; raw bounds in brackets, all below 2**34):

    1. xc = clamp(x, lo, hi) (2 ReLUs side by side); t = xc log2 e + J at f + 1 bits
       (:func:`_times_log2e`, two exact integer products [2**33]) in [0, 31); its integer
       part k = trunc(t / 2**(f+1)), one local truncation (2 parties; the dealer pair with
       3+), is floor(t) or one more, so u = t - k, computed on the shares, is exact and in
       (-1, 1), and j = k is in [0, 2**B);
    2. the ``digits`` kind (:mod:`protocols.lookup`: 2 rounds, no comparison) gives, with
       j = d0 + 8 D and q = J / 8, the tables ``A = 2**d0``, ``E- = [D < q] 2**(8D)`` and
       ``E+ = [D >= q] 2**(8(D - q))`` as exact integers;
    3. beside it p(u) ~ 2**u at f + 1 bits (:func:`_exp2_poly`: 3 products, 3 rounds);
    4. m = p A, exact [2**25]; then e^x = p 2**(j - J) is m E- / 2**(J + 1) where D < q
       (one truncation to f bits [2**33]: small results keep their digits) and m E+, exact
       [2**32], lowered to f bits, where D >= q (large ones lose none to rounding); the
       other branch is an exact 0.

    Rounds at 2/16: the clamp + 5; 6 products; 80 dealer bytes per element for the
    lookup."""
    f = x.fp.precision
    lo, hi, big_j, bits = exp_pow2_domain(x)
    shape = x.shape
    k, u = _split(_clamp(x.reshape(-1), lo, hi), big_j)
    return _pow2_tail(k, u, big_j, bits, f).reshape(shape)


def _clamp(x: SharedTensor, lo: float, hi: float) -> SharedTensor:
    """clamp(x, lo, hi) of a 1-d x as lo + relu(x - lo) - relu(x - hi), both ReLUs in one
    op of 2n elements (two ops of n each cost ~20% more at 10**5: the comparison's
    messages and dealer requests go once)."""
    bounds = torch.tensor([[lo], [hi]], dtype=torch.float64)
    r = (x.unsqueeze(0) - public(bounds)).relu()
    return r[0] - r[1] + lo


_SMALL_DIGITS = 2
"""q: the high digits D < q (k < 8 q = 16) take the branch truncated once by 2**(J + 1)
(its product ~2**(t + f + 1) < 2**33 raw at 2/16), the others the branch divided by
2**(J + 1 - 8 q) (its product ~2**(t - 8 q + f + 1) < 2**33 for t < 32)."""


def _pow2_tail(k: SharedTensor, u: SharedTensor, big_j: int, bits: int, f: int) -> SharedTensor:
    """p(u) 2**(k - J) at f bits (``f <= J + 1 - 8 q + u.prec``, the large branch's divisor >= 1) for an integer k in [0, 2**bits) and u in (-1, 1) (at
    f + 1 bits): with k = d0 + 8 D the ``digits`` lookup (2 rounds, beside p's 3) gives
    A = 2**d0, ``E- = [D < q] 2**(8D)`` and ``E+ = [D >= q] 2**(8(D - q))`` as exact
    integers; m = p A is exact [2**25]; then ``m E- / 2**(J + 1)`` where D < q (small
    results keep their digits) plus ``m E+ / 2**(J + 1 - 8q)`` where D >= q (large ones
    lose none to rounding); the other branch is an exact 0. 3 products after p's 3."""
    q = _SMALL_DIGITS
    sizes = digit_bits(bits)
    if len(sizes) != 2 or sizes[0] != DIGIT_BITS or big_j + 1 < 8 * q:
        raise UnsupportedOperation(f"exp: a {bits}-bit exponent lookup is not supported")
    table = torch.zeros(3, lookup_rows(bits), dtype=torch.int64)
    table[0, :8] = 2 ** torch.arange(8)  # A = 2**d0
    for dd in range(1 << sizes[1]):
        if dd < q:
            table[1, 8 + dd] = 2 ** (8 * dd)  # E- = [D < q] 2**(8D)
        else:
            table[2, 8 + dd] = 2 ** (8 * (dd - q))  # E+ = [D >= q] 2**(8(D - q))
    tab = k._op("digits", [], (3, *k.shape), Params(d=bits, pub=Pub.of(table)), prec=0)
    m = _mul_div(_exp2_poly(u), tab[0], 1, u.prec)  # p 2**d0, exact (below 2**25 raw)
    shift = u.prec - f  # m's precision over the result's
    small = _mul_div(m, tab[1], 2 ** (big_j + shift), f)
    large = _mul_div(m, tab[2], 2 ** (big_j + shift - 8 * q), f)
    return small + large


def _split(xc: SharedTensor, big_j: int) -> tuple[SharedTensor, SharedTensor]:
    """(k, u) with k an integer (precision 0) and u = t - k exact in (-1, 1) at f + 1 bits,
    for t = xc log2 e + J (:func:`_times_log2e`); k = trunc(t), one local truncation, is
    floor(t) or one more (t >= 0 on the clamped domain: 1.44 units of 2**-(f+1) at exp's
    lo, above the product's 1.25 units of rounding)."""
    t = _times_log2e(xc, xc.fp.precision + 1) + float(big_j)
    k = t._op("trunc", [], t.shape, Params(d=2**t.prec), prec=0)
    return k, t - k


def _mul_div(a: SharedTensor, b: SharedTensor, d: int, prec: int) -> SharedTensor:
    """a * b (Beaver) with the raw product divided by d, read at ``prec``: one op (a
    separate reinterpretation would be a second, a truncation by 1 after it a third)."""
    shape = S.broadcast("mul", a.shape, b.shape)
    return a._op("mul", [b], shape, Params(d=d), prec=prec)


_EXP_COEFF_BITS = 16
"""p's coefficients as integers round(c 2**16) times monomials at f + 1 bits: sums at
f + 17 = 33 bits, below 2**34 raw, truncated once."""


def _exp2_poly(u: SharedTensor) -> SharedTensor:
    """2**u for u in (-1, 1) at u's precision F (f + 1 = 17 bits), degree 5 in 3 products
    and 3 rounds: u**2; u**3 and q = c3 + c4 u + c5 u**2 (q at F + 3 bits, q < 0.07);
    u**3 q; then p = c0 + c1 u + c2 u**2 + u**3 q with c1, c2 integer multiples of 2**-16.
    The sums are held at F + 16 = 33 bits (below 2**34 raw; a handle cannot say 33 bits,
    so they are held under precision F and divided by explicit divisors), the last one
    lowered to 30 bits to add c0 and then to F: its rounding is one unit of 2**-F plus c2
    times u**2's and q times u**3's (~1.4 units), the fit's ~4e-6 relative."""
    big_f = u.prec
    a = _EXP_COEFF_BITS
    c = _exp2_coefficients()
    u2 = u**2
    u3 = _mul_at(u, u2, big_f)
    # q: raw integers at F + a bits (c3 added as c3 2**a at F bits: the same integer)
    qs = u * round(c[4] * 2**a) + u2 * round(c[5] * 2**a) + float(c[3] * 2**a)
    qv = _divide(qs, 2 ** (a - 3), big_f + 3)
    u3q = u3._op("mul", [qv], u3.shape, Params(d=2**4), prec=big_f)  # raw at F + a bits
    acc = u * round(c[1] * 2**a) + u2 * round(c[2] * 2**a) + u3q
    return lower(_divide(acc, 2 ** (big_f + a - 30), 30) + float(c[0]), big_f)


@functools.lru_cache(maxsize=1)
def _exp2_coefficients() -> tuple[float, ...]:
    """Degree-5 fit of 2**u on [-1, 1], least squares in the relative error (4001
    Chebyshev points), with c1, c2, c4, c5 multiples of 2**-16 (p multiplies them in as
    integers; c0 and c3 are added as constants at 30 and 33 bits): each is rounded in turn
    and the others refitted to what the rounding left, so the rounding costs ~1e-6
    relative instead of up to 4 units of 2**-17 at |u| = 1."""
    k = np.arange(4001)
    u = np.cos(np.pi * (k + 0.5) / 4001)
    target = 2.0**u
    coef: dict[int, float] = {}
    for i in (1, 2, 4, 5, None):
        free = [m for m in range(EXP_DEGREE + 1) if m not in coef]
        rest = target - sum(v * u**m for m, v in coef.items())
        basis = np.stack([u**m / target for m in free], 1)
        sol = dict(zip(free, np.linalg.lstsq(basis, rest / target, rcond=None)[0], strict=True))
        if i is None:
            coef.update({m: float(v) for m, v in sol.items()})
        else:
            coef[i] = round(float(sol[i]) * 2**_EXP_COEFF_BITS) / 2**_EXP_COEFF_BITS
    return tuple(coef[m] for m in range(EXP_DEGREE + 1))


def _divide(x: SharedTensor, d: int, prec: int) -> SharedTensor:
    """x's raw integers divided by d (one local truncation), read at ``prec``."""
    return x._op("trunc", [], x.shape, Params(d=d), prec=prec)


def _scale(x: SharedTensor, c: int, d: int, prec: int) -> SharedTensor:
    """x's raw integers times the integer c, divided by d (one local op, the ``scale``
    kind: the product and its truncation), read at ``prec``."""
    return x._op("scale", [], x.shape, Params(pub=Pub.of(torch.tensor(c)), d=d), prec=prec)


def _times_log2e(x: SharedTensor, prec: int) -> SharedTensor:
    """x log2 e at ``prec`` bits (base 2) for |x| < 2**(34 - 13.53 - x.prec) (11.6 at
    2/16: exp's clamped input): log2 e = C1 / 2**13 + C2 / 2**26 + (below 2**-27), each
    integer product exact (a single 19-bit log2 e would take the product to 2**39), both
    truncated to prec + 3 bits (below 2**34 raw), summed, and lowered to ``prec``: error
    1.25 units of 2**-prec."""
    c1 = round(math.log2(math.e) * 2**13)
    c2 = round((math.log2(math.e) - c1 / 2**13) * 2**26)
    fine = prec + 3
    hi = _scale(x, c1, 2 ** (x.prec + 13 - fine), fine)
    lo_part = _scale(x, c2, 2 ** (x.prec + 26 - fine), fine)
    return lower(hi + lo_part, prec)


def _exp_search(x: SharedTensor) -> SharedTensor:
    """e^x at any base: clamp to :func:`exp_domain`, k = the integer part of x - lo by a search
    (:func:`~training.normalisation.search_levels`: 6 comparisons in 3 levels at 2/16,
    the first level beside the clamp), u = x - k in [0, 1) and ``e^x = e^k p(u)`` with a
    degree-4 ``p``.

    e^k is never computed as a number: for each value t of the first level's digit the
    partial table ``round(e^k 2**a_t)`` over the later digits is selected as an exact
    integer (products of bits and integers at precision 0, no truncation), multiplied by
    p(u) and divided by 2**a_t (one truncation), where a_t is the largest scale that
    keeps that product below 2**44 raw for the k of that digit (2**-20 failure per element
    at the top of each range, as before); the first digit then selects among the 4
    results. 24 comparisons (one per integer) became 6; 15 products."""
    lo, hi = exp_domain(x)
    kmax = math.floor(hi) - lo  # k - lo in [0, kmax]
    levels = search_levels(kmax + 1)
    (s0, r0) = levels[0]
    first = cat([(x - float(lo + s0 * t)).unsqueeze(0) for t in range(1, r0 + 1)]).drelu()
    xc = clamp(x, float(lo), hi)
    bits = [[first[t] for t in range(r0)]]
    w = xc - float(lo)
    rest = w - _digit_sum(s0, bits[0])
    for s, r in levels[1:]:
        d = cat([(rest - float(s * t)).unsqueeze(0) for t in range(1, r + 1)]).drelu()
        bits.append([d[t] for t in range(r)])
        rest = rest - _digit_sum(s, bits[-1])
    p = poly(powers(rest), fit("exp", 0.0, 1.0))
    pmax = math.log2(math.e * x.fp.scale)  # p < e, raw bits
    parts = []
    for t in range(r0 + 1):
        ks = [lo + s0 * t + j for j in range(s0) if lo + s0 * t + j <= lo + kmax]
        a = math.floor(_EXP_PRODUCT_BITS - pmax - max(ks) / math.log(2))
        table = _table(
            levels[1:], bits[1:], lambda k, a=a, o=lo + s0 * t: round(math.exp(o + k) * 2**a)
        )
        prod = p * table  # p 2**a_t e^k at p's precision: divide by 2**a_t
        parts.append(lower(reinterpret(prod, prod.prec + a), prod.prec))
    y = parts[0]
    for t in range(1, r0 + 1):
        y = y + bits[0][t - 1] * (parts[t] - parts[t - 1])
    return y


def _digit_sum(s: int, bits: list[SharedTensor]) -> Any:
    """s * (number of the level's bits set): the level's digit times its step (local)."""
    out: Any = None
    for b in bits:
        out = b * s if out is None else out + b * s
    return out


def _table(
    levels: list[tuple[int, int]], bits: list[list[SharedTensor]], fn: Any, off: int = 0
) -> Any:
    """fn(off + the later levels' digits) for integer fn, selected exactly at precision
    0: the last level linearly (telescoping over its monotone bits), each earlier one by
    products of its bits with the differences of the sub-tables."""
    s, r = levels[0] if levels else (1, 0)
    if not levels:
        return fn(off)
    if len(levels) == 1:
        out: Any = fn(off)
        for t in range(1, r + 1):
            dv = fn(off + s * t) - fn(off + s * (t - 1))
            if dv:
                out = bits[0][t - 1] * dv + out
        return out
    subs = [_table(levels[1:], bits[1:], fn, off + s * t) for t in range(r + 1)]
    out = subs[0]
    for t in range(1, r + 1):
        out = out + bits[0][t - 1] * (subs[t] - subs[t - 1])
    return out


NONPOSITIVE_J = 24
"""exp_nonpositive's J: its clamp lo = -J ln 2 + 4 u = -16.64 gives e^lo = 2**-24, a 256th
of a unit at 2/16 (at J = 16 every clamped element would add one unit to softmax's sum:
0.017 off on a softmax of 10**5 logits). k <= J + 1 = 25 still fits 5 bits."""


def exp_nonpositive(z: SharedTensor, extra_bits: int = 0) -> SharedTensor:
    """e^z for z <= 0 (softmax after subtracting the max) at ``extra_bits`` (<= 9) more
    fractional bits than z's (free: a smaller divisor in the last products, whose raw
    values do not change; softmax sums its exponentials at 2 more), no backward (callers
    record theirs): exp's base-2 scheme (:func:`_exp_pow2`) with a one-sided clamp, z clamped
    below at lo = -J ln 2 + 4 units (:data:`NONPOSITIVE_J`) by one ReLU; then t = z log2 e
    + J in [0, J] (5.8 units of 2**-(f+1) above 0 at lo, where the split's error is 1.25)
    split into k + u by one local truncation, and :func:`_pow2_tail`. Every product stays
    below 2**34 raw at 2/16 however negative z is: the squarings this replaces (6 of a
    degree-4 fit of e^(z/64)) truncated 2**39-2**40 raw, and at 10**7 elements some rows
    of log_softmax did not decode. Rounds: the ReLU + 5; 6 products; the lookup's 80
    dealer bytes per element."""
    with torch.no_grad():
        f = z.fp.precision
        if z.fp.base != 2:
            raise UnsupportedOperation("exp_nonpositive needs base 2")
        big_j = NONPOSITIVE_J
        lo = -big_j * math.log(2) + 4 * 2.0**-f
        zc = (z.reshape(-1) - lo).relu() + lo
        k, u = _split(zc, big_j)
        if not 0 <= extra_bits <= big_j + 1 - 8 * _SMALL_DIGITS:
            raise UnsupportedOperation(f"exp_nonpositive: extra_bits {extra_bits} not in [0, 9]")
        return _pow2_tail(k, u, big_j, 5, f + extra_bits).reshape(z.shape)
