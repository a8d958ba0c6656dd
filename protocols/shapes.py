"""Shape arithmetic in plain Python (torch's meta tensors cost ~0.4 ms per call).

Each function follows torch's rules and raises :class:`ShapeError` naming the operation.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from .errors import ShapeError

Shape = tuple[int, ...]


def broadcast(op: str, *shapes: Sequence[int]) -> Shape:
    """torch.broadcast_shapes."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        for i, n in enumerate(s):
            j = ndim - len(s) + i
            if n == out[j] or n == 1:
                continue
            if out[j] == 1:
                out[j] = n
            else:
                raise ShapeError(f"{op}: shapes {[tuple(x) for x in shapes]} cannot be broadcast")
    return tuple(out)


def matmul(a: Sequence[int], b: Sequence[int]) -> Shape:
    """Result shape of torch.matmul."""
    if not a or not b:
        raise ShapeError(
            f"matmul: both operands need at least 1 dimension, got {tuple(a)} and {tuple(b)}"
        )
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    b2 = (*b, 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise ShapeError(
            f"matmul: shapes {tuple(a)} and {tuple(b)} do not fit ({a2[-1]} != {b2[-2]})"
        )
    batch = broadcast("matmul", a2[:-2], b2[:-2])
    out = (*batch, a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def norm_dim(op: str, d: int, ndim: int) -> int:
    if not isinstance(d, int) or isinstance(d, bool):
        raise ShapeError(f"{op}: a dimension must be an int, got {d!r}")
    if not -max(ndim, 1) <= d < max(ndim, 1):
        raise ShapeError(f"{op}: dimension {d} out of range for a {ndim}-d tensor")
    return d % max(ndim, 1)


def reduce(op: str, shape: Sequence[int], dims: Sequence[int], keepdim: bool) -> Shape:
    nd = len(shape)
    if not dims:
        raise ShapeError(f"{op}: an empty list of dimensions is ambiguous; pass dim=None")
    ds = {norm_dim(op, d, nd) for d in dims}
    if len(ds) != len(dims):
        raise ShapeError(f"{op}: dimension {list(dims)} repeats a dimension")
    if keepdim:
        return tuple(1 if i in ds else n for i, n in enumerate(shape))
    return tuple(n for i, n in enumerate(shape) if i not in ds)


def transpose(shape: Sequence[int], d0: int, d1: int) -> Shape:
    nd = len(shape)
    i, j = norm_dim("transpose", d0, nd), norm_dim("transpose", d1, nd)
    if nd == 0:
        return ()
    out = list(shape)
    out[i], out[j] = out[j], out[i]
    return tuple(out)


def reshape(shape: Sequence[int], target: Sequence[int]) -> Shape:
    total = prod(shape)
    tgt = [int(t) for t in target]
    if tgt.count(-1) > 1 or any(t < -1 for t in tgt):
        raise ShapeError(f"reshape: invalid target shape {tuple(target)}")
    if -1 in tgt:
        known = prod(t for t in tgt if t != -1)
        if known == 0 or total % known:
            raise ShapeError(f"reshape: cannot reshape {tuple(shape)} to {tuple(target)}")
        tgt[tgt.index(-1)] = total // known
    if prod(tgt) != total:
        raise ShapeError(f"reshape: cannot reshape {tuple(shape)} to {tuple(target)}")
    return tuple(tgt)


def expand(shape: Sequence[int], target: Sequence[int]) -> Shape:
    if len(target) < len(shape):
        raise ShapeError(
            f"expand: cannot expand {tuple(shape)} to fewer dimensions {tuple(target)}"
        )
    lead = len(target) - len(shape)
    if any(t < 0 for t in target[:lead]) or any(t < -1 for t in target):
        raise ShapeError(f"expand: invalid target shape {tuple(target)} for {tuple(shape)}")
    out = list(target[:lead])
    for n, t in zip(shape, target[lead:], strict=True):
        if t == -1:
            out.append(n)
        elif n in (1, t):
            out.append(t)
        else:
            raise ShapeError(f"expand: cannot expand {tuple(shape)} to {tuple(target)}")
    return tuple(out)
