"""Local rearrangements of SharedTensors: reshaping, transposition, gathers and scatters by
public index (indexing, permute, flip, narrow, index_select, repeat, roll, diagonal,
gather), the scatter-adds by public index (``scatter_add``, ``index_add``), and
``torch.cat`` / ``torch.stack``.

None of these needs communication or a truncation: every party applies the same public
rearrangement to its shares. Views (``reshape``, ``view``, ``expand``, ``transpose``) are
ops of their own; everything else is a gather by a public index tensor, ``take``
(``self.flatten()[idx]``, computed by applying the rearrangement to the tensor of flat
positions, so torch's own indexing rules and errors apply), or its adjoint ``put``
(scatter-add into zeros), which is also the backward of ``take``. ``cat`` scatters each
part into place and adds. Torch's refusal of a bad shape or index is re-raised as a
:class:`protocols.errors.ShapeError` naming the operation; a secret index is refused.

:class:`Shaping` is a level of :class:`training.tensor.SharedTensor` (on
:class:`training.handle.Handle`); :func:`take_any` / :func:`put_any` apply a gather or a
scatter to a gradient that may be shared or public.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Self, cast

import numpy as np
import torch

from protocols import shapes as S
from protocols.errors import ShapeError, UnsupportedOperation
from protocols.params import Params, Pub

from .autograd import Value, unbroadcast
from .handle import Handle
from .operands import as_public, public

if TYPE_CHECKING:
    from .tensor import SharedTensor


def _shape_arg(shape: tuple[Any, ...]) -> tuple[int, ...]:
    """``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` both mean (2, 3)."""
    if len(shape) == 1 and isinstance(shape[0], Sequence):
        return tuple(shape[0])
    return tuple(shape)


def _basic_index(
    parts: tuple[Any, ...], shape: tuple[int, ...]
) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """``(start, step, length)`` per dimension and the result's shape for a key of slices
    with positive steps, integers and at most one Ellipsis, selecting something; None for
    any other key (the gather path handles it, and names torch's refusal)."""
    if sum(k is Ellipsis for k in parts) > 1:
        return None
    named = [k for k in parts if k is not Ellipsis]
    if len(named) > len(shape):
        return None
    fill = [slice(None)] * (len(shape) - len(named))
    if Ellipsis in parts:
        at = parts.index(Ellipsis)
        keys = [*parts[:at], *fill, *parts[at + 1 :]]
    else:
        keys = [*parts, *fill]
    spec: list[int] = []
    out: list[int] = []
    for k, size in zip(keys, shape, strict=True):
        if isinstance(k, slice):
            start, stop, step = k.indices(size)
            length = len(range(start, stop, step))
            if step < 1 or length == 0:
                return None
            spec += [start, step, length]
            out.append(length)
        elif isinstance(k, int) and not isinstance(k, bool) and -size <= k < size:
            spec += [k % size, 1, 1]
        else:
            return None
    return tuple(spec), tuple(out)


def take_any(v: Value, idx: torch.Tensor) -> Value:
    """Gather on a SharedTensor or a public tensor alike."""
    if isinstance(v, Shaping):
        return v._take(idx)
    return v.reshape(-1)[idx.reshape(-1)].reshape(idx.shape)


def put_any(v: Value, idx: torch.Tensor, shape: Sequence[int]) -> Value:
    """Scatter-add into zeros of ``shape``, on a SharedTensor or a public tensor alike."""
    if isinstance(v, Shaping):
        return v._put(idx, shape)
    out = torch.zeros(int(np.prod(shape)), dtype=v.dtype)
    out.index_add_(0, idx.reshape(-1), v.reshape(-1))
    return out.reshape(tuple(shape))


def cat(tensors: Sequence[Any], dim: int = 0) -> SharedTensor:
    """``torch.cat`` of SharedTensors (local: each is scattered into place, then added)."""
    items: list[Any] = []
    for t in tensors:  # a plaintext tensor is unwrapped (and warned about) once, here
        if not isinstance(t, Shaping | torch.Tensor | public):
            raise UnsupportedOperation(
                f"cannot cat a SharedTensor with a {type(t).__name__} (SharedTensors, torch "
                "tensors and training.public(...) tensors only)"
            )
        items.append(t if isinstance(t, Shaping) else as_public(t))
    if not any(isinstance(t, Shaping) for t in items):
        raise UnsupportedOperation("cat needs at least one SharedTensor")
    try:
        pos = torch.cat([torch.zeros(tuple(t.shape)) for t in items], dim)
    except (RuntimeError, IndexError) as exc:
        raise ShapeError(f"cat: {exc}") from None
    flat = torch.arange(pos.numel(), dtype=torch.int64).reshape(pos.shape)
    d = dim % pos.dim()
    offset = 0
    out: Any = None
    plain: Any = None  # the plaintext parts, scattered into place and summed in torch
    for t in items:
        n = int(t.shape[d])
        idx = flat.narrow(d, offset, n)
        offset += n
        if isinstance(t, Shaping):
            part = t._put(idx, tuple(pos.shape))
            out = part if out is None else out + part
        else:
            scattered = put_any(t, idx, tuple(pos.shape))
            plain = scattered if plain is None else plain + scattered
    assert isinstance(out, Shaping)
    whole: Any = out  # (a SharedTensor: Shaping is one of its levels)
    return cast("SharedTensor", whole if plain is None else whole + public(plain))


def stack(tensors: Sequence[Any], dim: int = 0) -> SharedTensor:
    items = list(tensors)
    if not items:
        raise ShapeError("stack expects a non-empty sequence")
    nd = len(items[0].shape) + 1
    d = dim % nd
    return cat(
        [
            t.unsqueeze(d) if isinstance(t, Shaping) else public(as_public(t).unsqueeze(d))
            for t in items
        ],
        d,
    )


def _public_index(name: str, index: Any) -> torch.Tensor:
    """A public integer index tensor (a shared one is refused: it would select by secret)."""
    if isinstance(index, Handle):
        raise UnsupportedOperation(
            f"{name} with a shared index is not supported; use a public index, or multiply "
            "by a shared one-hot mask and sum"
        )
    idx = torch.as_tensor(index)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise ShapeError(f"{name}: index must be an integer tensor, got {idx.dtype}")
    return idx.to(torch.int64)


def scatter_add(input: Any, dim: int, index: Any, src: Any) -> SharedTensor:
    """``torch.scatter_add``: ``out = input`` with ``src[i][j]`` added at
    ``out[index[i][j]][j]`` (dim 0; likewise for other dims), for a public index and
    input and src shared or public (at least one shared). The flat target of each used
    src element is ``positions.gather(dim, index)``; the scatter is a ``put`` (local,
    exact, duplicates accumulate); backward: the input's gradient passes, src's is the
    gather of it (the adjoint)."""
    idx = _public_index("scatter_add", index)
    shape = tuple(int(n) for n in input.shape)
    try:  # torch's own checks of the shapes, on zeros
        torch.zeros(shape).scatter_add(dim, idx, torch.zeros(tuple(src.shape)))
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        raise ShapeError(f"scatter_add into shape {shape}: {exc}") from None
    pos = torch.arange(int(np.prod(shape)), dtype=torch.int64).reshape(shape)
    target = pos.gather(dim, idx)
    used = tuple(slice(0, int(n)) for n in idx.shape)
    return _add_at(input, src[used] if idx.dim() else src, target, shape)


def index_add(input: Any, dim: int, index: Any, source: Any, *, alpha: Any = 1) -> SharedTensor:
    """``torch.index_add``: ``out = input`` with ``alpha * source[..., i, ...]`` added at
    ``out[..., index[i], ...]`` along ``dim`` (public index; input and source shared or
    public, at least one shared): a ``put`` at ``positions.index_select(dim, index)``,
    local and exact (alpha a public scalar scales source first)."""
    idx = _public_index("index_add", index)
    shape = tuple(int(n) for n in input.shape)
    try:
        torch.zeros(shape).index_add(dim, idx, torch.zeros(tuple(source.shape)))
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        raise ShapeError(f"index_add into shape {shape}: {exc}") from None
    pos = torch.arange(int(np.prod(shape)), dtype=torch.int64).reshape(shape)
    target = pos.index_select(dim, idx.reshape(-1))
    src = source if alpha == 1 else source * alpha
    return _add_at(input, src, target, shape)


def _add_at(input: Any, src: Any, target: torch.Tensor, shape: tuple[int, ...]) -> SharedTensor:
    """``input + (src scattered, added, at the flat positions target)``."""
    if not isinstance(input, Shaping) and not isinstance(src, Shaping):
        raise UnsupportedOperation("scatter_add/index_add: expected a SharedTensor operand")
    if isinstance(src, Shaping):
        added: Any = src.reshape(tuple(target.shape))._put(target, shape)
    else:
        added = put_any(as_public(src).to(torch.float64).reshape(target.shape), target, shape)
    if isinstance(input, Shaping):
        shared: Any = input  # Arithmetic's __add__ (a level above this one)
        out = shared + (added if isinstance(added, Shaping) else public(added))
    else:
        out = added + public(as_public(input).to(torch.float64))
    return cast("SharedTensor", out)


class Shaping(Handle):
    """Reshapes, views and public-index gathers of a SharedTensor (see module doc)."""

    __slots__ = ()

    def transpose(self, d0: int, d1: int) -> Self:
        shape = S.transpose(self.shape, d0, d1)
        out = self._op("transpose", [], shape, Params(d0=d0, d1=d1))
        return self._record(out, [self], lambda g: (g.transpose(d0, d1),))

    def t(self) -> Self:
        if self.dim() > 2:
            raise ShapeError(f"t() expects a tensor with <= 2 dimensions, got {self.dim()}")
        return self if self.dim() < 2 else self.transpose(0, 1)

    @property
    def T(self) -> Self:  # noqa: N802 - torch's name
        return self.t()

    def _view(self, kind: str, new: tuple[int, ...], back: Callable[[Value], Value]) -> Self:
        if new == tuple(self.shape):
            return self
        out = self._op(kind, [], new, Params(shape=new))
        return self._record(out, [self], lambda g: (back(g),))

    def reshape(self, *shape: Any) -> Self:
        old = tuple(self.shape)
        return self._view("reshape", S.reshape(old, _shape_arg(shape)), lambda g: g.reshape(old))

    view = reshape

    def expand(self, *shape: Any) -> Self:
        old = tuple(self.shape)
        return self._view("expand", S.expand(old, _shape_arg(shape)), lambda g: unbroadcast(g, old))

    def view_as(self, other: Any) -> Self:
        return self.reshape(tuple(other.shape))

    reshape_as = view_as

    def expand_as(self, other: Any) -> Self:
        return self.expand(tuple(other.shape))

    # -- gather / scatter: indexing, permute, cat, windows -----------------------------------
    def _take(self, idx: torch.Tensor) -> Self:
        """``self.flatten()[idx]`` with ``idx``'s shape (local; see protocols.conv.take)."""
        idx = idx.to(torch.int64)
        if idx.numel() == 0:
            raise ShapeError(f"indexing a SharedTensor of shape {tuple(self.shape)} gives nothing")
        out = self._op("take", [], tuple(idx.shape), Params(pub=Pub.of(idx)))
        in_shape = tuple(self.shape)
        return self._record(out, [self], lambda g: (put_any(g, idx, in_shape),))

    def _put(self, idx: torch.Tensor, shape: Sequence[int]) -> Self:
        """Zeros of ``shape`` with ``self`` added at the flat positions ``idx``."""
        idx = idx.to(torch.int64)
        shape = tuple(int(s) for s in shape)
        out = self._op("put", [], shape, Params(pub=Pub.of(idx), shape=shape))
        return self._record(out, [self], lambda g: (take_any(g, idx),))

    def _positions(self) -> torch.Tensor:
        return torch.arange(self.numel(), dtype=torch.int64).reshape(self.shape)

    def __iter__(self) -> Iterator[Self]:
        """The rows, as torch iterates a tensor (``for row in x``, ``a, b = x``)."""
        if not self.shape:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(int(self.shape[0])))

    def __getitem__(self, key: Any) -> Self:
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, Handle) for k in parts):
            raise UnsupportedOperation(
                "indexing with a secret index is not supported; use a public index, or "
                "multiply by a shared one-hot mask and sum"
            )
        basic = _basic_index(parts, tuple(int(s) for s in self.shape))
        if basic is not None:  # slices and integers: a strided view, no index tensor
            spec, shape = basic
            if shape == tuple(self.shape) and spec == tuple(
                v for s in self.shape for v in (0, 1, int(s))
            ):
                return self
            out = self._op("slice", [], shape, Params(dims=spec, shape=shape))
            in_shape = tuple(self.shape)
            return self._record(
                out, [self], lambda g: (put_any(g, self._positions()[key], in_shape),)
            )
        try:
            idx = self._positions()[key]
        except (IndexError, TypeError, ValueError) as exc:
            raise ShapeError(f"SharedTensor[{key!r}]: {exc}") from None
        same = idx.dim() == self.dim() and tuple(idx.shape) == tuple(self.shape)
        if same and bool((idx == self._positions()).all()):
            return self
        return self._take(idx)

    def __setitem__(self, key: Any, value: Any) -> None:
        raise UnsupportedOperation(
            "in-place assignment into a SharedTensor is not supported; build the tensor "
            "with torch.cat / torch.stack or arithmetic instead"
        )

    def permute(self, *dims: Any) -> Self:
        d = _shape_arg(dims)
        try:
            idx = self._positions().permute(d)
        except (RuntimeError, IndexError) as exc:
            raise ShapeError(f"permute{d} of shape {tuple(self.shape)}: {exc}") from None
        return self._take(idx)

    def flip(self, *dims: Any) -> Self:
        d = _shape_arg(dims) if dims else tuple(range(self.dim()))
        try:
            idx = self._positions().flip(d)
        except (RuntimeError, IndexError, TypeError) as exc:
            raise ShapeError(f"flip{d} of shape {tuple(self.shape)}: {exc}") from None
        return self._take(idx)

    def _shape_of(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Size:
        """The shape ``fn`` gives the positions tensor; torch's refusal as a ShapeError."""
        try:
            return fn(self._positions()).shape
        except (RuntimeError, IndexError, TypeError, ValueError) as exc:
            raise ShapeError(f"{name} of shape {tuple(self.shape)}: {exc}") from None

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> Self:
        return self.reshape(self._shape_of("flatten", lambda p: p.flatten(start_dim, end_dim)))

    def squeeze(self, dim: int | None = None) -> Self:
        return self.reshape(
            self._shape_of("squeeze", lambda p: p.squeeze() if dim is None else p.squeeze(dim))
        )

    def unsqueeze(self, dim: int) -> Self:
        return self.reshape(self._shape_of("unsqueeze", lambda p: p.unsqueeze(dim)))

    def contiguous(self) -> Self:
        return self

    # -- more local gathers: each is a public-index take, exact, backward the
    # adjoint scatter-add; the linear ones below are sums of such takes.
    def narrow(self, dim: int, start: int, length: int) -> Self:
        return self._take(self._index_of("narrow", lambda p: p.narrow(dim, start, length)))

    def index_select(self, dim: int, index: Any) -> Self:
        if isinstance(index, Handle):
            raise UnsupportedOperation("index_select with a shared index is not supported")
        idx = torch.as_tensor(index)
        return self._take(self._index_of("index_select", lambda p: p.index_select(dim, idx)))

    def repeat(self, *sizes: Any) -> Self:
        reps = _shape_arg(sizes)
        return self._take(self._index_of("repeat", lambda p: p.repeat(reps)))

    def roll(self, shifts: Any, dims: Any = None) -> Self:
        return self._take(self._index_of("roll", lambda p: torch.roll(p, shifts, dims)))

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> Self:
        return self._take(self._index_of("diagonal", lambda p: p.diagonal(offset, dim1, dim2)))

    def gather(self, dim: int, index: Any, *, sparse_grad: bool = False) -> Self:
        """``torch.gather`` by a public index: ``positions.gather(dim, index)`` taken
        (local, exact); backward scatter-adds the gradient back (the take's adjoint)."""
        idx = _public_index("gather", index)
        return self._take(self._index_of("gather", lambda p: p.gather(dim, idx)))

    def scatter_add(self, dim: int, index: Any, src: Any) -> SharedTensor:
        return scatter_add(self, dim, index, src)

    def index_add(self, dim: int, index: Any, source: Any, *, alpha: Any = 1) -> SharedTensor:
        return index_add(self, dim, index, source, alpha=alpha)

    def _index_of(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` applied to the positions tensor; torch's refusal as a ShapeError."""
        try:
            return fn(self._positions())
        except (RuntimeError, IndexError, TypeError, ValueError) as exc:
            raise ShapeError(f"{name} of shape {tuple(self.shape)}: {exc}") from None
