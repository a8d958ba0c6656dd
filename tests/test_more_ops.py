"""The ops of training/more_ops.py (split, chunk, bmm, masked_fill, layer_norm,
smooth_l1_loss, huber_loss, max_pool1d, avg_pool1d) against float64 torch, values and
gradients through ``.backward()``, 2 parties, base 2 / 16 bits (u = 2**-16), the default
suite's WAN form (the figures docs/ops.md states).

Tolerances come from docs/ops.md's accuracy of the pieces: an input's encoding is off by
u/2; a slice, a public selection and a product by a comparison bit (precision 0, no
truncation) are exact on encodings; a product of two reals adds one truncation (u) to
``|a| e_b + |b| e_a``; ``rsqrt`` is relative 1.5e-4 (or 2 u absolute).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protocols.errors import ShapeError, UnsupportedOperation
from training import SGD, public
from training.testing import cost, reveal, start_cluster

WAN = "default@10000"
U = 2.0**-16
EXACT = 1e-5
"""An exact op: the inputs' encoding (u/2 = 7.6e-6) is all it differs from torch by."""


def randn(*shape: int, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, dtype=torch.float64, generator=g) * scale


def share(c: Any, t: torch.Tensor, requires_grad: bool = False) -> Any:
    return c.share(t, precision=16, base=2, requires_grad=requires_grad)


def err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().abs().max())


async def test_split_and_chunk_are_local_slices() -> None:
    t = randn(4, 7, seed=1)
    async with start_cluster(2, seed=1, protocols=WAN) as c:
        x = share(c, t, requires_grad=True)
        forms = [
            (lambda v: torch.split(v, 3, dim=1), "torch.split int"),
            (lambda v: v.split([2, 4, 1], -1), "Tensor.split list"),
            (lambda v: torch.chunk(v, 3, 1), "torch.chunk"),
            (lambda v: v.chunk(2), "Tensor.chunk dim 0"),
            (lambda v: v.chunk(5, 1), "chunk: fewer pieces than asked (torch's 4 of 2)"),
        ]
        for fn, what in forms:
            ref = fn(t)
            pieces, st = await cost(c, lambda fn=fn: fn(x))
            assert isinstance(pieces, tuple) and len(pieces) == len(ref), what
            assert (st.online_rounds, st.online_bytes, st.offline_bytes) == (0, 0, 0), what
            for p, r in zip(pieces, ref, strict=True):
                assert tuple(p.shape) == tuple(r.shape), what
                assert err(await reveal(p), r) <= EXACT, what
        # gradient: each piece weighted by its own public factor; the slices' adjoint
        # scatters give every element its piece's factor (exact: public factors)
        pieces = x.split([2, 4, 1], 1)
        ws = [
            torch.full(tuple(p.shape), i + 1.0, dtype=torch.float64) for i, p in enumerate(pieces)
        ]
        loss = sum((p * public(w)).sum() for p, w in zip(pieces, ws, strict=True))
        loss.backward()
        tr = t.clone().requires_grad_(True)
        sum((p * w).sum() for p, w in zip(tr.split([2, 4, 1], 1), ws, strict=True)).backward()
        assert tr.grad is not None and err(await reveal(x.grad), tr.grad) <= EXACT
        with pytest.raises(ShapeError, match="split"):
            x.split([2, 2], 1)  # sizes must sum to 7, as torch says


async def test_bmm_values_gradients_and_checks() -> None:
    a, b = randn(3, 4, 5, seed=2), randn(3, 5, 2, seed=3)
    g = randn(3, 4, 2, seed=4)
    async with start_cluster(2, seed=2, protocols=WAN) as c:
        sa, sb = share(c, a, True), share(c, b, True)
        z, st = await cost(c, lambda: torch.bmm(sa, sb))
        assert st.online_rounds == 1
        # each entry: k = 5 products of encodings off by u/2 each (|a| u/2 + |b| u/2
        # per product) plus one truncation u
        k = 5
        tol = k * (float(a.abs().max()) + float(b.abs().max())) * U / 2 + 2 * U
        assert err(await reveal(z), torch.bmm(a, b)) <= tol
        (z * public(g)).sum().backward()
        ta, tb = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        (torch.bmm(ta, tb) * g).sum().backward()
        assert ta.grad is not None and tb.grad is not None
        # gradients g @ b^T (2 terms) and a^T @ g (4 terms): the same per-product budget
        gtol = 4 * (float(g.abs().max()) + max(float(a.abs().max()), float(b.abs().max())))
        gtol = gtol * U / 2 + 2 * U
        assert err(await reveal(sa.grad), ta.grad) <= gtol
        assert err(await reveal(sb.grad), tb.grad) <= gtol
        assert err(await reveal(sa.bmm(public(b))), torch.bmm(a, b)) <= tol  # method form
        with pytest.raises(ShapeError, match="3-d"):
            torch.bmm(sa[0], sb[0])
        with pytest.raises(ShapeError, match="cannot be multiplied"):
            torch.bmm(sa, sa)


async def test_masked_fill_public_and_shared_masks() -> None:
    t = randn(4, 6, seed=5)
    w = randn(4, 6, seed=6)
    async with start_cluster(2, seed=3, protocols=WAN) as c:
        x = share(c, t, True)
        full, row = t > 0.3, torch.tensor([[True], [False], [True], [False]])
        for mask, value in ((full, 2.5), (row, -1.25), (full, torch.tensor(0.75))):
            y, st = await cost(c, lambda mask=mask, value=value: x.masked_fill(mask, value))
            assert (st.online_rounds, st.online_bytes) == (0, 0)  # public mask: local
            assert err(await reveal(y), t.masked_fill(mask, value)) <= EXACT
        y = torch.masked_fill(x, row, 3.0)
        assert err(await reveal(y), torch.masked_fill(t, row, 3.0)) <= EXACT
        (y * public(w)).sum().backward()  # gradient w where the mask is false, 0 elsewhere
        assert err(await reveal(x.grad), w.masked_fill(row, 0.0)) <= EXACT
        # a shared 0/1 mask (a comparison): x + m (value - x), one product by a bit
        # (precision 0: no truncation), so exact on encodings
        m = x > 0.3
        y, st = await cost(c, lambda: x.masked_fill(m, 2.5))
        assert st.online_rounds == 1
        assert err(await reveal(y), t.masked_fill(full, 2.5)) <= EXACT
        with pytest.raises(ValueError, match="boolean"):
            x.masked_fill(full.double(), 1.0)
        with pytest.raises(ShapeError, match="broadcast"):
            x.masked_fill(torch.ones(2, 4, 6, dtype=torch.bool), 1.0)


LN_TOL = 2e-3
"""layer_norm's values: ``xc * r * w + b`` with r = rsqrt(var + eps) relative 1.5e-4
(docs/ops.md), so ``|y| 1.5e-4`` with |y| <= sqrt(16) = 4 per row of 16; the mean's and
the square's truncations (u each, relative u / var on var) and the affine product (|w|
below 1.5 here, one truncation) add a few u: 4 * 1.5e-4 * 1.5 + 8 u < 1e-3, doubled
(measured at 256 rows: 1.1e-4 for N(0, 1), 4.4e-4 for N(0, 10)).
Gradients, relative to the largest gradient entry, 3 * LN_TOL: through rsqrt's backward
``-g r³ / 2`` three factors of r (4.5e-4 relative), and at N(0, 10) r³ / 2 ~ 5e-4 is held
at an absolute u (3% of it) on the variance path, largely cancelled against the mean's:
measured 4.4e-5 (N(0, 1)) and 2.5e-3 (N(0, 10)) relative at 256 rows, so 6e-3."""


@pytest.mark.parametrize("scale", [1.0, 10.0])
async def test_layer_norm_matches_torch(scale: float) -> None:
    t = randn(8, 16, seed=7, scale=scale)
    wt, bt = 1 + 0.5 * torch.rand(16, dtype=torch.float64), randn(16, seed=8)
    g = randn(8, 16, seed=9)
    async with start_cluster(2, seed=4, protocols=WAN) as c:
        x, w, b = share(c, t, True), share(c, wt, True), share(c, bt, True)
        y = F.layer_norm(x, (16,), w, b, eps=1e-5)
        tx, tw, tb = (v.clone().requires_grad_(True) for v in (t, wt, bt))
        ref = F.layer_norm(tx, (16,), tw, tb, eps=1e-5)
        assert err(await reveal(y), ref) <= LN_TOL
        (y * public(g)).sum().backward()
        (ref * g).sum().backward()
        for ours, theirs in ((x, tx), (w, tw), (b, tb)):
            assert theirs.grad is not None
            gerr = err(await reveal(ours.grad), theirs.grad)
            assert gerr <= 3 * LN_TOL * float(theirs.grad.abs().max()) + 8 * U
        # over two trailing dims, no affine
        y2 = F.layer_norm(x.reshape(8, 4, 4), [4, 4])
        assert err(await reveal(y2), F.layer_norm(t.reshape(8, 4, 4), [4, 4])) <= LN_TOL
        with pytest.raises(ShapeError, match="normalized_shape"):
            F.layer_norm(x, (8,))
    async with start_cluster(2, seed=4) as c:
        with pytest.raises(UnsupportedOperation, match="layer_norm needs base 2"):
            F.layer_norm(c.share(t), (16,))


async def test_layer_norm_module_trains_like_torch() -> None:
    """nn.Sequential(Linear, LayerNorm, ReLU, Linear) with MSE, 3 SGD steps beside
    float64 torch. Loss bound: the LayerNorm outputs are within LN_TOL (1e-3 measured
    margin aside), the last Linear(8, 2) sums 8 of them times |w| < 0.36 (its init bound
    1/sqrt(8)): 8 * 0.36 * 2e-3 = 6e-3 per prediction, and MSE's derivative 2 |pred -
    target| (< 3 here) over the mean: < 0.02; then the parameters drift by lr times their
    gradients' error per step. 0.03 covers both."""
    torch.manual_seed(21)
    net = nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.ReLU(), nn.Linear(8, 2))
    ref = copy.deepcopy(net).double()
    xt, yt = randn(16, 6, seed=10), randn(16, 2, seed=11)
    lr = 0.1
    ropt = torch.optim.SGD(ref.parameters(), lr=lr)
    loss_fn = nn.MSELoss()
    async with start_cluster(2, seed=5) as c:
        model = c.share_module(net, precision=16, base=2)
        opt = SGD(model.parameters(), lr=lr)
        xs, ys = share(c, xt), share(c, yt)
        for _ in range(3):
            opt.zero_grad()
            loss = loss_fn(model(xs), ys)
            loss.backward()
            opt.step()
            ropt.zero_grad()
            rloss = loss_fn(ref(xt), yt)
            rloss.backward()
            ropt.step()
            assert abs(float(await loss.get()) - float(rloss.detach())) <= 0.03
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            assert err(await reveal(p), q.detach()) <= 0.03  # 3 steps of lr * 0.1 error


LOSS_TOL = 8 * U
"""Per element: d = x - t is off by u (two encodings); the ReLUs are exact on it; c = d -
p + q carries that u; 0.5 c² / beta is off by (2 |c| u + u) 0.5 / beta <= u + u / (2 beta),
its public factor's encoding and truncation a u more; the ReLU terms u: below 4 u + u / beta
(beta >= 0.5 here), doubled; the mean keeps it, the sum of n elements multiplies by n."""


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
async def test_smooth_l1_and_huber_losses(reduction: str) -> None:
    t, tg = randn(6, 5, seed=12, scale=1.5), randn(6, 5, seed=13)
    async with start_cluster(2, seed=6, protocols=WAN) as c:
        x = share(c, t, True)
        n = t.numel() if reduction == "sum" else 1
        for name, kw in (
            ("smooth_l1_loss", {"beta": 0.5}),
            ("smooth_l1_loss", {"beta": 1.0}),
            ("smooth_l1_loss", {"beta": 0.0}),
            ("huber_loss", {"delta": 0.7}),
            ("huber_loss", {"delta": 2.0}),
        ):
            fn = getattr(F, name)
            x.grad = None
            loss, st = await cost(c, lambda fn=fn, kw=kw: fn(x, tg, reduction=reduction, **kw))
            assert st.online_rounds == (1 if kw.get("beta") == 0 else 2), (name, kw)
            tx = t.clone().requires_grad_(True)
            ref = fn(tx, tg, reduction=reduction, **kw)
            scale = max(1.0, kw.get("delta", 1.0))
            assert err(await reveal(loss), ref) <= LOSS_TOL * n * scale, (name, kw)
            gw = randn(*ref.shape, seed=14) if reduction == "none" else torch.tensor(1.0)
            ((loss * public(gw)).sum() if reduction == "none" else loss).backward()
            (ref * gw).sum().backward()
            # gradient c / beta (huber: c + delta (bit terms)) times the upstream factor:
            # bit products are exact, c / beta is off by u / beta, the product with the
            # upstream factor adds a truncation (u, whatever the reduction's 1 / N)
            assert tx.grad is not None
            gtol = LOSS_TOL * max(1.0, float(gw.abs().max()))
            assert err(await reveal(x.grad), tx.grad) <= gtol * scale, (name, kw)
        assert nn.SmoothL1Loss(beta=0.5)(x, tg) is not None and nn.HuberLoss()(x, tg) is not None


async def test_pool1d_through_the_2d_pools() -> None:
    t = randn(2, 3, 11, seed=15)
    async with start_cluster(2, seed=7, protocols=WAN) as c:
        x = share(c, t, True)
        tx = t.clone().requires_grad_(True)
        cases = [
            (lambda v: F.max_pool1d(v, 3, 2, 1), EXACT),  # exact picks
            (lambda v: nn.MaxPool1d(2)(v), EXACT),
            (lambda v: F.max_pool1d(v, 3, stride=2, dilation=2, ceil_mode=True), EXACT),
            # window sum / public divisor: 1.5 u (docs/ops.md)
            (lambda v: F.avg_pool1d(v, 3, 2, 1), 2 * U),
            (lambda v: nn.AvgPool1d(4, 3, 2, ceil_mode=True, count_include_pad=False)(v), 2 * U),
        ]
        for i, (fn, tol) in enumerate(cases):
            y, ref = fn(x), fn(tx)
            assert tuple(y.shape) == tuple(ref.shape), i
            assert err(await reveal(y), ref) <= tol, i
            gw = randn(*ref.shape, seed=16 + i)
            x.grad, tx.grad = None, None
            (y * public(gw)).sum().backward()
            (ref * gw).sum().backward()
            # max: g routed by the one-hot (a bit product, exact) and summed over at most
            # 2 overlapping windows; avg: g / divisor (1.5 u) summed over at most 2
            assert tx.grad is not None and err(await reveal(x.grad), tx.grad) <= 3 * U + tol, i
        vals, idx = nn.MaxPool1d(3, 2, 1, return_indices=True)(x)
        rv, ri = F.max_pool1d(t, 3, 2, 1, return_indices=True)
        assert err(await reveal(vals), rv) <= EXACT
        assert torch.equal((await idx.get()).long(), ri)
        unbatched = F.avg_pool1d(x[0], 2)  # (C, L) input, as torch allows
        assert err(await reveal(unbatched), F.avg_pool1d(t[0], 2)) <= 2 * U


@pytest.mark.parametrize("kind", ["batch_norm", "layer_norm"])
async def test_normalisation_of_small_variances_equals_torch(kind: str) -> None:
    """Features of variance ~1e-3 (below 2**-8): rsqrt's default domain clamped
    1/sqrt(var) at 16 there, a user trial's BatchNorm/LayerNorm output off by 1.1 with no
    error (d2l's BatchNorm LeNet at batch 4 diverged). Now every positive encoding of the
    variance is normalised; the error is the variance's own resolution: |xhat| (2 u / var
    + 1.5e-4) + 2 u inv per element, u = 2**-16. The backward is the closed form (autograd
    through rsqrt's -y**3/2 passed 2**34 raw there): within the forward's error carried
    through it."""
    torch.manual_seed(3)
    x = (0.03 * torch.randn(16, 4, dtype=torch.float64)).round(decimals=4)
    w = torch.linspace(-1, 1, x.numel(), dtype=torch.float64).reshape(x.shape)
    dims = 0 if kind == "batch_norm" else 1
    xr = x.clone().requires_grad_(True)
    var = xr.detach().var(dims, unbiased=False, keepdim=True)
    if kind == "batch_norm":
        ref = F.batch_norm(xr, None, None, training=True)
    else:
        ref = F.layer_norm(xr, (4,))
    (ref * w).sum().backward()
    assert xr.grad is not None
    u = 2.0**-16
    inv = 1 / torch.sqrt(var + 1e-5)
    tol = ref.detach().abs() * (2 * u / var + 1.5e-4) + 2 * u * inv
    async with start_cluster(2) as c:
        xs = c.share(x, precision=16, base=2, requires_grad=True)
        if kind == "batch_norm":
            y = F.batch_norm(xs, None, None, training=True)
        else:
            y = F.layer_norm(xs, (4,))
        (y * public(w)).sum().backward()
        got = (await y.get()).double()
        assert xs.grad is not None
        gx = (await xs.grad.get()).double()
    assert bool(((got - ref.detach()).abs() <= tol).all()), float((got - ref.detach()).abs().max())
    # the forward's error e = tol carried through inv (g - mean(g) - xhat m), m = mean(g
    # xhat): e |m| + |xhat| mean(|g| e) and 4 u of truncations inside the bracket, times
    # inv; inv's own relative error (u / var + 0.2%) on the result, and 2 u for the last
    # truncation. (A bound of (6 u / var + 2%) of each row's largest entry missed a row in
    # about 1 of 60 runs: where g - mean(g) and xhat m nearly cancel, xhat's per-element
    # error dominates. 60 runs of each kind reach at most 0.45 of this bound.)
    m = (w * ref.detach()).mean(dims, keepdim=True)
    bracket = tol * m.abs() + ref.detach().abs() * (w.abs() * tol).mean(dims, keepdim=True)
    gtol = inv * (bracket + 4 * u) + xr.grad.abs() * (u / var + 2e-3) + 2 * u
    assert bool(((gx - xr.grad).abs() <= gtol).all()), float((gx - xr.grad).abs().max())
