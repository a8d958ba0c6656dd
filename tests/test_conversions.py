"""Conversions and containers a PyTorch user reaches for on a SharedTensor.

- ``torch.as_tensor(x)`` / ``torch.tensor(x)`` raise ``RevealRequired`` (before, torch
  read the SharedTensor as a nested sequence whose 0-d items had length 0 and returned an
  empty tensor of shape (2, 2, 0) without an error);
- ``for row in x`` and ``a, b = x`` give the rows as torch does (before, the last index
  raised ShapeError, which is not the IndexError that ends Python's fallback iteration);
- ``torch.cat`` / ``torch.stack`` take ``training.public(t)`` parts (before, refused as
  "cannot cat a SharedTensor with a public") and warn once, at the user's line, for a
  plain tensor (before, silently: the dispatch module counted as the library's code).
"""

from __future__ import annotations

import warnings

import pytest
import torch

from protocols.errors import UnsupportedOperation
from training import PublicOperandWarning, public
from training.errors import RevealRequired
from training.tensor import cat
from training.testing import start_cluster

X = torch.tensor([[1.0, 2.0], [3.0, 4.0]])


async def test_torch_tensor_of_shares_asks_for_a_reveal() -> None:
    async with start_cluster(2) as c:
        x = c.share(X, precision=16, base=2)
        for convert in (torch.as_tensor, torch.tensor):
            with pytest.raises(RevealRequired, match=r"await x\.get\(\)"):
                convert(x)
        with pytest.raises(TypeError, match="0-d"):
            len(x.sum())


async def test_iterating_gives_the_rows() -> None:
    async with start_cluster(2) as c:
        x = c.share(X, precision=16, base=2)
        rows = [await r.get() for r in x]
        assert [r.tolist() for r in rows] == X.tolist()
        a, b = x
        assert [(await a.get()).tolist(), (await b.get()).tolist()] == X.tolist()
        assert len(list(x[0])) == 2
        with pytest.raises(TypeError, match="0-d"):
            iter(x.sum())


async def test_cat_and_stack_take_public_parts_and_warn_for_plain_ones() -> None:
    t = torch.tensor([[5.0, 6.0], [7.0, 8.0]])
    async with start_cluster(2) as c:
        x = c.share(X, precision=16, base=2)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # marked parts: no warning
            got = await torch.cat([public(t), x, public(t)]).get()
            stacked = await torch.stack([x, public(t)], dim=1).get()
        assert got.tolist() == torch.cat([t, X, t]).tolist()
        assert stacked.tolist() == torch.stack([X, t], dim=1).tolist()
        for make in (lambda: torch.cat([x, t]), lambda: torch.stack([t, x])):
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                make()
            mine = [w for w in seen if issubclass(w.category, PublicOperandWarning)]
            assert len(mine) == 1, [str(w.message) for w in seen]
            assert mine[0].filename == __file__  # the user's line, not the library's
            assert mine[0].lineno == make.__code__.co_firstlineno
        with pytest.raises(UnsupportedOperation, match=r"list \(SharedTensors, torch tensors"):
            cat([x, [1.0, 2.0]])  # (torch.cat's own parser refuses a list before dispatch)


async def test_sum_and_mean_take_a_floating_dtype() -> None:
    """``x.sum(dtype=torch.float64)`` (a raw TypeError before): a floating dtype changes
    nothing on shares; an integer one is refused by name."""
    async with start_cluster(2) as c:
        x = c.share(X, precision=16, base=2)
        assert float(await x.sum(dtype=torch.float64).get()) == 10.0
        assert float(await torch.mean(x, dtype=torch.float32).get()) == 2.5
        assert (await torch.sum(x, 0, dtype=torch.float64).get()).tolist() == [4.0, 6.0]
        with pytest.raises(UnsupportedOperation, match=r"sum\(dtype=torch.int64\)"):
            x.sum(dtype=torch.int64)


async def test_backward_of_a_value_that_needs_no_gradient_raises_as_torch() -> None:
    """torch raises when nothing would get a gradient; it did nothing here, silently."""
    async with start_cluster(2) as c:
        x = c.share(X, precision=16, base=2)
        with pytest.raises(RuntimeError, match="does not require grad"):
            (x * 2).sum().backward()
        w = c.share(X, precision=16, base=2, requires_grad=True)
        (w * 2).sum().backward()  # still fine
        assert w.grad is not None
