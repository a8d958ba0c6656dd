"""Smooth functions, activations, maxima and losses on SharedTensors, built from the
suite's secure primitives (comparisons, Beaver products, public scalings).

Every function computes its forward under ``torch.no_grad()`` from primitives and records
one backward rule beside it (the analytic derivative, e.g. ``sigmoid' = y - y**2``), so
the backward pass costs a few products instead of differentiating the approximation.

Approximations (all vectorised; rounds are for 2 parties with the default suite, where a
comparison (FSS DReLU/ReLU) costs 1 round and 8 bytes per element and a truncation is
local; see docs/ops.md for the measured table):

* **piecewise polynomials** (``_piecewise``): the input is compared with all knots at once
  (1 round, 8 B per knot), its powers ``t**2`` (1 round) and ``t**3, t**4`` (1 round) are
  shared by all segments, each segment's least-squares polynomial (degree 4, fitted here
  at import on Chebyshev points) is a local public combination, and the segments are
  selected by the telescoping sum ``p_0 + sum_k [t >= k_k] (p_k - p_{k-1})`` (1 round:
  products with a comparison bit need no truncation). Values of a polynomial far outside
  its segment cancel exactly in the ring, so no clamping is needed.
* **odd/even symmetry** (sigmoid, tanh, softplus): one ReLU gives ``t = |x|`` and the sign
  bit in 1 round; the function on ``t >= 0`` is piecewise; the sign is applied by one
  product with the bit.
* **range normalisation by powers of two** (log, reciprocal, sqrt, rsqrt): bits
  ``[x >= 2**k]`` (1 round) select, linearly, ``s = 2**-k`` and the constants ``k``,
  ``2**(k/2)``; ``m = x * s`` lies in [1, 2) (1 round). Then a degree-4 polynomial in
  ``m - 1`` (log, sqrt, rsqrt) or Newton-Raphson for ``1/m`` from the linear start
  ``24/17 - 8/17 m`` (the classic 48/17 - 32/17 m' start for m' = m/2 in [1/2, 1), relative error
  1/17; 2 iterations leave (1/17)**4 < 1.2e-5).
  ``s = 2**-k`` must be exact in fixed point, hence base 2: with f fractional bits the
  domain is [2**-(f//2), 2**(31-f)), every encodable value above 2**-(f//2) (sqrt: from
  2**-f). Below it (0, negative or tiny inputs) the knot 2**klo itself selects m = 1 and
  the constants of klo: a documented clamp (log -> ln 2**klo, reciprocal -> +-2**-klo,
  rsqrt -> 2**(-klo/2), sqrt -> 0), never garbage; the input is private, so a range
  check would have to reveal it.
* **exp**: range reduction by integers: bits ``[x >= k]`` for every integer k in the
  domain give ``k`` and ``e**k`` linearly, ``u = x - k`` in [0, 1) and ``exp(x) =
  e**k * p(u)`` with a degree-4 ``p``. The input is clamped to the domain first: above
  ln(0.99 max_value) (10.38 at 2/16) e^x does not encode, so exp saturates there.
  Softmax uses a cheaper ``exp`` for ``x <= 0`` (4 knots, no clamp).
* **maximum along a dimension**: a tournament, one ReLU per level
  (``max(a, b) = b + relu(a - b)``), ``ceil(log2 n)`` rounds; the arg-max one-hot (for
  backward and ``argmax``) is updated with the levels' bits, 1 round behind.

Accuracy needs fractional bits: use base 2 with 16 bits
(``cluster.share(t, precision=16, base=2)``) for the smooth functions; the default base 10
/ precision 3 (resolution 0.001) suffices for ReLU, pooling, conv, linear, MSE and L1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import cache
from itertools import pairwise
from typing import Any

import numpy as np
import torch

from protocols import shapes as S
from protocols.errors import ShapeError, UnsupportedOperation
from protocols.params import Params

from .autograd import Value
from .tensor import SharedTensor, cat, public

DEGREE = 4

# -- polynomial fits ------------------------------------------------------------------------


def _log1p_exp_neg(t: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-t))


_FUNCS: dict[str, Any] = {
    "sigmoid_odd": lambda t: 1.0 / (1.0 + np.exp(-t)) - 0.5,
    "tanh": np.tanh,
    "softplus_even": _log1p_exp_neg,
    "exp": np.exp,
    "log1p": np.log1p,
    "recip_sqrt1p": lambda u: 1.0 / np.sqrt(1.0 + u),
    "sqrt1p": lambda u: np.sqrt(1.0 + u),
    "cos_sqrt": lambda s: np.cos(np.sqrt(s)),
}


@cache
def fit(name: str, lo: float, hi: float, degree: int = DEGREE) -> tuple[float, ...]:
    """Least-squares polynomial (monomial coefficients, low to high) of ``name`` on
    [lo, hi], from 4001 Chebyshev points."""
    k = np.arange(4001)
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / 4001)
    c = np.polynomial.polynomial.polyfit(x, _FUNCS[name](x), degree)
    return tuple(float(v) for v in c)


def fit_error(name: str, lo: float, hi: float, degree: int = DEGREE) -> float:
    """Max error of :func:`fit` on a dense grid (for the docs and the tests' bounds)."""
    x = np.linspace(lo, hi, 20001)
    c = fit(name, lo, hi, degree)
    return float(np.abs(np.polynomial.polynomial.polyval(x, c) - _FUNCS[name](x)).max())


# Piecewise tables: (knots, function); a segment [k_i, k_{i+1}) has its own polynomial;
# beyond the last knot the value is the constant ``tail``.
SIGMOID_KNOTS = (0.0, 1.5, 3.0, 5.0, 8.0)
TANH_KNOTS = (0.0, 0.75, 1.5, 2.5, 4.0)
SOFTPLUS_KNOTS = (0.0, 1.5, 3.0, 5.0, 8.0, 12.0)
EXP_NEG_KNOTS = (-12.0, -6.0, -3.0, -1.5, 0.0)


# -- helpers -----------------------------------------------------------------------------------


def frac_bits(x: SharedTensor) -> int:
    return math.floor(x.fp.precision * math.log2(x.fp.base) + 1e-9)


def _check(x: Any, name: str) -> SharedTensor:
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


def _powers(t: SharedTensor, degree: int = DEGREE) -> list[Any]:
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


def _poly(pw: Sequence[Any], coeffs: Sequence[float]) -> SharedTensor:
    out: Any = None
    for p, c in zip(pw[1:], coeffs[1:], strict=False):
        term = p * float(c)
        out = term if out is None else out + term
    assert isinstance(out, SharedTensor)
    return out + float(coeffs[0])


def _select(bits: Sequence[SharedTensor], values: Sequence[Any]) -> SharedTensor:
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


def _piecewise(
    t: SharedTensor,
    pw: Sequence[Any],
    name: str,
    knots: Sequence[float],
    bits: Sequence[SharedTensor],
    tail: float,
    head: float | None = None,
) -> SharedTensor:
    """The piecewise fit of ``name`` on ``knots`` (bits[k] = [t >= knots[k]] for k >= 1;
    with ``head`` also bits for knots[0], below which the value is ``head``)."""
    polys: list[Any] = [_poly(pw, fit(name, a, b)) for a, b in pairwise(knots)]
    values = ([head] if head is not None else []) + polys + [tail]
    return _select(bits, values)


def _bits(t: SharedTensor, knots: Sequence[float]) -> list[SharedTensor]:
    """``[t >= k]`` for every knot, one comparison op per knot (the activations' few knots:
    sigmoid on 10^4 values keeps its 5 rounds)."""
    return [(t - float(k)).drelu() for k in knots]


def _bits_batched(groups: Sequence[tuple[SharedTensor, Sequence[float]]]) -> list[SharedTensor]:
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


def _abs_sign(x: SharedTensor) -> tuple[SharedTensor, SharedTensor]:
    """(|x|, sign bit [x >= 0]) from one ReLU (1 round)."""
    r = x.relu()
    assert r._bit is not None
    return r * 2 - x, r._bit


def _signed(bit: SharedTensor, h: SharedTensor) -> SharedTensor:
    """``(2 bit - 1) * h``: 1 round, no truncation (the bit has precision 0)."""
    return (bit * 2 - 1) * h


# -- activations --------------------------------------------------------------------------------


def sigmoid(x: SharedTensor) -> SharedTensor:
    """1/(1+e^-x): 0.5 + sign(x) h(|x|), h piecewise degree 4 on [0,1.5,3,5,8], then
    0.5. 5 rounds."""
    x = _check(x, "sigmoid")
    require_bits(x, "sigmoid")
    with torch.no_grad():
        t, b = _abs_sign(x)
        pw = _powers(t)
        h = _piecewise(t, pw, "sigmoid_odd", SIGMOID_KNOTS, _bits(t, SIGMOID_KNOTS[1:]), 0.5)
        y = _signed(b, h) + 0.5
    return x._record(y, [x], lambda g: (g * (y - y**2),))


def tanh(x: SharedTensor) -> SharedTensor:
    """sign(x) h(|x|), h piecewise degree 4 on [0,.75,1.5,2.5,4], then 1. 5 rounds."""
    x = _check(x, "tanh")
    require_bits(x, "tanh")
    with torch.no_grad():
        t, b = _abs_sign(x)
        pw = _powers(t)
        h = _piecewise(t, pw, "tanh", TANH_KNOTS, _bits(t, TANH_KNOTS[1:]), 1.0)
        y = _signed(b, h)
    return x._record(y, [x], lambda g: (g * (1 - y**2),))


def softplus(x: SharedTensor, beta: float = 1.0, threshold: float = 20.0) -> SharedTensor:
    """log(1 + e^x) = relu(x) + h(|x|), h = log1p(exp(-t)) piecewise (0 beyond 12);
    backward g * sigmoid(x). 4 rounds."""
    x = _check(x, "softplus")
    require_bits(x, "softplus")
    if beta != 1.0:
        raise UnsupportedOperation("softplus: only beta=1 is supported; scale the input")
    with torch.no_grad():
        r = x.relu()
        t = r * 2 - x
        pw = _powers(t)
        h = _piecewise(t, pw, "softplus_even", SOFTPLUS_KNOTS, _bits(t, SOFTPLUS_KNOTS[1:]), 0.0)
        y = r + h
    return x._record(y, [x], lambda g: (g * sigmoid(x.detach()),))


def silu(x: SharedTensor) -> SharedTensor:
    require_bits(_check(x, "silu"), "silu")
    return x * sigmoid(x)


def leaky_relu(x: SharedTensor, negative_slope: float = 0.01) -> SharedTensor:
    """slope x + (1 - slope) relu(x): one ReLU (1 round)."""
    return x * float(negative_slope) + x.relu() * (1.0 - float(negative_slope))


def clamp(x: SharedTensor, min: float | None = None, max: float | None = None) -> SharedTensor:
    """lo + relu(x - lo) - relu(x - hi): two ReLUs side by side (1 round)."""
    x = _check(x, "clamp")
    if isinstance(min, SharedTensor) or isinstance(max, SharedTensor):
        raise UnsupportedOperation("clamp with shared bounds is not supported; use relu")
    if min is None and max is None:
        raise ValueError("clamp needs min or max")
    if min is not None and max is not None:
        lo, hi = float(min), float(max)
        return (x - lo).relu() - (x - hi).relu() + lo
    if min is not None:
        return (x - float(min)).relu() + float(min)
    assert max is not None
    return x - (x - float(max)).relu()


def hardtanh(x: SharedTensor, min_val: float = -1.0, max_val: float = 1.0) -> SharedTensor:
    return clamp(x, min_val, max_val)


def abs_(x: SharedTensor) -> SharedTensor:
    """|x| = 2 relu(x) - x (1 round; backward by the ReLU's bit)."""
    return x.relu() * 2 - _check(x, "abs")


# -- exp / log / reciprocal / sqrt --------------------------------------------------------------


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


def exp(x: SharedTensor) -> SharedTensor:
    """e^x: clamp to :func:`exp_domain` (1 round), bits [x >= k] for the domain's integers
    (1 round), u = x - k and u^2 (1), u^3 u^4 (1), times e^k (1): 5 rounds. Backward g y.

    e^k is selected linearly from the bits as integers at precision 0 (a product by them
    needs no truncation; the product is then divided by a power of two, one local
    truncation), in two parts so that no product exceeds 2**44 raw: ``round(e^k 2**f)``
    for k up to K0 (7 at 2/16) and ``round(e^k 2**q)`` above (q = 44 - f -
    log2(max_value) - 1, 12 at 2/16; relative error below 2**-q e^-K0 ~ 2e-7)."""
    x = _check(x, "exp")
    require_bits(x, "exp")
    lo, hi = exp_domain(x)
    f = frac_bits(x)
    log2e = 1.0 / math.log(2)
    k0 = math.floor((_EXP_PRODUCT_BITS - 2 * f) / log2e) - 1
    q = _EXP_PRODUCT_BITS - f - math.ceil(math.log2(x.fp.max_value)) - 1
    with torch.no_grad():
        xc = clamp(x, float(lo), hi)
        ks = list(range(lo + 1, math.floor(hi) + 1))
        bits = _bits(xc, ks)
        kk: Any = float(lo)
        # e^k selected as integers round(e^k 2**f) (k <= K0) and round(e^k 2**q) (above):
        # public integer factors of the bits are exact, so the selected e^k is off by at
        # most half a unit (a selection through public reals truncated once per term:
        # up to ~10 u).
        lo_int: Any = round(math.exp(lo) * 2**f)
        hi_int: Any = None
        prev_lo, prev_hi = lo_int, 0
        for k, b in zip(ks, bits, strict=True):
            kk = b * 1 + kk
            e_lo = round(math.exp(k) * 2**f) if k <= k0 else 0
            e_hi = round(math.exp(k) * 2**q) if k > k0 else 0
            if e_lo != prev_lo:
                lo_int = b * (e_lo - prev_lo) + lo_int
            if e_hi != prev_hi:
                term = b * (e_hi - prev_hi)
                hi_int = term if hi_int is None else term + hi_int
            prev_lo, prev_hi = e_lo, e_hi
        u = xc - kk
        p = _poly(_powers(u), fit("exp", 0.0, 1.0))
        y = (p * lo_int) / 2**f
        if hi_int is not None:
            y = y + (p * hi_int) / 2**q
    return x._record(y, [x], lambda g: (g * y,))


def exp_nonpositive(z: SharedTensor) -> SharedTensor:
    """e^z for z <= 0 (softmax after subtracting the max): piecewise degree 4 on
    [-12,-6,-3,-1.5,0] and 0 below -12; 3 rounds, no backward (callers record theirs)."""
    with torch.no_grad():
        pw = _powers(z)
        polys = [_poly(pw, fit("exp", a, b)) for a, b in pairwise(EXP_NEG_KNOTS[:-1])]
        # the last polynomial covers [-1.5, 0] and goes on above 0 (tiny overshoot of z)
        polys.append(_poly(pw, fit("exp", EXP_NEG_KNOTS[-2], EXP_NEG_KNOTS[-1])))
        return _select(_bits(z, EXP_NEG_KNOTS[:-1]), [0.0, *polys])


def log_domain(x: SharedTensor) -> tuple[int, int]:
    """Exponents [klo, khi): inputs in [2**klo, 2**khi) are normalised exactly. At base 2
    khi covers every encodable value (|v| < 2**(31 - f)); below 2**klo the functions
    clamp (see :class:`_Norm`)."""
    f = frac_bits(x)
    khi = 31 - f if x.fp.base == 2 else x.fp.precision
    return -(f // 2), khi


def _top_knot(x: SharedTensor) -> int:
    """The largest k with 2**k encodable as a public operand of ``x``."""
    return math.floor(math.log2(x.fp.max_value)) - 1


class _Norm:
    """x = m * 2**k with m in [1, 2): bits, m, and linear selections of constants.

    Knots above the largest encodable public constant 2**J are compared on ``x / 2**J``
    (a local truncation), and their ``m`` is ``(x / 2**J) * 2**-(k - J)``: one more
    product in the same round. Constants ``fn(k)`` for such k are still selected at the
    handle's precision (so e.g. ``2**(-k/2)`` loses relative precision there).

    ``below=True`` (the functions' default domains) adds the knot 2**klo itself: an input
    below it (0, a negative value, or a positive one too small for the function's
    accuracy) gets ``m = 1`` exactly and the constants' ``low`` values (by default those
    of k = klo), i.e. a documented clamp to 2**klo instead of the garbage an
    unnormalised ``m`` would give (log(0) was -7.28, reciprocal(0) 1446). Free in
    rounds: one more element per input in the same comparison op, and the selections
    stay linear."""

    def __init__(
        self, x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool = False
    ) -> None:
        klo, khi = domain if domain is not None else log_domain(x)
        self.klo = klo
        self.below = below
        self.prec = x.fp.precision
        self.ks = list(range(klo if below else klo + 1, khi))
        top = _top_knot(x)
        low = [k for k in self.ks if k <= top]
        high = [k for k in self.ks if k > top]
        if not high:
            self.bits = _bits_batched([(x, [2.0**k for k in low])])
            self.m = x * self.const(lambda k: 2.0**-k, low=0.0)
        else:
            xh = x / 2**top
            self.bits = _bits_batched(
                [(x, [2.0**k for k in low]), (xh, [2.0 ** (k - top) for k in high])]
            )
            # s_low selects 2**-k while k <= top and drops to 0 above; s_high takes over
            s_low = self.const(lambda k: 2.0**-k if k <= top else 0.0, low=0.0)
            s_high = self.const(lambda k: 2.0 ** -(k - top) if k > top else 0.0, low=0.0)
            self.m = x * s_low + xh * s_high
        if below:
            self.m = self.m + self.const(lambda k: 0.0, low=1.0)

    def const(self, fn: Any, low: float | None = None) -> Any:
        """sum over the selected k of fn(k), linear in the bits (local); ``low`` is the
        value below 2**klo (with ``below``; default fn(klo))."""
        start = fn(self.klo) if (low is None or not self.below) else low
        out: Any = start
        prev = start
        for k, b in zip(self.ks, self.bits, strict=True):
            value = fn(k)
            d = value - prev
            prev = value
            if d == 0.0:
                continue
            term = b * d
            if not isinstance(out, SharedTensor) and float(out) != round(float(out)):
                term = term._at_prec(max(term.prec, self.prec))  # keep out's digits
            out = term + out if isinstance(out, SharedTensor) else term + float(out)
        return out


def _below(domain: tuple[int, int] | None, below: bool | None) -> bool:
    return domain is None if below is None else below


def sqrt_domain(x: SharedTensor) -> tuple[int, int]:
    """sqrt normalises every positive encoding (from one unit, 2**-f): its result is
    small where its input has few digits, so the absolute error stays ~2**-(f/2 + 1)."""
    _, khi = log_domain(x)
    return -frac_bits(x), khi


def log(
    x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool | None = None
) -> SharedTensor:
    """ln x for x > 0: k ln 2 + p(m - 1), p of degree 4 on [0, 1]. 4 rounds.
    Backward g * reciprocal(x).

    Domain (default) [2**-(f//2), 2**(31-f)): every encodable value above 2**-8 at 2/16.
    Below it, including 0 and negative inputs, the result is ln(2**-(f//2)) (-5.545 at
    2/16): a documented clamp (the input is private; checking it would reveal it)."""
    x = _check(x, "log")
    require_bits(x, "log", base2=True)
    with torch.no_grad():
        n = _Norm(x, domain, below=_below(domain, below))
        u = n.m - 1.0
        y = _poly(_powers(u), fit("log1p", 0.0, 1.0)) + n.const(lambda k: k * math.log(2))
    return x._record(y, [x], lambda g: (g * reciprocal_positive(x.detach(), domain, below=below),))


def reciprocal_positive(
    x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool | None = None
) -> SharedTensor:
    """1/x for x > 0: (1/m) s, 1/m by 2 Newton-Raphson steps from 24/17 - 8/17 m.
    7 rounds. Backward -g y^2. Below the domain (default: x < 2**-(f//2)) the result is
    2**(f//2) (256 at 2/16), as :class:`_Norm` says."""
    x = _check(x, "reciprocal")
    require_bits(x, "reciprocal", base2=True)
    with torch.no_grad():
        n = _Norm(x, domain, below=_below(domain, below))
        m = n.m
        y = m * (-8.0 / 17.0) + 24.0 / 17.0  # 48/17 - 32/17 (m/2), halved
        for _ in range(2):
            y = y * (2.0 - m * y)
        out = y * n.const(lambda k: 2.0**-k)
    return x._record(out, [x], lambda g: (-(g * out**2),))


def reciprocal(x: SharedTensor) -> SharedTensor:
    """1/x for x != 0: |x| and the sign from one ReLU, then :func:`reciprocal_positive`
    and one product with the sign. 9 rounds.

    Domain |x| in [2**-(f//2), 2**(31-f)) ([0.0039, 32768) at 2/16: every encodable value
    above 2**-8). For |x| < 2**-8 the result is +-2**8 = +-256 with the sign of x
    (reciprocal(0) = +256, torch: inf): a documented clamp, since the input is private
    and below 2**-8 its encoding has fewer than 8 significant bits anyway."""
    x = _check(x, "reciprocal")
    require_bits(x, "reciprocal", base2=True)
    with torch.no_grad():
        t, b = _abs_sign(x)
        out = _signed(b, reciprocal_positive(t))
    return x._record(out, [x], lambda g: (-(g * out**2),))


def sqrt(
    x: SharedTensor, domain: tuple[int, int] | None = None, *, below: bool | None = None
) -> SharedTensor:
    """sqrt(x) for x >= 0: 2**(k/2) sqrt(m), sqrt(m) = p(m - 1) degree 4. 5 rounds.
    Backward g * 0.5 * rsqrt(x).

    Domain (default): every positive encoding, [2**-f, 2**(31-f)); 0 and negative inputs
    give exactly 0 (documented; torch gives nan for x < 0). The backward at x below
    2**-(f//2) is rsqrt's clamp, 2**(f//4 - 1) (8 at 2/16; torch: inf at 0)."""
    x = _check(x, "sqrt")
    require_bits(x, "sqrt", base2=True)
    with torch.no_grad():
        n = _Norm(x, domain if domain is not None else sqrt_domain(x), below=_below(domain, below))
        p = _poly(_powers(n.m - 1.0), fit("sqrt1p", 0.0, 1.0))
        y = p * n.const(lambda k: 2.0 ** (k / 2), low=0.0)
    return x._record(y, [x], lambda g: (g * (rsqrt(x.detach(), None) * 0.5),))


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
    x = _check(x, "rsqrt")
    require_bits(x, "rsqrt", base2=True)
    if scale_bits and torch.is_grad_enabled() and x.requires_grad:
        raise UnsupportedOperation("rsqrt(scale_bits=...) has no backward; use no_grad")
    with torch.no_grad():
        n = _Norm(x, domain, below=_below(domain, below))
        p = _poly(_powers(n.m - 1.0), fit("recip_sqrt1p", 0.0, 1.0))
        y = p * n.const(lambda k: 2.0 ** (scale_bits - k / 2))
    return x._record(y, [x], lambda g: (-(g * (y**2 * y) * 0.5),))


def maximum(a: SharedTensor, b: Any) -> SharedTensor:
    """Elementwise max(a, b) = b + relu(a - b) (1 round)."""
    return (a - b).relu() + b


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
        a, sb = _abs_sign(w)
        z2 = (a - math.pi / 2) ** 2
        c = _poly(_powers(z2), fit("cos_sqrt", 0.0, math.pi**2 / 4))
        return (1 - sb * 2) * c


def sin(x: SharedTensor) -> SharedTensor:
    """torch.sin: range reduction by 2 pi (local, every encodable x), then symmetry and a
    polynomial (:func:`_sin_core`): 6 rounds. Backward g cos(x) (6 more)."""
    x = _check(x, "sin")
    require_bits(x, "sin", base2=True)
    y = _sin_core(x)
    return x._record(y, [x], lambda g: (g * _sin_core(x.detach() + math.pi / 2),))


def cos(x: SharedTensor) -> SharedTensor:
    """torch.cos = sin(x + pi/2): 6 rounds. Backward -g sin(x)."""
    x = _check(x, "cos")
    require_bits(x, "cos", base2=True)
    with torch.no_grad():
        y = _sin_core(x + math.pi / 2)
    return x._record(y, [x], lambda g: (-(g * _sin_core(x.detach())),))


# -- powers, where, variance --------------------------------------------------------------------


def _int_power(x: SharedTensor, n: int) -> SharedTensor:
    """x**n, n >= 1, by repeated squaring: x**(2**i) by squares (one round each) and the
    set bits of n multiplied in as their powers appear, so the depth is
    floor(log2 n) + (1 if n is not a power of two): x**3 2 rounds, x**4 2, x**5..x**8 3.
    Autograd through the squares and products."""
    acc: SharedTensor | None = None
    base = x
    e = n
    while True:
        if e & 1:
            acc = base if acc is None else acc * base
        e >>= 1
        if not e:
            break
        base = base._square()
    assert acc is not None
    return acc


def _as_exponent(p: Any) -> Any:
    """An integral scalar exponent as an int (2.0 -> 2); other scalars as floats."""
    if isinstance(p, torch.Tensor) and p.numel() == 1 and p.dim() == 0:
        p = p.item()
    if isinstance(p, bool):
        raise UnsupportedOperation("x ** bool is not supported; use an int or a float")
    if isinstance(p, int):
        return p
    if isinstance(p, float):
        if not math.isfinite(p):
            raise UnsupportedOperation(f"x ** {p}: the exponent must be finite")
        return int(p) if p.is_integer() and abs(p) < 2**31 else p
    return p


def pow(x: SharedTensor, exponent: Any) -> SharedTensor:
    """torch.pow(x, p) for a shared x.

    * integer p >= 1 (also 2.0, 3.0): repeated squaring (:func:`_int_power`), any x, as
      exact as the products; |x|**p must encode (< 2**(31-f), 32768 at 2/16) and its
      products stay below ~2**44 raw for a reliable truncation: |x**p| < 2**(44-2f)
      (4096 at 2/16); beyond, revealed values outside the headroom raise ValueOutOfRange.
    * p = 0: ones (torch: 0**0 = 1), no gradient to x. p = 1: x.
    * p = 0.5, -0.5: :func:`sqrt`, :func:`rsqrt` (their domains).
    * negative integer p: reciprocal(x) ** |p| (any sign of x; |x| in the reciprocal's
      domain, documented clamp to +-2**(f//2) below it).
    * any other real p, or a tensor p (public or shared): ``exp(p * log(x))`` for x > 0
      (log's domain and clamp; x <= 0 is not checked: it gives exp(p ln 2**-(f//2))),
      and p log x in exp's domain (it saturates above ln(max_value)).
    """
    x = _check(x, "pow")
    p = _as_exponent(exponent)
    if isinstance(p, int):
        if p == 0:
            ones = (x.detach() * 0 + 1).detach()
            return x._record(ones, [x], lambda g: (g * 0,))
        if p == 1:
            return x
        if p > 0:
            return _int_power(x, p)
        if p == -1:
            return reciprocal(x)
        require_bits(x, f"power (x ** {p})", base2=True)
        return _int_power(reciprocal(x), -p)
    if isinstance(p, float) and p == 0.5:
        return sqrt(x)
    if isinstance(p, float) and p == -0.5:
        return rsqrt(x)
    if isinstance(p, float | SharedTensor | torch.Tensor | public):
        require_bits(x, f"power (x ** {p if isinstance(p, float) else 'tensor'})", base2=True)
        lx = log(x)
        return exp(lx * p)
    raise UnsupportedOperation(f"x ** {type(exponent).__name__} is not supported")


def rpow(base: Any, x: SharedTensor) -> SharedTensor:
    """``b ** x`` for a public scalar b > 0: exp(x ln b) (exp's domain)."""
    b = _as_exponent(base)
    if not isinstance(b, int | float) or b <= 0:
        raise UnsupportedOperation(
            f"{base!r} ** SharedTensor: only a public scalar base > 0 is supported"
        )
    require_bits(x, f"power ({b} ** x)")
    return exp(x * math.log(b))


def where(condition: Any, input: Any, other: Any) -> SharedTensor:
    """torch.where(condition, input, other) with at least one SharedTensor.

    A public condition (bool or 0/1 tensor) selects by public masks: ``input * c +
    other * (1 - c)``, local and exact. A shared condition must hold 0/1 values (a
    comparison's result); it is not checked (it is private): ``other + c (input -
    other)`` is one product (1 round; a linear blend for other values of c). Gradients
    flow to input and other as torch's."""
    if isinstance(condition, SharedTensor):
        if not isinstance(input, SharedTensor) and not isinstance(other, SharedTensor):
            diff = torch.as_tensor(input, dtype=torch.float64) - torch.as_tensor(
                other, dtype=torch.float64
            )
            return condition * public(diff) + public(torch.as_tensor(other, dtype=torch.float64))
        if isinstance(other, SharedTensor):
            return condition * (input - other) + other
        return condition * (input - other) + public(torch.as_tensor(other, dtype=torch.float64))
    if not isinstance(input, SharedTensor | float | int) and not isinstance(other, SharedTensor):
        raise UnsupportedOperation("torch.where: expected a SharedTensor among its arguments")
    if isinstance(condition, public):
        condition = condition.tensor
    try:
        c = torch.as_tensor(condition)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UnsupportedOperation(
            f"torch.where: cannot use a {type(condition).__name__} condition"
        ) from exc
    if c.dtype != torch.bool and not bool(((c == 0) | (c == 1)).all()):
        raise ValueError("torch.where: a public condition must be boolean (or 0/1)")
    c64 = c.to(torch.float64)

    def part(v: Any, mask: torch.Tensor) -> Any:
        if isinstance(v, SharedTensor):
            return v * public(mask)
        return public(torch.as_tensor(v, dtype=torch.float64) * mask)

    a, b = part(input, c64), part(other, 1.0 - c64)
    if isinstance(a, SharedTensor):
        return a + b
    assert isinstance(b, SharedTensor)
    return b + a


def _correction(unbiased: Any, correction: Any, name: str) -> float:
    if correction is not None and unbiased is not None:
        raise ValueError(f"{name}: give unbiased or correction, not both")
    if correction is not None:
        return float(correction)
    return 1.0 if unbiased is None or bool(unbiased) else 0.0


def var(
    x: SharedTensor,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: bool = False,
    *,
    correction: Any = None,
    out: Any = None,
) -> SharedTensor:
    """torch.var: ``sum((x - mean)**2) / (N - correction)`` over ``dim`` (default all),
    correction 1 (``unbiased=True``) unless given. One square (1 round); the division by
    a public integer is local. Backward through the ops (exact: autograd of the mean
    subtraction). ``torch.var(x, False)`` (a bool second argument) means unbiased."""
    x = _check(x, "var")
    if out is not None:
        raise UnsupportedOperation("var: out= is not supported on SharedTensor")
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    c = _correction(unbiased, correction, "var")
    if dim is None:
        dims: list[int] | None = None
        n = x.numel()
    else:
        dims = [dim] if isinstance(dim, int) else list(dim)
        S.reduce("var", x.shape, dims, keepdim)
        n = 1
        for d in dims:
            n *= int(x.shape[S.norm_dim("var", d, x.dim())])
    dof = n - c
    if dof <= 0:
        raise ValueError(
            f"var: {n} values with correction {c:g} leave {dof:g} degrees of freedom "
            "(torch returns nan/inf)"
        )
    mean = x.mean(dims if dims is not None else None, keepdim=True) if dims else x.mean()
    sq = (x - mean) ** 2
    total = sq.sum(dims, keepdim) if dims is not None else sq.sum()
    if keepdim and dims is None:
        total = total.reshape([1] * x.dim())
    return total / int(dof) if float(dof).is_integer() else total * (1.0 / dof)


def std(
    x: SharedTensor,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: bool = False,
    *,
    correction: Any = None,
    out: Any = None,
) -> SharedTensor:
    """torch.std: ``sqrt(var)`` (sqrt's domain: every positive encoding; 0 gives 0)."""
    v = var(x, dim, unbiased, keepdim, correction=correction, out=out)
    require_bits(v, "std", base2=True)
    return sqrt(v)


def pad(x: SharedTensor, pad: Sequence[int], mode: str = "constant", value: Any = None) -> Any:
    """F.pad with ``mode="constant"`` (negative pads crop, as torch): a public-index take
    of x, zeroed by a public 0/1 mask where the output is padding, plus ``value`` (public
    or a shared scalar) there. Local, exact; backward the adjoint of the take."""
    x = _check(x, "pad")
    if mode != "constant":
        raise UnsupportedOperation(f"F.pad(mode={mode!r}): only mode='constant' is supported")
    try:
        idx = torch.nn.functional.pad(x._positions(), tuple(pad), value=-1)
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        raise ShapeError(f"pad{tuple(pad)} of shape {tuple(x.shape)}: {exc}") from None
    inside = (idx >= 0).to(torch.float64)
    out = x._take(idx.clamp_min(0)) * public(inside)
    if value is None or (not isinstance(value, SharedTensor) and float(value) == 0.0):
        return out
    if isinstance(value, SharedTensor):
        if value.numel() != 1:
            raise ShapeError("pad: a shared value must have one element")
        return out + value.reshape(()) * public(1.0 - inside)
    return out + public((1.0 - inside) * float(value))


# -- maxima ----------------------------------------------------------------------------------


def _move_last(x: SharedTensor, dim: int) -> tuple[SharedTensor, int]:
    if not x.dim():
        raise ShapeError("max/argmax along a dimension of a 0-d tensor")
    d = S.norm_dim("max", int(dim), x.dim())
    if d != x.dim() - 1:
        order = [i for i in range(x.dim()) if i != d] + [d]
        x = x.permute(order)
    return x, d


def _restore(y: SharedTensor, d: int, nd: int) -> SharedTensor:
    """Inverse of _move_last for a result whose last dim sits where ``d`` was."""
    if d == nd - 1:
        return y
    order = list(range(nd - 1))
    order.insert(d, nd - 1)
    return y.permute(order)


def max_last(x: SharedTensor, onehot: bool) -> tuple[SharedTensor, SharedTensor | None]:
    """Maximum over the last dimension by a tournament (ceil(log2 n) rounds), and
    optionally the arg-max one-hot (ties: the later element), precision 0."""
    n = int(x.shape[-1])
    cur = x
    # (candidates, n) per position; public until the first level's bits
    oh: Any = torch.eye(n).expand(*x.shape[:-1], n, n) if onehot else None
    with torch.no_grad():
        while int(cur.shape[-1]) > 1:
            m = int(cur.shape[-1])
            h = m // 2
            a, b = cur[..., 0 : 2 * h : 2], cur[..., 1 : 2 * h : 2]
            r = (a - b).relu()
            assert r._bit is not None
            best = b + r
            if oh is not None:
                oa, ob = oh[..., 0 : 2 * h : 2, :], oh[..., 1 : 2 * h : 2, :]
                bit = r._bit.unsqueeze(-1)
                if isinstance(oa, torch.Tensor):  # the first level: eye rows, public
                    new = bit * public(oa - ob) + public(ob)
                else:
                    new = bit * (oa - ob) + ob
                if m % 2:
                    new = cat([new, oh[..., 2 * h :, :]], -2)
                oh = new
            cur = cat([best, cur[..., 2 * h :]], -1) if m % 2 else best
        values = cur[..., 0]
    if oh is None:
        return values, None
    if not isinstance(oh, SharedTensor):  # n == 1
        oh = (x * 0 + 1).detach()
        return values, oh
    return values, oh[..., 0, :]


def max_dim(
    x: SharedTensor, dim: int, keepdim: bool = False, *, need_onehot: bool | None = None
) -> tuple[SharedTensor, SharedTensor | None]:
    """(max along ``dim``, arg-max one-hot shaped like x); backward through the one-hot."""
    x = _check(x, "max")
    want = x.requires_grad and torch.is_grad_enabled() if need_onehot is None else need_onehot
    nd = x.dim()
    xl, d = _move_last(x, dim)
    vals, oh = max_last(xl.detach(), bool(want))
    ohx = _restore(oh, d, nd) if oh is not None else None
    if keepdim:
        vals = vals.unsqueeze(d)
    if ohx is not None:
        kshape = list(x.shape)
        kshape[d] = 1

        def back(g: Value) -> tuple[Value]:
            assert ohx is not None
            return (ohx * g.reshape(kshape),)

        vals = x._record(vals, [x], back)
    return vals, ohx


def argmax(x: SharedTensor, dim: int | None = None, keepdim: bool = False) -> SharedTensor:
    """Shared index of the maximum (ties: the last) as sum_i i * onehot_i."""
    x = _check(x, "argmax")
    if dim is None:
        x, dim = x.reshape(-1), 0
    _, oh = max_dim(x.detach(), dim, need_onehot=True)
    assert oh is not None
    n = int(x.shape[dim])
    shape = [1] * x.dim()
    shape[dim % x.dim()] = n
    pos = torch.arange(n, dtype=torch.float64).reshape(shape)
    return (oh * public(pos)).sum(dim, keepdim)


# -- softmax family ---------------------------------------------------------------------------------


def _denominator_domain(n: int) -> tuple[int, int]:
    return 0, max(1, math.ceil(math.log2(max(n, 2)))) + 1


def _softmax_parts(
    x: SharedTensor, dim: int
) -> tuple[SharedTensor, SharedTensor, SharedTensor, int]:
    """(z = x - max, e = exp(z), S = sum e, n) along ``dim``, no autograd."""
    with torch.no_grad():
        m, _ = max_dim(x.detach(), dim, keepdim=True, need_onehot=False)
        z = x.detach() - m
        e = exp_nonpositive(z)
        s = e.sum(dim, keepdim=True)
    return z, e, s, int(x.shape[dim])


def softmax(x: SharedTensor, dim: int | None = None, **kwargs: Any) -> SharedTensor:
    """e^(x - max) / sum: max (ceil(log2 n) rounds), exp for z <= 0 (3), reciprocal of
    the sum on [1, n] (7), product (1). Backward y (g - sum(g y))."""
    x = _check(x, "softmax")
    require_bits(x, "softmax", base2=True)
    d = -1 if dim is None else dim
    _, e, s, n = _softmax_parts(x, d)
    with torch.no_grad():
        y = e * reciprocal_positive(s, _denominator_domain(n))

    def back(g: Value) -> tuple[Value]:
        return (y * (g - (g * y).sum(d, keepdim=True)),)

    return x._record(y, [x], back)


def log_softmax(x: SharedTensor, dim: int | None = None, **kwargs: Any) -> SharedTensor:
    """z - log(sum e^z): max, exp (3), log of the sum on [1, n] (4). Backward
    g - softmax * sum(g)."""
    x = _check(x, "log_softmax")
    require_bits(x, "log_softmax", base2=True)
    d = -1 if dim is None else dim
    z, e, s, n = _softmax_parts(x, d)
    dom = _denominator_domain(n)
    with torch.no_grad():
        y = z - log(s, dom)
        p = e * reciprocal_positive(s, dom) if x.requires_grad else None

    def back(g: Value) -> tuple[Value]:
        assert p is not None
        return (g - p * g.sum(d, keepdim=True),)

    return x._record(y, [x], back)


# -- losses -----------------------------------------------------------------------------------------


def _reduce(v: SharedTensor, reduction: str, count: int | float | None = None) -> SharedTensor:
    if reduction == "mean":
        c = v.numel() if count is None else count
        return v.sum() * (1.0 / c) if not float(c).is_integer() else v.sum() / int(c)
    if reduction == "sum":
        return v.sum()
    if reduction == "none":
        return v
    raise ValueError(f"{reduction!r} is not a valid value for reduction")


def _legacy(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        raise UnsupportedOperation(
            "size_average/reduce are deprecated and not supported; use reduction="
        )
    return reduction


def _target(target: Any, like: SharedTensor, name: str) -> Any:
    if isinstance(target, SharedTensor):
        if tuple(target.shape) != tuple(like.shape):
            raise ShapeError(
                f"{name}: target shape {tuple(target.shape)} != input {tuple(like.shape)}"
            )
        return target
    try:
        t = torch.as_tensor(target, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UnsupportedOperation(
            f"{name}: cannot use a {type(target).__name__} target: {exc}"
        ) from None
    if tuple(t.shape) != tuple(like.shape):
        raise ShapeError(f"{name}: target shape {tuple(t.shape)} != input {tuple(like.shape)}")
    return t


def _difference(
    name: str,
    input: Any,
    target: Any,
    size_average: Any,
    reduce: Any,
    reduction: str,
    weight: Any,
) -> tuple[SharedTensor, str]:
    """``x - t`` (the shared one first) and the reduction, for the pointwise losses."""
    if weight is not None:
        raise UnsupportedOperation(f"{name}: weight= is not supported")
    reduction = _legacy(size_average, reduce, reduction)
    x, t = (input, target) if isinstance(input, SharedTensor) else (target, input)
    return x - _target(t, x, name), reduction


def mse_loss(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    weight: Any = None,
) -> SharedTensor:
    """mean/sum of (x - t)^2: one square (1 round)."""
    diff, reduction = _difference(
        "mse_loss", input, target, size_average, reduce, reduction, weight
    )
    return _reduce(diff**2, reduction)


def l1_loss(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    weight: Any = None,
) -> SharedTensor:
    """mean/sum of |x - t|: one ReLU (1 round)."""
    diff, reduction = _difference("l1_loss", input, target, size_average, reduce, reduction, weight)
    return _reduce(abs_(diff), reduction)


def _class_targets(
    input: SharedTensor, target: Any, weight: Any, ignore_index: int, name: str
) -> tuple[Any, float]:
    """Public per-element weights T (N, C, ...) and the mean's denominator."""
    if isinstance(target, SharedTensor):
        if tuple(target.shape) == tuple(input.shape):
            if weight is not None:
                raise UnsupportedOperation(f"{name}: weight= with probability targets")
            return target, float(target.numel() // input.shape[1] if input.dim() > 1 else 1)
        raise UnsupportedOperation(
            f"{name}: shared class indices cannot select entries; share one-hot targets "
            "(F.one_hot(y, C).float()) as probabilities instead"
        )
    try:
        t = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UnsupportedOperation(f"{name}: cannot use a {type(target).__name__} target") from exc
    c = int(input.shape[1]) if input.dim() > 1 else int(input.shape[0])
    if t.is_floating_point():
        if tuple(t.shape) != tuple(input.shape):
            raise ShapeError(
                f"{name}: probability target shape {tuple(t.shape)} != {tuple(input.shape)}"
            )
        t64 = t.to(torch.float64)
        if weight is not None:
            w = torch.as_tensor(weight, dtype=torch.float64)
            shape = [1] * input.dim()
            shape[1 if input.dim() > 1 else 0] = c
            t64 = t64 * w.reshape(shape)
        return t64, float(t.numel() // c)
    t = t.to(torch.int64)
    want = tuple(input.shape[:1]) + tuple(input.shape[2:]) if input.dim() > 1 else ()
    if tuple(t.shape) != want:
        raise ShapeError(f"{name}: class-index target shape {tuple(t.shape)}, expected {want}")
    valid = t != ignore_index
    safe = torch.where(valid, t, torch.zeros_like(t))
    if bool(((safe < 0) | (safe >= c)).any()):
        raise ShapeError(f"{name}: class index out of range [0, {c})")
    onehot = torch.nn.functional.one_hot(safe, c).to(torch.float64)
    onehot = onehot * valid.unsqueeze(-1)
    w = (
        torch.ones(c, dtype=torch.float64)
        if weight is None
        else torch.as_tensor(weight, dtype=torch.float64)
    )
    onehot = onehot * w
    denom = float((w[safe] * valid).sum())
    if input.dim() > 1:
        onehot = onehot.movedim(-1, 1)
    return onehot, denom


def nll_loss(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> SharedTensor:
    """-(log-probs at the targets): a public one-hot selection (local)."""
    x = _check(input, "nll_loss")
    reduction = _legacy(size_average, reduce, reduction)
    t, denom = _class_targets(x, target, weight, ignore_index, "nll_loss")
    picked = x * t
    cdim = 1 if x.dim() > 1 else 0
    per = -(picked.sum(cdim))
    if reduction == "mean":
        return per.sum() * (1.0 / denom) if not denom.is_integer() else per.sum() / int(denom)
    return _reduce(per, reduction)


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> SharedTensor:
    """-(T * log_softmax(x)).sum(); the backward is (softmax(x) rowsum(T) - T) / N from
    the same exponentials (no differentiation of the approximations)."""
    x = _check(input, "cross_entropy")
    require_bits(x, "cross_entropy", base2=True)
    reduction = _legacy(size_average, reduce, reduction)
    t, denom = _class_targets(x, target, weight, ignore_index, "cross_entropy")
    cdim = 1 if x.dim() > 1 else 0
    c = int(x.shape[cdim])
    if label_smoothing:
        if isinstance(t, SharedTensor):
            t = t * (1.0 - label_smoothing) + label_smoothing / c
        else:
            rows = t.sum(cdim, keepdim=True)
            t = t * (1.0 - label_smoothing) + rows * (label_smoothing / c)
    z, e, s, n = _softmax_parts(x, cdim)
    dom = _denominator_domain(n)
    with torch.no_grad():
        lsm = z - log(s, dom)
        indices = isinstance(target, torch.Tensor) and not target.is_floating_point()
        per = -((lsm * (public(t) if indices else t)).sum(cdim))  # class indices: public
        if reduction == "mean":
            loss = per.sum() * (1.0 / denom) if not denom.is_integer() else per.sum() / int(denom)
        elif reduction in ("sum", "none"):
            loss = _reduce(per, reduction)
        else:
            raise ValueError(f"{reduction!r} is not a valid value for reduction")
        p = e * reciprocal_positive(s, dom) if x.requires_grad else None
    rows = t.sum(cdim, keepdim=True)

    def back(g: Value) -> tuple[Value]:
        assert p is not None
        grad = p * rows - t
        if reduction == "mean":
            return (grad * (g / denom),)
        if reduction == "none":
            return (grad * g.unsqueeze(cdim),)
        return (grad * g,)

    return x._record(loss, [x], back)


def binary_cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> SharedTensor:
    """-(t log p + (1-t) log(1-p)); log on (0, 1]; backward (p - t) / (p (1 - p))."""
    p = _check(input, "binary_cross_entropy")
    require_bits(p, "binary_cross_entropy", base2=True)
    reduction = _legacy(size_average, reduce, reduction)
    t = _target(target, p, "binary_cross_entropy")
    if weight is not None:
        raise UnsupportedOperation("binary_cross_entropy: weight= is not supported")
    klo, _ = log_domain(p)
    dom = (klo, 1)
    with torch.no_grad():
        per = -(log(p.detach(), dom) * t + log(1.0 - p.detach(), dom) * (1.0 - t))
        loss = _reduce(per, reduction)
    count = p.numel()

    def back(g: Value) -> tuple[Value]:
        q = p.detach()
        r = reciprocal_positive(q - q**2, (klo, 0))
        grad = (q - t) * r
        if reduction == "mean":
            return (grad * (g / count),)
        return (grad * g,)

    return p._record(loss, [p], back)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> SharedTensor:
    """softplus(x) - t x; backward (sigmoid(x) - t) / N."""
    x = _check(input, "binary_cross_entropy_with_logits")
    require_bits(x, "binary_cross_entropy_with_logits", base2=True)
    reduction = _legacy(size_average, reduce, reduction)
    if weight is not None or pos_weight is not None:
        raise UnsupportedOperation(
            "binary_cross_entropy_with_logits: weight=/pos_weight= are not supported"
        )
    t = _target(target, x, "binary_cross_entropy_with_logits")
    with torch.no_grad():
        per = softplus(x.detach()) - x.detach() * t
        loss = _reduce(per, reduction)
    count = x.numel()

    def back(g: Value) -> tuple[Value]:
        grad = sigmoid(x.detach()) - t
        if reduction == "mean":
            return (grad * (g / count),)
        return (grad * g,)

    return x._record(loss, [x], back)
