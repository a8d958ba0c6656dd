"""Activations on SharedTensors: sigmoid, tanh, softplus, SiLU, leaky ReLU, clamp,
hardtanh and abs.

sigmoid and tanh use their odd symmetry, softplus and SiLU an even part: one ReLU gives
``|x|`` and the sign bit (1 round), the function on ``|x|`` is a piecewise degree-4
polynomial on the knots below in powers of ``u = |x| - centre`` (:func:`~training.
approximation.piecewise`: every truncation below 2**34 raw at 2/16, the documented 2**-30
failure rate), beyond the last knot a constant, the sign folded into the selection: 5
rounds for sigmoid, tanh and softplus, 6 for SiLU. Their backward rules are the analytic
derivatives from the output (``y - y**2``, ``1 - y**2``) or from sigmoid (softplus,
SiLU). They need at least :data:`training.approximation.MIN_BITS` fractional bits.

The piecewise-linear ones are ReLUs of shifted inputs and exact: leaky ReLU and abs one
ReLU, clamp and hardtanh two side by side (1 round), at any encoding.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from protocols.errors import UnsupportedOperation

from .approximation import (
    _exact,
    _reinterpret,
    _to_prec,
    abs_sign,
    expect_shared,
    piecewise,
    require_bits,
)
from .handle import function
from .registry import implements
from .shaping import cat
from .tensor import SharedTensor

# Piecewise tables: (knots, function); a segment [k_i, k_{i+1}) has its own polynomial;
# beyond the last knot the value is the constant ``tail``. Half the widest segment must
# stay below 2 at 2/16 (u**2 below 2**34 raw): softplus's knot 8.5 (was 8: [8, 12]).
# Each inner knot costs a comparison, a sign product and a selection product: at 10^5
# elements (carry tree) 43.5 dealer B/elt. sigmoid and tanh had 4 inner knots (242 B/elt,
# above CrypTen's 232); 3 chosen by a search over a 1/16 grid of the derived bound
# (tests/test_functional.py's segments_bound) give 198 B/elt (190 with the selection
# telescoped from the tail, approximation._select_signed), pieces' bound 3.8e-5
# (sigmoid, was 3.2e-5) and 7.2e-5 (tanh, was 5.5e-5), and a later last knot halves the
# tail, the larger error: 1 - sigmoid(8.75) = 1.6e-4 (was 3.35e-4 at 8), 1 - tanh(4.5) =
# 2.5e-4 (was 6.7e-4 at 4).
SIGMOID_KNOTS = (0.0, 1.8125, 5.0, 8.75)
TANH_KNOTS = (0.0, 0.9375, 2.5, 4.5)
SOFTPLUS_KNOTS = (0.0, 1.5, 3.0, 5.0, 8.5, 12.0)
# GELU's Phi(t) - 1/2 changes ~1.7x faster than the sigmoid, but sigmoid's knots / 1.7
# ([0,1.0625,2.9375,5.125]) fit its middle segment to 1.3e-4; [0,1.5,3.25,5] (a 1/16 grid
# search of the derived bound) fit 1.8e-5, 1.7e-5, 6.1e-6, pieces' bound 4.3e-5 (|u| <=
# 0.875), and the tail 1 - Phi(5) = 2.9e-7 (t Phi(-t) = 1.4e-6 at 5).
GELU_KNOTS = (0.0, 1.5, 3.25, 5.0)
PHI_CLAMP = 6.0
"""|x| is clamped here where phi(x) or 1 - tanh is needed: phi(6) = 6e-9, below a unit."""


@implements(torch.sigmoid, F.sigmoid, methods=("sigmoid",))
def sigmoid(x: SharedTensor) -> SharedTensor:
    """1/(1+e^-x): 0.5 + sign(x) h(|x|), h piecewise degree 4 on [0,1.8125,5,8.75], then
    0.5. 5 rounds."""
    x = expect_shared(x, "sigmoid")
    require_bits(x, "sigmoid")
    with torch.no_grad():
        t, b = abs_sign(x)
        y = piecewise(t, "sigmoid_odd", SIGMOID_KNOTS, 0.5, sign=b * 2 - 1) + 0.5
    return x._record(y, [x], lambda g: (g * (y - y**2),))


@implements(torch.tanh, F.tanh, methods=("tanh",))
def tanh(x: SharedTensor) -> SharedTensor:
    """sign(x) h(|x|), h piecewise degree 4 on [0,.9375,2.5,4.5], then 1. 5 rounds."""
    x = expect_shared(x, "tanh")
    require_bits(x, "tanh")
    with torch.no_grad():
        t, b = abs_sign(x)
        y = piecewise(t, "tanh", TANH_KNOTS, 1.0, sign=b * 2 - 1)
    return x._record(y, [x], lambda g: (g * (1 - y**2),))


def softplus(x: SharedTensor, beta: float = 1.0, threshold: float = 20.0) -> SharedTensor:
    """log(1 + e^x) = relu(x) + h(|x|), h = log1p(exp(-t)) piecewise (0 beyond 12);
    backward g * sigmoid(x). 5 rounds."""
    x = expect_shared(x, "softplus")
    require_bits(x, "softplus")
    if beta != 1.0:
        raise UnsupportedOperation("softplus: only beta=1 is supported; scale the input")
    with torch.no_grad():
        r = x.relu()
        t = r * 2 - x
        y = r + piecewise(t, "softplus_even", SOFTPLUS_KNOTS, 0.0)
    return x._record(y, [x], lambda g: (g * sigmoid(x.detach()),))


def silu(x: SharedTensor) -> SharedTensor:
    """x sigmoid(x) = relu(x) - t m, t = |x| and m = sigmoid(-t) = 1/2 - h(t) (h sigmoid's
    pieces on t, no sign): the one product t m is below 0.28 (2**30.2 raw) where x
    sigmoid(x) reached |x| (2**35 raw at |x| = 8, beyond the documented 2**-30 failure
    rate from |x| > 4), and beyond the last knot m is exactly 0, so t m is an exact 0 for
    every |x| >= 8.75. 6 rounds, as x * sigmoid(x). Backward ``g (sigmoid(x) + x m (1 -
    m))`` (sigmoid(x) = 1/2 + sign (1/2 - m); x m (1 - m) below 2**34 raw for |x| < 16,
    exactly 0 beyond 8.75)."""
    x = expect_shared(x, "silu")
    require_bits(x, "silu")
    with torch.no_grad():
        r = x.relu()
        assert r._bit is not None
        bit = r._bit
        t = r * 2 - x
        m = 0.5 - piecewise(t, "sigmoid_odd", SIGMOID_KNOTS, 0.5)
        y = r - t * m

    def back(g: SharedTensor) -> tuple[SharedTensor]:
        sig = (bit * 2 - 1) * (0.5 - m) + 0.5
        return (g * (sig + x.detach() * (m - m * m)),)

    return x._record(y, [x], back)


def _times(v: SharedTensor, b: float, top: float, prec: int) -> SharedTensor:
    """b v for |v| <= top, at ``prec`` bits (base 2): v times the integer round(b 2**k)
    (exact), one truncation of raw below 2**33 (a public real factor is encoded at up to
    2**20 and its product truncated above 2**34 raw)."""
    k = min(30, math.floor(33 - math.log2(abs(b) * top)) - v.prec)
    return _to_prec(_reinterpret(v * round(b * 2.0**k), v.prec + k), prec)


def _clamped_square(tc: SharedTensor) -> SharedTensor:
    """tc**2 for 0 <= tc <= 6 at min(f, 14) bits: (6 2**14)**2 = 2**33.2 raw (at 16 bits
    2**37.2)."""
    t14 = _to_prec(tc, min(tc.prec, 14))
    return t14 * t14


@implements(F.gelu)
def gelu(x: SharedTensor, approximate: str = "none") -> SharedTensor:
    """x Phi(x), or with ``approximate='tanh'`` torch's tanh form; see :func:`_gelu_erf`
    and :func:`_gelu_tanh`. Base 2, at least MIN_BITS fractional bits."""
    x = expect_shared(x, "gelu")
    require_bits(x, "gelu", base2=True)
    if approximate == "none":
        return _gelu_erf(x)
    if approximate == "tanh":
        return _gelu_tanh(x)
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def _gelu_erf(x: SharedTensor) -> SharedTensor:
    """x Phi(x) = relu(x) - t m, t = |x| and m = Phi(-t) = 1/2 - h(t), h = Phi - 1/2 by the
    pieces on :data:`GELU_KNOTS` (no sign): t m is below 0.17 and an exact 0 beyond 5, as
    silu's. 6 rounds. Backward ``g (Phi(x) + x phi(x)) = g (1/2 + sign (h + tc phi(tc)))``,
    tc = min(t, 6) (x phi(x) < 4e-8 beyond), phi(tc) = exp_nonpositive(-tc**2/2 -
    ln sqrt(2 pi)) (tc**2 at 14 bits), tc phi(tc) below 0.25: every product below 2**34
    raw. 11 rounds."""
    with torch.no_grad():
        r = x.relu()
        assert r._bit is not None
        bit = r._bit
        t = r * 2 - x
        h = piecewise(t, "normal_cdf_odd", GELU_KNOTS, 0.5)
        y = r - t * (0.5 - h)

    def back(g: SharedTensor) -> tuple[SharedTensor]:
        tc = t - (t - PHI_CLAMP).relu()
        sq = _clamped_square(tc)  # -tc**2 / 2: the halving a reinterpretation
        z = _reinterpret(-sq, sq.prec + 1) - 0.5 * math.log(2 * math.pi)
        z = _to_prec(z, x.fp.precision)
        phi = function("exp_nonpositive")(z)
        return (g * ((bit * 2 - 1) * (h + tc * phi) + 0.5),)

    return x._record(y, [x], back)


_TANH_S = math.sqrt(2 / math.pi)
_TANH_C = 0.044715


def _gelu_tanh(x: SharedTensor) -> SharedTensor:
    """0.5 x (1 + tanh(s (x + c x**3))) = relu(x) - 0.5 tc n, n = 1 - tanh(s (tc + c
    tc**3)) and tc = min(|x|, 6) (t, relu(x - 6), relu(-x - 6) in one op): z = tc q, q = s
    + s c tc**2 at 15 bits (tc**2 at 14 bits), tanh's pieces on z >= 0 (no sign; 1 beyond
    4.5, so n is an exact 0 from |x| ~ 3.58, and tc = t where n is not 0). Every product
    below 2**34 raw (z at 16 x 15 bits: 2**32.6). 8 rounds. Backward ``g (1/2 + sign (T/2
    + tc (1 - T**2) z'(tc) / 2))``, T = 1 - n, z' = s + 3 s c tc**2 (5 rounds)."""
    f = x.prec
    with torch.no_grad():
        rs = cat([x.unsqueeze(0), (x - PHI_CLAMP).unsqueeze(0), (-x - PHI_CLAMP).unsqueeze(0)])
        rr = rs.relu()
        assert rr._bit is not None
        bit, r = rr._bit[0], rr[0]
        t = r * 2 - x
        tc = t - rr[1] - rr[2]
        sq = _clamped_square(tc)
        top = PHI_CLAMP**2
        q = _times(sq, _TANH_S * _TANH_C, top, f - 1) + _TANH_S
        n = 1.0 - piecewise(tc * q, "tanh", TANH_KNOTS, 1.0)
        y = r - _to_prec(_reinterpret(_exact(tc, n), 2 * f + 1), f)

    def back(g: SharedTensor) -> tuple[SharedTensor]:
        tt = 1.0 - n
        dz = _times(sq, 3 * _TANH_S * _TANH_C, top, f - 1) + _TANH_S
        w = (1.0 - tt * tt) * dz
        inner = _to_prec(_reinterpret(tt + tc * w, f + 1), f)
        return (g * ((bit * 2 - 1) * inner + 0.5),)

    return x._record(y, [x], back)


@implements(F.elu)
def elu(x: SharedTensor, alpha: float = 1.0, inplace: bool = False) -> SharedTensor:
    """relu(x) + alpha (e^min(x, 0) - 1), min(x, 0) = x - relu(x), the exponential by
    :func:`~training.exponential.exp_nonpositive` (every product below 2**34 raw however
    negative x is), alpha times it as an integer product (raw below 2**33). 7 rounds.
    Backward ``g (alpha e + [x >= 0] (1 - alpha e))`` from the forward's e (1 round; at
    x = 0 the right-hand 1, torch alpha: docs/ops.md, "Gradients at a kink")."""
    x = expect_shared(x, "elu")
    require_bits(x, "elu", base2=True)
    if inplace:
        raise UnsupportedOperation("in-place elu is not supported on SharedTensor")
    a = float(alpha)
    if a == 0.0:
        return x.relu()
    f = x.prec
    with torch.no_grad():
        r = x.relu()
        assert r._bit is not None
        bit = r._bit
        e = function("exp_nonpositive")(_to_prec(x - r, x.fp.precision))
        am1 = e - 1.0 if a == 1.0 else _times(e - 1.0, a, 1.0, f)  # alpha (e - 1)
        y = r + am1
        ae = am1 + a

    return x._record(y, [x], lambda g: (g * (bit * (1.0 - ae) + ae),))


def leaky_relu(x: SharedTensor, negative_slope: float = 0.01) -> SharedTensor:
    """slope x + (1 - slope) relu(x): one ReLU (1 round)."""
    return x * float(negative_slope) + x.relu() * (1.0 - float(negative_slope))


@implements(torch.clamp, torch.clip, methods=("clamp", "clip"))
def clamp(x: SharedTensor, min: float | None = None, max: float | None = None) -> SharedTensor:
    """lo + relu(x - lo) - relu(x - hi): two ReLUs side by side (1 round)."""
    x = expect_shared(x, "clamp")
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


@implements(torch.abs, torch.Tensor.abs, methods=("abs", "__abs__"))
def abs_(x: SharedTensor) -> SharedTensor:
    """|x|: one ``abs`` op (the suite's ReLU, then ``2 relu(x) - x`` at each party; the
    comparison's cost, see :mod:`protocols.kinds`); gradient ``g (2 [x >= 0] - 1)`` (+g at
    0, where torch gives 0)."""
    x = expect_shared(x, "abs")
    label = x.cluster.current_label()
    with x.cluster.label(f"{label}/abs" if label else "abs"):
        out, bit = x._submit("abs", [x], [(x.shape, None), (x.shape, 0)])
        return x._record(out, [x], lambda g: (g * (2 * bit - 1),))
