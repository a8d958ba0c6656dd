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
def fit(name: str, lo: float, hi: float, degree: int = DEGREE) -> tuple[float, ...]:
    """Least-squares polynomial (monomial coefficients, low to high) of ``name`` on
    [lo, hi], from 4001 Chebyshev points."""
    k = np.arange(4001)
    x = (lo + hi) / 2 + (hi - lo) / 2 * np.cos(np.pi * (k + 0.5) / 4001)
    c = np.polynomial.polynomial.polyfit(x, FUNCS[name](x), degree)
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


def piecewise(
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
    polys: list[Any] = [poly(pw, fit(name, a, b)) for a, b in pairwise(knots)]
    values = ([head] if head is not None else []) + polys + [tail]
    return select(bits, values)


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
