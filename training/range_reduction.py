"""Smooth functions computed after a range reduction: log, reciprocal, sqrt, rsqrt,
division by a share, sin and cos.

* **exp** (and softmax's exp for z <= 0) is :mod:`training.exponential`'s, re-exported here.
* **range normalisation by powers of two** (log, reciprocal, sqrt, rsqrt): a search over
  the exponent (:class:`~training.normalisation.Norm`: 6 comparisons in 3 levels for the
  default domains; reciprocal, sqrt and rsqrt search even exponents only, 4 comparisons,
  sqrt's wider domain 5) gives ``m = x 2**-k`` in [1, 2) (log) or [1, 4), ``k`` linearly
  and the constants ``2**(a k)`` as exact integer products. Then a degree-4 polynomial in
  ``m - 1`` (log), degree 7 / 8 in ``(m - 2.5) / 2`` (sqrt, rsqrt) or Newton-Raphson for
  ``1/m`` from the linear start ``40/41 - 8/41 m`` (relative error 9/41 on [1, 4];
  :func:`_inverse_m` leaves (9/41)**8 < 5.5e-6). Powers of two must be exact in fixed point,
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

import math
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np
import torch

from protocols import shapes as S
from protocols.errors import UnsupportedOperation
from protocols.params import Params

from .approximation import (
    abs_sign,
    expect_shared,
    fit,
    frac_bits,
    powers,
    require_bits,
    signed,
)
from .exponential import exp, exp_domain, exp_nonpositive, exp_pow2_domain
from .normalisation import COEFF_BITS, Norm, lower, reinterpret
from .registry import implements
from .tensor import SharedTensor

__all__ = ["exp", "exp_domain", "exp_nonpositive", "exp_pow2_domain"]


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
        top = max(abs(n.klo), abs(n.klo + sum(s * r for s, r in n.levels))) * math.log(2) + 1
        y = int_poly(powers(n.m - 1.0), fit("log1p", 0.0, 1.0), top, (n.exponent(), n.klo))
    return x._record(y, [x], lambda g: (g * reciprocal_positive(x.detach(), domain, below=below),))


def reciprocal_positive(
    x: SharedTensor,
    domain: tuple[int, int] | None = None,
    *,
    below: bool | None = None,
    numerator: SharedTensor | None = None,
    sign: SharedTensor | None = None,
) -> SharedTensor:
    """1/x for x > 0: (1/m) 2**-k, 1/m by :func:`_inverse_m` (5 rounds), times
    ``sign`` (an integer share of +-1, reciprocal's) in the same products. Backward -g y^2. Below the domain (default: x < 2**-(f//2)) the result is
    2**(f//2) (256 at 2/16), as :class:`~training.normalisation.Norm` says."""
    x = expect_shared(x, "reciprocal")
    require_bits(x, "reciprocal", base2=True)
    with torch.no_grad():
        n = Norm(x, domain or log_domain(x), below=_below(domain, below), step=2)
        ymax = _NUMERATOR_MAX if numerator is not None else 1.0
        y = _inverse_m(n.m, numerator, max(0, -n.klo))
        out = n.times_pow2(y, -1.0, ymax=ymax, factor=sign)
    return x._record(out, [x], lambda g: (-(g * out**2),))


@implements(torch.reciprocal, methods=("reciprocal",))
def reciprocal(x: SharedTensor) -> SharedTensor:
    """1/x for x != 0: |x| and the sign from one ReLU, then :func:`reciprocal_positive`
    with the sign in its power-of-two factor (no product of its own).

    Domain |x| in [2**-(f//2), 2**(31-f)) ([0.0039, 32768) at 2/16: every encodable value
    above 2**-8). For |x| < 2**-8 the result is +-2**8 = +-256 with the sign of x
    (reciprocal(0) = +256, torch: inf): a documented clamp, since the input is private
    and below 2**-8 its encoding has fewer than 8 significant bits anyway."""
    x = expect_shared(x, "reciprocal")
    require_bits(x, "reciprocal", base2=True)
    with torch.no_grad():
        t, b = abs_sign(x)
        out = reciprocal_positive(t, sign=b * 2 - 1)
    return x._record(out, [x], lambda g: (-(g * out**2),))


@implements(torch.sqrt, methods=("sqrt",))
def sqrt(
    x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool | None = None
) -> SharedTensor:
    """sqrt(x) for x >= 0: 2**(k/2) sqrt(m), k even, sqrt(m) by :func:`_mantissa_poly`.
    Backward g * 0.5 * rsqrt(x).

    Domain (default): every positive encoding, [2**-f, 2**(31-f)); 0 and negative inputs
    give exactly 0 (documented; torch gives nan for x < 0). The backward at x below
    2**-(f//2) is rsqrt's clamp, 2**(f//4 - 1) (8 at 2/16; torch: inf at 0)."""
    x = expect_shared(x, "sqrt")
    require_bits(x, "sqrt", base2=True)
    with torch.no_grad():
        n = Norm(x, domain or sqrt_domain(x), below=_below(domain, below), step=2)
        y = n.times_pow2(_mantissa_poly(n.m, "sqrt1p"), 0.5, low_zero=True, ymax=2.0)
    return x._record(y, [x], lambda g: (g * (rsqrt(x.detach(), None) * 0.5),))


@implements(torch.rsqrt, methods=("rsqrt",))
def rsqrt(
    x: SharedTensor,
    domain: tuple[int, int] | None = None,
    *,
    scale_bits: int = 0,
    below: bool | None = None,
) -> SharedTensor:
    """1/sqrt(x) for x > 0: 2**(-k/2) p(m), k even (:func:`_mantissa_poly`). Backward
    -g y^3 / 2.
    Default domain as :func:`log`; below it the result is 2**(f//4) (16 at 2/16).

    ``scale_bits`` s > 0 returns ``2**s / sqrt(x)`` (no autograd): the selected constants
    ``2**(s - k/2)`` keep s more significant bits for large x, where ``2**(-k/2)`` is only
    a few units of the encoding."""
    x = expect_shared(x, "rsqrt")
    require_bits(x, "rsqrt", base2=True)
    if scale_bits and torch.is_grad_enabled() and x.requires_grad:
        raise UnsupportedOperation("rsqrt(scale_bits=...) has no backward; use no_grad")
    with torch.no_grad():
        n = Norm(x, domain or log_domain(x), below=_below(domain, below), step=2)
        p = _mantissa_poly(n.m, "recip_sqrt1p")
        y = n.times_pow2(p, -0.5, float(scale_bits), ymax=1.01)
    return x._record(y, [x], lambda g: (-(g * (y**2 * y) * 0.5),))


_MANTISSA_DEGREE = {"sqrt1p": 7, "recip_sqrt1p": 8}
"""Degrees of sqrt(m) and 1/sqrt(m) on m in [1, 4) (least-squares errors 7.9e-6 and
1.9e-5: `fit_error("sqrt1p", 0, 3, 7)`); the powers of v = (m - 2.5) / 2 in [-3/4, 3/4)
are below 2**32 raw."""


def _mantissa_poly(m: SharedTensor, name: str) -> SharedTensor:
    """sqrt(m) or 1/sqrt(m) for m in [1, 4): a polynomial in v = (m - 2.5) / 2 (m - 2.5
    read at one more bit, exact, then one local truncation), its coefficients as integers
    and one truncation (:func:`int_poly`, below 2**33 raw). 3 rounds (degree <= 8)."""
    f = m.prec
    v = lower(reinterpret(m - 2.5, f + 1), f)
    deg = _MANTISSA_DEGREE[name]
    c = fit(name, 0.0, 3.0, deg, 1.5)
    coeffs = [ci * 2.0**i for i, ci in enumerate(c)]
    ends = [float(sum(ci * (w**i) for i, ci in enumerate(coeffs))) for w in (-0.75, 0.75)]
    bound = max(abs(e - coeffs[0]) for e in ends) * 1.05
    return int_poly(powers(v, deg), coeffs, bound)


def div(a: Any, b: SharedTensor) -> SharedTensor:
    """a / b for a shared b (nonzero). A shared a: ``a (1/m) 2**-k`` with b's sign on a
    (the quotient's large values are exact products, no truncation of a large value:
    every one below 2**33 raw for |a| <= 2); a public a: ``a * reciprocal(b)``."""
    require_bits(b, "division by a SharedTensor", base2=True)
    if not isinstance(a, SharedTensor):
        return reciprocal(b) * a
    b = expect_shared(b, "division")
    t, sb = abs_sign(b)
    num = signed(sb, a)
    with torch.no_grad():
        q = reciprocal_positive(t.detach(), numerator=num.detach())
    inv = None

    def back(g: Any) -> tuple[Any, Any]:
        nonlocal inv
        if inv is None:
            inv = reciprocal(b.detach())
        return (g * inv if a.requires_grad else None, -(g * q * inv) if b.requires_grad else None)

    return q._record(q, [a, b], back)


_NUMERATOR_MAX = 2.0
"""1/m times a numerator of at most 2 in magnitude keeps the product below 2**33 raw."""


_INVERSE_GUARD = 2
"""Bits 1/m keeps beyond f (1/m in (1/4, 1]: 2 more bits keep its relative rounding as on
[1/2, 1])."""


def _inverse_m(m: SharedTensor, numerator: SharedTensor | None, extra: int = 0) -> SharedTensor:
    """1/m for m in [1, 4) (times ``numerator``): one Newton-Raphson step from the start
    40/41 - 8/41 m (relative error e0 = 9/41, the best linear start on [1, 4]) gives y1
    with e1 = 1 - m y1 = e0**2 < 0.049; then ``Y = y1 + y1 e1`` and ``Y + Y e1**2`` (=
    y1 (1 + e1)(1 + e1**2), relative error e1**4 < 5.5e-6; e1 y1 and e1**2 side by side:
    5 rounds, 6 products). The start's coefficient is the integer round(8/41 2**16) (an
    exact product below 2**32 raw, one truncation); m y ~ 1 and y (2 - m y) < 1 stay below
    2**33 raw, the corrections are small. 1/m at f + 2 bits (the numerator's product
    reads it at f)."""
    f = m.prec
    g = f + _INVERSE_GUARD
    start = m * -round(8 / 41 * 2**f)
    y = start._op("trunc", [], m.shape, Params(d=2**f)) + 40.0 / 41.0
    y = y * (2.0 - m * y)
    e = 1.0 - _mul_at(m, y, g)  # at g bits
    big = y._at_prec(g) + _mul_at(y, e, g)
    y = big + _mul_at(big, _mul_at(e, e, g), g)
    if numerator is None:
        return y
    # the quotient's digits: a / m at f + ``extra`` (-klo) bits, since 2**-k multiplies
    # it by up to 2**-klo (256 at 2/16); the product's raw a y 2**(2f) is truncated once
    y = lower(y, f)
    num = lower(numerator, f)
    return _mul_at(y, num, f + extra)


def _mul_at(a: SharedTensor, b: SharedTensor, prec: int) -> SharedTensor:
    """a * b (Beaver) truncated to precision ``prec`` (base 2)."""
    shape = S.broadcast("mul", a.shape, b.shape)
    return a._op("mul", [b], shape, Params(d=2 ** (a.prec + b.prec - prec)), prec=prec)


def int_poly(
    pw: Sequence[Any],
    coeffs: Sequence[float],
    bound: float,
    linear: tuple[SharedTensor, float] | None = None,
) -> SharedTensor:
    """sum c_i pw[i] (pw[i] at precision f, |result| <= ``bound``): each power times the
    integer round(c_i 2**b), summed and truncated once by 2**b (below 2**33 raw; the
    public scalings poly uses truncate ~2**36). ``linear`` (k, klo) adds (k + klo) ln 2
    for the integer share k: k round(ln 2 2**(f + b)) in the same sum, so ln 2's rounding
    times k is ~2**-(f + b) instead of k 2**-(f + 1)."""
    p1 = pw[1]
    f = p1.prec
    b = math.floor(COEFF_BITS - f - math.log2(bound))
    acc: Any = None
    for p, cf in zip(pw[1:], coeffs[1:], strict=False):
        term = p * round(float(cf) * 2**b)
        acc = term if acc is None else acc + term
    const = float(coeffs[0])
    if linear is not None:
        k, klo = linear
        # public integer factors stay below 2**31: past 2**30 ln 2 is taken at 30 bits and
        # shifted (a small domain, e.g. log of [1, 2], has f + b up to 33)
        e = min(f + b, 30)
        kt = k * round(math.log(2) * 2**e)
        if f + b > e:
            kt = kt * 2 ** (f + b - e)
        kt = reinterpret(kt, f)
        acc = acc + kt
        const += klo * math.log(2)
    return acc._op("trunc", [], acc.shape, Params(d=2**b)) + const


@cache
def _sqrt_plus_coeffs(degree: int) -> tuple[float, ...]:
    """``1 + a_1 u + ... + a_d u**d`` for ``c(u) = 1 / (u + sqrt(1 - u**2))`` on [0, 1],
    fitted (iteratively reweighted least squares on a log grid of q = sqrt(V / floor)) for
    the error of the step in units of lr, ``|m| <= sqrt(v)``: at most 0.29% of lr at degree
    6, 0.30% relative for q > 10 (gradients well above eps); exact at u = 0."""
    q = np.geomspace(1e-4, 1e5, 20001)
    u = 1.0 / np.sqrt(q * q + 1.0)
    c = 1.0 / (u + np.sqrt(1.0 - u * u))
    scale = q / (1.0 + q) / c  # error of c relative to c, in lr units
    a = np.stack([u**i for i in range(1, degree + 1)], 1)
    w = scale.copy()
    for _ in range(30):
        sol = np.linalg.lstsq(a * w[:, None], (c - 1.0) * w, rcond=None)[0]
        err = np.abs(a @ sol - (c - 1.0)) * scale
        w = w * (1.0 + err / err.max())
    return (1.0, *(float(v) for v in sol))


def sqrt_plus_correction(u: SharedTensor, degree: int = 6) -> SharedTensor:
    """``c(u) = 1 / (u + sqrt(1 - u**2))`` for u in [0, 1]: with ``u = e rsqrt(v + e**2)``,
    ``rsqrt(v + e**2) c(u) = 1 / (sqrt(v) + e)`` (Adam's denominator, torch's form, from
    the one rsqrt; the rsqrt alone is up to sqrt(2) times it, at sqrt(v) = e, and 9.5% more
    at 10 e). A polynomial in u, integer coefficients and one truncation (c in
    [1/sqrt(2), 1]): 3 rounds."""
    coeffs = _sqrt_plus_coeffs(degree)
    grid = np.linspace(0.0, 1.0, 1001)
    bound = float(np.abs(np.polynomial.polynomial.polyval(grid, coeffs) - 1.0).max()) * 1.05
    return int_poly(powers(u, degree), coeffs, bound)


# -- sin / cos ----------------------------------------------------------------------------------

_SPLIT_BITS = 14
"""x's raw integer is x_h 2**14 + x_l (x_h by one local truncation of x, |x_l| < 2**14):
k's estimate x / 2 pi is x_h round(2**19 / 2 pi) + 5 x_l read at f + 5 bits, two exact
integer products (below 2**33.35 raw at 2/16). One public product of x by 1 / 2 pi was
~2**50 raw before its truncation: garbage in ~1 element in 4,000 above |x| = 16,000."""
_R_BITS = 28
"""r = x - 2 pi k is formed at 28 bits: 2 pi as the integer round(2 pi 2**28) (below
2**31), k times it exact (no truncation), then r (below 2**31 raw) lowered to f."""


@cache
def _reduction(f: int) -> tuple[int, int, int, int, int, float]:
    """(s, round(2**(s+5) / 2 pi), the low part of that constant at m more bits (0 if
    not needed), m, round(2 pi 2**28), the bound eps on |x / 2 pi - T| (T = k's estimate
    before its truncation)) for f fractional bits. Every |x| < 2**(31 - f), plus pi / 2
    (cos)."""
    s = min(_SPLIT_BITS, f)
    a = 2.0 ** (s + 5) / (2 * math.pi)
    c = 2.0**5 / (2 * math.pi)
    xh = (2**31 + 2 ** (f + 1)) / 2**s + 1  # |x_h| (x + pi/2 at the top, cos)
    err = xh * abs(round(a) - a) + 2**s * abs(5 - c)  # units of 2**-(f + 5)
    lo, m = 0, 0
    if err > 2.0 ** (f + 5) / 256:  # f < 14: a's 2**(s + 5) is too coarse alone
        m = math.floor(33.5 - math.log2(xh * abs(round(a) - a)))
        lo = round((a - round(a)) * 2**m)
        err = xh * 2.0 ** -(m + 1) + 1 + 2**s * abs(5 - c)
    return s, round(a), lo, m, round(2 * math.pi * 2**_R_BITS), err / 2.0 ** (f + 5)


def _reduce_angle(x: SharedTensor) -> tuple[SharedTensor, float]:
    """r = x - 2 pi k with |r| < 2 pi (1 + eps), and eps: k = x / 2 pi truncated to an
    integer (floor or one more: a one-unit error only moves r by a period, which sin does
    not see), from x_h and x_l (:data:`_SPLIT_BITS`); r from k round(2 pi 2**28)
    (:data:`_R_BITS`). Three local truncations in a chain (x_h: x itself, below 2**31 raw;
    the estimate, below 2**33.35; r, below 2**31; below 16 bits a fourth, the constant's
    low part), each below 2**34 raw for every encodable x; r's error is r's one
    truncation plus k 2**-28 0.065 (< 1.3e-6 at 2/16); eps = 0.0024 at 2/16. No rounds
    with 2 parties (3 with more, as before)."""
    f = frac_bits(x)
    x = lower(x, f)._at_prec(f)  # at the encoding's precision
    s, a, lo, m, two_pi, eps = _reduction(f)
    e = f + 5
    xh = lower(x, f - s)  # x_h at f - s bits: its raw integers are x's over 2**s
    xl = x - xh._at_prec(f)  # |x_l| < 2**s raw
    t = reinterpret(xh * a, e) + reinterpret(xl * 5, e)
    if lo:
        t = t + lower(reinterpret(xh * lo, e + m), e)
    k = lower(t, 0)
    q = _R_BITS  # above f but at 29 or 30 bits (|x| < 4), where x loses bits below 2**-28
    r = lower(x, q)._at_prec(q) - reinterpret(k * two_pi, q)
    return lower(r, f)._at_prec(f), eps


def _sin_core(x: SharedTensor) -> SharedTensor:
    """sin(x) for any encodable x, no autograd. r = x - 2 pi k (local, |r| < 2 pi (1 +
    eps)); w = r - pi sgn(r), |w| < pi (1 + 2 eps), with sin(x) = -sin(w) (1 comparison);
    |w| and its sign (1 ReLU); z = |w| - pi/2 and sin|w| = cos(z), a degree-4
    least-squares polynomial in u = z**2 / 2 on [0, (pi/2 + 2 pi eps)**2 / 2] (fit error
    5.3e-8), u <= 1.27 so u**4 stays below 2**33.4 raw (z**2's powers reached 2**37 and
    their public scalings 2**39), its integer coefficients summed and truncated once (as
    :func:`int_poly`; u**2 in 1 round, u**3 and u**4 in the next); the sign (1 product, no
    truncation). 6 rounds. Error 5.3e-5 at 2/16 (docs/ops.md)."""
    with torch.no_grad():
        r, eps = _reduce_angle(x)
        b = r.drelu()
        w = r + math.pi - b * (2 * math.pi)
        a, sb = abs_sign(w)
        z = a - math.pi / 2
        u = z._op("square", [], z.shape, Params(d=2 ** (z.prec + 1)))  # z**2 / 2
        zmax = math.pi / 2 + 2 * math.pi * eps + 2.0**-8
        c = fit("cos_sqrt", 0.0, zmax**2)
        # int_poly's integer coefficients, at f bits or more (above 16 bits int_poly's
        # 2**33 sum would leave them fewer than f)
        f = u.prec
        cb = max(f, math.floor(COEFF_BITS - f - math.log2(1.05 * (1.0 - math.cos(zmax)))))
        acc: Any = None
        for i, p in enumerate(powers(u)[1:], start=1):
            term = p * round(c[i] * 2.0 ** (i + cb))  # u**i's coefficient, c_i 2**i
            acc = term if acc is None else acc + term
        y = lower(reinterpret(acc, f + cb), f) + c[0]
        return (1 - sb * 2) * y


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
