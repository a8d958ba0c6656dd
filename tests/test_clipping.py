"""Gradient clipping on shares (training/clipping.py): torch's own names
(``torch.nn.utils.clip_grad_norm_`` and friends, which raised a raw TypeError on shared
gradients) clip shared gradients as torch clips the plaintext model's; plaintext calls
still run torch's function; the cost is the norm's plus one reciprocal, one ReLU and one
product for all gradients together."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import training
from protocols.errors import UnsupportedOperation
from training import clipping
from training.range_reduction import reciprocal_positive
from training.testing import cost, reveal, start_cluster

FP = {"precision": 16, "base": 2}
U = 2.0**-16


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))


async def _with_grads(c, net: nn.Module, scale: float):  # type: ignore[no-untyped-def]
    """A shared copy of ``net`` with the gradients of one loss, and plaintext parameters
    holding those gradients as revealed: the oracle clips exactly what the shares hold,
    so the comparison measures the clipping alone."""
    x = torch.randn(8, 3, generator=torch.Generator().manual_seed(1))
    shared = c.share_module(copy.deepcopy(net), **FP)
    (shared(c.share(x, **FP)) ** 2 * scale).sum().backward()
    plain = []
    for p in shared.parameters():
        q = nn.Parameter(torch.zeros(tuple(p.shape), dtype=torch.float64))
        q.grad = await reveal(p.grad)
        plain.append(q)
    return shared, plain


async def _grads_close(shared: nn.Module, plain: list[nn.Parameter], rel: float) -> None:
    for (name, p), q in zip(shared.named_parameters(), plain, strict=True):
        got, want = await reveal(p.grad), q.grad
        tol = rel * float(want.abs().max()) + 2 * U
        assert float((got - want).abs().max()) <= tol, name


@pytest.mark.parametrize(
    ("norm_type", "max_norm", "scale"),
    [(2.0, 1.0, 1.0), (2.0, 100.0, 1.0), (2.0, 0.5, 30.0), (math.inf, 0.2, 1.0), (1.0, 2.0, 1.0)],
)
async def test_clip_grad_norm_equals_torch(norm_type: float, max_norm: float, scale: float) -> None:
    """Clipped (norm above max_norm, including a norm of ~100 whose sum of squares passes
    2**13) and untouched (max_norm above the norm) alike; the returned norm is torch's."""
    async with start_cluster(2) as c:
        shared, plain = await _with_grads(c, _net(), scale)
        want = torch.nn.utils.clip_grad_norm_(plain, max_norm, norm_type)
        # a generator, as models pass it
        got = torch.nn.utils.clip_grad_norm_(shared.parameters(), max_norm, norm_type)
        assert isinstance(got, training.SharedTensor)
        norm = float(await reveal(got))
        assert abs(norm - float(want)) <= 1e-3 * float(want) + 4 * U
        # the coefficient's error: the norm's and the reciprocal's, relative
        await _grads_close(shared, plain, 2e-3)


async def test_clip_grad_value_equals_torch() -> None:
    async with start_cluster(2) as c:
        shared, plain = await _with_grads(c, _net(), 1.0)
        torch.nn.utils.clip_grad_value_(plain, 0.3)
        torch.nn.utils.clip_grad_value_(shared.parameters(), 0.3)
        await _grads_close(shared, plain, 0.0)
        for p in shared.parameters():
            assert float((await reveal(p.grad)).abs().max()) <= 0.3 + U


async def test_the_names_torch_users_call_dispatch_and_plain_calls_stay_torchs() -> None:
    from torch.nn.utils import clip_grad_norm_ as bound_after_import
    from torch.nn.utils.clip_grad import clip_grad_value_ as from_the_module

    assert bound_after_import.__wrapped__ is bound_after_import.__training_original__
    net = _net()
    x = torch.randn(4, 3)
    ref = copy.deepcopy(net)
    net(x).sum().backward()
    ref(x).sum().backward()
    a = bound_after_import(net.parameters(), 0.1)
    b = bound_after_import.__training_original__(ref.parameters(), 0.1)
    assert torch.equal(a, b)
    for p, q in zip(net.parameters(), ref.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad)
    from_the_module(net.parameters(), 0.01)
    assert all(float(p.grad.abs().max()) <= 0.01 for p in net.parameters())
    wrapper = torch.nn.utils.clip_grad_norm_
    clipping.install()  # idempotent: no wrapper of a wrapper
    assert torch.nn.utils.clip_grad_norm_ is wrapper
    assert not hasattr(wrapper.__training_original__, "__training_original__")


async def test_clipping_refuses_what_it_cannot_do_by_name() -> None:
    async with start_cluster(2) as c:
        shared, plain = await _with_grads(c, _net(), 1.0)
        mixed = [*shared.parameters(), *plain]
        with pytest.raises(UnsupportedOperation, match="plaintext tensors beside shared"):
            torch.nn.utils.clip_grad_norm_(mixed, 1.0)
        with pytest.raises(UnsupportedOperation, match=r"below 0\.00390625"):
            torch.nn.utils.clip_grad_norm_(shared.parameters(), 1e-3)
        with pytest.raises(ValueError, match="clip_value must be >= 0"):
            torch.nn.utils.clip_grad_value_(shared.parameters(), -1.0)


async def test_clip_grad_norm_cost_is_the_norm_and_three_ops() -> None:
    """Rounds: the total norm's, then reciprocal, ReLU and one product in sequence; the
    product is one op for every gradient (not one per parameter)."""
    async with start_cluster(2) as c:
        shared, _ = await _with_grads(c, _net(), 1.0)
        grads = [p.grad for p in shared.parameters()]
        flat = clipping._flat(grads)
        total, norm_cost = await cost(c, lambda: clipping.get_total_norm(grads))
        recip, recip_cost = await cost(c, lambda: reciprocal_positive(total))
        coef, relu_cost = await cost(c, lambda: (recip - 1.0).relu())
        _, mul_cost = await cost(c, lambda: flat * coef)
        _, clip_cost = await cost(
            c, lambda: torch.nn.utils.clip_grad_norm_(shared.parameters(), 1.0)
        )
        parts = [norm_cost, recip_cost, relu_cost, mul_cost]
        assert clip_cost.online_rounds == sum(p.online_rounds for p in parts)
        assert mul_cost.online_rounds == 1
