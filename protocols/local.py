"""Local operations on additive shares: no communication, no dealer material.

Each is ``(rank, shares, params) -> [share]``. Adding a public value is done by party 0
alone; everything else is linear and every party applies it to its own share.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from .context import Share
from .params import Params
from .ring import ring_matmul
from .shapes import broadcast


def _d(xs: Sequence[Share]) -> int:
    return max(x.depth for x in xs)


def add(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    return [Share(x[0].value + x[1].value, _d(x))]


def sub(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    return [Share(x[0].value - x[1].value, _d(x))]


def neg(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    return [Share(-x[0].value, x[0].depth)]


def add_pub(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    v, pub = x[0].value, p.public()
    out = v + pub if rank == 0 else v.expand(broadcast("add", v.shape, pub.shape)).clone()
    return [Share(out, x[0].depth)]


def mul_pub(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    return [Share(x[0].value * p.public(), x[0].depth)]


def sum_(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    v = x[0].value
    out = v.sum() if p.dims is None else v.sum(dim=tuple(p.dims), keepdim=p.keepdim)
    return [Share(out, x[0].depth)]


def transpose(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    """A view, not a copy: no op writes into its inputs' shares, and every consumer reads
    strided tensors (an opening's ``x - a`` makes the contiguous copy it sends anyway), so
    Network A's transposed weights and activations were each copied once for nothing."""
    return [Share(x[0].value.transpose(p.d0, p.d1), x[0].depth)]


def strided(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    """Basic slicing as a view: ``p.dims`` holds ``(start, step, length)`` for every input
    dimension, ``p.shape`` the result's shape (the same numel: integer indices drop their
    dimension). A view, not a copy, as :func:`transpose`."""
    v = x[0].value
    spec = p.dims
    if spec is None or len(spec) != 3 * v.dim() or p.shape is None:
        raise ValueError(
            f"slice of a {v.dim()}-d share needs (start, step, length) per dimension and the "
            f"result's shape, got {spec} and {p.shape}"
        )
    index = []
    for d, size in enumerate(v.shape):
        start, step, length = spec[3 * d : 3 * d + 3]
        if step < 1 or length < 0 or start < 0 or (length and start + step * (length - 1) >= size):
            raise ValueError(
                f"slice: dimension {d} of size {size} has no {length} elements "
                f"from {start} in steps of {step}"
            )
        index.append(slice(start, start + step * (length - 1) + 1 if length else start, step))
    out = v[tuple(index)]
    if out.numel() != prod(p.shape):
        raise ValueError(f"slice: {tuple(out.shape)} cannot be shaped {p.shape}")
    return [Share(out.reshape(p.shape), x[0].depth)]


def reshape(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    if p.shape is None:
        raise ValueError("reshape needs a target shape")
    return [Share(x[0].value.reshape(p.shape), x[0].depth)]


def expand(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    if p.shape is None:
        raise ValueError("expand needs a target shape")
    return [Share(x[0].value.expand(p.shape).contiguous(), x[0].depth)]


def public_product(x: Sequence[Share], p: Params) -> Share:
    """``x * pub`` or ``x @ pub`` / ``pub @ x`` (before truncation)."""
    v, pub = x[0].value, p.public()
    return Share(v * pub, x[0].depth)


def public_matmul(x: Sequence[Share], p: Params) -> Share:
    v, pub = x[0].value, p.public()
    return Share(ring_matmul(pub, v) if p.left else ring_matmul(v, pub), x[0].depth)


def identity(x: Sequence[Share], p: Params) -> Share:
    return x[0]
