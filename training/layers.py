"""Dropout and batch normalisation on SharedTensors (convolutions are
:mod:`training.convolution`, pooling :mod:`training.pooling`).

* ``dropout``: identity in eval mode or with p = 0; in training mode ``x * b / (1 - p)``
  with a mask b of Bernoulli bits the provider deals as shares (kind ``dropout``: one
  product, 1 round), so no one learns which units were dropped; backward by the same mask.
* ``batch_norm``: training mode with batch statistics (mean, biased variance, rsqrt) and
  eval mode with the running statistics (shared buffers); see :func:`batch_norm`.
"""

from __future__ import annotations

from typing import Any

import torch

from protocols.errors import UnsupportedOperation
from protocols.layers import KEEP_UNITS
from protocols.params import Params

from .approximation import frac_bits, require_bits
from .range_reduction import rsqrt
from .tensor import SharedTensor


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
    """Identity in eval mode (or p = 0). In training mode ``x * b / (1 - p)`` with a mask
    b of Bernoulli(1 - p) bits dealt by the provider as shares (``protocols.layers``):
    neither the coordinator nor any party learns which units were dropped."""
    if not training or p == 0:
        return input
    if not isinstance(input, SharedTensor):
        raise UnsupportedOperation("dropout expects a shared input")
    if inplace:
        raise UnsupportedOperation("in-place dropout is not supported on SharedTensor")
    if not 0 <= p < 1:
        raise ValueError(f"dropout probability has to be in [0, 1), got {p}")
    keep = max(1, round((1 - p) * KEEP_UNITS))
    shape = tuple(input.shape)
    with input.cluster.label(_sub_label(input.cluster, "dropout")):
        kept, bit = input._submit(
            "dropout", [input], [(shape, None), (shape, 0)], Params(keep=keep)
        )
    kept = kept._record(kept, [input], lambda g: (g * bit,))
    return kept * (KEEP_UNITS / keep)


def _sub_label(cluster: Any, name: str) -> str:
    label = cluster.current_label()
    return f"{label}/{name}" if label else name


def batch_norm(
    input: Any,
    running_mean: Any,
    running_var: Any,
    weight: Any = None,
    bias: Any = None,
    training: bool = False,
    momentum: float | None = 0.1,
    eps: float = 1e-5,
) -> SharedTensor:
    """``F.batch_norm``. Training: batch mean and biased variance over (N, *spatial),
    ``rsqrt(var + eps)`` (5 rounds, on [2**-f//2, 2**f): use base 2 / 16 bits), and the
    running statistics updated in place with the unbiased variance (shared buffers are
    replaced by new handles). Eval: the running statistics; ``1/sqrt(running_var + eps)``
    is one rsqrt per channel."""
    x = input
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation("batch_norm expects a shared input")
    require_bits(x, "batch_norm", base2=True)
    c = int(x.shape[1])
    dims = [0, *range(2, x.dim())]
    shape = [1, c] + [1] * (x.dim() - 2)
    count = x.numel() // c
    inv: Any
    y: Any
    if training:
        y, mean, var = normalize(x, dims, eps)
        if running_mean is not None and momentum is not None:
            with torch.no_grad():
                _update_running(running_mean, mean.reshape(c), momentum)
                unbiased = var.reshape(c) * (count / max(count - 1, 1))
                _update_running(running_var, unbiased, momentum)
    else:
        if running_mean is None or running_var is None:
            raise UnsupportedOperation("batch_norm in eval mode needs running statistics")
        mean = running_mean.reshape(shape)
        xc = x - mean
        rv = running_var
        inv = (
            rsqrt(rv + eps, _var_domain(rv)).reshape(shape)
            if isinstance(rv, SharedTensor)
            else (torch.as_tensor(rv, dtype=torch.float64).add(eps).rsqrt().reshape(shape))
        )
        y = xc * inv
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _var_domain(var: SharedTensor) -> tuple[int, int]:
    """rsqrt's domain for a variance: every positive encoding (from one unit, 2**-f), so a
    feature of variance below 2**-8 is normalised (the default domain clamped it: 16 for
    1/sqrt(var), an output off by up to 1.1 with no error)."""
    f = frac_bits(var)
    return -f, 31 - f


def normalize(
    x: SharedTensor, dims: list[int], eps: float
) -> tuple[SharedTensor, SharedTensor, SharedTensor]:
    """``(x - mean) / sqrt(var + eps)`` over ``dims`` (biased variance), the mean and the
    variance. The backward is the closed form ``inv (g - mean(g) - xhat mean(g xhat))``
    (inv = 1 / sqrt(var + eps) <= 256 at 16 bits, xhat bounded by sqrt(N)), not autograd
    through rsqrt, whose ``-g y**3 / 2`` passes 2**34 raw once var is below ~1e-3."""
    with torch.no_grad():
        mean = x.mean(dims, keepdim=True)
        xc = x - mean
        var = (xc**2).mean(dims, keepdim=True)
        inv = rsqrt(var + eps, _var_domain(var))
        xhat = xc * inv

    def back(g: Any) -> tuple[Any]:
        gm = g.mean(dims, keepdim=True)
        return (((g - gm) - xhat * (g * xhat).mean(dims, keepdim=True)) * inv,)

    return x._record(xhat, [x], back), mean, var


def _update_running(buf: Any, value: SharedTensor, momentum: float) -> None:
    if isinstance(buf, SharedTensor):
        buf._assign(buf * (1.0 - momentum) + value * momentum)
    elif buf is not None:
        raise UnsupportedOperation(
            "batch_norm: running statistics must be shared (cluster.share_module shares "
            "BatchNorm buffers)"
        )
