"""``torch.matmul`` on shares for every operand rank torch accepts, and its gradients:
a vector operand is a row (left) or a column (right) of a matrix product whose added
dimension is dropped; batched operands broadcast over their leading dimensions and the
gradients are summed back over them. ``nn.Linear`` on 1-d and 3-d inputs goes the same way.
Before, the forward worked and ``.backward()`` raised ``ShapeError`` for every case but 2-d
by 2-d (the rule used ``b.t()``, which refuses 1-d and 3-d operands, and summed nothing).

Tolerance: base 2, 16 fractional bits; each output or gradient entry is a sum of at most
8 products of values below 4, truncated once: within 8 * 4 * 2**-16 plus a unit.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training import SharedTensor, public
from training.testing import start_cluster

TOL = 8 * 4 * 2.0**-16 + 2.0**-16

CASES = {
    "mat@vec": ((4, 5), (5,)),
    "vec@mat": ((5,), (5, 3)),
    "vec@vec": ((5,), (5,)),
    "3d@3d": ((2, 3, 4), (2, 4, 2)),
    "3d@2d": ((2, 3, 4), (4, 2)),
    "2d@3d": ((3, 4), (2, 4, 5)),
    "4d@3d": ((2, 1, 3, 4), (3, 4, 2)),
    "3d@vec": ((2, 3, 4), (4,)),
    "vec@3d": ((3,), (2, 3, 4)),
}


def _data(sa: tuple[int, ...], sb: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(len(sa) * 10 + len(sb))
    a = (torch.rand(sa, generator=g, dtype=torch.float64) * 4 - 2).round(decimals=3)
    b = (torch.rand(sb, generator=g, dtype=torch.float64) * 4 - 2).round(decimals=3)
    return a, b


async def _grads(x: SharedTensor | torch.Tensor) -> torch.Tensor:
    g = x.grad
    assert g is not None
    return (await g.get()) if isinstance(g, SharedTensor) else g


@pytest.mark.parametrize("which", ["both", "left", "right"])
@pytest.mark.parametrize("case", list(CASES))
async def test_matmul_and_its_gradients_equal_torch(case: str, which: str) -> None:
    """``which``: both operands shared, or only the left / right one (the other public)."""
    sa, sb = CASES[case]
    a, b = _data(sa, sb)
    ta, tb = a.clone().requires_grad_(), b.clone().requires_grad_()
    ref = ta @ tb
    w = torch.linspace(-1, 1, ref.numel(), dtype=torch.float64).reshape(ref.shape)
    (ref * w).sum().backward()
    async with start_cluster(2) as c:
        x = c.share(a, precision=16, base=2, requires_grad=True) if which != "right" else a
        y = c.share(b, precision=16, base=2, requires_grad=True) if which != "left" else b
        if which == "right":
            out = public(x) @ y
        else:
            out = x @ (public(y) if which == "left" else y)
        assert isinstance(out, SharedTensor) and tuple(out.shape) == tuple(ref.shape)
        (out * public(w)).sum().backward()
        assert float(((await out.get()).double() - ref.detach()).abs().max()) <= TOL
        if isinstance(x, SharedTensor):
            got = (await _grads(x)).double()
            assert got.shape == ta.grad.shape
            assert float((got - ta.grad).abs().max()) <= TOL, case
        if isinstance(y, SharedTensor):
            got = (await _grads(y)).double()
            assert got.shape == tb.grad.shape
            assert float((got - tb.grad).abs().max()) <= TOL, case


@pytest.mark.parametrize("shape", [(4,), (2, 3, 4), (2, 2, 1, 4)])
async def test_linear_on_other_ranks_trains_like_torch(shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    lin = nn.Linear(4, 2).double()
    x = (torch.rand(shape, dtype=torch.float64) * 2 - 1).round(decimals=3)
    ref = lin(x)
    ref.sum().backward()
    assert lin.weight.grad is not None and lin.bias.grad is not None
    async with start_cluster(2) as c:
        m = c.share_module(lin, precision=16, base=2)
        out = m(c.share(x, precision=16, base=2))
        assert tuple(out.shape) == tuple(ref.shape)
        out.sum().backward()
        assert float(((await out.get()).double() - ref.detach()).abs().max()) <= TOL
        gw = (await _grads(m.weight)).double()
        gb = (await _grads(m.bias)).double()
    assert float((gw - lin.weight.grad).abs().max()) <= TOL
    assert float((gb - lin.bias.grad).abs().max()) <= TOL
