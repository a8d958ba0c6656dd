"""GELU (exact and tanh forms) and ELU on shares against float64 torch, forward and
backward, at base 2 / 16 bits (u = 2**-16), 2 parties, the default suite's WAN form.

Error budgets (derived per element from the pieces' documented accuracy):

* ``gelu``: relu(x) - t m with m = 1/2 - h(t), h = Phi - 1/2 by the pieces on
  GELU_KNOTS: t times the pieces' derived bound (``segments_bound``, 4.3e-5) plus two
  truncations (u each); beyond the last knot 5, m is an exact 0 and the error is t Phi(-t)
  itself (1.4e-6 at 5). Backward 1/2 + sign (h + tc phi(tc)): h's bound, plus tc times
  phi's error (exp_nonpositive: 2 u absolute below 1; its input -tc**2/2 with tc**2 at 14
  bits is off by (2 tc + 1) 2**-15, a relative error of phi), plus the products'
  truncations.
* ``gelu(approximate='tanh')``: 0.5 t (1 - tanh(z)), z = tc q: 0.5 t times tanh's pieces'
  bound plus z's error (tc**2 at 14 bits: (2 tc + 1) 2**-15; q lowered to 15 bits and its
  coefficient rounded at 2**-18: tc (c s (2 tc + 1) 2**-15 + 2**-15 + 36 2**-19)); where z
  passes tanh's last knot 4.5, 1 - tanh is dropped: the error is 0.5 t (1 - tanh(z))
  (4.4e-4 at |x| = 3.58) and the gradient drops 0.5 (1 - tanh z) + 0.5 t sech**2(z) z'.
* ``elu``: alpha (e - 1) with e = exp_nonpositive(min(x, 0)): alpha 2 u plus alpha's
  integer product and the relu's encoding (u each); backward alpha e, the same.

Decoding to float32 adds a relative 2**-24 everywhere.
"""

from __future__ import annotations

import copy
import math
from itertools import pairwise
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_edges_at_scale import TOP, TruncationTap
from test_functional import F32, U16, WAN, segments_bound
from torch import nn

from protocols import kinds
from protocols.errors import UnsupportedOperation
from training import SGD, public
from training.activations import GELU_KNOTS, TANH_KNOTS
from training.approximation import fit_error
from training.testing import cost, reveal, start_cluster

U = U16
EH = segments_bound("normal_cdf_odd", GELU_KNOTS, 0.5, U / 2)
"""GELU pieces' derived bound (4.3e-5)."""
ET = segments_bound("tanh", TANH_KNOTS, 1.0, U / 2)
"""tanh pieces' derived bound (7.2e-5)."""
S, C = math.sqrt(2 / math.pi), 0.044715


def inputs() -> torch.Tensor:
    """[-10, 10] densely, and the edges: +-30 and near +-2**15 (the top of 2/16); below
    3,333 elements, so the tanh form's 3 ReLUs in one op stay FSS (WAN: up to 10^4)."""
    ends = torch.tensor([-30.0, 30.0, -16384.5, 16384.5, -TOP, TOP, -32000.0, 32000.0])
    return torch.cat([torch.linspace(-10, 10, 3001), ends])


def weights(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) + 0.5


async def run(fn: Any, x: torch.Tensor) -> tuple[Any, ...]:
    """Values, gradients of sum(w y), rounds and bytes of the forward, rounds of both."""
    w = weights(x)
    async with start_cluster(2, seed=2, protocols=WAN) as c:
        sx = c.share(x, precision=16, base=2, requires_grad=True)
        y, fwd = await cost(c, lambda: fn(sx))
        _, both = await cost(c, lambda: (y * public(w)).sum().backward())
        got, grad = await reveal(y), await reveal(sx.grad)
    xd = x.double().requires_grad_(True)
    ref = fn(xd)
    (ref * w.double()).sum().backward()
    assert xd.grad is not None
    return got, grad, ref.detach(), xd.grad, w.double(), fwd, both


def test_gelu_fits_are_as_documented() -> None:
    """docs/ops.md: fits 1.8e-5, 1.7e-5, 6.1e-6; pieces' bound 4.3e-5; tail 1 - Phi(5)."""
    fits = [fit_error("normal_cdf_odd", a, b) for a, b in pairwise(GELU_KNOTS)]
    assert max(fits) < 2e-5 and EH < 4.5e-5
    assert 0.5 * math.erfc(GELU_KNOTS[-1] / math.sqrt(2)) < 3e-7


async def test_gelu_forward_and_backward() -> None:
    x = inputs()
    got, grad, ref, gref, w, fwd, both = await run(F.gelu, x)
    t = x.double().abs()
    tail = (t * torch.special.ndtr(-t)).where(t >= GELU_KNOTS[-1], torch.zeros_like(t))
    tol = t * EH + 2 * U + tail + F32 * ref.abs()
    err = (got - ref).abs()
    assert bool((err <= tol).all()), float((err - tol).max())
    tc = t.clamp(max=6.0)
    phi = torch.exp(-(tc**2) / 2) / math.sqrt(2 * math.pi)
    dphi = 2 * U + phi * (2 * tc + 1) * 2.0**-15  # exp's 2 u, its input's error
    gtol = (EH + tc * dphi + 4 * U) * w + 4 * U * (1 + gref.abs())
    gerr = (grad - gref).abs()
    assert bool((gerr <= gtol).all()), float((gerr - gtol).max())
    assert fwd.online_rounds == 6  # relu; bits; u^2; u^3 u^4; select; t m
    assert both.online_rounds == 10  # relu(t - 6); tc^2; exp (6); tc phi; sign; (g local)


def _z(t: torch.Tensor) -> torch.Tensor:
    return S * (t + C * t**3)


async def test_gelu_tanh_forward_and_backward() -> None:
    x = inputs()
    got, grad, ref, gref, w, fwd, both = await run(lambda v: F.gelu(v, approximate="tanh"), x)
    t = x.double().abs()
    tc = t.clamp(max=6.0)
    z = _z(tc)
    ez = tc * (S * C * (2 * tc + 1) * 2.0**-15 + 2.0**-15 + 36 * 2.0**-19) + U
    far = z >= TANH_KNOTS[-1] - ez  # 1 - tanh dropped (exactly 0)
    drop = 0.5 * t * (1 - torch.tanh(z))
    tol = 0.5 * t * (ET + ez) + drop * far + 3 * U + F32 * ref.abs()
    err = (got - ref).abs()
    assert bool((err <= tol).all()), float((err - tol).max())
    dz = S * (1 + 3 * C * tc**2)
    gdrop = 0.5 * (1 - torch.tanh(z)) + 0.5 * t * (1 - torch.tanh(z) ** 2) * dz
    gtol = ((0.5 + 2 * t * dz) * (ET + ez) + gdrop * far + 6 * U) * w + 4 * U * (1 + gref.abs())
    gerr = (grad - gref).abs()
    assert bool((gerr <= gtol).all()), float((gerr - gtol).max())
    assert fwd.online_rounds == 8  # 3 relus; tc^2; z; tanh's pieces (4); tc n
    assert both.online_rounds == 4  # T^2; (1 - T^2) z'; tc w; sign


@pytest.mark.parametrize("alpha", [1.0, 0.5])
async def test_elu_forward_and_backward(alpha: float) -> None:
    x = inputs()
    got, grad, ref, gref, w, fwd, both = await run(lambda v: F.elu(v, alpha), x)
    tol = alpha * 2 * U + 2 * U + F32 * ref.abs()
    err = (got - ref).abs()
    assert bool((err <= tol).all()), float((err - tol).max())
    # at an input that encodes as 0 the gradient is the right-hand 1 (docs/ops.md, "Gradients
    # at a kink"); torch gives alpha
    zero = (x.double() * 2**16).round() == 0
    gref = gref.where(~zero, w)
    gtol = (alpha * 2 * U + 2 * U) * w + 4 * U * (1 + gref.abs())
    gerr = (grad - gref).abs()
    assert bool((gerr <= gtol).all()), float((gerr - gtol).max())
    assert fwd.online_rounds == 7  # relu; exp_nonpositive's relu + 5
    assert both.online_rounds == 1  # the bit's product


async def test_modules_and_refusals() -> None:
    x = torch.linspace(-3, 3, 13)
    async with start_cluster(2, seed=2) as c:
        s = c.share(x, precision=16, base=2)
        got = await reveal(nn.GELU()(s))
        assert float((got - F.gelu(x.double())).abs().max()) <= 3 * EH + 2 * U
        got = await reveal(nn.GELU(approximate="tanh")(s))
        ref = F.gelu(x.double(), approximate="tanh")
        assert float((got - ref).abs().max()) <= 1.5 * ET + 1e-4
        got = await reveal(nn.ELU(alpha=0.5)(s))
        assert float((got - F.elu(x.double(), 0.5)).abs().max()) <= 4 * U
        coarse = c.share(x)
        for name, call in [("gelu", F.gelu), ("elu", F.elu)]:
            with pytest.raises(UnsupportedOperation, match=rf"{name}.*base 2.*precision=16"):
                call(coarse)
        with pytest.raises(UnsupportedOperation, match="in-place elu"):
            F.elu(s, inplace=True)
        with pytest.raises(ValueError, match="approximate"):
            F.gelu(s, approximate="fast")


async def test_gelu_network_trains_like_torch() -> None:
    """Linear(4, 8), GELU, Linear(8, 1), MSE, 3 SGD steps at lr 0.1 beside float64 torch.
    Per step the hidden units are off by |h| 4.3e-5 + 2 u (|h| < 3 here: ~1.6e-4), the
    output by the second layer's |w| sum times that (< 3: 5e-4) and the products' units,
    the loss (mean of squares, outputs ~1) by ~2 x 5e-4; the parameters then drift by lr
    times the gradients' errors per step: 3e-3 covers all three steps."""
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 1))
    ref = copy.deepcopy(net).double()
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(16, 4, generator=g), torch.randn(16, 1, generator=g)
    ropt = torch.optim.SGD(ref.parameters(), lr=0.1)
    async with start_cluster(2, seed=6) as c:
        model = c.share_module(net, precision=16, base=2)
        opt = SGD(model.parameters(), lr=0.1)
        xs = c.share(x, precision=16, base=2)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = F.mse_loss(model(xs), y)
            loss.backward()
            opt.step()
            ropt.zero_grad()
            rloss = F.mse_loss(ref(x.double()), y.double())
            rloss.backward()
            ropt.step()
            losses.append((float(await loss.get()), float(rloss.detach())))
    for got, want in losses:
        assert abs(got - want) <= 3e-3, losses
    assert losses[-1][1] < losses[0][1]  # it trains


CASES = [
    ("gelu", GELU_KNOTS[-1], F.gelu),
    ("gelu_tanh", 3.5, lambda s: F.gelu(s, approximate="tanh")),
    ("elu", 30.0, F.elu),
]


@pytest.mark.parametrize(("name", "edge", "fn"), CASES, ids=[n for n, _, _ in CASES])
async def test_every_truncation_below_2_34(
    name: str, edge: float, fn: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An instrumented forward and backward (tests/test_edges_at_scale.py's tap): every
    truncated value below 2**34 raw. The piecewise tables' inputs stop at their last knot
    (beyond it the powers are garbage the selection cancels exactly): |x| <= 5 for gelu,
    z <= 4.5 (|x| <= 3.5) for the tanh form; elu's exponential on any input, up to 2**15."""
    tap = TruncationTap()
    monkeypatch.setattr(kinds, "truncate_local", tap)
    x = torch.linspace(-edge, edge, 6_000)
    if name == "elu":
        x = torch.cat([x, torch.tensor([-TOP, TOP, -16384.5])])
    async with start_cluster(2, seed=5) as c:
        s = c.share(x, precision=16, base=2, requires_grad=True)
        y = fn(s)
        y.sum().backward()  # g = 1, an exact integer (a weight's scaling would be the tap's)
        await reveal(y)
        await reveal(s.grad)
    assert tap.unpaired == 0 and not tap.pending, (tap.unpaired, list(tap.pending))
    assert len(tap.raw) >= 6
    worst = max(tap.raw.values())
    assert worst < 2**34, f"{name}: a truncation of 2**{math.log2(worst):.2f} raw"
