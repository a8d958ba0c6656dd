"""An optimiser's update ``p - lr g`` for every parameter of a group as one grouped
``sub_scaled`` op (:mod:`protocols.kinds`): per parameter the public product, its truncation
and the subtraction, the same ring values as ``scale`` then ``sub``, one command for all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from protocols.params import Params

from .arithmetic import Arithmetic
from .operands import as_public, integral

_SCALED: dict[tuple[Any, ...], tuple[int, Params] | None] = {}
"""The encoded factor by (factor, encoding, precision): an optimiser passes the same
learning rate at every step (encoding it took ~16 us a parameter)."""


def _scaled(x: Arithmetic, factor: Any) -> tuple[int, Params] | None:
    """(the product's precision, ``scale``'s params) of ``x * factor`` for a public
    non-integer scalar, or None (an integer or a tensor factor: not fused)."""
    pub = as_public(factor)
    if integral(pub) or pub.dim() != 0:
        return None
    prec, q, d = x._public_scaling(pub)
    return prec, Params(pub=x._encode_public(pub, q), d=d)


def fusable(x: Any, y: Any, factor: float) -> tuple[int, Params] | None:
    """``sub_scaled``'s (precision, params) for ``x - y * factor``, or None where it does
    not apply (a public or differently shaped ``y``, another cluster, recorded autograd,
    an integer or tensor factor, a product at another precision)."""
    if (
        not isinstance(y, Arithmetic)  # (a gradient may be a public tensor)
        or y.cluster is not x.cluster
        or torch.is_grad_enabled()
        or tuple(x.shape) != tuple(y.shape)
    ):
        return None
    key = (factor, y.fp, y.prec)
    scaled = _SCALED.get(key) if type(factor) is float else None
    if scaled is None:
        scaled = _scaled(y, factor)
        if type(factor) is float and len(_SCALED) < 256:
            _SCALED[key] = scaled
    return scaled if scaled is not None and scaled[0] == x.prec else None


def minus_scaled(xs: Sequence[Any], ys: Sequence[Any], factor: float) -> list[Any]:
    """``x - y * factor`` for each pair, a public non-integer ``factor``: the pairs
    :func:`fusable` accepts with the same encoded factor go as one grouped ``sub_scaled``
    op, the others as two ops each (the same ring values either way)."""
    out: list[Any] = [None] * len(xs)
    groups: dict[tuple[Any, int, Params], list[int]] = {}
    for i, (x, y) in enumerate(zip(xs, ys, strict=True)):
        fused = fusable(x, y, factor)
        if fused is None:
            out[i] = x - y * factor
        else:
            groups.setdefault((x.cluster, *fused), []).append(i)
    for (_, prec, params), idx in groups.items():
        operands = [t for i in idx for t in (xs[i], ys[i])]
        results = xs[idx[0]]._submit(
            "sub_scaled", operands, [(xs[i].shape, prec) for i in idx], params
        )
        for i, r in zip(idx, results, strict=True):
            out[i] = r
    return out
