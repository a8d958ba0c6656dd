"""Cross-entropy's and BCE's options against torch float64: ``weight``, ``label_smoothing``,
``ignore_index`` and every reduction, class-index and probability targets (public and
shared), the gradients of the logits and of shared targets (2 parties, 2/16).

Torch's definitions (``aten/src/ATen/native/LossNLL.cpp``): every cross-entropy here is
``-sum_c T_c log_softmax(x)_c`` per sample with the per-element weights

* class indices y: ``T_c = ((1 - eps) [c = y] + eps / C) w_c``, 0 on ignored samples; the
  mean divides by ``sum_n w[y_n]`` over the samples kept (the smoothing term included in
  the numerator only);
* probability targets t: ``T_c = (t_c (1 - eps) + eps / C) w_c``; the mean divides by N.

So d loss / d x = ``(softmax(x) rowsum(T) - T) s`` and, for shared probability targets,
d loss / d t = ``-(1 - eps) w log_softmax(x) s``, with s the reduction's factor (1, 1 / the
denominator, or the output gradient of ``none``).

Tolerances, from docs/ops.md: the cross-entropy row's bound 0.003 on each log-probability
and each probability (:data:`E`; log_softmax measured 1.4e-4 worst of 10^7), so a sample's
loss is within ``E sum_c |T_c|``, a logit's gradient within ``E |rowsum(T)| |s|`` and a
target's within ``(1 - eps) |w_c| E |s|``; BCE's logs within log's 1.4e-4 (:data:`E_LOG`,
p in [0.05, 0.95] inside its range) and its input gradient's reciprocals within a relative
7e-5 (:data:`E_RECIP`); BCE-with-logits' target gradient ``-x s`` is a product (a few
units u), its input gradient sigmoid's (:data:`E_SIG`: the pieces 3.8e-5, the tail 1.58e-4). Plus :data:`SLACK` units for the final products' truncations. Every input
is a multiple of 2**-16 (targets, logits) or 2**-8 (weights, output gradients), so the
shares encode exactly what torch gets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from training.testing import reveal, start_cluster

U = 2.0**-16
E = 0.003
E_LOG = 1.4e-4
E_RECIP = 7e-5
E_SIG = 1.6e-4
SLACK = 8 * U
C = 5
W = torch.tensor([0.25, 4.0, 1.0, 2.0, 0.5], dtype=torch.float64)
REDUCTIONS = ("none", "sum", "mean")


def q(t: torch.Tensor, bits: int = 16) -> torch.Tensor:
    return torch.round(t.double() * 2**bits) / 2**bits


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def share(c: Any, t: torch.Tensor, grad: bool = True) -> Any:
    return c.share(t, precision=16, base=2, requires_grad=grad)


def out_grad(reduction: str, shape: tuple[int, ...], seed: int) -> torch.Tensor | None:
    """The output gradient of ``none`` (varied, so a wrong row shows), else None."""
    if reduction != "none":
        return None
    return q(torch.rand(shape, generator=gen(seed)) * 2 - 0.5, 8)


def ce_terms(
    x: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float,
    ignore: int,
    reduction: str,
    gout: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, s): the per-element weights of -log_softmax and the reduction's factor, both
    broadcast like x, for the tolerances."""
    w = torch.ones(C, dtype=torch.float64) if weight is None else weight
    wb = w.reshape([1, C] + [1] * (x.dim() - 2))
    if target.is_floating_point():
        big_t = (target * (1 - eps) + eps / C) * wb
        denom = float(x.numel() // C)
    else:
        keep = target != ignore
        safe = torch.where(keep, target, 0)
        onehot = F.one_hot(safe, C).double().movedim(-1, 1)
        big_t = (onehot * (1 - eps) + eps / C) * wb * keep.unsqueeze(1)
        denom = float((w[safe] * keep).sum())
    if reduction == "none":
        assert gout is not None
        s = gout.unsqueeze(1).expand_as(x)
    else:
        s = torch.full_like(x, 1.0 / denom if reduction == "mean" else 1.0)
    return big_t, s


async def check_ce(
    c: Any,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    weight: torch.Tensor | None,
    eps: float,
    reduction: str,
    ignore: int = -100,
    shared_target: bool = False,
    logits_grad: bool = True,
    seed: int = 0,
) -> None:
    name = (tuple(x.shape), weight is not None, eps, reduction, ignore, shared_target)
    kw: dict[str, Any] = {"reduction": reduction, "label_smoothing": eps}
    if ignore != -100:
        kw["ignore_index"] = ignore
    xr = x.clone().requires_grad_(True)
    tr = target.clone().requires_grad_(True) if shared_target else target
    ref = F.cross_entropy(xr, tr, weight=weight, **kw)
    gout = out_grad(reduction, tuple(ref.shape), seed)
    ref.backward(gout)
    sx = share(c, x, grad=logits_grad)
    st = share(c, target) if shared_target else target
    loss = F.cross_entropy(sx, st, weight=None if weight is None else weight.float(), **kw)
    loss.backward(gout)
    big_t, s = ce_terms(x, target, weight, eps, ignore, reduction, gout)
    # the loss: each sample within E sum_c |T_c|, summed (times |s|) by the reduction
    per = E * big_t.abs().sum(1)
    ltol = per if reduction == "none" else (per * s[:, 0].abs()).sum()
    lerr = (await reveal(loss) - ref.detach()).abs()
    assert bool((lerr <= ltol + SLACK).all()), (name, "loss", lerr.max(), ltol)
    if logits_grad:
        assert xr.grad is not None and sx.grad is not None, name
        gtol = E * big_t.sum(1, keepdim=True).abs() * s.abs() + SLACK
        gerr = (await reveal(sx.grad) - xr.grad).abs()
        assert bool((gerr <= gtol).all()), (name, "logits grad", (gerr - gtol).max())
    if shared_target:
        assert tr.grad is not None
        assert st.grad is not None, (name, "no target gradient")
        w = torch.ones(C, dtype=torch.float64) if weight is None else weight
        ttol = (1 - eps) * w.reshape(1, C) * E * s.abs() + SLACK
        terr = (await reveal(st.grad) - tr.grad).abs()
        assert bool((terr <= ttol).all()), (name, "target grad", (terr - ttol).max())


async def test_user_trial_weight_with_label_smoothing() -> None:
    """The trial's case: weight [1..5], smoothing 0.1 (row 0 was 4.0117 for torch's 4.3743)."""
    torch.manual_seed(0)
    x = q(torch.randn(6, 5) * 2)
    y = torch.tensor([0, 4, 2, 1, 1, 3])
    w = torch.arange(1.0, 6.0, dtype=torch.float64)
    async with start_cluster(2, seed=3) as c:
        for reduction in REDUCTIONS:
            await check_ce(c, x, y, weight=w, eps=0.1, reduction=reduction)


@pytest.mark.parametrize("shape", [(12, C), (4, C, 3)])
async def test_cross_entropy_class_indices_every_option(shape: tuple[int, ...]) -> None:
    """weight x label_smoothing x ignore_index x reduction; the targets lean to the light
    classes 0 and 4 so that a smoothing term weighted by w[y] instead of w_c shows in the
    mean too."""
    g = gen(11 + len(shape))
    x = q(torch.randn(shape, generator=g) * 2)
    want = (shape[0], *shape[2:])
    y = torch.tensor([0, 4, 0, 2, 4, 0, 1, 4, 0, 3, 0, 4]).reshape(want)
    async with start_cluster(2, seed=4) as c:
        i = 0
        for weight in (None, W):
            for eps in (0.0, 0.3):
                for ignore in (-100, 4):
                    for reduction in REDUCTIONS:
                        i += 1
                        await check_ce(
                            c, x, y, weight=weight, eps=eps, reduction=reduction,
                            ignore=ignore, seed=i,
                        )  # fmt: skip


@pytest.mark.parametrize("shared", [False, True], ids=["public", "shared"])
async def test_cross_entropy_probability_targets_every_option(shared: bool) -> None:
    """weight x label_smoothing x reduction, targets that do not sum to 1 (torch does not
    ask them to); shared targets with requires_grad get torch's gradient."""
    g = gen(21)
    x = q(torch.randn(8, C, generator=g) * 2)
    t = q(torch.rand(8, C, generator=g))
    async with start_cluster(2, seed=5) as c:
        i = 0
        for weight in (None, W):
            for eps in (0.0, 0.3):
                for reduction in REDUCTIONS:
                    i += 1
                    await check_ce(
                        c, x, t, weight=weight, eps=eps, reduction=reduction,
                        shared_target=shared, seed=i,
                    )  # fmt: skip
        if shared:  # only the target requires grad
            await check_ce(
                c, x, t, weight=W, eps=0.1, reduction="mean", shared_target=True,
                logits_grad=False,
            )  # fmt: skip


@pytest.mark.parametrize("kind", ["bce", "bce_logits"])
async def test_bce_shared_targets_get_torch_gradients(kind: str) -> None:
    """d/dt of BCE is log(1 - p) - log(p) (each log within E_LOG); with logits, -x (one
    product: SLACK). Every reduction; the input's gradient still as before."""
    g = gen(31)
    if kind == "bce":
        fn: Callable[..., Any] = F.binary_cross_entropy
        x = q(torch.rand(6, 4, generator=g) * 0.9 + 0.05)
    else:
        fn = F.binary_cross_entropy_with_logits
        x = q(torch.randn(6, 4, generator=g) * 2)
    t = q(torch.rand(6, 4, generator=g))
    if kind == "bce":  # (1 - t) / (1 - p) - t / p, each reciprocal within E_RECIP
        ttol_unit = 2 * E_LOG
        xtol_unit = E_RECIP * ((1 - t) / (1 - x) + t / x) + 4 * U
    else:  # sigmoid(x) - t
        ttol_unit, xtol_unit = 0.0, E_SIG + U
    async with start_cluster(2, seed=6) as c:
        for i, reduction in enumerate(REDUCTIONS):
            for input_grad in (True, False):
                xr = x.clone().requires_grad_(input_grad)
                tr = t.clone().requires_grad_(True)
                ref = fn(xr, tr, reduction=reduction)
                gout = out_grad(reduction, tuple(ref.shape), i)
                ref.backward(gout)
                sx, st = share(c, x, grad=input_grad), share(c, t)
                loss = fn(sx, st, reduction=reduction)
                loss.backward(gout)
                s = (
                    gout
                    if gout is not None
                    else torch.full_like(x, 1 / x.numel() if reduction == "mean" else 1.0)
                )
                assert st.grad is not None, (kind, reduction, "no target gradient")
                assert tr.grad is not None
                terr = (await reveal(st.grad) - tr.grad).abs()
                assert bool((terr <= ttol_unit * s.abs() + SLACK).all()), (
                    kind,
                    reduction,
                    terr.max(),
                )
                if input_grad:
                    assert xr.grad is not None
                    xerr = (await reveal(sx.grad) - xr.grad).abs()
                    assert bool((xerr <= xtol_unit * s.abs() + SLACK).all()), (kind, reduction)


E_SP = 4.5e-5  # softplus: the pieces' derived bound (docs/ops.md)


@pytest.mark.parametrize("shared", [False, True], ids=["public", "shared"])
async def test_bce_with_logits_weight_and_pos_weight(shared: bool) -> None:
    """torch's ``w [(1 + (p - 1) t) softplus(x) - p t x]`` (refused by name before):
    weight (per element, broadcast) x pos_weight (per class) x reduction, public and
    shared targets, the input's and a shared target's gradients. Per element the loss is
    within |w| (|1 + (p - 1) t| E_SP + a few units) of torch's, the input's gradient within
    |w| |1 + (p - 1) t| E_SIG per unit of output gradient, the target's within |w| |p - 1|
    E_SP."""
    g = gen(41)
    x = q(torch.randn(6, 3, generator=g) * 3)
    t = q(torch.rand(6, 3, generator=g))
    w = q(torch.rand(6, 1, generator=g) * 2 + 0.25, 8)
    p = torch.tensor([0.5, 1.0, 3.0], dtype=torch.float64)
    lead = (1 + (p - 1) * t).abs()
    async with start_cluster(2, seed=8) as c:
        for i, reduction in enumerate(REDUCTIONS):
            for weight, pos in ((w, None), (None, p), (w, p)):
                xr, tr = x.clone().requires_grad_(True), t.clone().requires_grad_(shared)
                ref = F.binary_cross_entropy_with_logits(
                    xr, tr, weight=weight, pos_weight=pos, reduction=reduction
                )
                gout = out_grad(reduction, tuple(ref.shape), i)
                ref.backward(gout)
                sx = share(c, x)
                st = share(c, t, grad=True) if shared else t
                loss = F.binary_cross_entropy_with_logits(
                    sx, st, weight=weight, pos_weight=pos, reduction=reduction
                )
                loss.backward(gout)
                wa = (w if weight is not None else torch.ones(1, dtype=torch.float64)).abs()
                la = lead if pos is not None else torch.ones_like(x)
                s = (
                    gout.abs()
                    if gout is not None
                    else torch.full_like(x, 1 / x.numel() if reduction == "mean" else 1.0)
                )
                per = wa * (la * E_SP + 4 * U)
                lt = float(per.sum() / (x.numel() if reduction == "mean" else 1))
                got = await reveal(loss)
                if reduction == "none":
                    assert bool(((got - ref.detach()).abs() <= per + SLACK).all()), reduction
                else:
                    assert abs(float(got) - float(ref.detach())) <= lt + SLACK, (
                        reduction,
                        weight,
                        pos,
                    )
                xerr = (await reveal(sx.grad) - xr.grad).abs()
                assert bool((xerr <= wa * la * E_SIG * s + SLACK).all()), (reduction, xerr.max())
                if shared:
                    assert st.grad is not None and tr.grad is not None
                    pm = (p - 1).abs() if pos is not None else torch.zeros(3, dtype=torch.float64)
                    terr = (await reveal(st.grad) - tr.grad).abs()
                    assert bool((terr <= wa * (pm * E_SP + 4 * U) * s + SLACK).all()), reduction
