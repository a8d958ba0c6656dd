"""Ops a user trial found missing, each composed of existing SharedTensor ops (no new
protocol kind; torch's signatures, results and gradients, autograd through the parts):

* ``split`` / ``chunk`` (``torch.*`` and methods): one basic slice (kind ``slice``, a
  strided view of each share, no index tensor) per piece; torch's own split of a meta
  tensor of the same shape gives the pieces' lengths and refuses what torch refuses.
* ``bmm`` (``torch.bmm``, ``Tensor.bmm``): torch's 3-d checks, then the batched matmul.
* ``masked_fill``: a public bool mask selects locally and exactly (``torch.where``'s public
  branch, ``x (1 - m) + value m``); a shared 0/1 mask (a comparison's result) is one
  product, ``x + m (value - x)`` (1 round).
* ``layer_norm`` (``nn.LayerNorm``): the mean and biased variance over the trailing
  ``normalized_shape``, ``rsqrt(var + eps)`` as batch norm's (base 2 / 16 bits).
* ``smooth_l1_loss`` (beta) and ``huber_loss`` (delta): from two ReLUs and a square.
* ``max_pool1d`` / ``avg_pool1d`` (``nn.MaxPool1d`` / ``nn.AvgPool1d``): the 2-d pools on an
  input with a unit height.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from protocols.errors import ShapeError, UnsupportedOperation

from . import pooling as pool
from .approximation import require_bits
from .composite import where
from .layers import normalize
from .losses import _difference, _reduce
from .operands import public
from .registry import implements
from .tensor import SharedTensor

# -- split and chunk: basic slices --------------------------------------------------------------


def _meta(x: SharedTensor) -> torch.Tensor:
    return torch.empty(tuple(int(s) for s in x.shape), device="meta")


def _pieces(x: SharedTensor, dim: int, lengths: Sequence[int]) -> tuple[SharedTensor, ...]:
    d = dim % x.dim() if x.dim() else 0
    out, start = [], 0
    for n in lengths:
        key = (slice(None),) * d + (slice(start, start + n),)
        out.append(x[key])
        start += n
    return tuple(out)


def _lengths(name: str, x: SharedTensor, dim: int, run: Any) -> list[int]:
    """The pieces' lengths along ``dim`` as torch's ``run(meta)`` gives them (its refusal
    as a ShapeError)."""
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation(f"{name} expects a SharedTensor, got {type(x).__name__}")
    try:
        return [int(p.shape[dim]) for p in run(_meta(x))]
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        raise ShapeError(f"{name} of shape {tuple(x.shape)}: {exc}") from None


@implements(torch.split, methods=("split",))
def split(tensor: Any, split_size_or_sections: Any, dim: int = 0) -> tuple[SharedTensor, ...]:
    """``torch.split`` / ``x.split``: an int size (the last piece shorter) or a list of
    sizes summing to the dimension; each piece a basic slice (local, exact)."""
    sizes = split_size_or_sections
    if isinstance(sizes, SharedTensor):
        raise UnsupportedOperation("split: the sizes must be a public int or a list of ints")
    lengths = _lengths("split", tensor, dim, lambda m: torch.split(m, sizes, dim))
    return _pieces(tensor, dim, lengths)


@implements(torch.chunk, methods=("chunk",))
def chunk(input: Any, chunks: int, dim: int = 0) -> tuple[SharedTensor, ...]:
    """``torch.chunk`` / ``x.chunk``: torch's piece lengths (possibly fewer than
    ``chunks``), each a basic slice."""
    lengths = _lengths("chunk", input, dim, lambda m: torch.chunk(m, chunks, dim))
    return _pieces(input, dim, lengths)


# -- bmm -----------------------------------------------------------------------------------------


@implements(torch.bmm, torch.Tensor.bmm, methods=("bmm",))
def bmm(input: Any, mat2: Any, *, out: Any = None) -> Any:
    """``torch.bmm``: both operands 3-d with the same batch and matching inner sizes (as
    torch checks), then the batched matmul (one Beaver round for two shared operands,
    local for a public one)."""
    if out is not None:
        raise UnsupportedOperation("torch.bmm: out= is not supported on SharedTensor")
    a, b = (tuple((v.tensor if isinstance(v, public) else v).shape) for v in (input, mat2))
    if len(a) != 3 or len(b) != 3:
        raise ShapeError(f"bmm: batch1 and batch2 must be 3-d tensors, got {a} and {b}")
    if a[0] != b[0] or a[2] != b[1]:
        raise ShapeError(f"bmm: shapes {a} and {b} cannot be multiplied")
    return input @ mat2 if isinstance(input, SharedTensor) else mat2.__rmatmul__(input)


# -- masked_fill ---------------------------------------------------------------------------------


@implements(torch.masked_fill, torch.Tensor.masked_fill, methods=("masked_fill",))
def masked_fill(input: Any, mask: Any, value: Any) -> Any:
    """``x.masked_fill(mask, value)``: ``value`` where mask is true, x elsewhere; mask
    broadcast to x's shape. A public mask must be bool (as torch's); the selection is
    local and exact. A shared mask must hold 0/1 (a comparison's result; not checked, it
    is private): one product. value: a number or a 0-d tensor (public or shared)."""
    if not isinstance(input, SharedTensor):
        raise UnsupportedOperation(
            "masked_fill of a public tensor with a shared mask or value is not supported; "
            "use torch.where(mask, value, x)"
        )
    if isinstance(value, torch.Tensor | SharedTensor) and value.dim() != 0:
        raise ShapeError(
            f"masked_fill only supports a 0-dimensional value tensor, got {value.dim()} dims"
        )
    if isinstance(value, torch.Tensor):
        value = float(value)
    shape = tuple(int(s) for s in input.shape)
    try:
        joint = tuple(torch.broadcast_shapes(tuple(mask.shape), shape))
    except RuntimeError as exc:
        raise ShapeError(f"masked_fill: mask {tuple(mask.shape)} for {shape}: {exc}") from None
    if joint != shape:
        raise ShapeError(f"masked_fill: mask {tuple(mask.shape)} does not broadcast to {shape}")
    if not isinstance(mask, SharedTensor):
        m = torch.as_tensor(mask)
        if m.dtype != torch.bool:
            raise ValueError(f"masked_fill only supports boolean masks, got dtype {m.dtype}")
        mask = m
    return where(mask, value, input)


# -- layer norm ----------------------------------------------------------------------------------


@implements(F.layer_norm)
def layer_norm(
    input: Any,
    normalized_shape: Any,
    weight: Any = None,
    bias: Any = None,
    eps: float = 1e-5,
) -> SharedTensor:
    """``F.layer_norm``: over the trailing ``normalized_shape``, the mean and the biased
    variance (one square), ``rsqrt(var + eps)`` (its exponent search: base 2 / 16 bits),
    ``(x - mean) * rsqrt``, then ``* weight + bias`` (shaped as normalized_shape)."""
    x = input
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation("layer_norm expects a shared input")
    require_bits(x, "layer_norm", base2=True)
    norm = (normalized_shape,) if isinstance(normalized_shape, int) else normalized_shape
    norm = tuple(int(s) for s in norm)
    k = len(norm)
    if k == 0 or k > x.dim() or tuple(int(s) for s in x.shape[x.dim() - k :]) != norm:
        raise ShapeError(
            f"layer_norm: normalized_shape {list(norm)} does not end input {tuple(x.shape)}"
        )
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(int(s) for s in p.shape) != norm:
            raise ShapeError(f"layer_norm: {name} of shape {tuple(p.shape)}, expected {norm}")
    y, _, _ = normalize(x, list(range(x.dim() - k, x.dim())), eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


# -- smooth L1 and Huber losses ------------------------------------------------------------------


def _huber_parts(d: SharedTensor, t: float) -> tuple[SharedTensor, SharedTensor]:
    """(c, |d| - |c|) with c = clamp(d, -t, t): the two ReLUs ``relu(d - t)``,
    ``relu(-d - t)`` side by side (1 round)."""
    p, q = (d - t).relu(), (-d - t).relu()
    return d - p + q, p + q


@implements(F.smooth_l1_loss)
def smooth_l1_loss(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    beta: float = 1.0,
) -> SharedTensor:
    """``0.5 d² / beta`` where ``|d| < beta``, ``|d| - beta / 2`` elsewhere, as ``0.5 c² /
    beta + (|d| - |c|)``, c = clamp(d, -beta, beta); beta = 0 is the L1 loss."""
    if beta < 0:
        raise ValueError("smooth_l1_loss does not support negative values for beta.")
    d, reduction = _difference(
        "smooth_l1_loss", input, target, size_average, reduce, reduction, None
    )
    c, rest = _huber_parts(d, float(beta))
    if beta == 0:
        return _reduce(rest, reduction)  # relu(d) + relu(-d) = |d|
    return _reduce(c**2 * (0.5 / beta) + rest, reduction)


@implements(F.huber_loss)
def huber_loss(
    input: Any, target: Any, reduction: str = "mean", delta: float = 1.0, weight: Any = None
) -> SharedTensor:
    """``0.5 d²`` where ``|d| < delta``, ``delta (|d| - delta / 2)`` elsewhere: ``0.5 c² +
    delta (|d| - |c|)``, c = clamp(d, -delta, delta)."""
    if delta <= 0:
        raise ValueError("huber_loss does not support non-positive values for delta.")
    d, reduction = _difference("huber_loss", input, target, None, None, reduction, weight)
    c, rest = _huber_parts(d, float(delta))
    return _reduce(c**2 * 0.5 + rest * float(delta), reduction)


# -- 1-d pooling ---------------------------------------------------------------------------------


def _single(v: Any, name: str) -> int:
    if isinstance(v, int):
        return v
    t = tuple(v)
    if len(t) != 1:
        raise ShapeError(f"{name} must be an int or a 1-tuple for a 1-d pool, got {v!r}")
    return int(t[0])


def _as_2d(input: Any, name: str) -> SharedTensor:
    if not isinstance(input, SharedTensor):
        raise UnsupportedOperation(f"{name} expects a SharedTensor, got {type(input).__name__}")
    if input.dim() not in (2, 3):
        raise ShapeError(f"{name}: expected a 2-d or 3-d input, got {tuple(input.shape)}")
    return input.unsqueeze(-2)


def _stride(stride: Any, kernel: int) -> int:
    return kernel if stride is None or stride == [] or stride == () else _single(stride, "stride")


def _max_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    k = _single(kernel_size, "kernel_size")
    out = pool.max_pool2d(
        _as_2d(input, "max_pool1d"),
        (1, k),
        (1, _stride(stride, k)),
        (0, _single(padding, "padding")),
        (1, _single(dilation, "dilation")),
        ceil_mode,
        return_indices,
    )
    if return_indices:
        return out[0].squeeze(-2), out[1].squeeze(-2)  # index w of a height-1 plane
    return out.squeeze(-2)


@implements(F.max_pool1d)
def max_pool1d(*args: Any, **kw: Any) -> Any:
    """``F.max_pool1d`` / ``nn.MaxPool1d``: max_pool2d over (1, k) windows of the input
    with a unit height (its indices are torch's 1-d ones)."""
    return _max_pool1d(*args, **kw)


@implements(F.max_pool1d_with_indices)
def max_pool1d_with_indices(*args: Any, **kw: Any) -> Any:
    kw["return_indices"] = True
    return _max_pool1d(*args, **kw)


@implements(torch.avg_pool1d)
def avg_pool1d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
) -> SharedTensor:
    """``F.avg_pool1d`` (torch.avg_pool1d) / ``nn.AvgPool1d``: avg_pool2d over (1, k)."""
    k = _single(kernel_size, "kernel_size")
    out = pool.avg_pool2d(
        _as_2d(input, "avg_pool1d"),
        (1, k),
        (1, _stride(stride, k)),
        (0, _single(padding, "padding")),
        ceil_mode,
        count_include_pad,
    )
    return out.squeeze(-2)
