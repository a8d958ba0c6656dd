"""Basic indexing of a SharedTensor (slices with positive steps, integers, one Ellipsis)
is the ``slice`` kind: a strided view of each share, no index tensor. Before, every such
key was a gather whose public index tensor (8 bytes per selected element) was built,
hashed and sent: the MNIST Net's max-pool tournament sent ~45 MB of them per step.

Checked: values and shapes equal torch's for many keys (and the rest, lists, None, empty
or negative steps, still go the gather path or raise ShapeError as before); the backward
equals torch's; the op costs no control bytes in proportion to its size; a malformed
``slice`` command is refused with a typed error naming the dimension.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from protocols.context import Share
from protocols.errors import ShapeError
from protocols.local import strided
from protocols.params import Params
from training.testing import cost, reveal, start_cluster

T = torch.arange(3 * 5 * 6, dtype=torch.float64).reshape(3, 5, 6) / 8

KEYS: list[Any] = [
    (slice(None),),
    (Ellipsis, slice(0, 6, 2)),
    (Ellipsis, slice(1, None, 2)),
    1,
    -1,
    (-1, slice(1, None, 3), 2),
    (Ellipsis, 0, slice(None)),
    (slice(0, 2), Ellipsis, -2),
    (0, 0, 0),
    (slice(None), slice(None), slice(None)),
    (slice(-4, -1), 3),
    (Ellipsis,),
    (None,),  # gather path
    ([0, 2],),  # gather path
    (Ellipsis, [5, 0]),  # gather path
]


@pytest.mark.parametrize("key", KEYS, ids=[repr(k) for k in KEYS])
async def test_indexing_equals_torch(key: Any) -> None:
    async with start_cluster(2) as c:
        got = await reveal(c.share(T)[key])
    want = T[key]
    assert tuple(got.shape) == tuple(want.shape)
    assert torch.equal(got, want)  # multiples of 1/8 are exact at base 10 / 3 digits


@pytest.mark.parametrize("key", [(slice(None, None, -1),), (slice(2, 2),), (5,), (0, 0, 0, 0)])
async def test_bad_keys_raise_shape_error(key: Any) -> None:
    async with start_cluster(2) as c:
        x = c.share(T)
        with pytest.raises(ShapeError):
            x[key]


async def test_slicing_sends_no_index_tensor() -> None:
    """The strided view of 10^4 of 2 * 10^4 elements costs no more control bytes than one
    of 10 elements (a gather sent 8 bytes of index per element: 80 KB here)."""
    async with start_cluster(2) as c:
        big, small = c.share(torch.zeros(2, 10_000)), c.share(torch.zeros(2, 10))
        _, s_big = await cost(c, lambda: big[..., ::2])
        _, s_small = await cost(c, lambda: small[..., ::2])
    assert s_big.online_bytes == s_big.offline_bytes == 0
    assert s_big.control_bytes <= s_small.control_bytes + 16, (s_big, s_small)
    assert s_big.control_bytes < 1_000


async def test_backward_through_slices_equals_torch() -> None:
    async with start_cluster(2) as c:
        x = c.share(T, requires_grad=True)
        w = c.share(torch.full((3, 5, 3), 0.5))
        y = (x[..., 0:6:2] * w).sum() + x[1, :, 3].sum() + x[-1, 2:4].sum()
        y.backward()
        assert x.grad is not None
        got = await reveal(x.grad)
    t = T.clone().requires_grad_(True)
    (
        (t[..., 0:6:2] * torch.full((3, 5, 3), 0.5)).sum() + t[1, :, 3].sum() + t[-1, 2:4].sum()
    ).backward()
    assert t.grad is not None
    assert torch.equal(got, t.grad)


@pytest.mark.parametrize(
    ("dims", "shape", "match"),
    [
        (None, (2,), "start, step, length"),
        ((0, 1), (2,), "start, step, length"),
        ((0, 0, 2), (2,), "dimension 0"),
        ((4, 1, 2), (2,), "dimension 0"),
        ((-1, 1, 1), (1,), "dimension 0"),
        ((0, 2, 4), (4,), "dimension 0"),
        ((0, 1, 2), (3,), "cannot be shaped"),
        ((0, 1, 2), None, "start, step, length"),
    ],
)
def test_malformed_slice_params_are_refused(
    dims: tuple[int, ...] | None, shape: tuple[int, ...] | None, match: str
) -> None:
    x = Share(torch.arange(5, dtype=torch.int64))
    with pytest.raises(ValueError, match=match):
        strided(0, [x], Params(dims=dims, shape=shape))
