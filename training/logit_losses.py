"""``F.binary_cross_entropy_with_logits`` with torch's ``weight`` and ``pos_weight``.

With ``sp = softplus(x)`` (so ``-log sigmoid(x) = sp - x`` and ``-log(1 - sigmoid(x)) =
sp``), torch's loss ``-w [p t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]`` is
``w [(1 + (p - 1) t) sp - p t x]``: one softplus (5 rounds), and with a public target,
weight and pos_weight only public factors (local); a shared target with ``p != 1`` adds
one product. Gradients: ``w [(1 + (p - 1) t) sigmoid(x) - p t]`` for x (one sigmoid),
``w [(p - 1) sp - p x]`` for a shared target that requires grad (from the forward's sp).
"""

from __future__ import annotations

from typing import Any

import torch

from protocols.errors import ShapeError

from .activations import sigmoid, softplus
from .approximation import expect_shared, require_bits
from .autograd import Value
from .loss_parts import _legacy, _reduce, _target
from .operands import public
from .tensor import SharedTensor

_NAME = "binary_cross_entropy_with_logits"


def _factor(v: Any, shape: tuple[int, ...], what: str) -> torch.Tensor | None:
    """A public ``weight`` / ``pos_weight`` as float64, broadcast to the input's shape (one
    that would broadcast the input itself is refused, as torch's result keeps its shape)."""
    if v is None:
        return None
    if isinstance(v, SharedTensor):
        raise ShapeError(f"{_NAME}: a shared {what} is not supported; pass a public tensor")
    t = torch.as_tensor(v, dtype=torch.float64)
    try:
        joint = tuple(torch.broadcast_shapes(tuple(t.shape), shape))
    except RuntimeError as exc:
        raise ShapeError(f"{_NAME}: {what} of shape {tuple(t.shape)} for {shape}: {exc}") from None
    if joint != shape:
        raise ShapeError(f"{_NAME}: {what} of shape {tuple(t.shape)} does not broadcast to {shape}")
    return t.expand(shape)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    pos_weight: Any = None,
) -> SharedTensor:
    """``F.binary_cross_entropy_with_logits`` (see the module doc)."""
    x = expect_shared(input, _NAME)
    require_bits(x, _NAME, base2=True)
    reduction = _legacy(size_average, reduce, reduction)
    t = _target(target, x, _NAME)
    shape = tuple(int(s) for s in x.shape)
    w, p = _factor(weight, shape, "weight"), _factor(pos_weight, shape, "pos_weight")
    shared = isinstance(t, SharedTensor)
    # L = 1 + (p - 1) t and P = p t: public, or shared with a shared target
    lt: Any = None if p is None else (t * public(p - 1.0) if shared else t * (p - 1.0)) + 1.0
    pt: Any = t if p is None else (t * public(p) if shared else t * p)
    with torch.no_grad():
        xd = x.detach()
        sp = softplus(xd)
        lead = sp if lt is None else sp * (lt if shared else public(lt))
        per = lead - xd * (pt if shared else public(pt))
        if w is not None:
            per = per * public(w)
        loss = _reduce(per, reduction)
    count = x.numel()

    def back(g: Value) -> tuple[Value | None, ...]:
        scale = g / count if reduction == "mean" else g
        if w is not None:
            scale = scale * (public(w) if isinstance(scale, SharedTensor) else w)
        gx = None
        if x.requires_grad:
            s = sigmoid(xd)
            s = s if lt is None else s * (lt if shared else public(lt))
            gx = (s - (pt if shared else public(pt))) * _as_factor(scale)
        if not shared:
            return (gx,)
        if not t.requires_grad:
            return gx, None
        dt = -xd if p is None else sp * public(p - 1.0) - xd * public(p)
        return gx, dt * _as_factor(scale)

    return x._record(loss, [x, t] if shared else [x], back)


def _as_factor(v: Value) -> Any:
    return public(v) if isinstance(v, torch.Tensor) else v
