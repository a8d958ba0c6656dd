"""The torch bindings that need glue (argument shapes torch's signature has and ours does
not, ``out=``, mirrored operands), bound into :data:`training.registry.TORCH`, and the
SharedTensor methods implemented in the function modules (``x.exp()``, ``x / y``,
``x.softmax(1)``, filled into :data:`training.handle.FUNCTIONS`), on import of
:mod:`training`; then every method bound with :func:`training.registry.implements` is
installed on the class. A function whose torch signature is its own is bound where it is
written, with ``@implements`` (e.g. ``abs`` in :mod:`training.activations`).

Binding here, in the one module that imports both the SharedTensor and the function
modules, keeps the imports one-way: the function modules import the tensor, the tensor
never imports them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from protocols.errors import UnsupportedOperation

from . import activations as act
from . import composite as comp
from . import convolution as conv
from . import exponential as ex
from . import layers as L
from . import (
    logit_losses,
    more_ops,  # noqa: F401 - binds split, chunk, bmm, masked_fill, layer_norm, ...
)
from . import losses as loss
from . import maxima as mx
from . import norms as nm
from . import pooling as pool
from . import range_reduction as rr
from .handle import FUNCTIONS
from .registry import bind, install_methods
from .shaping import cat, index_add, scatter_add, stack
from .tensor import SharedTensor


def _shared_first(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def _max(x: Any, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
    if not isinstance(x, SharedTensor):
        return mx.maximum(dim, x)
    return x.max(dim, keepdim)


def _min(x: Any, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
    if not isinstance(x, SharedTensor):
        return -mx.maximum(-dim, -x)
    return x.min(dim, keepdim)


def _div(a: Any, b: Any, rounding_mode: str | None = None) -> Any:
    if rounding_mode is not None:
        raise UnsupportedOperation("torch.div with rounding_mode is not supported on SharedTensor")
    return a / b if isinstance(a, SharedTensor) else b.__rtruediv__(a)


def _no_inplace(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    def run(*args: Any, inplace: bool = False, **kw: Any) -> Any:
        if inplace:
            raise UnsupportedOperation(f"in-place {name} is not supported on SharedTensor")
        return fn(*args, **kw)

    return run


def _relu6(x: Any, inplace: bool = False) -> Any:
    return _no_inplace(act.hardtanh, "relu6")(x, 0.0, 6.0, inplace=inplace)


def _softmax(x: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    return loss.softmax(x, dim)


def _log_softmax(x: Any, dim: Any = None, _stacklevel: int = 3, dtype: Any = None) -> Any:
    return loss.log_softmax(x, dim)


def _no_out(name: str, out: Any) -> None:
    if out is not None:
        raise UnsupportedOperation(f"torch.{name}: out= is not supported on SharedTensor")


def _checked_out(name: str, out: Any, run: Callable[[], Any]) -> Any:
    _no_out(name, out)
    return run()


def _comparison(name: str, mirrored: str) -> Callable[..., Any]:
    """``torch.<name>(a, b, *, out=None)``: ``a.<name>(b)`` for a shared a, else the
    mirrored comparison of b (``2 < x`` is ``x > 2``)."""

    def run(a: Any, b: Any, *, out: Any = None) -> Any:
        _no_out(name, out)
        if isinstance(a, SharedTensor):
            return getattr(a, name)(b)
        return getattr(b, mirrored)(a)

    return run


_MIRROR = {"eq": "eq", "ne": "ne", "lt": "gt", "le": "ge", "gt": "lt", "ge": "le"}
_ALIASES = {
    "greater": "gt",
    "greater_equal": "ge",
    "less": "lt",
    "less_equal": "le",
    "not_equal": "ne",
}


def _comparisons() -> dict[Any, Callable[..., Any]]:
    out: dict[Any, Callable[..., Any]] = {}
    for name, mirrored in _MIRROR.items():
        fn = _comparison(name, mirrored)
        out[getattr(torch, name)] = fn
        out[getattr(torch.Tensor, name)] = fn  # a public tensor's .eq(shared)
        out[getattr(torch.Tensor, f"__{name}__")] = fn
    for alias, name in _ALIASES.items():
        fn = _comparison(name, _MIRROR[name])
        out[getattr(torch, alias)] = fn
        out[getattr(torch.Tensor, alias)] = fn
    return out


def _where(condition: Any, input: Any = None, other: Any = None, *, out: Any = None) -> Any:
    _no_out("where", out)
    if input is None and other is None:
        raise UnsupportedOperation(
            "torch.where(condition) (the positions of nonzeros) would reveal a shared "
            "condition; use torch.where(condition, input, other)"
        )
    return comp.where(condition, input, other)


def _pow(input: Any, exponent: Any, *, out: Any = None) -> Any:
    _no_out("pow", out)
    if isinstance(input, SharedTensor):
        return comp.pow(input, exponent)
    if isinstance(input, torch.Tensor) and input.numel() != 1:
        raise UnsupportedOperation(
            "a public tensor ** SharedTensor is supported only for a scalar base; use "
            "torch.exp(x * base.log())"
        )
    return comp.rpow(input, exponent)


def _refuse_module_conversion(*args: Any) -> Any:
    """torch asks this (``_has_compatible_shallow_copy_type``) only from
    ``nn.Module._apply``: ``model.to(...)``, ``.cpu()``, ``.double()`` of a shared module."""
    raise UnsupportedOperation(
        "model.to(...) / .cpu() / .double() / .half() of a shared module cannot replace its "
        "SharedTensor parameters: move or convert the plaintext model before sharing "
        "(`model = Net().to(device)`, then cluster.share_module(model)); the shares stay "
        "in the parties' CPU memory, so a shared model needs no device"
    )


def _like(fill: float | None) -> Callable[..., Any]:
    """``torch.zeros_like(x)`` and friends: a new SharedTensor shaped like x (see
    :meth:`training.idioms.Idioms.new_full`)."""

    def run(
        x: Any, value: Any = None, *, dtype: Any = None, requires_grad: bool = False, **kw: Any
    ) -> Any:
        device = kw.pop("device", None)
        kw.pop("memory_format", None)
        if kw.pop("layout", None) not in (None, torch.strided) or kw:
            raise UnsupportedOperation(f"torch.*_like: unsupported arguments {sorted(kw)}")
        like = x.to(device) if device is not None else x  # refuses devices but the CPU
        v = value if fill is None else fill
        return like.new_full(tuple(x.shape), v, dtype=dtype, requires_grad=requires_grad)

    return run


def _reduction(fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(
        x: Any,
        dim: Any = None,
        unbiased: Any = None,
        keepdim: bool = False,
        *,
        correction: Any = None,
        out: Any = None,
    ) -> Any:
        return fn(x, dim, unbiased, keepdim, correction=correction, out=out)

    return run


ENTRIES: dict[Any, Callable[..., Any]] = {
    # comparisons, sign, where, powers, variance
    **_comparisons(),
    torch.sign: lambda x, *, out=None: _checked_out("sign", out, x.sign),
    torch.where: _where,
    torch.Tensor.where: lambda x, condition, y: comp.where(condition, x, y),
    torch.pow: _pow,
    torch.Tensor.pow: _pow,
    torch.Tensor.__pow__: _pow,
    torch.Tensor.__rpow__: lambda a, b: _pow(b, a),
    torch.square: lambda x, *, out=None: _checked_out("square", out, lambda: comp.pow(x, 2)),
    torch.var: _reduction(comp.var),
    torch.std: _reduction(comp.std),
    torch.is_floating_point: lambda x: True,
    # PyTorch habits (training.idioms)
    torch._has_compatible_shallow_copy_type: _refuse_module_conversion,
    torch.Tensor.view_as: lambda a, b: a.reshape(tuple(b.shape)),  # a public a, a shared b
    torch.Tensor.reshape_as: lambda a, b: a.reshape(tuple(b.shape)),
    torch.Tensor.expand_as: lambda a, b: a.expand(tuple(b.shape)),
    torch.zeros_like: _like(0.0),
    torch.ones_like: _like(1.0),
    torch.empty_like: _like(0.0),
    torch.full_like: _like(None),
    # local gathers and linear ops (training/shaping.py)
    torch.narrow: lambda x, dim, start, length: x.narrow(dim, start, length),
    torch.index_select: lambda x, dim, index, *, out=None: _checked_out(
        "index_select", out, lambda: x.index_select(dim, index)
    ),
    torch.roll: lambda x, shifts, dims=None: x.roll(shifts, dims),
    torch.diagonal: lambda x, offset=0, dim1=0, dim2=1: x.diagonal(offset, dim1, dim2),
    torch.trace: lambda x: x.trace(),
    torch.cumsum: lambda x, dim, *, dtype=None, out=None: _checked_out(
        "cumsum", out, lambda: x.cumsum(dim, dtype=dtype)
    ),
    torch.prod: lambda x, dim=None, keepdim=False, *, dtype=None, out=None: _checked_out(
        "prod", out, lambda: x.prod(dim, keepdim, dtype=dtype)
    ),
    torch.dot: lambda a, b, *, out=None: _checked_out(
        "dot", out, lambda: a.dot(b) if isinstance(a, SharedTensor) else b.dot(a)
    ),
    torch.outer: lambda a, b, *, out=None: _checked_out(
        "outer", out, lambda: a.outer(b) if isinstance(a, SharedTensor) else b.outer(a).t()
    ),
    torch.ger: lambda a, b, *, out=None: _checked_out(
        "ger", out, lambda: a.outer(b) if isinstance(a, SharedTensor) else b.outer(a).t()
    ),
    F.pad: comp.pad,
    torch.gather: lambda x, dim, index, *, sparse_grad=False, out=None: _checked_out(
        "gather", out, lambda: x.gather(dim, index)
    ),
    torch.scatter_add: lambda x, dim, index, src, *, out=None: _checked_out(
        "scatter_add", out, lambda: scatter_add(x, dim, index, src)
    ),
    torch.Tensor.scatter_add: scatter_add,  # a public tensor's .scatter_add(dim, i, shared)
    torch.index_add: lambda x, dim, index, source, *, alpha=1, out=None: _checked_out(
        "index_add", out, lambda: index_add(x, dim, index, source, alpha=alpha)
    ),
    torch.Tensor.index_add: index_add,
    # norms (training.norms)
    torch.norm: nm.norm,
    torch.Tensor.norm: nm.norm,
    torch.linalg.vector_norm: nm.vector_norm,
    torch.linalg.norm: nm.linalg_norm,
    F.normalize: nm.normalize,
    F.cosine_similarity: nm.cosine_similarity,
    torch.cosine_similarity: nm.cosine_similarity,
    # activations
    F.softmax: _softmax,
    torch.softmax: _softmax,
    F.log_softmax: _log_softmax,
    torch.log_softmax: _log_softmax,
    F.leaky_relu: _no_inplace(act.leaky_relu, "leaky_relu"),
    F.hardtanh: _no_inplace(act.hardtanh, "hardtanh"),
    F.relu6: _relu6,
    F.softplus: act.softplus,
    F.silu: _no_inplace(act.silu, "silu"),
    # smooth functions and division
    torch.div: _div,
    torch.true_divide: _div,
    torch.Tensor.__truediv__: lambda a, b: b.__rtruediv__(a),
    torch.Tensor.div: lambda a, b: b.__rtruediv__(a),
    # maxima
    torch.max: _max,
    torch.min: _min,
    torch.maximum: lambda a, b: (
        mx.maximum(a, b) if isinstance(a, SharedTensor) else mx.maximum(b, a)
    ),
    torch.argmax: lambda x, dim=None, keepdim=False: mx.argmax(x, dim, keepdim),
    torch.argmin: lambda x, dim=None, keepdim=False: mx.argmax(-x, dim, keepdim),
    # shape ops
    torch.cat: lambda tensors, dim=0: cat(tensors, dim),
    torch.concat: lambda tensors, dim=0: cat(tensors, dim),
    torch.stack: lambda tensors, dim=0: stack(tensors, dim),
    torch.flatten: lambda x, start_dim=0, end_dim=-1: x.flatten(start_dim, end_dim),
    torch.squeeze: lambda x, dim=None: x.squeeze(dim),
    torch.unsqueeze: lambda x, dim: x.unsqueeze(dim),
    torch.permute: lambda x, dims: x.permute(dims),
    torch.flip: lambda x, dims: x.flip(dims),
    # losses
    F.mse_loss: loss.mse_loss,
    F.l1_loss: loss.l1_loss,
    F.cross_entropy: loss.cross_entropy,
    F.nll_loss: loss.nll_loss,
    F.binary_cross_entropy: loss.binary_cross_entropy,
    F.binary_cross_entropy_with_logits: logit_losses.binary_cross_entropy_with_logits,
    # layers
    F.conv2d: conv.conv2d,
    F.conv1d: conv.conv1d,
    F.conv_transpose2d: conv.conv_transpose2d,
    F.unfold: conv.unfold,
    F.fold: conv.fold,
    torch.Tensor.unfold: conv.tensor_unfold,
    F.avg_pool2d: pool.avg_pool2d,
    F.max_pool2d: pool.max_pool2d,
    F.max_pool2d_with_indices: pool.max_pool2d_with_indices,
    F.adaptive_avg_pool2d: pool.adaptive_avg_pool2d,
    F.adaptive_max_pool2d: pool.adaptive_max_pool2d,
    F.adaptive_max_pool2d_with_indices: pool.adaptive_max_pool2d_with_indices,
    F.dropout: L.dropout,
    F.batch_norm: L.batch_norm,
}

bind(ENTRIES)

METHODS: dict[str, Callable[..., Any]] = {
    "div": rr.div,
    "pow": comp.pow,
    "rpow": comp.rpow,
    "where": comp.where,
    "var": comp.var,
    "std": comp.std,
    "maximum": mx.maximum,
    "max_dim": mx.max_dim,
    "argmax": mx.argmax,
    "unfold": conv.tensor_unfold,
    "softmax": loss.softmax,
    "norm": nm.norm,
    "log_softmax": loss.log_softmax,
    "exp_nonpositive": ex.exp_nonpositive,  # GELU's and ELU's (training.activations)
}
"""The SharedTensor methods whose implementation is a function module's (see
:func:`training.handle.function`)."""

FUNCTIONS.update(METHODS)
install_methods(SharedTensor)
