"""Pooling on SharedTensors: ``avg_pool2d``, ``max_pool2d`` (with indices), and the adaptive
pools, with torch's full geometry (padding, dilation, ceil_mode, non-uniform adaptive
windows).

Every pool gathers its windows from the *unpadded* input by a public index (one local
``take``): per axis, output ``i`` reads the taps ``i s - p + j d`` (``j < k``), or for an
adaptive pool ``floor(i H / o) <= t < ceil((i + 1) H / o)`` padded to the longest window.
A tap outside the input (padding, a ``ceil_mode`` window's overhang, the short windows of
an adaptive pool) is never a value:

* **max**: it repeats the window's first real tap (first along each axis), so it can
  neither win with a made-up value (the old finite ``-1e4`` fill did, for windows whose
  values are all below it) nor change the maximum; a repeated tap that wins routes its
  gradient (the adjoint scatter-add) and its index to the real position. The ReLU
  tournament (:func:`training.maxima.max_dim`) keeps the earlier of equal values (its
  bit is ``a - b >= 0``), so **ties go to the first tap in scan order, as torch's CPU
  kernel does**, and a repeated tap only ever stands for the real one it copies (it
  copies the first real row/column, so it never precedes a real tap of higher value in
  the order that matters). Values closer than the encoding's resolution are ties after
  encoding, and may pick a different element than torch's float comparison.
* **avg**: it is zeroed by a public 0/1 mask (an exact integer product) and the window sum
  is divided by torch's divisor (``count_include_pad``, ``ceil_mode``, ``divisor_override``):
  one local truncation, by a public integer when every window has the same divisor, else by
  a public real per window.

``return_indices``: torch's int64 flat index ``h W + w`` into each input plane, here a
SharedTensor holding those integers (``sum_j onehot_j * index_j`` of the arg-max one-hot,
exact, precision 0): ``(await idx.get()).long()`` is torch's tensor. It is secret like the
values; revealing it reveals where each maximum was.
"""

from __future__ import annotations

from typing import Any

import torch

from protocols.errors import ShapeError, UnsupportedOperation

from .convolution import pair
from .maxima import max_dim
from .operands import public
from .tensor import SharedTensor

Axis = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""One axis of a pool: taps (out, k) in the input, their validity, torch's divisor with
padding counted (out,)."""


def _axis(size: int, k: int, s: int, p: int, d: int, ceil_mode: bool, name: str) -> Axis:
    if min(k, s, d) < 1 or p < 0:
        raise ShapeError(f"{name}: kernel, stride and dilation must be positive, padding >= 0")
    if 2 * p > k:
        raise ShapeError(f"{name}: padding {p} must be at most half of the kernel size {k}")
    span = size + 2 * p - d * (k - 1) - 1
    if span < 0:
        raise ShapeError(f"{name}: window {k} (dilation {d}) does not fit padded input {size}")
    out = (span + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1  # torch: the last window must start inside the input or its left padding
    start = torch.arange(out) * s - p
    taps = start[:, None] + torch.arange(k)[None, :] * d
    valid = (taps >= 0) & (taps < size)
    counted = torch.minimum(start + (k - 1) * d + 1, torch.tensor(size + p)) - start
    return taps, valid, counted


def _adaptive_axis(size: int, out: int, name: str) -> Axis:
    if out < 1:
        raise ShapeError(f"{name}: output size must be positive, got {out}")
    i = torch.arange(out)
    start = (i * size) // out
    end = -((-(i + 1) * size) // out)
    k = int((end - start).max())
    taps = start[:, None] + torch.arange(k)[None, :]
    return taps, taps < end[:, None], end - start


def _input(x: Any, name: str) -> tuple[SharedTensor, bool]:
    if not isinstance(x, SharedTensor):
        raise UnsupportedOperation(f"{name} expects a SharedTensor, got {type(x).__name__}")
    if x.dim() == 3:
        return x.unsqueeze(0), True
    if x.dim() != 4:
        raise ShapeError(f"{name}: expected a 3-d or 4-d input, got {tuple(x.shape)}")
    return x, False


def _first_real(taps: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Taps with every invalid one replaced by the window's first valid tap."""
    if bool(valid.all()):
        return taps
    if not bool(valid.any(1).all()):
        raise ShapeError("pooling: a window lies entirely in the padding")
    first = taps.gather(1, valid.to(torch.int8).argmax(1, keepdim=True))
    return torch.where(valid, taps, first)


def _taps(w: int, ah: Axis, aw: Axis, repeat: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(each tap's flat index in its plane (Ho, Wo, K), validity (Ho, Wo, K)) for planes of
    width w. Invalid taps repeat the first real one (``repeat``) or read position 0."""
    (th, vh, _), (tw, vw, _) = ah, aw
    if repeat:
        th, tw = _first_real(th, vh), _first_real(tw, vw)
    else:
        th, tw = torch.where(vh, th, 0), torch.where(vw, tw, 0)
    plane = th[:, None, :, None] * w + tw[None, :, None, :]  # (Ho, Wo, kh, kw)
    valid = vh[:, None, :, None] & vw[None, :, None, :]
    ho, wo = int(th.shape[0]), int(tw.shape[0])
    return plane.reshape(ho, wo, -1), valid.reshape(ho, wo, -1)


def _windows(x: SharedTensor, plane: torch.Tensor) -> SharedTensor:
    """The taps ``plane`` of every (n, c) plane: (N, C, Ho, Wo, K), one local gather."""
    n, c, h, w = (int(v) for v in x.shape)
    return x._take((torch.arange(n * c) * (h * w)).reshape(n, c, 1, 1, 1) + plane)


def _max(x: SharedTensor, ah: Axis, aw: Axis, with_indices: bool, unbatched: bool) -> Any:
    plane = _taps(int(x.shape[3]), ah, aw, repeat=True)[0]
    win = _windows(x, plane)
    out, onehot = max_dim(win, -1, need_onehot=True if with_indices else None)
    if unbatched:
        out = out.squeeze(0)
    if not with_indices:
        return out
    assert onehot is not None
    idx = (onehot * public(plane.to(torch.float64))).sum(-1)
    return out, (idx.squeeze(0) if unbatched else idx)


def _mean(x: SharedTensor, ah: Axis, aw: Axis, divisor: torch.Tensor) -> SharedTensor:
    plane, valid = _taps(int(x.shape[3]), ah, aw, repeat=False)
    win = _windows(x, plane)
    if not bool(valid.all()):
        win = win * public(valid.to(torch.float64))
    total = win.sum(-1)
    if bool((divisor == divisor.reshape(-1)[0]).all()):
        return total / int(divisor.reshape(-1)[0])
    return total * public(1.0 / divisor.to(torch.float64))


def max_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """``F.max_pool2d``: a ReLU tournament over each window (``ceil(log2 k)`` rounds);
    backward through the arg-max one-hot (see module doc)."""
    x, unbatched = _input(input, "max_pool2d")
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else pair(stride, "stride")
    p, d = pair(padding, "padding"), pair(dilation, "dilation")
    h, w = int(x.shape[2]), int(x.shape[3])
    ah = _axis(h, k[0], s[0], p[0], d[0], ceil_mode, "max_pool2d")
    aw = _axis(w, k[1], s[1], p[1], d[1], ceil_mode, "max_pool2d")
    return _max(x, ah, aw, return_indices, unbatched)


def max_pool2d_with_indices(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    dilation: Any = 1,
    ceil_mode: bool = False,
    return_indices: bool = False,
) -> Any:
    """``F.max_pool2d_with_indices`` (what ``return_indices=True`` dispatches to)."""
    return max_pool2d(input, kernel_size, stride, padding, dilation, ceil_mode, True)


def avg_pool2d(
    input: Any,
    kernel_size: Any,
    stride: Any = None,
    padding: Any = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
) -> SharedTensor:
    """``F.avg_pool2d``: local window sums and a division by torch's divisor."""
    x, unbatched = _input(input, "avg_pool2d")
    k = pair(kernel_size, "kernel_size")
    s = k if stride is None or stride == [] else pair(stride, "stride")
    p = pair(padding, "padding")
    h, w = int(x.shape[2]), int(x.shape[3])
    ah = _axis(h, k[0], s[0], p[0], 1, ceil_mode, "avg_pool2d")
    aw = _axis(w, k[1], s[1], p[1], 1, ceil_mode, "avg_pool2d")
    if divisor_override:
        div = torch.tensor([[int(divisor_override)]])
    elif count_include_pad:
        div = ah[2][:, None] * aw[2][None, :]
    else:
        div = ah[1].sum(1)[:, None] * aw[1].sum(1)[None, :]
    out = _mean(x, ah, aw, div)
    return out.squeeze(0) if unbatched else out


def _adaptive(x: SharedTensor, output_size: Any, name: str) -> tuple[Axis, Axis]:
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if isinstance(output_size, int):
        osz: tuple[Any, Any] = (output_size, output_size)
    else:
        t = tuple(output_size)
        if len(t) != 2:
            raise ShapeError(f"{name}: output_size must be an int or a pair, got {output_size!r}")
        osz = (t[0], t[1])
    oh = h if osz[0] is None else int(osz[0])
    ow = w if osz[1] is None else int(osz[1])
    return _adaptive_axis(h, oh, name), _adaptive_axis(w, ow, name)


def adaptive_avg_pool2d(input: Any, output_size: Any) -> SharedTensor:
    """``F.adaptive_avg_pool2d`` with torch's windows (non-uniform when the input is not a
    multiple of the output): masked window sums, one division per window."""
    x, unbatched = _input(input, "adaptive_avg_pool2d")
    ah, aw = _adaptive(x, output_size, "adaptive_avg_pool2d")
    out = _mean(x, ah, aw, ah[2][:, None] * aw[2][None, :])
    return out.squeeze(0) if unbatched else out


def adaptive_max_pool2d(input: Any, output_size: Any, return_indices: bool = False) -> Any:
    """``F.adaptive_max_pool2d`` with torch's windows (see module doc)."""
    x, unbatched = _input(input, "adaptive_max_pool2d")
    ah, aw = _adaptive(x, output_size, "adaptive_max_pool2d")
    return _max(x, ah, aw, return_indices, unbatched)


def adaptive_max_pool2d_with_indices(
    input: Any, output_size: Any, return_indices: bool = False
) -> Any:
    return adaptive_max_pool2d(input, output_size, return_indices=True)
