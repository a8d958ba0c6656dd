"""Gradient clipping on shares: ``torch.nn.utils.clip_grad_norm_``, ``clip_grad_value_``,
``get_total_norm`` and ``clip_grads_with_norm_`` as torch defines them, for parameters
whose gradients are SharedTensors.

torch's own functions group their tensors by device and dtype in C++ before any op, so a
SharedTensor cannot reach them through ``__torch_function__`` (they raised a raw
``TypeError``). :func:`install` (run when :mod:`training` is imported) therefore wraps the
four names in ``torch.nn.utils`` and ``torch.nn.utils.clip_grad``: a call whose tensors
include a SharedTensor runs here, every other call runs torch's function unchanged. Code
that bound a name before importing :mod:`training` (``from torch.nn.utils import
clip_grad_norm_`` first) keeps torch's; ``training.clip_grad_norm_`` is always this one.

* ``get_total_norm``: :func:`training.norms.vector_norm` of all gradients as one vector
  (p = 2, 1, inf, ...; p = 2 covers every norm that encodes, up to 2**15 at 2/16).
* ``clip_grads_with_norm_``: every gradient times ``min(max_norm / total, 1)``, as
  ``c - relu(c - 1)`` for ``c = max_norm * reciprocal(total)``: one reciprocal, one ReLU
  and one product for all gradients together (torch adds 1e-6 to the norm; here a norm
  below the reciprocal's domain, 2**-8 at 2/16, counts as 2**-8, so ``max_norm`` must be
  at least that: smaller is refused). Rounds: the norm's, then reciprocal + ReLU + 1.
* ``clip_grad_value_``: every gradient clamped to ``[-v, v]`` in one clamp op.

Shares are always finite, so ``error_if_nonfinite`` has nothing to check; ``foreach`` is
accepted and ignored (all gradients go through one op either way).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.utils
import torch.nn.utils.clip_grad

from protocols.errors import UnsupportedOperation

from .activations import clamp
from .approximation import frac_bits
from .norms import vector_norm
from .range_reduction import reciprocal_positive
from .shaping import cat
from .tensor import SharedTensor


def _tensors(tensors: Any) -> list[Any]:
    if isinstance(tensors, torch.Tensor | SharedTensor):
        return [tensors]
    return list(tensors)


def _shared_grads(parameters: Sequence[Any], what: str) -> list[Any]:
    """The parameters that have a gradient, each of them shared."""
    with_grad = [p for p in parameters if p.grad is not None]
    plain = [p for p in with_grad if not isinstance(p.grad, SharedTensor)]
    if plain:
        raise UnsupportedOperation(
            f"{what}: {len(plain)} of {len(with_grad)} gradients are plaintext tensors "
            "beside shared ones; clip a shared model's parameters and a plaintext model's "
            "in separate calls"
        )
    return with_grad


def _flat(grads: Sequence[SharedTensor]) -> SharedTensor:
    return cat([g.reshape(-1) for g in grads])


def _put_back(params: Sequence[Any], flat: SharedTensor) -> None:
    at = 0
    for p in params:
        n = p.grad.numel()
        p.grad = flat[at : at + n].reshape(tuple(p.grad.shape))
        at += n


def get_total_norm(
    tensors: Any,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> SharedTensor:
    """The ``norm_type`` norm of all ``tensors`` as one vector (a shared scalar)."""
    items = _tensors(tensors)
    if not items:
        raise UnsupportedOperation("get_total_norm: no tensors")
    if not all(isinstance(t, SharedTensor) for t in items):
        raise UnsupportedOperation(
            "get_total_norm: every tensor must be shared (plaintext ones go to torch's)"
        )
    with torch.no_grad():
        return vector_norm(_flat(items), float(norm_type))


def clip_grads_with_norm_(
    parameters: Any, max_norm: float, total_norm: Any, foreach: bool | None = None
) -> None:
    """Every gradient times ``min(max_norm / total_norm, 1)`` (see module doc)."""
    params = _shared_grads(_tensors(parameters), "clip_grads_with_norm_")
    if not params:
        return
    if not isinstance(total_norm, SharedTensor):
        raise UnsupportedOperation(
            "clip_grads_with_norm_: total_norm must be the shared norm get_total_norm returns"
        )
    max_norm = float(max_norm)
    smallest = 2.0 ** -(frac_bits(total_norm) // 2)
    if max_norm < smallest:
        raise UnsupportedOperation(
            f"clip_grad_norm_: max_norm {max_norm:g} is below {smallest:g}, where the "
            "reciprocal of the norm stops (a smaller norm counts as that much); use a "
            "larger max_norm or more fractional bits"
        )
    with torch.no_grad():
        c = reciprocal_positive(total_norm) * max_norm
        coef = c - (c - 1.0).relu()
        _put_back(params, _flat([p.grad for p in params]) * coef)


def clip_grad_norm_(
    parameters: Any,
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
    foreach: bool | None = None,
) -> SharedTensor:
    """torch's ``clip_grad_norm_`` on shared gradients: returns the shared total norm."""
    params = _shared_grads(_tensors(parameters), "clip_grad_norm_")
    if not params:
        raise UnsupportedOperation("clip_grad_norm_: no parameter has a gradient")
    total = get_total_norm([p.grad for p in params], norm_type)
    clip_grads_with_norm_(params, max_norm, total)
    return total


def clip_grad_value_(parameters: Any, clip_value: float, foreach: bool | None = None) -> None:
    """Every shared gradient clamped to ``[-clip_value, clip_value]`` (one clamp op)."""
    params = _shared_grads(_tensors(parameters), "clip_grad_value_")
    if not params:
        return
    v = float(clip_value)
    if v < 0:
        raise ValueError(f"clip_grad_value_: clip_value must be >= 0, got {v:g}")
    with torch.no_grad():
        _put_back(params, clamp(_flat([p.grad for p in params]), -v, v))


_OURS: dict[str, Callable[..., Any]] = {
    "clip_grad_norm_": clip_grad_norm_,
    "clip_grad_value_": clip_grad_value_,
    "get_total_norm": get_total_norm,
    "clip_grads_with_norm_": clip_grads_with_norm_,
}


def _dispatching(original: Callable[..., Any], ours: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def call(tensors: Iterable[Any] | Any, *args: Any, **kwargs: Any) -> Any:
        items = _tensors(tensors)
        shared = any(
            isinstance(t, SharedTensor) or isinstance(getattr(t, "grad", None), SharedTensor)
            for t in items
        )
        return (ours if shared else original)(items, *args, **kwargs)

    call.__training_original__ = original  # type: ignore[attr-defined]
    return call


def install() -> None:
    """Wrap torch's four clipping functions (see module doc); idempotent."""
    for module in (torch.nn.utils, torch.nn.utils.clip_grad):
        for name, ours in _OURS.items():
            original = getattr(module, name, None)
            if original is None or hasattr(original, "__training_original__"):
                continue
            setattr(module, name, _dispatching(original, ours))


install()
