"""Smooth functions computed after a range reduction: exp, log, reciprocal, sqrt, rsqrt,
division by a share, sin and cos.

* **exp**: range reduction by integers: bits ``[x >= k]`` for every integer k in the
  domain give ``k`` and ``e**k`` linearly, ``u = x - k`` in [0, 1) and ``exp(x) =
  e**k * p(u)`` with a degree-4 ``p``. The input is clamped to the domain first: above
  ln(0.99 max_value) (10.38 at 2/16) e^x does not encode, so exp saturates there.
  Softmax uses ``exp`` for ``z <= 0``: a clamp below (one ReLU), then 6 squarings of a
  degree-4 fit of e^(z/64) at 20 fractional bits (no knots).
* **range normalisation by powers of two** (log, reciprocal, sqrt, rsqrt): a search over
  the exponent (:class:`~training.normalisation.Norm`: 6 comparisons in 3 levels for the
  default domains) gives ``m = x 2**-k`` in [1, 2), ``k`` linearly and the constants
  ``2**(a k)`` as exact integer products. Then a degree-4 polynomial in ``m - 1`` (log,
  sqrt, rsqrt) or Newton-Raphson for ``1/m`` from the linear start ``24/17 - 8/17 m``
  (the classic 48/17 - 32/17 m' start for m' = m/2 in [1/2, 1), relative error 1/17; 2
  iterations leave (1/17)**4 < 1.2e-5). Powers of two must be exact in fixed point,
  hence base 2: with f fractional bits the domain is [2**-(f//2), 2**(31-f)), every
  encodable value above 2**-(f//2) (sqrt: from 2**-f). Below it (0, negative or tiny
  inputs) every search bit is 0, m is set to 1 and the constants are those of klo: a
  documented clamp (log -> ln 2**klo, reciprocal -> +-2**-klo, rsqrt -> 2**(-klo/2),
  sqrt -> 0), never garbage; the input is private, so a range check would have to
  reveal it.
* **sin / cos**: reduction by 2 pi (a local truncation to an integer multiple), then
  symmetry and a polynomial in ``z**2``.

The pieces (fits, powers, selections) are :mod:`training.approximation`'s.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import torch

from protocols.errors import UnsupportedOperation
from protocols.lookup import DIGIT_BITS, digit_bits
from protocols.lookup import rows as lookup_rows
from protocols.params import Params, Pub

from .activations import clamp
from .approximation import (
    abs_sign,
    expect_shared,
    fit,
    frac_bits,
    poly,
    powers,
    require_bits,
    signed,
)
from .normalisation import Norm, lower, reinterpret, search_levels
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
    shape = torch.broadcast_shapes(a.shape, b.shape)
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
    fp1 = f + 1
    xc = clamp(x, lo, hi).reshape(-1)
    t = _times_log2e(xc, fp1) + float(big_j)  # in [0, 2**B - 1), at f + 1 bits
    k = t._op("trunc", [], t.shape, Params(d=2**t.prec), prec=0)
    u = t - k  # exact, in (-1, 1), at f + 1 bits
    sizes = digit_bits(bits)
    if len(sizes) != 2 or sizes[0] != DIGIT_BITS:
        raise UnsupportedOperation(f"exp: a {bits}-bit exponent lookup is not supported")
    q = big_j // 8
    table = torch.zeros(3, lookup_rows(bits), dtype=torch.int64)
    table[0, :8] = 2 ** torch.arange(8)  # A = 2**d0
    for dd in range(1 << sizes[1]):
        if dd < q:
            table[1, 8 + dd] = 2 ** (8 * dd)  # E- = [D < q] 2**(8D)
        else:
            table[2, 8 + dd] = 2 ** (8 * (dd - q))  # E+ = [D >= q] 2**(8(D - q))
    tab = k._op("digits", [], (3, *k.shape), Params(d=bits, pub=Pub.of(table)), prec=0)
    p = _exp2_poly(u)
    m = _mul_at(p, tab[0], fp1)  # p 2**d0, exact (below 2**25 raw)
    # D < q: p 2**(j - J) by one truncation to f bits; D >= q: exact (below 2**32 raw),
    # then lowered to f bits; the other branch is an exact 0 (its table entry is 0)
    small = _mul_at(m, reinterpret(tab[1], big_j), f)
    large = lower(m * tab[2], f)
    return (small + large)._at_prec(f).reshape(shape)


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


def _times_log2e(x: SharedTensor, prec: int) -> SharedTensor:
    """x log2 e at ``prec`` bits (base 2) for |x| < 2**(34 - 13.53 - x.prec) (11.6 at
    2/16: exp's clamped input): log2 e = C1 / 2**13 + C2 / 2**26 + (below 2**-27), each
    integer product exact (a single 19-bit log2 e would take the product to 2**39), both
    truncated to prec + 3 bits (below 2**34 raw), summed, and lowered to ``prec``: error
    1.25 units of 2**-prec."""
    c1 = round(math.log2(math.e) * 2**13)
    c2 = round((math.log2(math.e) - c1 / 2**13) * 2**26)
    fine = prec + 3
    hi = _divide(x * c1, 2 ** (x.prec + 13 - fine), fine)
    lo_part = _divide(x * c2, 2 ** (x.prec + 26 - fine), fine)
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


EXP_SQUARINGS = 6
"""exp_nonpositive(z) = p(z / 2**6) ** (2**6): 6 squarings after a degree-4 fit on
[lo/64, 0] (fit error ~1e-7, times 64 after the squarings)."""

_SQUARE_RAW_BITS = 20
"""Each squaring's operand stays below 2**20 raw (its product below 2**40: a local
truncation fails with probability < 2**-24 per element). For z <= 0 every operand is at
most 1, so the squarings run at 20 fractional bits (4 more than the encoding's): their
rounding, amplified by the later squarings, stays below ~64 * 2**-20 = 6e-5 relative.
(For exp over its whole domain the same scheme would need the last squaring of values up
to e^5.2 = 180 at 14 bits: 2**-14 absolute error near 0, 4x the knots' error; exp keeps
its knots.)"""


def _exp_squarings(xc: SharedTensor, lo: float, hi: float) -> SharedTensor:
    """e^x for x in [lo, hi] (base 2; no autograd, no clamp): t = x / 64 is x's ring
    integers read at 6 more fractional bits (exact), p(t) a degree-4 fit of e^t on
    [lo/64, hi/64] evaluated at that precision (t**2; t**3, t**4: 2 rounds), then 6
    squarings (6 rounds), each at the highest precision that keeps its product below
    2**40 raw (:data:`_SQUARE_RAW_BITS`). 8 rounds, 9 products, no comparison."""
    f = xc.fp.precision
    m = EXP_SQUARINGS
    t = reinterpret(xc, xc.prec + m)
    y = poly(powers(t), fit("exp", lo / 2**m, hi / 2**m))
    for j in range(m):
        top = math.exp(hi / 2 ** (m - j))  # bound on the operand of squaring j (+ fit error)
        y = lower(y, min(y.prec, math.floor(_SQUARE_RAW_BITS - math.log2(top) + 0.01)))
        y = y**2
    return lower(y, f)._at_prec(f)


def exp_nonpositive(z: SharedTensor) -> SharedTensor:
    """e^z for z <= 0 (softmax after subtracting the max): z clamped below at exp's lo
    (one ReLU, 1 round), then :func:`_exp_squarings` on [lo, 0] (8 rounds); no backward
    (callers record theirs). Every product stays below 2**40 raw, however negative z is
    (the former piecewise fit took z**4 of the unreduced z: ~2**46 raw at z = -12)."""
    with torch.no_grad():
        lo, _ = exp_domain(z)
        zc = (z - float(lo)).relu() + float(lo)
        return _exp_squarings(zc, float(lo), 0.0)


def log_domain(x: SharedTensor) -> tuple[int, int]:
    """Exponents [klo, khi): inputs in [2**klo, 2**khi) are normalised exactly. At base 2
    khi covers every encodable value (|v| < 2**(31 - f)); below 2**klo the functions
    clamp (see :class:`~training.normalisation.Norm`)."""
    f = frac_bits(x)
    khi = 31 - f if x.fp.base == 2 else x.fp.precision
    return -(f // 2), khi


def _below(domain: tuple[int, int] | None, below: bool | None) -> bool:
    return domain is None if below is None else below


def sqrt_domain(x: SharedTensor) -> tuple[int, int]:
    """sqrt normalises every positive encoding (from one unit, 2**-f): its result is
    small where its input has few digits, so the absolute error stays ~2**-(f/2 + 1)."""
    _, khi = log_domain(x)
    return -frac_bits(x), khi


@implements(torch.log, methods=("log",))
def log(
    x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool | None = None
) -> SharedTensor:
    """ln x for x > 0: k ln 2 + p(m - 1), p of degree 4 on [0, 1]. 4 rounds.
    Backward g * reciprocal(x).

    Domain (default) [2**-(f//2), 2**(31-f)): every encodable value above 2**-8 at 2/16.
    Below it, including 0 and negative inputs, the result is ln(2**-(f//2)) (-5.545 at
    2/16): a documented clamp (the input is private; checking it would reveal it)."""
    x = expect_shared(x, "log")
    require_bits(x, "log", base2=True)
    with torch.no_grad():
        n = Norm(x, domain or log_domain(x), below=_below(domain, below))
        u = n.m - 1.0
        y = poly(powers(u), fit("log1p", 0.0, 1.0)) + n.linear(0.0, math.log(2))
    return x._record(y, [x], lambda g: (g * reciprocal_positive(x.detach(), domain, below=below),))


def reciprocal_positive(
    x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool | None = None
) -> SharedTensor:
    """1/x for x > 0: (1/m) s, 1/m by 2 Newton-Raphson steps from 24/17 - 8/17 m.
    7 rounds. Backward -g y^2. Below the domain (default: x < 2**-(f//2)) the result is
    2**(f//2) (256 at 2/16), as :class:`~training.normalisation.Norm` says."""
    x = expect_shared(x, "reciprocal")
    require_bits(x, "reciprocal", base2=True)
    with torch.no_grad():
        n = Norm(x, domain or log_domain(x), below=_below(domain, below))
        m = n.m
        y = m * (-8.0 / 17.0) + 24.0 / 17.0  # 48/17 - 32/17 (m/2), halved
        for _ in range(2):
            y = y * (2.0 - m * y)
        out = n.times_pow2(y, -1.0)
    return x._record(out, [x], lambda g: (-(g * out**2),))


@implements(torch.reciprocal, methods=("reciprocal",))
def reciprocal(x: SharedTensor) -> SharedTensor:
    """1/x for x != 0: |x| and the sign from one ReLU, then :func:`reciprocal_positive`
    and one product with the sign. 9 rounds.

    Domain |x| in [2**-(f//2), 2**(31-f)) ([0.0039, 32768) at 2/16: every encodable value
    above 2**-8). For |x| < 2**-8 the result is +-2**8 = +-256 with the sign of x
    (reciprocal(0) = +256, torch: inf): a documented clamp, since the input is private
    and below 2**-8 its encoding has fewer than 8 significant bits anyway."""
    x = expect_shared(x, "reciprocal")
    require_bits(x, "reciprocal", base2=True)
    with torch.no_grad():
        t, b = abs_sign(x)
        out = signed(b, reciprocal_positive(t))
    return x._record(out, [x], lambda g: (-(g * out**2),))


@implements(torch.sqrt, methods=("sqrt",))
def sqrt(
    x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool | None = None
) -> SharedTensor:
    """sqrt(x) for x >= 0: 2**(k/2) sqrt(m), sqrt(m) = p(m - 1) degree 4. 5 rounds.
    Backward g * 0.5 * rsqrt(x).

    Domain (default): every positive encoding, [2**-f, 2**(31-f)); 0 and negative inputs
    give exactly 0 (documented; torch gives nan for x < 0). The backward at x below
    2**-(f//2) is rsqrt's clamp, 2**(f//4 - 1) (8 at 2/16; torch: inf at 0)."""
    x = expect_shared(x, "sqrt")
    require_bits(x, "sqrt", base2=True)
    with torch.no_grad():
        n = Norm(x, domain or sqrt_domain(x), below=_below(domain, below))
        p = poly(powers(n.m - 1.0), fit("sqrt1p", 0.0, 1.0))
        y = n.times_pow2(p, 0.5, low_zero=True)
    return x._record(y, [x], lambda g: (g * (rsqrt(x.detach(), None) * 0.5),))


@implements(torch.rsqrt, methods=("rsqrt",))
def rsqrt(
    x: SharedTensor,
    domain: tuple[int, int] | None = None,
    *,
    scale_bits: int = 0,
    below: bool | None = None,
) -> SharedTensor:
    """1/sqrt(x) for x > 0: 2**(-k/2) p(m - 1). 5 rounds. Backward -g y^3 / 2.
    Default domain as :func:`log`; below it the result is 2**(f//4) (16 at 2/16).

    ``scale_bits`` s > 0 returns ``2**s / sqrt(x)`` (no autograd): the selected constants
    ``2**(s - k/2)`` keep s more significant bits for large x, where ``2**(-k/2)`` is only
    a few units of the encoding."""
    x = expect_shared(x, "rsqrt")
    require_bits(x, "rsqrt", base2=True)
    if scale_bits and torch.is_grad_enabled() and x.requires_grad:
        raise UnsupportedOperation("rsqrt(scale_bits=...) has no backward; use no_grad")
    with torch.no_grad():
        n = Norm(x, domain or log_domain(x), below=_below(domain, below))
        p = poly(powers(n.m - 1.0), fit("recip_sqrt1p", 0.0, 1.0))
        y = n.times_pow2(p, -0.5, float(scale_bits))
    return x._record(y, [x], lambda g: (-(g * (y**2 * y) * 0.5),))


def div(a: Any, b: SharedTensor) -> SharedTensor:
    """a / b for a shared b (nonzero): a * reciprocal(b)."""
    require_bits(b, "division by a SharedTensor", base2=True)
    return reciprocal(b) * a if not isinstance(a, SharedTensor) else a * reciprocal(b)


# -- sin / cos ----------------------------------------------------------------------------------

_TWO_PI_BITS = 24
"""2 pi is multiplied in as the integer round(2 pi 2**24) (an exact public integer product)
and the result truncated to the handle's precision, so r = x - 2 pi k carries ~u of error
for every encodable x instead of k 2**-17 from a 16-bit 2 pi."""


def _reduce_angle(x: SharedTensor) -> SharedTensor:
    """r = x - 2 pi k in (-2 pi, 2 pi): k = floor(x / 2 pi) (or one more) by one local
    truncation of x / 2 pi to an integer (precision 0): the truncation's one-unit error
    only moves r by one period, which sin does not see. Local, no rounds."""
    f = x.fp.precision
    t = x * (1.0 / (2 * math.pi))
    k = t._op("trunc", [], t.shape, Params(d=x.fp.base**t.prec), prec=0)
    shift = x.fp.base**_TWO_PI_BITS if x.fp.base == 2 else None
    if shift is None or f >= _TWO_PI_BITS:
        k2pi = k * (2 * math.pi)
    else:
        big = k * round(2 * math.pi * shift)  # precision 0 holding k 2 pi 2**24
        k2pi = big._op("trunc", [], big.shape, Params(d=2 ** (_TWO_PI_BITS - f)), prec=f)
    return x - k2pi


def _sin_core(x: SharedTensor) -> SharedTensor:
    """sin(x) for any encodable x, no autograd. r = x - 2 pi k (local); w = r - pi sgn(r)
    in [-pi, pi) with sin(x) = -sin(w) (1 comparison); |w| and its sign (1 ReLU); z = |w|
    - pi/2 in [-pi/2, pi/2] and sin|w| = cos(z), a degree-4 least-squares polynomial in
    z**2 (fit error 4.7e-8; z**2, z**4, z**6 z**8: 3 rounds); the sign (1 product, no
    truncation). 6 rounds."""
    with torch.no_grad():
        r = _reduce_angle(x)
        b = r.drelu()
        w = r + math.pi - b * (2 * math.pi)
        a, sb = abs_sign(w)
        z2 = (a - math.pi / 2) ** 2
        c = poly(powers(z2), fit("cos_sqrt", 0.0, math.pi**2 / 4))
        return (1 - sb * 2) * c


@implements(torch.sin, methods=("sin",))
def sin(x: SharedTensor) -> SharedTensor:
    """torch.sin: range reduction by 2 pi (local, every encodable x), then symmetry and a
    polynomial (:func:`_sin_core`): 6 rounds. Backward g cos(x) (6 more)."""
    x = expect_shared(x, "sin")
    require_bits(x, "sin", base2=True)
    y = _sin_core(x)
    return x._record(y, [x], lambda g: (g * _sin_core(x.detach() + math.pi / 2),))


@implements(torch.cos, methods=("cos",))
def cos(x: SharedTensor) -> SharedTensor:
    """torch.cos = sin(x + pi/2): 6 rounds. Backward -g sin(x)."""
    x = expect_shared(x, "cos")
    require_bits(x, "cos", base2=True)
    with torch.no_grad():
        y = _sin_core(x + math.pi / 2)
    return x._record(y, [x], lambda g: (-(g * _sin_core(x.detach())),))
