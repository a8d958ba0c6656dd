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
* **piecewise polynomials** (:func:`piecewise`): the input is compared with all knots at
  once (1 round, 8 B per knot: :func:`knot_bits`, or :func:`knot_bits_batched` for many
  knots as one op), each segment has its own polynomial, and the segments are selected by
  the telescoping sum ``p_0 + sum_k [t >= k_k] (p_k - p_{k-1})`` (:func:`select`, 1
  round: products with a comparison bit need no truncation). Values of a polynomial far
  outside its segment cancel exactly in the ring, so no clamping is needed.
* **odd/even symmetry** (:func:`abs_sign`, :func:`signed`): one ReLU gives ``t = |x|`` and
  the sign bit in 1 round; the sign is applied by one product with the bit.

Accuracy needs fractional bits (:func:`require_bits`): use base 2 with 16 bits
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

from protocols.errors import UnsupportedOperation
from protocols.params import Params

from .shaping import cat
from .tensor import SharedTensor

DEGREE = 4

# -- polynomial fits ------------------------------------------------------------------------


def _log1p_exp_neg(t: np.ndarray) -> np.ndarray:
    return np.log1p(np.exp(-t))


FUNCS: dict[str, Any] = {
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
def fit(
    name: str, lo: float, hi: float, degree: int = DEGREE, centre: float = 0.0
) -> tuple[float, ...]:
    """Least-squares polynomial (monomial coefficients, low to high) of ``name`` on
    [lo, hi], from 4001 Chebyshev points, in the variable ``t - centre``."""
    k = np.arange(4001)
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / 4001)
    c = np.polynomial.polynomial.polyfit(x - centre, FUNCS[name](x), degree)
    return tuple(float(v) for v in c)


def fit_error(name: str, lo: float, hi: float, degree: int = DEGREE) -> float:
    """Max error of :func:`fit` on a dense grid (for the docs and the tests' bounds)."""
    x = np.linspace(lo, hi, 20001)
    c = fit(name, lo, hi, degree)
    return float(np.abs(np.polynomial.polynomial.polyval(x, c) - FUNCS[name](x)).max())


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


CENTRED_EXTRA_BITS = 20
"""The segments' polynomials are summed at ``f + 20`` fractional bits (public integer
coefficients ``round(c 2**20)``, exact products) and truncated once, after the selection."""

_CONST_BITS = 30
"""The constant terms are selected as integers ``round(c 2**30)`` (below 2**31 for
|c| < 1) times the bits, so each element's constant carries ~2**-31 of rounding."""


def piecewise(
    t: SharedTensor, name: str, knots: Sequence[float], tail: float, sign: Any = None
) -> SharedTensor:
    """``sign * h(t)``, h the piecewise degree-4 fit of ``name`` on ``knots`` (t >=
    knots[0]) and ``tail`` beyond the last knot; ``sign`` a shared +-1 at precision 0 (or
    None). Rounds: the knot bits (1); u**2 with the signed bits (1); u**3, u**4 (1); the
    selection (1): 4 after t, as before centring (without a sign 4 as well, one more than
    powers of t itself, whose bits ran beside t**2).

    Every product stays below ~2**36 raw in the domain (a 2-party local truncation fails
    with probability |x| / 2**64 per element):

    * the powers are of ``u = t - c``, c the centre of t's segment (dyadic), selected
      exactly from the bits (bits times integers at precision 0), so |u| <= half the
      widest segment (1.5 for sigmoid: u**4 < 2**35 raw; powers of t itself reached
      t**4 = 2**44 raw on [5, 8], and sigmoid on 3 * 10**5 values there failed).
    * each segment's polynomial is a sum of exact integer products ``u**k round(c_k
      2**20)`` at f + 20 bits; the bits select among them (bit products need no
      truncation) and the sum is truncated once, ``|h| 2**(f + 20)`` raw (< 2**36): no
      truncation of an intermediate product by a public real (each of which reaches
      2**20 times its operand's raw value).
    * constant terms are selected as bits times integers ``round(c 2**30)``: added as
      public constants at f bits each would be rounded the same way for every element of
      its segment (a bias a sum over many elements accumulates).

    Beyond the last knot u is unbounded and the powers are garbage, but every bit is 1
    there and the telescoping selection leaves exactly the tail (ring arithmetic)."""
    f = t.prec
    inner = knots[1:]
    bits = knot_bits(t, inner)  # bits[k] = [t >= knots[k + 1]]
    segs = list(pairwise(knots))
    cents = [round((a + b) / 2 * 2**f) for a, b in segs]  # centres in units of 2**-f
    offset = _int_select(None, bits, [c - cents[0] for c in [*cents, cents[-1]]])
    u = (t - cents[0] / 2**f) - _reinterpret(offset, f)
    pw = powers(u)
    sel = bits if sign is None else [sign * b for b in bits]  # beside u**2 (exact: prec 0)
    w = f + CENTRED_EXTRA_BITS
    coeffs = [fit(name, a, b, DEGREE, c / 2**f) for (a, b), c in zip(segs, cents, strict=True)]
    qs: list[Any] = []
    for cs in coeffs:
        q: Any = None
        for p, c in zip(pw[1:], cs[1:], strict=False):
            term = p * round(c * 2**CENTRED_EXTRA_BITS)
            q = term if q is None else q + term
        qs.append(_reinterpret(q, w))
    qs.append(qs[-1] * 0)  # the tail's non-constant part: a shared 0 at w bits (local)
    y = select(sel, qs) if sign is None else _select_signed(sign, sel, qs)
    consts = [cs[0] for cs in coeffs] + [tail]
    ints = [round(c * 2**_CONST_BITS) for c in consts]
    if max(abs(v) for v in ints) >= 2**31:
        raise UnsupportedOperation(f"piecewise {name}: constant terms must be below 1")
    cpart = _reinterpret(_int_select(sign, sel, ints), _CONST_BITS)
    out = y + cpart._at_prec(w) if w >= _CONST_BITS else y + cpart
    return out._op("trunc", [], out.shape, Params(d=t.fp.base ** (out.prec - f)), prec=f)


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
    """``sign values[0] + sum_k sel[k] (values[k+1] - values[k])`` (sel = sign * bits): the
    signed value of the selected segment, 1 round (products by +-1/0 at precision 0)."""
    out: Any = sign * values[0]
    for b, lo, hi in zip(sel, values[:-1], values[1:], strict=True):
        out = out + b * (hi - lo)
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
