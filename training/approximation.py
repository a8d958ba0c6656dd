"""The approximation machinery of the smooth functions: polynomial fits, powers, and the
selection of piecewise segments by comparison bits.

Every smooth function computes its forward under ``torch.no_grad()`` from primitives and
records one backward rule beside it (the analytic derivative, e.g. ``sigmoid' = y -
y**2``), so the backward pass costs a few products instead of differentiating the
approximation. Rounds below are for 2 parties with the default suite, where a comparison
(FSS DReLU/ReLU) costs 1 round and 8 bytes per element and a truncation is local; see
docs/ops.md for the measured table.

* **fits** (:func:`fit`): least-squares polynomials (degree 4) on Chebyshev points,
  computed at import (cached); :func:`fit_error` gives their error for docs and tests.
* **powers** (:func:`powers`): ``t**2`` (1 round), ``t**3, t**4`` (1 round), shared by
  every segment; a polynomial in them is a local public combination (:func:`poly`).
* **piecewise polynomials** (:func:`piecewise`, the activations'): the input is compared
  with all knots at once (1 round, 8 B per knot: :func:`knot_bits`, or
  :func:`knot_bits_batched` for many knots as one op), each segment has its own
  polynomial in ``u = t - centre`` (exact products, every truncation below
  2**34 raw at 2/16: :class:`Plan`), and the segments are selected by the telescoping sum
  ``p_0 + sum_k [t >= k_k] (p_k - p_{k-1})`` (:func:`select`, 1 round: products with a
  comparison bit need no truncation). Values of a polynomial far outside its segment
  cancel exactly in the ring, so no clamping is needed.
* **odd/even symmetry** (:func:`abs_sign`, :func:`signed`): one ReLU gives ``t = |x|`` and
  the sign bit in 1 round; :func:`piecewise` folds the sign into the selection (the bits
  times the sign beside u**2; the signed sum telescoped from the tail's 0, one product
  per bit).

Accuracy needs fractional bits (:func:`require_bits`): use base 2 with 16 bits
(``cluster.share(t, precision=16, base=2)``) for the smooth functions; the default base 10
/ precision 3 (resolution 0.001) suffices for ReLU, pooling, conv, linear, MSE and L1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from protocols.errors import UnsupportedOperation
from protocols.params import Params

from .shaping import cat
from .tensor import SharedTensor

DEGREE = 4

# -- polynomial fits ------------------------------------------------------------------------


def _log1p_exp_neg(t: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-t))


def _normal_cdf_odd(t: np.ndarray) -> np.ndarray:
    """Phi(t) - 1/2 = erf(t / sqrt 2) / 2 (GELU's pieces)."""
    return 0.5 * np.vectorize(math.erf, otypes=[float])(np.asarray(t) / math.sqrt(2.0))


FUNCS: dict[str, Any] = {
    "sigmoid_odd": lambda t: 1.0 / (1.0 + np.exp(-t)) - 0.5,
    "tanh": np.tanh,
    "softplus_even": _log1p_exp_neg,
    "normal_cdf_odd": _normal_cdf_odd,
    "exp": np.exp,
    "log1p": np.log1p,
    "recip_sqrt1p": lambda u: 1.0 / np.sqrt(1.0 + u),
    "sqrt1p": lambda u: np.sqrt(1.0 + u),
    "cos_sqrt": lambda s: np.cos(np.sqrt(s)),
}


@cache
def fit(
    name: str, lo: float, hi: float, degree: int = DEGREE, centre: float = 0.0
) -> tuple[float, ...]:
    """Least-squares polynomial (monomial coefficients, low to high) of ``name`` on
    [lo, hi], from 4001 Chebyshev points, in the variable ``t - centre``."""
    k = np.arange(4001)
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / 4001)
    c = np.polynomial.polynomial.polyfit(x - centre, FUNCS[name](x), degree)
    return tuple(float(v) for v in c)


def fit_error(name: str, lo: float, hi: float, degree: int = DEGREE, centre: float = 0.0) -> float:
    """Max error of :func:`fit` on a dense grid (for the docs and the tests' bounds)."""
    x = np.linspace(lo, hi, 20001)
    c = fit(name, lo, hi, degree, centre)
    return float(np.abs(np.polynomial.polynomial.polyval(x - centre, c) - FUNCS[name](x)).max())


# -- helpers -----------------------------------------------------------------------------------


def frac_bits(x: SharedTensor) -> int:
    return math.floor(x.fp.precision * math.log2(x.fp.base) + 1e-9)


def expect_shared(x: Any, name: str) -> SharedTensor:
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation(f"{name} expects a SharedTensor, got {type(x).__name__}")
    return x


MIN_BITS = 12
"""Fractional bits the smooth functions need for their stated accuracy."""


def require_bits(x: SharedTensor, name: str, *, base2: bool = False) -> None:
    """Refuse (before anything is queued) a smooth function on too coarse an encoding."""
    if frac_bits(x) < MIN_BITS or (base2 and x.fp.base != 2):
        what = "base 2 with " if base2 else ""
        raise UnsupportedOperation(
            f"{name} needs {what}at least {MIN_BITS} fractional bits for its stated "
            f"accuracy (this tensor has base {x.fp.base}, precision {x.fp.precision}); "
            "share with cluster.share(t, precision=16, base=2) / "
            "cluster.share_module(net, precision=16, base=2)"
        )


def powers(t: SharedTensor, degree: int = DEGREE) -> list[Any]:
    """[1, t, t**2, ...]: t**2 in 1 round, t**3 and t**4 together in the next."""
    pw: list[Any] = [1.0, t]
    if degree >= 2:
        pw.append(t**2)
    if degree >= 3:
        pw.append(pw[2] * t)
    if degree >= 4:
        pw.append(pw[2] ** 2)
    for k in range(5, degree + 1):
        pw.append(pw[k - 4] * pw[4])
    return pw


def poly(pw: Sequence[Any], coeffs: Sequence[float]) -> SharedTensor:
    out: Any = None
    for p, c in zip(pw[1:], coeffs[1:], strict=False):
        term = p * float(c)
        out = term if out is None else out + term
    assert isinstance(out, SharedTensor)
    return out + float(coeffs[0])


def select(bits: Sequence[SharedTensor], values: Sequence[Any]) -> SharedTensor:
    """``values[0] + sum_k bits[k] * (values[k+1] - values[k])``: the value of the segment
    the bits select (bits[k] = [t >= knot k]); 1 round."""
    out: Any = values[0]
    for b, lo, hi in zip(bits, values[:-1], values[1:], strict=True):
        diff = hi - lo
        if not isinstance(diff, SharedTensor):
            diff = float(diff)
            if diff == 0.0:
                continue
        term = b * diff
        out = term + out if isinstance(out, SharedTensor) else term + float(out)
    assert isinstance(out, SharedTensor)
    return out


PRODUCT_BITS = 34
"""A 2-party local truncation of x fails with probability |x| / 2**64 per element (README,
"Truncation failure"); the documented rate 2**-30 needs |x| < 2**34 raw. :func:`piecewise`
keeps every truncated value in the domain below it at 2/16 (``tests/test_edges_at_scale.py``
checks every truncation of an instrumented run)."""

CENTRED_EXTRA_BITS = 20
"""At most this many extra fractional bits for the sum of a segment's terms (exact products
of the powers and public integer coefficients), truncated once after the selection;
fewer where |h| 2**(f + e) would pass 2**33 (:func:`plan`)."""

_CONST_BITS = 30
"""The constant terms are selected as integers ``round(c 2**30)`` (below 2**31 for
|c| < 1: a public integer factor must be) times the bits, so each element's constant
carries ~2**-31 of rounding (fewer digits in another base: ``base**d <= 2**30``)."""


@dataclass(frozen=True)
class Plan:
    """How :func:`piecewise` evaluates a table at one encoding (digits of its base; the
    tests derive their error bounds from it).

    * ``cents``: the segments' centres in units of ``base**-f``; ``half``: max |u|, u = t
      minus its segment's centre; ``coeffs``: the fits in u, per segment.
    * ``d2``: u**2 (raw ``(half base**f)**2``) is truncated by ``base**d2`` and kept at
      ``2 f - d2`` digits, so that u**3 = u**2 u and u**4 = (u**2)**2 stay below
      2**PRODUCT_BITS raw (sigmoid, |u| <= 1.5 at 2/16: 17 bits; u**4 at 16 bits was
      2**34.3 raw).
    * ``w``: the digits of the sum (f + e, ``2 max|h| base**w <= 2**34``: sigmoid 34 bits
      at 2/16, tanh and softplus 33; with 36 (e = 20) the truncation was 2**35-2**36 raw).
    * ``pis``: the digits at which u, u**2, u**3, u**4 enter the sum: each term ``u**k
      round(c_k base**(w - pi_k))`` is exact at w digits, and pi_k balances the power's
      truncation (|c_k| base**-pi_k) against its coefficient's rounding (half**k
      base**(pi_k - w) / 2): with all powers at 16 bits the rounding of the coefficients
      of u**4 on softplus's [5, 8.5] alone was up to 3.6e-5.
    * ``cd``: digits of the constants."""

    cents: tuple[int, ...]
    half: float
    coeffs: tuple[tuple[float, ...], ...]
    d2: int
    w: int
    pis: tuple[int, ...]
    cd: int

    def power_errors(self, base: int, f: int) -> list[float]:
        """Bounds of the errors of u, u**2, u**3, u**4 as they enter the sum (one unit per
        truncation; u itself is exact)."""
        p2, h = 2 * f - self.d2, self.half
        unit = [float(base) ** -p for p in self.pis]
        e2 = float(base) ** -p2
        return [
            0.0 if self.pis[0] >= f else unit[0],
            e2 + (unit[1] if self.pis[1] < p2 else 0.0),
            h * e2 + unit[2],
            2 * h * h * e2 + e2 * e2 + unit[3],
        ]

    def ints(self, base: int) -> list[list[int]]:
        """Each segment's coefficients of u**1..u**4 as the public integers of the sum."""
        return [
            [round(c * float(base) ** (self.w - p)) for c, p in zip(cs[1:], self.pis, strict=True)]
            for cs in self.coeffs
        ]


@cache
def plan(name: str, knots: tuple[float, ...], tail: float, base: int, f: int) -> Plan:
    """The :class:`Plan` of the table ``name`` on ``knots`` at ``base**-f``."""
    scale, lb = float(base) ** f, math.log2(base)
    segs = list(pairwise(knots))
    cents = tuple(round((a + b) / 2 * scale) for a, b in segs)
    half = max(max(b - c / scale, c / scale - a) for (a, b), c in zip(segs, cents, strict=True))
    coeffs = tuple(
        fit(name, a, b, DEGREE, c / scale) for (a, b), c in zip(segs, cents, strict=True)
    )
    raw_u = half * scale
    d2 = f
    while d2 < 2 * f:
        r2 = raw_u * raw_u / float(base) ** d2
        if r2 * max(r2, raw_u) < 2**PRODUCT_BITS:
            break
        d2 += 1
    grid = np.linspace(knots[0], knots[-1], 200001)
    top = max(float(np.abs(FUNCS[name](grid)).max()), abs(tail))
    room = PRODUCT_BITS - 1 - math.log2(top) if top > 0 else PRODUCT_BITS - 1
    e = min(math.floor(room / lb + 1e-9), math.floor((f * lb + CENTRED_EXTRA_BITS) / lb + 1e-9))
    w = max(e, f)
    p2 = 2 * f - d2
    pis = []
    for k in range(1, DEGREE + 1):
        cmax = max(abs(cs[k]) for cs in coeffs)
        best: tuple[float, int] | None = None
        for pi in range(0, w + 1):
            if cmax * float(base) ** (w - pi) >= 2**31 - 1:
                continue  # the coefficient would not be a public integer factor
            unit = float(base) ** -pi
            native = [f, p2, w + 1, w + 1][k - 1]  # u, u**2 exact down to these digits
            err = cmax * (unit if pi < native else 0.0) + half**k * float(base) ** (pi - w) / 2
            if best is None or err < best[0]:
                best = (err, pi)
        if best is None:
            raise UnsupportedOperation(f"piecewise {name}: coefficients too large for {base}/{f}")
        pis.append(best[1])
    cd = min(w, math.floor(_CONST_BITS / lb + 1e-9))
    return Plan(cents, half, coeffs, d2, w, tuple(pis), cd)


def _exact(a: SharedTensor, b: SharedTensor) -> SharedTensor:
    """``a b`` untruncated, at precision ``a.prec + b.prec`` (the operands read as integers:
    a product of precision-0 values needs no truncation)."""
    ai = _reinterpret(a, 0)
    p = ai._square() if a is b else ai * _reinterpret(b, 0)
    return _reinterpret(p, a.prec + b.prec)


def _to_prec(x: SharedTensor, prec: int) -> SharedTensor:
    """x at another precision: exact upwards, one local truncation (raw |x|) downwards."""
    if prec >= x.prec:
        return x._at_prec(prec)
    return x._op("trunc", [], x.shape, Params(d=x.fp.base ** (x.prec - prec)), prec=prec)


def piecewise(
    t: SharedTensor, name: str, knots: Sequence[float], tail: float, sign: Any = None
) -> SharedTensor:
    """``sign * h(t)``, h the piecewise degree-4 fit of ``name`` on ``knots`` (t >=
    knots[0]) and ``tail`` beyond the last knot; ``sign`` a shared +-1 at precision 0 (or
    None). Rounds: the knot bits (1); u**2 with the signed bits (1); u**3, u**4 (1); the
    selection (1): 4 after t, as before centring (without a sign 4 as well, one more than
    powers of t itself, whose bits ran beside t**2).

    Every truncated value stays below 2**34 raw in the domain at 2/16 (a 2-party local
    truncation fails with probability |x| / 2**64 per element; 2**-30 is the documented
    rate), the choices in :class:`Plan`:

    * the powers are of ``u = t - c``, c the centre of t's segment, selected exactly from
      the bits (bits times integers at precision 0), so |u| <= half the widest segment;
      the products are taken exactly (operands read as integers) and each truncated once
      by a chosen power of the base (sigmoid, |u| <= 1.875: u**2 2**33.8, u**3 2**33.7,
      u**4 2**33.6 raw, the sum 2**33.0; 4 knots, |u| <= 1.5: 2**33.2, 2**32.8, 2**32.3). Powers of t itself reached t**4 = 2**44 raw on [5, 8] (sigmoid on 3 * 10**5
      values there failed).
    * each segment's polynomial is a sum of exact integer products at w digits; the bits
      select among them (bit products need no truncation) and the sum is truncated once,
      ``|h| 2**w`` raw (< 2**33).
    * constant terms are selected as bits times integers ``round(c 2**30)``: added as
      public constants at f bits each would be rounded the same way for every element of
      its segment (a bias a sum over many elements accumulates).

    Beyond the last knot u is unbounded and the powers are garbage (their truncations may
    fail), but every bit is 1 there and the telescoping selection leaves exactly the tail
    (ring arithmetic)."""
    f, base = t.prec, t.fp.base
    pl = plan(name, tuple(knots), tail, base, f)
    bits = knot_bits(t, knots[1:])  # bits[k] = [t >= knots[k + 1]]
    cents = pl.cents
    offset = _int_select(None, bits, [c - cents[0] for c in [*cents, cents[-1]]])
    u = (t - cents[0] / float(base) ** f) - _reinterpret(offset, f)
    u2 = _to_prec(_exact(u, u), 2 * f - pl.d2)  # beside the signed bits (1 round)
    sel = bits if sign is None else [sign * b for b in bits]  # exact: precision 0
    u3 = _to_prec(_exact(u2, u), pl.pis[2])  # u**3 and u**4 in 1 round
    u4 = _to_prec(_exact(u2, u2), pl.pis[3])
    pw = [_to_prec(u, pl.pis[0]), _to_prec(u2, pl.pis[1]), u3, u4]
    qs: list[Any] = []
    for ks in pl.ints(base):
        q: Any = None
        for p, k in zip(pw, ks, strict=True):
            term = _reinterpret(p * k, pl.w)  # exact: p's digits plus k's are w
            q = term if q is None else q + term
        qs.append(q)
    if sign is None:
        qs.append(qs[-1] * 0)  # the tail's non-constant part: a shared 0 at w digits (local)
        y = select(sel, qs)
    else:
        y = _select_signed(sign, sel, qs)
    consts = [cs[0] for cs in pl.coeffs] + [tail]
    ints = [round(c * float(base) ** pl.cd) for c in consts]
    if max(abs(v) for v in ints) >= 2**31:
        raise UnsupportedOperation(f"piecewise {name}: constant terms must be below 1")
    cpart = _reinterpret(_int_select(sign, sel, ints), pl.cd)
    return _to_prec(y + cpart._at_prec(pl.w), f)


def _reinterpret(x: SharedTensor, prec: int) -> SharedTensor:
    """The same ring integers read at precision ``prec`` (free, exact)."""
    return x._op("trunc", [], x.shape, Params(d=1), prec=prec)


def _int_select(sign: Any, bits: Sequence[SharedTensor], ints: Sequence[int]) -> SharedTensor:
    """``first ints[0] + sum_k bits[k] (ints[k+1] - ints[k])`` at precision 0, exact
    (first = sign, or 1 without one): integers selected by the bits, no truncation."""
    out: Any = None if sign is None else sign * int(ints[0])
    for b, lo, hi in zip(bits, ints[:-1], ints[1:], strict=True):
        if hi != lo:
            out = b * int(hi - lo) if out is None else out + b * int(hi - lo)
    if out is None:
        out = bits[0] * 0
    if sign is None and ints[0]:
        out = out + int(ints[0])
    assert isinstance(out, SharedTensor)
    return out


def _select_signed(sign: Any, sel: Sequence[SharedTensor], values: Sequence[Any]) -> SharedTensor:
    """``sum_k (sign - sel[k]) (values[k] - values[k+1])`` (sel = sign * bits, one value
    per segment, 0 beyond the last knot; ``sign - sel[k]`` is ``sign [t < knot k]``): the
    signed value of the selected segment, 1 round (products by +-1/0 at precision 0).
    Telescoped from the tail, whose value is 0, rather than from the first segment (``sign
    values[0] + sum_k sel[k] (values[k+1] - values[k])``): one product per knot instead of
    one more for ``sign values[0]``, 8 dealer bytes and 16 online bytes per party and
    element less."""
    out: Any = None
    for b, v, nxt in zip(sel, values, [*values[1:], None], strict=True):
        term = (sign - b) * (v if nxt is None else v - nxt)
        out = term if out is None else out + term
    assert isinstance(out, SharedTensor)
    return out


def knot_bits(t: SharedTensor, knots: Sequence[float]) -> list[SharedTensor]:
    """``[t >= k]`` for every knot, one comparison op per knot (the activations' few knots:
    sigmoid on 10^4 values keeps its 5 rounds)."""
    return [(t - float(k)).drelu() for k in knots]


def knot_bits_batched(groups: Sequence[tuple[SharedTensor, Sequence[float]]]) -> list[SharedTensor]:
    """``[t >= k]`` for every ``(t, knots)`` group and knot, as ONE comparison op over all of
    them: the same rounds and bytes per element for a given protocol, far fewer ops, and
    the suite chooses the protocol for the whole batch. The range reductions
    (:class:`_Norm`, ~40 knots) use it: one op per knot, an Adam step over 530 parameters
    took 39 FSS comparisons of 530 elements, ~120 KB of dealer keys per parameter; as one op
    of 20,670 elements the default suite takes the carry tree, as its size rule intends
    (6 more rounds, ~100x fewer dealer bytes)."""
    diffs = []
    for t, knots in groups:
        if knots:
            ks = torch.tensor([float(k) for k in knots], dtype=torch.float64)
            diffs.append(t.unsqueeze(0) - ks.reshape(-1, *([1] * t.dim())))
    if not diffs:
        return []
    d = (diffs[0] if len(diffs) == 1 else cat(diffs)).drelu()
    return [d[i] for i in range(int(d.shape[0]))]


def abs_sign(x: SharedTensor) -> tuple[SharedTensor, SharedTensor]:
    """(|x|, sign bit [x >= 0]) from one ReLU (1 round)."""
    r = x.relu()
    assert r._bit is not None
    return r * 2 - x, r._bit


def signed(bit: SharedTensor, h: SharedTensor) -> SharedTensor:
    """``(2 bit - 1) * h``: 1 round, no truncation (the bit has precision 0)."""
    return (bit * 2 - 1) * h
