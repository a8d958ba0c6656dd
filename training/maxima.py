"""Maxima of SharedTensors: elementwise ``maximum``, the maximum along a dimension with
its arg-max one-hot, and ``argmax``.

* ``maximum(a, b) = b + relu(a - b)``: 1 round.
* along a dimension: a tournament, one ReLU per level (``max(a, b) = b + relu(a - b)``),
  ``ceil(log2 n)`` rounds (:func:`max_last`); the arg-max one-hot (for backward and
  ``argmax``; ties go to the earlier element, as in torch: the bit is ``a - b >= 0``) is
  updated with the levels' bits, 1 round behind. The backward multiplies the gradient by
  the one-hot (no truncation: the bits have precision 0).
* ``argmax``: the shared index ``sum_i i * onehot_i`` (local after the tournament).

Max pooling (:mod:`training.pooling`) and softmax's shift (:mod:`training.losses`) use
:func:`max_dim`.
"""

from __future__ import annotations

from typing import Any

import torch

from protocols import shapes as S
from protocols.errors import ShapeError

from .approximation import expect_shared
from .autograd import Value
from .operands import public
from .shaping import cat
from .tensor import SharedTensor


def maximum(a: SharedTensor, b: Any) -> SharedTensor:
    """Elementwise max(a, b) = b + relu(a - b) (1 round)."""
    return (a - b).relu() + b


def _move_last(x: SharedTensor, dim: int) -> tuple[SharedTensor, int]:
    if not x.dim():
        raise ShapeError("max/argmax along a dimension of a 0-d tensor")
    d = S.norm_dim("max", int(dim), x.dim())
    if d != x.dim() - 1:
        order = [i for i in range(x.dim()) if i != d] + [d]
        x = x.permute(order)
    return x, d


def _restore(y: SharedTensor, d: int, nd: int) -> SharedTensor:
    """Inverse of _move_last for a result whose last dim sits where ``d`` was."""
    if d == nd - 1:
        return y
    order = list(range(nd - 1))
    order.insert(d, nd - 1)
    return y.permute(order)


def max_last(x: SharedTensor, onehot: bool) -> tuple[SharedTensor, SharedTensor | None]:
    """Maximum over the last dimension by a tournament (ceil(log2 n) rounds), and
    optionally the arg-max one-hot (ties: the earlier element), precision 0."""
    n = int(x.shape[-1])
    cur = x
    # (candidates, n) per position; public until the first level's bits
    eye = torch.eye(n) if onehot else None  # (never n x n for a plain max)
    oh: Any = eye.expand(*x.shape[:-1], n, n) if eye is not None else None
    with torch.no_grad():
        while int(cur.shape[-1]) > 1:
            m = int(cur.shape[-1])
            h = m // 2
            a, b = cur[..., 0 : 2 * h : 2], cur[..., 1 : 2 * h : 2]
            r = (a - b).relu()
            assert r._bit is not None
            best = b + r
            if oh is not None:
                oa, ob = oh[..., 0 : 2 * h : 2, :], oh[..., 1 : 2 * h : 2, :]
                bit = r._bit.unsqueeze(-1)
                if isinstance(oa, torch.Tensor):  # the first level: eye rows, public,
                    # sent un-broadcast ((h, n), not the batch's copies of them)
                    assert eye is not None
                    ea, eb = eye[0 : 2 * h : 2], eye[1 : 2 * h : 2]
                    new = bit * public(ea - eb) + public(eb)
                else:
                    new = bit * (oa - ob) + ob
                if m % 2:
                    new = cat([new, oh[..., 2 * h :, :]], -2)
                oh = new
            cur = cat([best, cur[..., 2 * h :]], -1) if m % 2 else best
        values = cur[..., 0]
    if oh is None:
        return values, None
    if not isinstance(oh, SharedTensor):  # n == 1
        oh = (x * 0 + 1).detach()
        return values, oh
    return values, oh[..., 0, :]


def max_dim(
    x: SharedTensor, dim: int, keepdim: bool = False, *, need_onehot: bool | None = None
) -> tuple[SharedTensor, SharedTensor | None]:
    """(max along ``dim``, arg-max one-hot shaped like x); backward through the one-hot."""
    x = expect_shared(x, "max")
    want = x.requires_grad and torch.is_grad_enabled() if need_onehot is None else need_onehot
    nd = x.dim()
    xl, d = _move_last(x, dim)
    vals, oh = max_last(xl.detach(), bool(want))
    ohx = _restore(oh, d, nd) if oh is not None else None
    if keepdim:
        vals = vals.unsqueeze(d)
    if ohx is not None:
        kshape = list(x.shape)
        kshape[d] = 1

        def back(g: Value) -> tuple[Value]:
            assert ohx is not None
            return (ohx * g.reshape(kshape),)

        vals = x._record(vals, [x], back)
    return vals, ohx


def argmax(x: SharedTensor, dim: int | None = None, keepdim: bool = False) -> SharedTensor:
    """Shared index of the maximum (ties: the last) as sum_i i * onehot_i."""
    x = expect_shared(x, "argmax")
    if dim is None:
        x, dim = x.reshape(-1), 0
    _, oh = max_dim(x.detach(), dim, need_onehot=True)
    assert oh is not None
    n = int(x.shape[dim])
    shape = [1] * x.dim()
    shape[dim % x.dim()] = n
    pos = torch.arange(n, dtype=torch.float64).reshape(shape)
    return (oh * public(pos)).sum(dim, keepdim)
