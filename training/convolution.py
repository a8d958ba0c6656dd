"""Convolutions and their gathers on SharedTensors: ``conv2d`` / ``conv1d`` with a shared or
a public kernel, ``conv_transpose2d``, ``F.unfold`` / ``F.fold`` (im2col and its adjoint)
and ``Tensor.unfold``.

* **Shared kernel** (``conv2d``): padding is a local scatter into zeros (``put``), the rows
  and columns a strided window never reaches are cropped (``take``), a dilated kernel gets
  its zeros inserted (``put``); then one Beaver convolution (kind ``conv``: 1 round, the
  opened masks have the size of the padded input and of the kernel). Backward: ``conv_dx``
  and ``conv_dw``, one Beaver round each, side by side.
* **Public kernel** (a plain torch tensor weight on a shared image): a public linear map of
  the shares, so no triple and no opening: the image's windows are gathered locally
  (im2col, one ``take``) and multiplied by the kernel as a public matrix (``matmul_pub``,
  block-diagonal over the groups), then truncated once (local with 2 parties). Backward
  through the same kinds (the transposed public matrix, then the adjoint scatter). A
  public kernel gets no gradient; one that requires grad is refused while grad is enabled
  (:func:`training.operands.as_public`).
* ``conv_transpose2d``: the adjoint of a convolution, computed at full size and cropped by
  ``padding`` / extended by ``output_padding``. A shared kernel is one Beaver round of kind
  ``conv_dx`` (the masks have the size of the input, not of a zero-stuffed one); backward
  ``conv`` and ``conv_dw``. A public kernel: ``matmul_pub`` then ``fold`` (a ``put``).
* ``unfold`` / ``fold`` / ``Tensor.unfold``: public-index gathers and scatter-adds, exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from protocols.errors import ShapeError, UnsupportedOperation
from protocols.params import Params

from .autograd import Value
from .operands import as_public
from .tensor import SharedTensor


def pair(v: Any, name: str) -> tuple[int, int]:
    """An int or a 1- or 2-sequence as (height, width), like torch's ``_pair``."""
    if isinstance(v, bool) or not isinstance(v, int | Sequence) or isinstance(v, str):
        raise ShapeError(f"{name} must be an int or a pair, got {v!r}")
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


def pad2d(x: SharedTensor, pads: tuple[int, int, int, int]) -> SharedTensor:
    """Zero-pad the last two dims of a 4-d x by (top, bottom, left, right): a local scatter."""
    t, b, left, r = pads
    if not any(pads):
        return x
    n, c, h, w = (int(v) for v in x.shape)
    shape = (n, c, h + t + b, w + left + r)
    pos = torch.arange(int(torch.Size(shape).numel())).reshape(shape)
    return x._put(pos[:, :, t : t + h, left : left + w], shape)


def _crop(x: SharedTensor, top: int, left: int, h: int, w: int) -> SharedTensor:
    if (top, left, h, w) == (0, 0, int(x.shape[2]), int(x.shape[3])):
        return x
    return x[:, :, top : top + h, left : left + w]


def _same_pads(k: tuple[int, int], dil: tuple[int, int]) -> tuple[int, int, int, int]:
    th, tw = dil[0] * (k[0] - 1), dil[1] * (k[1] - 1)
    return (th // 2, th - th // 2, tw // 2, tw - tw // 2)


def _batched(x: Any, name: str, dims: int) -> tuple[SharedTensor, bool]:
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation(
            f"{name} needs a shared input: share the data with cluster.share(...) (the "
            "kernel may be shared, cluster.share_module(...), or a public torch tensor)"
        )
    if x.dim() == dims - 1:
        return x.unsqueeze(0), True
    if x.dim() != dims:
        raise ShapeError(f"{name}: expected a {dims - 1}-d or {dims}-d input, got {tuple(x.shape)}")
    return x, False


def _kernel(w: Any, name: str) -> SharedTensor | torch.Tensor:
    if isinstance(w, SharedTensor):
        if w.dim() != 4:
            raise ShapeError(f"{name}: expected a 4-d weight, got {tuple(w.shape)}")
        return w
    pub = as_public(w)
    if pub.dim() != 4:
        raise ShapeError(f"{name}: expected a 4-d weight, got {tuple(pub.shape)}")
    return pub.to(torch.float64)


def window_positions(
    shape: Sequence[int],
    k: tuple[int, int],
    dil: tuple[int, int],
    s: tuple[int, int],
    out: tuple[int, int],
) -> torch.Tensor:
    """Flat positions, in a 4-d tensor of ``shape``, of every kernel tap of every window:
    (N, C, kh, kw, Ho, Wo), torch's im2col order."""
    pos = torch.arange(int(torch.Size(tuple(shape)).numel())).reshape(tuple(shape))
    khe, kwe = dil[0] * (k[0] - 1) + 1, dil[1] * (k[1] - 1) + 1
    win = pos.unfold(2, khe, s[0]).unfold(3, kwe, s[1])
    win = win[:, :, : out[0], : out[1], :: dil[0], :: dil[1]]
    if tuple(win.shape[2:4]) != out:
        raise ShapeError(f"windows {k} (stride {s}, dilation {dil}) do not fit {tuple(shape)}")
    return win.permute(0, 1, 4, 5, 2, 3)


def _out_size(size: int, k: int, s: int, p: int, d: int, name: str) -> int:
    if min(k, s, d) < 1 or p < 0:
        raise ShapeError(f"{name}: kernel, stride and dilation must be positive, padding >= 0")
    out = (size + 2 * p - d * (k - 1) - 1) // s + 1
    if out < 1:
        raise ShapeError(f"{name}: kernel {k} (dilation {d}) larger than padded input {size}")
    return out


def _block_matrix(w: torch.Tensor, groups: int, transpose: bool) -> torch.Tensor:
    """The kernel (O, C/g, kh, kw) as the public matrix of its convolution on im2col columns
    (O, C kh kw), block-diagonal over the groups; ``transpose``: a conv_transpose kernel
    (C_in, C_out/g, kh, kw) as (C_out kh kw, C_in)."""
    a, b, kh, kw = (int(v) for v in w.shape)
    ag = a // groups
    if transpose:
        m = torch.zeros(b * groups, kh, kw, a, dtype=torch.float64)
        for g in range(groups):
            blk = w[g * ag : (g + 1) * ag].permute(1, 2, 3, 0)  # (C_out/g, kh, kw, C_in/g)
            m[g * b : (g + 1) * b, :, :, g * ag : (g + 1) * ag] = blk
        return m.reshape(b * groups * kh * kw, a)
    m = torch.zeros(a, b * groups, kh, kw, dtype=torch.float64)
    for g in range(groups):
        m[g * ag : (g + 1) * ag, g * b : (g + 1) * b] = w[g * ag : (g + 1) * ag]
    return m.reshape(a, b * groups * kh * kw)


def _conv_padding(
    padding: Any, s: tuple[int, int], k: tuple[int, int], dil: tuple[int, int]
) -> tuple[int, int, int, int]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if s != (1, 1):
                raise ShapeError("conv2d: padding='same' needs stride 1")
            return _same_pads(k, dil)
        raise ShapeError(f"conv2d: unknown padding {padding!r}")
    ph, pw = pair(padding, "padding")
    if ph < 0 or pw < 0:
        raise ShapeError(f"conv2d: negative padding {padding!r}")
    return (ph, ph, pw, pw)


def conv2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> SharedTensor:
    """``F.conv2d`` on a shared input with a shared or public kernel (see module doc)."""
    x, unbatched = _batched(input, "conv2d", 4)
    w = _kernel(weight, "conv2d")
    n, c, h, wd = (int(v) for v in x.shape)
    o, cg, kh, kw = (int(v) for v in w.shape)
    if groups < 1 or cg * groups != c or o % groups:
        raise ShapeError(
            f"conv2d: input has {c} channels, weight expects {cg} x groups={groups} and {o} outputs"
        )
    s, dil = pair(stride, "stride"), pair(dilation, "dilation")
    if min(*s, *dil) < 1:
        raise ShapeError(f"conv2d: stride {s} and dilation {dil} must be positive")
    pads = _conv_padding(padding, s, (kh, kw), dil)
    khe, kwe = dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    ho, wo = (hp - khe) // s[0] + 1, (wp - kwe) // s[1] + 1
    if hp < khe or wp < kwe:
        raise ShapeError(f"conv2d: kernel {(khe, kwe)} larger than padded input {(hp, wp)}")
    if isinstance(w, torch.Tensor):
        xp = pad2d(x, pads)
        cols = xp._take(window_positions(xp.shape, (kh, kw), dil, s, (ho, wo)))
        cols = cols.reshape(n, c * kh * kw, ho * wo)
        out = cols._matmul_public(_block_matrix(w, groups, False), left=True)
        out = out.reshape(n, o, ho, wo)
    else:
        out = _conv_shared(x, w, pads, s, dil, (ho, wo))
    if bias is not None:
        out = out + bias.reshape(1, o, 1, 1)
    return out.squeeze(0) if unbatched else out


def _dilate(w: SharedTensor, dil: tuple[int, int]) -> SharedTensor:
    if dil == (1, 1):
        return w
    o, cg, kh, kw = (int(v) for v in w.shape)
    wshape = (o, cg, dil[0] * (kh - 1) + 1, dil[1] * (kw - 1) + 1)
    pos = torch.arange(int(torch.Size(wshape).numel())).reshape(wshape)
    return w._put(pos[:, :, :: dil[0], :: dil[1]], wshape)


def _conv_shared(
    x: SharedTensor,
    w: SharedTensor,
    pads: tuple[int, int, int, int],
    s: tuple[int, int],
    dil: tuple[int, int],
    out_hw: tuple[int, int],
) -> SharedTensor:
    """One Beaver convolution on the padded, cropped input and the dilated kernel."""
    ho, wo = out_hw
    wp_ = _dilate(w, dil)
    khe, kwe = int(wp_.shape[2]), int(wp_.shape[3])
    xp = _crop(pad2d(x, pads), 0, 0, (ho - 1) * s[0] + khe, (wo - 1) * s[1] + kwe)
    out_shape = (int(x.shape[0]), int(w.shape[0]), ho, wo)
    xs, ws = tuple(xp.shape), tuple(wp_.shape)
    if wp_.requires_grad and torch.is_grad_enabled() and _reuses(xp, wp_):
        return _conv_kept(xp, wp_, out_shape)
    out = _bilinear("conv", xp, wp_, out_shape)

    def back(g: Value) -> tuple[Value, Value]:
        gs = _shared_operand(g, xp, "conv2d backward")
        gx = _bilinear("conv_dx", gs, wp_.detach(), xs) if xp.requires_grad else None
        gw = _bilinear("conv_dw", xp.detach(), gs, ws) if wp_.requires_grad else None
        return gx, gw

    return xp._record(out, [xp, wp_], back)


def _reuses(x: SharedTensor, w: SharedTensor) -> bool:
    """The kernel's gradient will be needed and the suite can deal the backward ahead
    (:mod:`protocols.reuse`): one encoding for both."""
    return x.fp == w.fp and x.prec == w.prec and "conv_keep" in x.cluster.suite


def _conv_kept(xp: SharedTensor, wp_: SharedTensor, out_shape: tuple[int, ...]) -> SharedTensor:
    """``conv(xp, wp_)`` as ``conv_keep``: its backward opens only the gradient."""
    xs, ws = tuple(xp.shape), tuple(wp_.shape)
    x, w = xp.detach(), wp_.detach()

    def fallback(g: Value, both: bool) -> tuple[Value, Value]:
        gs = _shared_operand(g, xp, "conv2d backward")
        gx = _bilinear("conv_dx", gs, w, xs) if both else None
        return gx, _bilinear("conv_dw", x, gs, ws)

    d = xp.fp.base**xp.prec
    return xp._kept_bilinear(
        "conv",
        w,
        [xp, wp_],
        out_shape,
        ws,
        Params(d=d, shape=out_shape),
        fallback,
        shared=lambda g: _shared_operand(g, xp, "conv2d backward"),
    )


def conv1d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    dilation: Any = 1,
    groups: int = 1,
) -> SharedTensor:
    """``F.conv1d`` as a conv2d of height 1 (shared or public kernel)."""
    x, unbatched = _batched(input, "conv1d", 3)

    def one(v: Any) -> int:
        return int(v[0]) if isinstance(v, Sequence) and not isinstance(v, str) else int(v)

    pad: Any = padding if isinstance(padding, str) else (0, one(padding))
    if len(tuple(weight.shape)) != 3:
        raise ShapeError(f"conv1d: expected a 3-d weight, got {tuple(weight.shape)}")
    w = weight.unsqueeze(2)
    out = conv2d(x.unsqueeze(2), w, None, (1, one(stride)), pad, (1, one(dilation)), groups)
    out = out.squeeze(2)
    if bias is not None:
        out = out + bias.reshape(1, -1, 1)
    return out.squeeze(0) if unbatched else out


def conv_transpose2d(
    input: Any,
    weight: Any,
    bias: Any = None,
    stride: Any = 1,
    padding: Any = 0,
    output_padding: Any = 0,
    groups: int = 1,
    dilation: Any = 1,
) -> SharedTensor:
    """``F.conv_transpose2d`` on a shared input, shared or public kernel (see module doc)."""
    x, unbatched = _batched(input, "conv_transpose2d", 4)
    w = _kernel(weight, "conv_transpose2d")
    n, ci, h, wd = (int(v) for v in x.shape)
    wi, cog, kh, kw = (int(v) for v in w.shape)
    if groups < 1 or wi != ci or ci % groups:
        raise ShapeError(
            f"conv_transpose2d: input has {ci} channels, weight {tuple(w.shape)} with "
            f"groups={groups} expects {wi}"
        )
    co = cog * groups
    s, dil = pair(stride, "stride"), pair(dilation, "dilation")
    p, op = pair(padding, "padding"), pair(output_padding, "output_padding")
    if min(*s, *dil) < 1 or min(*p, *op) < 0:
        raise ShapeError("conv_transpose2d: stride/dilation must be positive, paddings >= 0")
    if op[0] >= max(s[0], dil[0]) or op[1] >= max(s[1], dil[1]):
        raise ShapeError(
            f"conv_transpose2d: output_padding {op} must be smaller than stride {s} or "
            f"dilation {dil}"
        )
    full = tuple(
        (size - 1) * s[i] + dil[i] * (k - 1) + 1 for i, (size, k) in enumerate(((h, kh), (wd, kw)))
    )
    hout, wout = (full[i] - 2 * p[i] + op[i] for i in (0, 1))
    if hout < 1 or wout < 1:
        raise ShapeError(f"conv_transpose2d: padding {p} leaves no output")
    if isinstance(w, torch.Tensor):
        cols = x.reshape(n, ci, h * wd)._matmul_public(_block_matrix(w, groups, True), left=True)
        hf, wf = max(full[0], p[0] + hout), max(full[1], p[1] + wout)
        idx = window_positions((n, co, hf, wf), (kh, kw), dil, s, (h, wd))
        y = cols._put(idx.reshape(n, co * kh * kw, h * wd), (n, co, hf, wf))
    else:
        y = _conv_transpose_shared(x, w, s, dil, (n, co, full[0], full[1]))
        y = pad2d(y, (0, max(0, p[0] + hout - full[0]), 0, max(0, p[1] + wout - full[1])))
    out = _crop(y, p[0], p[1], hout, wout)
    if bias is not None:
        out = out + bias.reshape(1, co, 1, 1)
    return out.squeeze(0) if unbatched else out


def _conv_transpose_shared(
    x: SharedTensor,
    w: SharedTensor,
    s: tuple[int, int],
    dil: tuple[int, int],
    full: tuple[int, int, int, int],
) -> SharedTensor:
    """The full-size transposed convolution: one Beaver round of kind ``conv_dx`` (the
    adjoint of a valid stride-s correlation with the dilated kernel)."""
    wp_ = _dilate(w, dil)
    out = _bilinear("conv_dx", x, wp_, full)
    xs, ws = tuple(x.shape), tuple(wp_.shape)

    def back(g: Value) -> tuple[Value, Value]:
        gs = _shared_operand(g, x, "conv_transpose2d backward")
        gx = _bilinear("conv", gs, wp_.detach(), xs) if x.requires_grad else None
        gw = _bilinear("conv_dw", gs, x.detach(), ws) if wp_.requires_grad else None
        return gx, gw

    return x._record(out, [x, wp_], back)


def unfold(
    input: Any, kernel_size: Any, dilation: Any = 1, padding: Any = 0, stride: Any = 1
) -> SharedTensor:
    """``F.unfold`` (im2col): (N, C, H, W) -> (N, C kh kw, L), a padding scatter and a
    gather (local, exact)."""
    x, unbatched = _batched(input, "unfold", 4)
    k, dil = pair(kernel_size, "kernel_size"), pair(dilation, "dilation")
    p, s = pair(padding, "padding"), pair(stride, "stride")
    n, c, h, w = (int(v) for v in x.shape)
    out = tuple(_out_size((h, w)[i], k[i], s[i], p[i], dil[i], "unfold") for i in (0, 1))
    xp = pad2d(x, (p[0], p[0], p[1], p[1]))
    idx = window_positions(xp.shape, k, dil, s, (out[0], out[1]))
    cols = xp._take(idx.reshape(n, c * k[0] * k[1], out[0] * out[1]))
    return cols.squeeze(0) if unbatched else cols


def fold(
    input: Any,
    output_size: Any,
    kernel_size: Any,
    dilation: Any = 1,
    padding: Any = 0,
    stride: Any = 1,
) -> SharedTensor:
    """``F.fold`` (col2im), the adjoint of :func:`unfold`: a scatter-add and a crop."""
    x, unbatched = _batched(input, "fold", 3)
    k, dil = pair(kernel_size, "kernel_size"), pair(dilation, "dilation")
    p, s = pair(padding, "padding"), pair(stride, "stride")
    hw = pair(output_size, "output_size")
    n, ck, length = (int(v) for v in x.shape)
    out = tuple(_out_size(hw[i], k[i], s[i], p[i], dil[i], "fold") for i in (0, 1))
    if ck % (k[0] * k[1]) or out[0] * out[1] != length:
        raise ShapeError(
            f"fold: input {tuple(x.shape)} does not fit kernel {k} and {out[0] * out[1]} blocks"
        )
    c = ck // (k[0] * k[1])
    shape = (n, c, hw[0] + 2 * p[0], hw[1] + 2 * p[1])
    idx = window_positions(shape, k, dil, s, (out[0], out[1]))
    y = _crop(x._put(idx.reshape(n, ck, length), shape), p[0], p[1], hw[0], hw[1])
    return y.squeeze(0) if unbatched else y


def tensor_unfold(x: Any, dimension: int, size: int, step: int) -> SharedTensor:
    """``Tensor.unfold(dimension, size, step)``: the windows as a new last dim (a gather)."""
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation("unfold expects a SharedTensor")
    return x._take(x._index_of("unfold", lambda pos: pos.unfold(dimension, size, step)))
