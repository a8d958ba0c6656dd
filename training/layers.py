"""Convolutions, pooling, dropout and batch normalisation on SharedTensors.

* ``conv2d`` / ``conv1d``: padding is a local scatter into zeros (``put``), the rows and
  columns a strided window never reaches are cropped (``take``), a dilated kernel gets its
  zeros inserted (``put``); then one Beaver convolution (kind ``conv``: 1 round, the
  opened masks have the size of the padded input and of the kernel). Backward: ``conv_dx``
  and ``conv_dw``, one Beaver round each, side by side.
* ``avg_pool2d``: windows gathered locally, summed, divided by the public window size (a
  local truncation): free with 2 parties.
* ``max_pool2d``: windows gathered locally, a ReLU tournament over each window
  (``ceil(log2 k)`` rounds) keeping the arg-max one-hot; backward multiplies the gradient
  by the one-hot (1 round, no truncation) and scatters it back.
* ``dropout``: identity in eval mode or with p = 0; in training mode ``x * b / (1 - p)``
  with a mask b of Bernoulli bits the provider deals as shares (kind ``dropout``: one
  product, 1 round), so no one learns which units were dropped; backward by the same mask.
* ``batch_norm``: training mode with batch statistics (mean, biased variance, rsqrt) and
  eval mode with the running statistics (shared buffers); see :func:`batch_norm`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from protocols.errors import ShapeError, UnsupportedOperation
from protocols.layers import KEEP_UNITS
from protocols.params import Params

from .approximation import require_bits
from .autograd import Value
from .maxima import max_dim
from .range_reduction import rsqrt
from .tensor import SharedTensor

PAD_MIN = -1.0e4
"""Value of max-pooling's padding (instead of -inf); inputs must stay above it."""


def _pair(v: Any, name: str) -> tuple[int, int]:
    if isinstance(v, int):
        return (v, v)
    t = tuple(int(a) for a in v)
    if len(t) == 1:
        return (t[0], t[0])
    if len(t) != 2:
        raise ShapeError(f"{name} must be an int or a pair, got {v!r}")
    return (t[0], t[1])


def _shared_operand(v: Any, like: SharedTensor, name: str) -> SharedTensor:
    if isinstance(v, SharedTensor):
        return v
    if isinstance(v, torch.Tensor):
        # A public gradient reaching a convolution (rare): share it to use the triple.
        return SharedTensor.from_plain(like.cluster, v.detach(), like.fp)
    raise UnsupportedOperation(f"{name}: cannot use a {type(v).__name__} operand")


def _bilinear(kind: str, a: SharedTensor, b: SharedTensor, out: Sequence[int]) -> SharedTensor:
    prec = max(a.prec, b.prec)
    d = a.fp.base ** min(a.prec, b.prec)
    return a._op(kind, [b], tuple(out), Params(d=d, shape=tuple(out)), prec=prec)


def _pad(x: SharedTensor, pads: tuple[int, int, int, int], fill: float = 0.0) -> SharedTensor:
    """Zero-pad the last two dims by (top, bottom, left, right): a local scatter."""
    t, b, left, r = pads
    if not any(pads):
        return x
    n, c, h, w = x.shape
    shape = (n, c, h + t + b, w + left + r)
    pos = torch.arange(int(torch.Size(shape).numel())).reshape(shape)
    idx = pos[:, :, t : t + h, left : left + w]
    out = x._put(idx, shape)
    if fill:
        mask = torch.ones(shape, dtype=torch.float64)
        mask[:, :, t : t + h, left : left + w] = 0
        out = out + mask * fill
    return out


def _crop(x: SharedTensor, h: int, w: int) -> SharedTensor:
    if (int(x.shape[2]), int(x.shape[3])) == (h, w):
        return x
    return x[:, :, :h, :w]


def _same_pads(k: tuple[int, int], dil: tuple[int, int]) -> tuple[int, int, int, int]:
    th, tw = dil[0] * (k[0] - 1), dil[1] * (k[1] - 1)
    return (th // 2, th - th // 2, tw // 2, tw - tw // 2)


def _require_shared(name: str, input: Any, weight: Any) -> None:
    if not isinstance(input, SharedTensor) or not isinstance(weight, SharedTensor):
        raise UnsupportedOperation(
            f"{name} needs a shared input and a shared weight: share the data with "
            "cluster.share(...) and the module with cluster.share_module(...)"
        )


def conv2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> SharedTensor:
    """``F.conv2d`` on shares (see module doc)."""
    _require_shared("conv2d", input, weight)
    x, w = input, weight
    unbatched = x.dim() == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.dim() != 4 or w.dim() != 4:
        raise ShapeError(
            f"conv2d: expected 4-d input and weight, got {tuple(x.shape)}, {tuple(w.shape)}"
        )
    n, c, h, wd = (int(v) for v in x.shape)
    o, cg, kh, kw = (int(v) for v in w.shape)
    if cg * groups != c or o % groups:
        raise ShapeError(
            f"conv2d: input has {c} channels, weight expects {cg} x groups={groups} and {o} outputs"
        )
    s, dil = _pair(stride, "stride"), _pair(dilation, "dilation")
    if isinstance(padding, str):
        if padding == "valid":
            pads = (0, 0, 0, 0)
        elif padding == "same":
            if s != (1, 1):
                raise ShapeError("conv2d: padding='same' needs stride 1")
            pads = _same_pads((kh, kw), dil)
        else:
            raise ShapeError(f"conv2d: unknown padding {padding!r}")
    else:
        ph, pw = _pair(padding, "padding")
        pads = (ph, ph, pw, pw)
    khe, kwe = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    ho, wo = (hp - khe) // s[0] + 1, (wp - kwe) // s[1] + 1
    if ho < 1 or wo < 1:
        raise ShapeError(f"conv2d: kernel {(khe, kwe)} larger than padded input {(hp, wp)}")
    xp = _crop(_pad(x, pads), (ho - 1) * s[0] + khe, (wo - 1) * s[1] + kwe)
    if dil != (1, 1):
        wshape = (o, cg, khe, kwe)
        pos = torch.arange(int(torch.Size(wshape).numel())).reshape(wshape)
        wp_ = w._put(pos[:, :, :: dil[0], :: dil[1]], wshape)
    else:
        wp_ = w
    out_shape = (n, o, ho, wo)
    out = _bilinear("conv", xp, wp_, out_shape)
    xs, ws = tuple(xp.shape), tuple(wp_.shape)

    def back(g: Value) -> tuple[Value, Value]:
        gs = _shared_operand(g, xp, "conv2d backward")
        gx = _bilinear("conv_dx", gs, wp_.detach(), xs) if xp.requires_grad else None
        gw = _bilinear("conv_dw", xp.detach(), gs, ws) if wp_.requires_grad else None
        return gx, gw

    out = xp._record(out, [xp, wp_], back)
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out.squeeze(0) if unbatched else out


def conv1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> SharedTensor:
    """``F.conv1d`` as a conv2d of height 1."""
    _require_shared("conv1d", input, weight)
    x = input
    unbatched = x.dim() == 2
    if unbatched:
        x = x.unsqueeze(0)

    def one(v: Any) -> int:
        return int(v[0]) if isinstance(v, Sequence) and not isinstance(v, str) else int(v)

    if isinstance(padding, str):
        pad: Any = padding
        if padding == "same":
            pad = "same"
    else:
        pad = (0, one(padding))
    out = conv2d(
        x.unsqueeze(2),
        weight.unsqueeze(2),
        None,
        (1, one(stride)),
        pad,
        (1, one(dilation)),
        groups,
    ).squeeze(2)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1)
    return out.squeeze(0) if unbatched else out


def _windows(
    shape: Sequence[int], k: tuple[int, int], s: tuple[int, int], dil: tuple[int, int]
) -> torch.Tensor:
    """Flat positions of every pooling window: (N, C, Ho, Wo, kh*kw)."""
    pos = torch.arange(int(torch.Size(shape).numel())).reshape(tuple(shape))
    khe, kwe = dil[0] * (k[0] - 1) + 1, dil[1] * (k[1] - 1) + 1
    if khe > shape[2] or kwe > shape[3] or min(*k, *s, *dil) < 1:
        raise ShapeError(
            f"pooling window {k} (stride {s}, dilation {dil}) does not fit input {tuple(shape)}"
        )
    win = pos.unfold(2, khe, s[0]).unfold(3, kwe, s[1])[..., :: dil[0], :: dil[1]]
    return win.reshape(*win.shape[:4], k[0] * k[1])


def _pool_input(x: Any, name: str) -> tuple[SharedTensor, bool]:
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation(f"{name} expects a SharedTensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ShapeError(f"{name}: expected a 3-d or 4-d input, got {tuple(x.shape)}")
    return x, False


def _check_ceil(ceil_mode: bool, size: int, k: int, s: int, p: int, name: str) -> None:
    if ceil_mode and (size + 2 * p - k) % s:
        raise UnsupportedOperation(f"{name}: ceil_mode=True with partial windows is not supported")


def avg_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> SharedTensor:
    """Mean over windows: local (windows, sum, a public division)."""
    x, unbatched = _pool_input(input, "avg_pool2d")
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else _pair(stride, "stride")
    p = _pair(padding, "padding")
    for i in (0, 1):
        _check_ceil(ceil_mode, int(x.shape[2 + i]), k[i], s[i], p[i], "avg_pool2d")
    if any(p) and not count_include_pad:
        raise UnsupportedOperation("avg_pool2d: count_include_pad=False with padding")
    xp = _pad(x, (p[0], p[0], p[1], p[1]))
    win = xp._take(_windows(tuple(xp.shape), k, s, (1, 1)))
    div = divisor_override if divisor_override else k[0] * k[1]
    out = win.sum(-1) / int(div)
    return out.squeeze(0) if unbatched else out


def max_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> SharedTensor:
    """Max over windows by a ReLU tournament; backward through the arg-max one-hot."""
    if return_indices:
        raise UnsupportedOperation(
            "max_pool2d(return_indices=True): the indices are secret; use "
            "training.maxima.max_dim for a shared one-hot"
        )
    x, unbatched = _pool_input(input, "max_pool2d")
    k = _pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else _pair(stride, "stride")
    p, dil = _pair(padding, "padding"), _pair(dilation, "dilation")
    for i in (0, 1):
        _check_ceil(
            ceil_mode, int(x.shape[2 + i]), dil[i] * (k[i] - 1) + 1, s[i], p[i], "max_pool2d"
        )
    xp = _pad(x, (p[0], p[0], p[1], p[1]), PAD_MIN)
    win = xp._take(_windows(tuple(xp.shape), k, s, dil))
    out, _ = max_dim(win, -1)
    return out.squeeze(0) if unbatched else out


def _adaptive_kernel(x: SharedTensor, output_size: Any, name: str) -> tuple[int, int]:
    h, w = int(x.shape[-2]), int(x.shape[-1])
    osz = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    oh = h if osz[0] is None else int(osz[0])
    ow = w if osz[1] is None else int(osz[1])
    if h % oh or w % ow:
        raise UnsupportedOperation(
            f"{name}: input {h}x{w} is not a multiple of output {oh}x{ow} (non-uniform "
            "windows); use avg_pool2d/max_pool2d with an explicit kernel instead"
        )
    return h // oh, w // ow


def adaptive_avg_pool2d(input: Any, output_size: Any) -> SharedTensor:
    x, _ = _pool_input(input, "adaptive_avg_pool2d")
    k = _adaptive_kernel(x, output_size, "adaptive_avg_pool2d")
    return avg_pool2d(input, k, k)


def adaptive_max_pool2d(input: Any, output_size: Any, return_indices: bool = False) -> SharedTensor:
    x, _ = _pool_input(input, "adaptive_max_pool2d")
    k = _adaptive_kernel(x, output_size, "adaptive_max_pool2d")
    return max_pool2d(input, k, k, return_indices=return_indices)


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
    if training:
        mean = x.mean(dims, keepdim=True)
        xc = x - mean
        var = (xc**2).mean(dims, keepdim=True)
        inv = rsqrt(var + eps)
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
            rsqrt(rv + eps).reshape(shape)
            if isinstance(rv, SharedTensor)
            else (torch.as_tensor(rv, dtype=torch.float64).add(eps).rsqrt().reshape(shape))
        )
    y = xc * inv
    if weight is not None:
        y = y * weight.reshape(shape)
    if bias is not None:
        y = y + bias.reshape(shape)
    return y


def _update_running(buf: Any, value: SharedTensor, momentum: float) -> None:
    if isinstance(buf, SharedTensor):
        buf._assign(buf * (1.0 - momentum) + value * momentum)
    elif buf is not None:
        raise UnsupportedOperation(
            "batch_norm: running statistics must be shared (cluster.share_module shares "
            "BatchNorm buffers)"
        )
