"""SharedTensor: a handle to a secret-shared tensor living at the parties.

Every operation returns a new handle at once and queues a command (asynchronous
dispatch); the parties run it as soon as its inputs exist. Operators and
``__torch_function__`` make ``F.linear``, ``F.relu``, ``torch.matmul`` and friends work in
an unmodified ``nn.Module.forward``; anything else raises
:class:`protocols.UnsupportedOperation` naming the function.

Fixed point: a handle stores integers at precision ``prec`` of its encoding ``fp`` (the
base is fixed per handle). Products are truncated once, by ``base**min(p, q)``, so their
precision is ``max(p, q)``; a comparison bit has precision 0, so ``x * bit`` needs no
truncation at all. Public operands are encoded at the handle's precision; public integers
multiply without truncation.

Autograd: an op records its parents and its backward rule beside its forward.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protocols import FixedPoint
from protocols import shapes as S
from protocols.errors import EncodingError, ShapeError, UnsupportedOperation
from protocols.fixed_point import ENCODED_LIMIT_BITS
from protocols.params import Params, Pub

from . import autograd
from .autograd import Value, unbroadcast
from .check import Origin, Shadow, check_range
from .precision import check_values

_INT_LIMIT = 2**31


class UnsupportedAttribute(UnsupportedOperation, AttributeError):
    """A torch.Tensor attribute or method with no secure version (also an AttributeError,
    so ``hasattr`` stays False)."""


class _Ref:
    """Owns one tensor id; when the last handle using it is collected, the parties free it."""

    __slots__ = ("__weakref__", "tid")

    def __init__(self, cluster: Any, tid: int) -> None:
        self.tid = tid
        cluster.track(self, tid)


def _shape_arg(shape: tuple[Any, ...]) -> tuple[int, ...]:
    """``t.reshape(2, 3)`` and ``t.reshape((2, 3))`` both mean (2, 3)."""
    if len(shape) == 1 and isinstance(shape[0], Sequence):
        return tuple(shape[0])
    return tuple(shape)


class NotCopyable(UnsupportedOperation, TypeError):
    """A SharedTensor (or a module holding them) was deep-copied or pickled."""


class PublicOperandWarning(UserWarning):
    """A plaintext tensor (not a scalar) was combined with a SharedTensor: its values are
    public and go in clear to every party. Wrap it in :class:`public` to say so."""


class public:  # noqa: N801 - reads as a marker, like torch.no_grad
    """Marks a plaintext operand as intentionally public: ``x * public(mask)``. Its values
    are sent in clear to every party (encoded in the command)."""

    __slots__ = ("tensor",)

    def __init__(self, value: Any) -> None:
        self.tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        """``torch.eq(x, public(t))``: torch's argument parser accepts the marker only if it
        takes part in dispatch; the SharedTensor's entry handles the call."""
        values = (*args, *(kwargs or {}).values())
        if not any(isinstance(a, SharedTensor) for a in values):
            return NotImplemented
        return SharedTensor.__torch_function__(func, types, args, kwargs)


def _from_library() -> bool:
    """Whether the operation was issued by this library's own code (a loss, a layer, an
    optimizer combining shares with its constants), not by the user's."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame = frame.f_back  # type: ignore[assignment]
    caller = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    return caller.startswith("training.")


def _as_public(v: Any) -> torch.Tensor:
    raw = v.tensor if isinstance(v, public) else v
    if isinstance(raw, torch.Tensor) and raw.requires_grad and torch.is_grad_enabled():
        raise UnsupportedOperation(
            f"a plaintext torch tensor of shape {tuple(raw.shape)} that requires grad (a "
            "parameter of an unshared nn.Module?) is combined with a SharedTensor: its "
            "gradient is never computed on shares, so torch.optim would leave it unchanged "
            "and the model would learn nothing. To train on shares, share the module "
            "(model = cluster.share_module(net, ...)) and use training.SGD/Adam; to run a "
            "plaintext model on shared inputs (its weights go in clear to the parties), call "
            "it under torch.no_grad(), or share it with requires_grad=False"
        )
    if isinstance(v, public):
        v = v.tensor
    elif isinstance(v, torch.Tensor) and v.numel() > 1 and not _from_library():
        warnings.warn(
            PublicOperandWarning(
                f"a plaintext tensor of shape {tuple(v.shape)} is combined with a SharedTensor:"
                " its values go in clear to every party; share it with cluster.share(...) to"
                " keep it secret, or wrap it in training.public(...) to say it is public"
            ),
            stacklevel=3,
        )
    if isinstance(v, torch.Tensor):
        if v.is_complex():
            raise EncodingError("complex public operands cannot be encoded in fixed point")
        return v.detach().to(torch.float64) if v.dtype == torch.bool else v.detach()
    if isinstance(v, np.ndarray):
        raise UnsupportedOperation(
            "cannot combine a SharedTensor with a numpy array; convert it with torch.as_tensor"
        )
    if isinstance(v, numbers.Number) and not isinstance(v, bool | complex):
        return torch.tensor(v, dtype=torch.float64)
    raise UnsupportedOperation(f"cannot combine a SharedTensor with {type(v).__name__}")


_PUBLIC_BITS = 20


def _public_precision(fp: FixedPoint, pub: torch.Tensor) -> int:
    """Fractional digits for a public real factor: at least ``fp.precision``, and more
    while its encoding stays below 2**20, so small factors (1/3000, a learning rate) keep
    their significant digits instead of rounding to a few units or to zero."""
    top = float(pub.abs().max()) if pub.numel() else 0.0
    if not math.isfinite(top):
        return fp.precision  # encode() will refuse it with a clear message
    extra = int(_PUBLIC_BITS / math.log2(fp.base))
    q = fp.precision
    cap = math.ceil(ENCODED_LIMIT_BITS / math.log2(fp.base)) - 1  # a valid FixedPoint
    while q < min(fp.precision + extra, cap) and top * fp.base ** (q + 1) < 2**_PUBLIC_BITS:
        q += 1
    return q


def _integral(t: torch.Tensor) -> bool:
    if t.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        ok = True
    elif t.is_floating_point():
        finite = bool(torch.isfinite(t).all())
        ok = finite and bool((t == torch.round(t)).all())
    else:
        return False
    if ok and t.numel() and float(t.abs().max()) >= _INT_LIMIT:
        raise EncodingError(
            f"public integer factor {float(t.abs().max()):g} is too large (>= 2**31)"
        )
    return ok


def _fn() -> Any:
    from . import functional

    return functional


def take_any(v: Value, idx: torch.Tensor) -> Value:
    """Gather on a SharedTensor or a public tensor alike."""
    if isinstance(v, SharedTensor):
        return v._take(idx)
    return v.reshape(-1)[idx.reshape(-1)].reshape(idx.shape)


def put_any(v: Value, idx: torch.Tensor, shape: Sequence[int]) -> Value:
    """Scatter-add into zeros of ``shape``, on a SharedTensor or a public tensor alike."""
    if isinstance(v, SharedTensor):
        return v._put(idx, shape)
    out = torch.zeros(int(np.prod(shape)), dtype=v.dtype)
    out.index_add_(0, idx.reshape(-1), v.reshape(-1))
    return out.reshape(tuple(shape))


def cat(tensors: Sequence[Any], dim: int = 0) -> SharedTensor:
    """``torch.cat`` of SharedTensors (local: each is scattered into place, then added)."""
    items = list(tensors)
    shared = [t for t in items if isinstance(t, SharedTensor)]
    if not shared:
        raise UnsupportedOperation("cat needs at least one SharedTensor")
    for t in items:
        if not isinstance(t, SharedTensor | torch.Tensor):
            raise UnsupportedOperation(f"cannot cat a SharedTensor with a {type(t).__name__}")
    try:
        pos = torch.cat([torch.zeros(tuple(t.shape)) for t in items], dim)
    except (RuntimeError, IndexError) as exc:
        raise ShapeError(f"cat: {exc}") from None
    flat = torch.arange(pos.numel(), dtype=torch.int64).reshape(pos.shape)
    d = dim % pos.dim()
    offset = 0
    out: Any = None
    for t in items:
        n = int(t.shape[d])
        idx = flat.narrow(d, offset, n)
        offset += n
        if isinstance(t, SharedTensor):
            part: Any = t._put(idx, tuple(pos.shape))
        else:
            part = put_any(_as_public(t), idx, tuple(pos.shape))
        out = part if out is None else (out + part if isinstance(out, SharedTensor) else part + out)
    assert isinstance(out, SharedTensor)
    return out


def stack(tensors: Sequence[Any], dim: int = 0) -> SharedTensor:
    items = list(tensors)
    if not items:
        raise ShapeError("stack expects a non-empty sequence")
    nd = len(items[0].shape) + 1
    d = dim % nd
    return cat(
        [
            t.unsqueeze(d) if isinstance(t, SharedTensor) else _as_public(t).unsqueeze(d)
            for t in items
        ],
        d,
    )


class SharedTensor:
    """A secret-shared tensor (see module doc)."""

    __slots__ = (
        "__weakref__",
        "_backward",
        "_bit",
        "_label",
        "_origin",
        "_parents",
        "_ref",
        "_shadow",
        "cluster",
        "dtype",
        "fp",
        "grad",
        "prec",
        "requires_grad",
        "shape",
    )

    __array_ufunc__ = None  # numpy defers to our reflected operators

    def __init__(
        self,
        cluster: Any,
        tid: int,
        shape: Sequence[int],
        fp: FixedPoint,
        prec: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.cluster = cluster
        self.dtype: torch.dtype = torch.get_default_dtype() if dtype is None else dtype
        """The dtype ``get()`` returns: the shared tensor's (torch's default float dtype for
        integer inputs: the shares hold fixed-point reals), promoted like torch when two
        SharedTensors meet. Public operands do not promote it."""
        self._ref = _Ref(cluster, tid)
        self.shape = torch.Size(shape)
        self.fp = fp
        self.prec = fp.precision if prec is None else prec
        self.requires_grad = False
        self.grad: Value | None = None
        self._parents: tuple[SharedTensor, ...] = ()
        self._backward: Callable[[Value], Sequence[Value | None]] | None = None
        self._bit: SharedTensor | None = None
        self._label: str | None = None
        self._origin: Origin | None = None
        """The op that produced this value (kind, op id, label), for error messages."""
        self._shadow: Shadow | None = None
        """Check mode's plaintext copy (None: not known to the coordinator)."""

    # -- construction -------------------------------------------------------------------
    @classmethod
    def from_plain(
        cls,
        cluster: Any,
        tensor: Any,
        fp: FixedPoint,
        *,
        requires_grad: bool = False,
        what: str | None = None,
    ) -> SharedTensor:
        """Encode and share ``tensor``; a :class:`PrecisionWarning` names ``what`` (default:
        the shape) if many of its nonzero values are below the encoding's resolution."""
        if isinstance(tensor, SharedTensor):
            raise TypeError("this value is already shared")
        if not isinstance(tensor, torch.Tensor):
            try:
                # Python floats are doubles; as_tensor alone would round them to float32.
                tensor = torch.as_tensor(tensor, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise TypeError(f"cannot share a {type(tensor).__name__}: {exc}") from None
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise EncodingError(f"cannot share a tensor of dtype {tensor.dtype}")
        if tensor.numel() == 0:
            raise ShapeError(f"cannot share an empty tensor (shape {tuple(tensor.shape)})")
        encoded = fp.encode(tensor)
        check_values(tensor, fp, what or f"a shared tensor of shape {tuple(tensor.shape)}")
        tid = cluster.input(encoded)
        dtype = tensor.dtype if tensor.is_floating_point() else torch.get_default_dtype()
        out = cls(cluster, tid, tensor.shape, fp, dtype=dtype)
        out._origin = Origin(cluster.last_op, "input", cluster.current_label())
        out.requires_grad = bool(requires_grad)
        checker = getattr(cluster, "checker", None)
        if checker is not None:
            checker.input(out, encoded)
        return out

    @property
    def tid(self) -> int:
        return self._ref.tid

    @property
    def scale(self) -> int:
        return int(self.fp.base**self.prec)

    def numel(self) -> int:
        return int(self.shape.numel())

    def dim(self) -> int:
        return len(self.shape)

    def size(self, dim: int | None = None) -> Any:
        return self.shape if dim is None else self.shape[dim]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return (
            f"SharedTensor(shape={tuple(self.shape)}, base={self.fp.base}, "
            f"precision={self.prec}, id={self.tid}{grad})"
        )

    def __bool__(self) -> bool:
        raise UnsupportedOperation(
            "the truth value of a SharedTensor is secret; reveal it with `await x.get()`"
        )

    def __len__(self) -> int:
        return int(self.shape[0]) if self.shape else 0

    def __deepcopy__(self, memo: Any) -> SharedTensor:
        raise NotCopyable(
            "a SharedTensor cannot be deep-copied: its value exists only as shares held by "
            "the parties. To save a shared model use training.checkpoint.save_checkpoint "
            "(each party writes its own shares); to get a plain nn.Module with the trained "
            "weights use `await training.export_module(model)`"
        )

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise NotCopyable(
            "a SharedTensor cannot be pickled (torch.save, copy, multiprocessing): its value "
            "exists only as shares held by the parties. To save a shared model use "
            "training.checkpoint.save_checkpoint (each party writes its own shares); to get "
            "a plain nn.Module with the trained weights use `await "
            "training.export_module(model)`"
        )

    def _new(
        self,
        tid: int,
        shape: Sequence[int],
        prec: int | None = None,
        dtype: torch.dtype | None = None,
    ) -> SharedTensor:
        return SharedTensor(
            self.cluster,
            tid,
            shape,
            self.fp,
            self.prec if prec is None else prec,
            self.dtype if dtype is None else dtype,
        )

    def _op(
        self,
        kind: str,
        others: Sequence[SharedTensor],
        shape: Sequence[int],
        params: Params | None = None,
        prec: int | None = None,
    ) -> SharedTensor:
        for o in others:
            if o.cluster is not self.cluster:
                raise ValueError("cannot combine SharedTensors of different clusters")
            if o.fp.base != self.fp.base:
                raise EncodingError(
                    f"cannot combine fixed-point bases {self.fp.base} and {o.fp.base}; "
                    "share both with the same base"
                )
        (out,) = self._submit(kind, [self, *others], [(shape, prec)], params)
        return out

    def _submit(
        self,
        kind: str,
        operands: Sequence[SharedTensor],
        outs: Sequence[tuple[Sequence[int], int | None]],
        params: Params | None = None,
    ) -> list[SharedTensor]:
        """Issue one op; its results (``(shape, precision)`` each, None: this handle's)
        remember the op (kind, id, label) and, in check mode, are queued for checking."""
        tids = self.cluster.submit(
            kind,
            [o.tid for o in operands],
            [tuple(o.shape) for o in operands],
            [tuple(shape) for shape, _ in outs],
            params,
        )
        origin = Origin(self.cluster.last_op, kind, self.cluster.current_label())
        dtype = self.dtype
        for o in operands:
            dtype = torch.promote_types(dtype, o.dtype)
        results = [self._new(t, shape, p, dtype) for t, (shape, p) in zip(tids, outs, strict=True)]
        for r in results:
            r._origin = origin
        checker = getattr(self.cluster, "checker", None)
        if checker is not None:
            checker.issued(origin, operands, results, params)
        return results

    def _record(
        self,
        out: SharedTensor,
        parents: Sequence[SharedTensor],
        rule: Callable[[Value], Sequence[Value | None]],
    ) -> SharedTensor:
        if torch.is_grad_enabled() and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = rule
            out._label = self.cluster.current_label()
        return out

    # -- in-place assignment used by optimisers ----------------------------------------------
    def _assign(self, other: SharedTensor) -> None:
        if other.shape != self.shape:
            raise ShapeError(f"cannot assign shape {tuple(other.shape)} to {tuple(self.shape)}")
        self._ref = other._ref
        self.prec = other.prec
        self.fp = other.fp
        self._origin = other._origin
        self._shadow = other._shadow

    def detach(self) -> SharedTensor:
        """The same shared value without autograd history (shares the tensor id: no new
        reference is tracked, so nothing is freed while either handle lives)."""
        out = SharedTensor.__new__(SharedTensor)
        out.cluster = self.cluster
        out._ref = self._ref
        out.shape = self.shape
        out.fp = self.fp
        out.prec = self.prec
        out.dtype = self.dtype
        out.requires_grad = False
        out.grad = None
        out._parents = ()
        out._backward = None
        out._bit = self._bit
        out._label = None
        out._origin = self._origin
        out._shadow = self._shadow
        return out

    def requires_grad_(self, flag: bool = True) -> SharedTensor:
        if not self.is_leaf:
            raise RuntimeError("requires_grad can be changed only on leaf SharedTensors")
        self.requires_grad = flag
        return self

    def backward(self, gradient: Value | None = None) -> None:
        autograd.backward(self, gradient)

    # -- dtype -----------------------------------------------------------------------------------
    def to(self, dtype: Any = None, *args: Any, **kwargs: Any) -> SharedTensor:
        """``x.to(torch.float64)``: the same shares, revealed as ``dtype`` (no op is issued;
        the gradient passes through). Devices and other arguments are refused."""
        if args or kwargs or not isinstance(dtype, torch.dtype):
            raise UnsupportedOperation(
                "SharedTensor.to takes only a floating dtype (the shares stay where they are)"
            )
        if not dtype.is_floating_point:
            raise UnsupportedOperation(
                f"SharedTensor.to({dtype}): shares hold fixed-point reals; reveal and convert "
                f"instead: `await x.get(dtype={dtype})`"
            )
        if dtype == self.dtype:
            return self
        out = self.detach()
        out.dtype = dtype
        return self._record(out, [self], lambda g: (g,))

    def is_floating_point(self) -> bool:
        return True

    # -- reveal ---------------------------------------------------------------------------------
    async def get(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Reveal to the coordinator that owns the value, as ``dtype`` (default
        :attr:`dtype`, the dtype it was shared with: float32 in, float32 out, as torch keeps
        an op's input dtype; ``get(dtype=torch.float64)`` keeps every fixed-point digit,
        which float32 loses above 2**24 units of the encoding, e.g. 16,384 at base 10 /
        precision 3). ValueOutOfRange if a value exceeds the cluster's ``value_bound`` (it
        wrapped or a truncation failed; see training.check); in check mode every op issued
        so far is checked first (ShadowMismatch names the first wrong one)."""
        return await self.reveal_to(self.cluster.coordinator, dtype=dtype)

    @property
    def origin(self) -> Origin | None:
        """The op that produced this value: kind, op id and label."""
        return self._origin

    async def reveal_to(self, actor: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """Reveal to ``actor`` as ``dtype`` (default :attr:`dtype`); refused with
        AccessDenied unless it owns the value."""
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"get(dtype=...) takes a torch.dtype, got {type(dtype).__name__}")
        checker = getattr(self.cluster, "checker", None)
        if checker is not None and actor == self.cluster.coordinator:
            await checker.verify(self.cluster)
        raw = await self.cluster.reveal(self.tid, self.shape, to=actor)
        return check_range(self, raw).to(self.dtype if dtype is None else dtype)

    # -- precision alignment -------------------------------------------------------------------
    def _at_prec(self, prec: int) -> SharedTensor:
        if prec == self.prec:
            return self
        if prec < self.prec:
            raise EncodingError("cannot lower precision implicitly")
        factor = self.fp.base ** (prec - self.prec)
        pub = Pub.of(torch.tensor(factor, dtype=torch.int64))
        out = self._op("mul_pub", [], self.shape, Params(pub=pub), prec=prec)
        return self._record(out, [self], lambda g: (g * factor,))

    def _encode_public(self, t: torch.Tensor, prec: int) -> Pub:
        return Pub.of(self.fp.with_precision(prec).encode(t))

    # -- arithmetic -----------------------------------------------------------------------------
    def __add__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            p = max(self.prec, other.prec)
            a, b = self._at_prec(p), other._at_prec(p)
            shape = S.broadcast("add", a.shape, b.shape)
            out = a._op("add", [b], shape)
            return out._record_binary(a, b, lambda g: (g, g))
        pub = _as_public(other)
        return self._add_encoded(pub, self._encode_public(pub, self.prec))

    __radd__ = __add__

    def _add_encoded(self, pub: torch.Tensor, enc: Pub) -> SharedTensor:
        shape = S.broadcast("add", self.shape, pub.shape)
        out = self._op("add_pub", [], shape, Params(pub=enc))
        return self._record(out, [self], lambda g: (unbroadcast(g, tuple(self.shape)),))

    def _record_binary(
        self,
        a: SharedTensor,
        b: SharedTensor,
        rule: Callable[[Value], tuple[Value | None, Value | None]],
    ) -> SharedTensor:
        sa, sb = tuple(a.shape), tuple(b.shape)

        def back(g: Value) -> tuple[Value | None, Value | None]:
            ga, gb = rule(g)
            return (
                None if ga is None else unbroadcast(ga, sa),
                None if gb is None else unbroadcast(gb, sb),
            )

        return a._record(self, [a, b], back)

    def __neg__(self) -> SharedTensor:
        out = self._op("neg", [], self.shape)
        return self._record(out, [self], lambda g: (-g,))

    def __sub__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            p = max(self.prec, other.prec)
            a, b = self._at_prec(p), other._at_prec(p)
            shape = S.broadcast("sub", a.shape, b.shape)
            out = a._op("sub", [b], shape)
            return out._record_binary(a, b, lambda g: (g, -g))
        return self + public(-_as_public(other))

    def __rsub__(self, other: Any) -> SharedTensor:
        pub = _as_public(other)
        enc = self._encode_public(pub, self.prec)  # refuse bad input before queueing -x
        S.broadcast("sub", self.shape, pub.shape)
        return (-self)._add_encoded(pub, enc)

    def __mul__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return self._mul_shared(other)
        pub = _as_public(other)
        shape = S.broadcast("mul", self.shape, pub.shape)
        if _integral(pub):
            out = self._op("mul_pub", [], shape, Params(pub=Pub.of(pub.to(torch.int64))))
        else:
            prec, q, d = self._public_scaling(pub)
            params = Params(pub=self._encode_public(pub, q), d=d)
            out = self._op("scale", [], shape, params, prec=prec)
        sshape = tuple(self.shape)
        return self._record(out, [self], lambda g: (unbroadcast(g * pub, sshape),))

    __rmul__ = __mul__

    def _public_scaling(self, pub: torch.Tensor) -> tuple[int, int, int]:
        """(result precision, the public factor's precision, truncation divisor)."""
        q = _public_precision(self.fp, pub)
        prec = max(self.prec, self.fp.precision)
        return prec, q, self.fp.base ** (self.prec + q - prec)

    def _mul_shared(self, other: SharedTensor) -> SharedTensor:
        shape = S.broadcast("mul", self.shape, other.shape)
        prec, d = max(self.prec, other.prec), self.fp.base ** min(self.prec, other.prec)
        out = self._op("mul", [other], shape, Params(d=d), prec=prec)
        a, b = self, other
        return out._record_binary(
            a,
            b,
            lambda g: (g * b if a.requires_grad else None, g * a if b.requires_grad else None),
        )

    def __truediv__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            return _fn().div(self, other)
        pub = _as_public(other)
        if bool((pub == 0).any()):
            raise ZeroDivisionError("division of a SharedTensor by zero")
        if pub.numel() == 1 and _integral(pub):
            # Division by a public integer is a truncation by it: one local op (2
            # parties), error below one unit in the last place.
            d = int(pub.reshape(()).item())
            out = self._op("trunc", [], self.shape, Params(d=abs(d)))
            out = self._record(out, [self], lambda g: (g / abs(d),))
            return -out if d < 0 else out
        return self * (1.0 / pub.to(torch.float64))

    def __floordiv__(self, other: Any) -> SharedTensor:
        raise UnsupportedOperation(
            "floor division of a SharedTensor is not supported; use / (true division)"
        )

    __rfloordiv__ = __floordiv__

    def __mod__(self, other: Any) -> SharedTensor:
        raise UnsupportedOperation("% (remainder) of a SharedTensor is not supported")

    __rmod__ = __mod__

    def __rtruediv__(self, other: Any) -> SharedTensor:
        return _fn().div(_as_public(other), self)

    def __pow__(self, exponent: Any) -> SharedTensor:
        """``x ** p`` (see :func:`training.functional.pow`): integer p (also 2.0, 3.0) by
        repeated squaring, negative p through the reciprocal, 0.5 / -0.5 by sqrt / rsqrt,
        other reals and tensor exponents as ``exp(p log x)`` for x > 0."""
        return _fn().pow(self, exponent)

    def __rpow__(self, base: Any) -> SharedTensor:
        """``b ** x`` for a public b > 0: ``exp(x ln b)``."""
        return _fn().rpow(base, self)

    def _square(self) -> SharedTensor:
        d = self.fp.base**self.prec
        out = self._op("square", [], self.shape, Params(d=d))
        return self._record(out, [self], lambda g: (g * (self * 2),))

    def __matmul__(self, other: Any) -> SharedTensor:
        if isinstance(other, SharedTensor):
            shape = S.matmul(self.shape, other.shape)
            prec, d = max(self.prec, other.prec), self.fp.base ** min(self.prec, other.prec)
            out = self._op("matmul", [other], shape, Params(d=d), prec=prec)
            a, b = self, other
            return out._record(
                out,
                [a, b],
                lambda g: (
                    g @ b.t() if a.requires_grad else None,
                    a.t() @ g if b.requires_grad else None,
                ),
            )
        return self._matmul_public(_as_public(other), left=False)

    def __rmatmul__(self, other: Any) -> SharedTensor:
        return self._matmul_public(_as_public(other), left=True)

    def _matmul_public(self, pub: torch.Tensor, *, left: bool) -> SharedTensor:
        shapes = (pub.shape, self.shape) if left else (self.shape, pub.shape)
        shape = S.matmul(*shapes)
        prec, q, d = self._public_scaling(pub)
        params = Params(pub=self._encode_public(pub, q), d=d, left=left)
        out = self._op("matmul_pub", [], shape, params, prec=prec)
        pt = pub.t() if pub.dim() == 2 else pub
        return self._record(out, [self], lambda g: ((pt @ g) if left else (g @ pt),))

    # -- shape ops ---------------------------------------------------------------------------
    def sum(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> SharedTensor:
        if dim is None:
            dims = None
            shape: tuple[int, ...] = ()
        else:
            dims = [dim] if isinstance(dim, int) else list(dim)
            shape = S.reduce("sum", self.shape, dims, keepdim)
        params = Params(dims=None if dims is None else tuple(dims), keepdim=keepdim)
        out = self._op("sum", [], shape, params)
        in_shape = tuple(self.shape)
        nd = len(in_shape)

        def back(g: Value) -> tuple[Value]:
            if dims is not None and not keepdim:
                kshape = [1 if (i in dims or i - nd in dims) else n for i, n in enumerate(in_shape)]
                g = g.reshape(kshape)
            elif dims is None:
                g = g.reshape([1] * nd)
            return (g.expand(in_shape),)

        return self._record(out, [self], back)

    def mean(self, dim: int | Sequence[int] | None = None, keepdim: bool = False) -> SharedTensor:
        total = self.sum(dim, keepdim)
        return total / (self.numel() // max(total.numel(), 1))

    def transpose(self, d0: int, d1: int) -> SharedTensor:
        shape = S.transpose(self.shape, d0, d1)
        out = self._op("transpose", [], shape, Params(d0=d0, d1=d1))
        return self._record(out, [self], lambda g: (g.transpose(d0, d1),))

    def t(self) -> SharedTensor:
        if self.dim() > 2:
            raise ShapeError(f"t() expects a tensor with <= 2 dimensions, got {self.dim()}")
        return self if self.dim() < 2 else self.transpose(0, 1)

    @property
    def T(self) -> SharedTensor:  # noqa: N802 - torch's name
        return self.t()

    def _view(
        self, kind: str, new: tuple[int, ...], back: Callable[[Value], Value]
    ) -> SharedTensor:
        if new == tuple(self.shape):
            return self
        out = self._op(kind, [], new, Params(shape=new))
        return self._record(out, [self], lambda g: (back(g),))

    def reshape(self, *shape: Any) -> SharedTensor:
        old = tuple(self.shape)
        return self._view("reshape", S.reshape(old, _shape_arg(shape)), lambda g: g.reshape(old))

    view = reshape

    def expand(self, *shape: Any) -> SharedTensor:
        old = tuple(self.shape)
        return self._view("expand", S.expand(old, _shape_arg(shape)), lambda g: unbroadcast(g, old))

    # -- gather / scatter: indexing, permute, cat, windows -----------------------------------
    def _take(self, idx: torch.Tensor) -> SharedTensor:
        """``self.flatten()[idx]`` with ``idx``'s shape (local; see protocols.conv.take)."""
        idx = idx.to(torch.int64)
        if idx.numel() == 0:
            raise ShapeError(f"indexing a SharedTensor of shape {tuple(self.shape)} gives nothing")
        out = self._op("take", [], tuple(idx.shape), Params(pub=Pub.of(idx)))
        in_shape = tuple(self.shape)
        return self._record(out, [self], lambda g: (put_any(g, idx, in_shape),))

    def _put(self, idx: torch.Tensor, shape: Sequence[int]) -> SharedTensor:
        """Zeros of ``shape`` with ``self`` added at the flat positions ``idx``."""
        idx = idx.to(torch.int64)
        shape = tuple(int(s) for s in shape)
        out = self._op("put", [], shape, Params(pub=Pub.of(idx), shape=shape))
        return self._record(out, [self], lambda g: (take_any(g, idx),))

    def _positions(self) -> torch.Tensor:
        return torch.arange(self.numel(), dtype=torch.int64).reshape(self.shape)

    def __getitem__(self, key: Any) -> SharedTensor:
        parts = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, SharedTensor) for k in parts):
            raise UnsupportedOperation(
                "indexing with a secret index is not supported; use a public index, or "
                "multiply by a shared one-hot mask and sum"
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

    def permute(self, *dims: Any) -> SharedTensor:
        d = _shape_arg(dims)
        try:
            idx = self._positions().permute(d)
        except (RuntimeError, IndexError) as exc:
            raise ShapeError(f"permute{d} of shape {tuple(self.shape)}: {exc}") from None
        return self._take(idx)

    def flip(self, *dims: Any) -> SharedTensor:
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

    def flatten(self, start_dim: int = 0, end_dim: int = -1) -> SharedTensor:
        return self.reshape(self._shape_of("flatten", lambda p: p.flatten(start_dim, end_dim)))

    def squeeze(self, dim: int | None = None) -> SharedTensor:
        return self.reshape(
            self._shape_of("squeeze", lambda p: p.squeeze() if dim is None else p.squeeze(dim))
        )

    def unsqueeze(self, dim: int) -> SharedTensor:
        return self.reshape(self._shape_of("unsqueeze", lambda p: p.unsqueeze(dim)))

    def contiguous(self) -> SharedTensor:
        return self

    # -- more local gathers (issue 20): each is a public-index take, exact, backward the
    # adjoint scatter-add; the linear ones below are sums of such takes.
    def narrow(self, dim: int, start: int, length: int) -> SharedTensor:
        return self._take(self._index_of("narrow", lambda p: p.narrow(dim, start, length)))

    def index_select(self, dim: int, index: Any) -> SharedTensor:
        if isinstance(index, SharedTensor):
            raise UnsupportedOperation("index_select with a shared index is not supported")
        idx = torch.as_tensor(index)
        return self._take(self._index_of("index_select", lambda p: p.index_select(dim, idx)))

    def repeat(self, *sizes: Any) -> SharedTensor:
        reps = _shape_arg(sizes)
        return self._take(self._index_of("repeat", lambda p: p.repeat(reps)))

    def roll(self, shifts: Any, dims: Any = None) -> SharedTensor:
        return self._take(self._index_of("roll", lambda p: torch.roll(p, shifts, dims)))

    def diagonal(self, offset: int = 0, dim1: int = 0, dim2: int = 1) -> SharedTensor:
        return self._take(self._index_of("diagonal", lambda p: p.diagonal(offset, dim1, dim2)))

    def trace(self) -> SharedTensor:
        """Sum of the main diagonal of a 2-d tensor (local)."""
        if self.dim() != 2:
            raise ShapeError(f"trace expects a 2-d tensor, got shape {tuple(self.shape)}")
        return self.diagonal().sum()

    def cumsum(self, dim: int, *, dtype: Any = None) -> SharedTensor:
        """Inclusive prefix sums along ``dim`` by a Hillis-Steele scan: ceil(log2 n)
        additions of the tensor shifted by 1, 2, 4, ... (zeros shifted in): local, exact."""
        if dtype is not None:
            raise UnsupportedOperation("cumsum(dtype=...) is not supported on SharedTensor")
        d = S.norm_dim("cumsum", int(dim), max(self.dim(), 1))
        if not self.dim():
            return self
        n = int(self.shape[d])
        out = self
        step = 1
        while step < n:
            zshape = list(self.shape)
            zshape[d] = step
            shifted = cat([torch.zeros(zshape), out.narrow(d, 0, n - step)], d)
            out = out + shifted
            step *= 2
        return out

    def prod(self, dim: int | None = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
        """Product along ``dim`` (all elements if None) by a tree of products:
        ceil(log2 n) rounds, one truncation per level; autograd through the products."""
        if dtype is not None:
            raise UnsupportedOperation("prod(dtype=...) is not supported on SharedTensor")
        if dim is None:
            return self.reshape(-1).prod(0)
        d = S.norm_dim("prod", int(dim), max(self.dim(), 1))
        if not self.dim():
            return self
        order = [i for i in range(self.dim()) if i != d] + [d]
        cur = self.permute(order) if d != self.dim() - 1 else self
        while int(cur.shape[-1]) > 1:
            m = int(cur.shape[-1])
            h = m // 2
            pairs = cur[..., 0 : 2 * h : 2] * cur[..., 1 : 2 * h : 2]
            cur = cat([pairs, cur[..., 2 * h :]], -1) if m % 2 else pairs
        out = cur[..., 0]
        return out.unsqueeze(d) if keepdim else out

    def dot(self, other: Any) -> SharedTensor:
        """1-d inner product: one product (1 round) and a sum."""
        if self.dim() != 1 or len(tuple(other.shape)) != 1:
            raise ShapeError(
                f"dot expects 1-d tensors, got {tuple(self.shape)} and {tuple(other.shape)}"
            )
        if int(other.shape[0]) != int(self.shape[0]):
            raise ShapeError(f"dot: sizes {self.shape[0]} and {other.shape[0]} differ")
        return (self * other).sum()

    def outer(self, other: Any) -> SharedTensor:
        """Outer product of 1-d tensors (``torch.outer``/``ger``): one product."""
        if self.dim() != 1 or len(tuple(other.shape)) != 1:
            raise ShapeError(
                f"outer expects 1-d tensors, got {tuple(self.shape)} and {tuple(other.shape)}"
            )
        return self.reshape(-1, 1) * other.reshape(1, -1)

    ger = outer

    def _index_of(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """``fn`` applied to the positions tensor; torch's refusal as a ShapeError."""
        try:
            return fn(self._positions())
        except (RuntimeError, IndexError, TypeError, ValueError) as exc:
            raise ShapeError(f"{name} of shape {tuple(self.shape)}: {exc}") from None

    def clone(self) -> SharedTensor:
        return self + 0

    def __getattr__(self, name: str) -> Any:
        # Only reached for names SharedTensor does not define: a torch.Tensor method we
        # have no secure version of. Refuse by name instead of a bare AttributeError.
        if name.startswith("__") or name.startswith("_"):
            raise AttributeError(name)
        if hasattr(torch.Tensor, name):
            raise UnsupportedAttribute(
                f"torch.Tensor.{name} is not supported on SharedTensor "
                "(see docs/ops.md for the supported operations)"
            )
        raise AttributeError(f"'SharedTensor' object has no attribute {name!r}")

    # -- smooth functions, maxima (training.functional) ------------------------------------------
    def exp(self) -> SharedTensor:
        return _fn().exp(self)

    def log(self) -> SharedTensor:
        return _fn().log(self)

    def sin(self) -> SharedTensor:
        return _fn().sin(self)

    def cos(self) -> SharedTensor:
        return _fn().cos(self)

    def reciprocal(self) -> SharedTensor:
        return _fn().reciprocal(self)

    def sqrt(self) -> SharedTensor:
        return _fn().sqrt(self)

    def rsqrt(self) -> SharedTensor:
        return _fn().rsqrt(self)

    def sigmoid(self) -> SharedTensor:
        return _fn().sigmoid(self)

    def tanh(self) -> SharedTensor:
        return _fn().tanh(self)

    def abs(self) -> SharedTensor:
        return _fn().abs_(self)

    __abs__ = abs

    def clamp(self, min: Any = None, max: Any = None) -> SharedTensor:
        return _fn().clamp(self, min, max)

    clip = clamp

    def softmax(self, dim: int, **kw: Any) -> SharedTensor:
        return _fn().softmax(self, dim)

    def log_softmax(self, dim: int, **kw: Any) -> SharedTensor:
        return _fn().log_softmax(self, dim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        """``max()`` (a value), ``max(dim)`` (values, shared indices) or ``max(other)``."""
        f = _fn()
        if dim is None:
            return f.max_dim(self.reshape(-1), 0)[0]
        if isinstance(dim, SharedTensor | torch.Tensor | float):
            return f.maximum(self, dim)
        values, _ = f.max_dim(self, dim, keepdim)
        return torch.return_types.max((values, f.argmax(self, dim, keepdim)))

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        f = _fn()
        if dim is None:
            return -f.max_dim((-self).reshape(-1), 0)[0]
        if isinstance(dim, SharedTensor | torch.Tensor | float):
            return -f.maximum(-self, -dim)
        values, _ = f.max_dim(-self, dim, keepdim)
        return torch.return_types.min((-values, f.argmax(-self, dim, keepdim)))

    def argmax(self, dim: int | None = None, keepdim: bool = False) -> SharedTensor:
        return _fn().argmax(self, dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False) -> SharedTensor:
        return _fn().argmax(-self, dim, keepdim)

    # -- comparisons and ReLU ------------------------------------------------------------------
    def drelu(self) -> SharedTensor:
        """Shared bit ``[self >= 0]`` (precision 0: multiplying by it needs no truncation)."""
        return self._op("drelu", [], self.shape, prec=0)

    def relu(self) -> SharedTensor:
        label = self.cluster.current_label()
        with self.cluster.label(f"{label}/relu" if label else "relu"):
            out, bit = self._submit("relu", [self], [(self.shape, None), (self.shape, 0)])
            out._bit = bit
            return self._record(out, [self], lambda g: (g * bit,))

    def _diff(self, other: Any) -> SharedTensor:
        with torch.no_grad():
            return self - other

    def _comparable(self, other: Any) -> bool:
        """Whether ``other`` can be compared with (anything else makes the operator return
        NotImplemented: ``x == None`` is False and ``x < "a"`` a TypeError, as for torch
        tensors; numpy arrays are refused by name)."""
        return isinstance(other, SharedTensor | torch.Tensor | public | np.ndarray) or (
            isinstance(other, numbers.Number) and not isinstance(other, complex)
        )

    def _eq_bits(self, other: Any) -> tuple[SharedTensor, SharedTensor]:
        """``[d >= 0]`` and ``[-d >= 0]`` for ``d = self - other``, as ONE comparison op over
        both (the same rounds as one comparison, twice the elements)."""
        other = float(other) if isinstance(other, bool) else other
        d = self._diff(other)
        with torch.no_grad():
            bits = cat([d.unsqueeze(0), (-d).unsqueeze(0)]).drelu()
            return bits[0], bits[1]

    def eq(self, other: Any) -> SharedTensor:
        """Shared 0/1 ``[self == other]`` on the encodings (values closer than the
        resolution are equal), other shared or public; no gradient, as torch.

        Protocol: two comparisons, ``[d >= 0] + [d <= 0] - 1`` with ``d = self - other``,
        both DReLUs in one op: 1 round with the FSS comparison (16 B per element), and the
        combination is linear (no product, exact). A dedicated equality test (a zero test
        of ``d``) would need its own dealer material and protocol per suite; composing the
        existing comparison keeps every suite (FSS, carry tree, 3+ parties) and its
        security argument unchanged, at twice one comparison's bytes."""
        ge, le = self._eq_bits(other)
        return ge + le - 1

    def ne(self, other: Any) -> SharedTensor:
        """Shared 0/1 ``[self != other]``: ``1 - eq`` (see :meth:`eq`)."""
        ge, le = self._eq_bits(other)
        return 2 - (ge + le)

    def ge(self, other: Any) -> SharedTensor:
        """Shared 0/1 ``[self >= other]``: one DReLU of the difference (no gradient)."""
        other = float(other) if isinstance(other, bool) else other
        return self._diff(other).drelu()

    def le(self, other: Any) -> SharedTensor:
        """Shared 0/1 ``[self <= other]``: one DReLU of ``other - self``."""
        other = float(other) if isinstance(other, bool) else other
        with torch.no_grad():
            return (-self._diff(other)).drelu()

    def lt(self, other: Any) -> SharedTensor:
        """Shared 0/1 ``[self < other]``: ``1 - [self >= other]``."""
        with torch.no_grad():
            return 1 - self.ge(other)

    def gt(self, other: Any) -> SharedTensor:
        """Shared 0/1 ``[self > other]``: ``1 - [self <= other]``."""
        with torch.no_grad():
            return 1 - self.le(other)

    greater_equal, less_equal, less, greater, not_equal = ge, le, lt, gt, ne

    def __eq__(self, other: object) -> Any:  # type: ignore[override]
        return self.eq(other) if self._comparable(other) else NotImplemented

    def __ne__(self, other: object) -> Any:  # type: ignore[override]
        return self.ne(other) if self._comparable(other) else NotImplemented

    def __ge__(self, other: Any) -> SharedTensor:
        return self.ge(other) if self._comparable(other) else NotImplemented

    def __le__(self, other: Any) -> SharedTensor:
        return self.le(other) if self._comparable(other) else NotImplemented

    def __lt__(self, other: Any) -> SharedTensor:
        return self.lt(other) if self._comparable(other) else NotImplemented

    def __gt__(self, other: Any) -> SharedTensor:
        return self.gt(other) if self._comparable(other) else NotImplemented

    __hash__ = object.__hash__  # identity, as torch.Tensor (defining __eq__ would drop it)

    def sign(self) -> SharedTensor:
        """torch.sign: ``[x >= 0] - [x <= 0]`` (1, 0 at exactly 0, -1), the two DReLUs in
        one op (as :meth:`eq`); gradient zero, as torch."""
        with torch.no_grad():
            ge, le = self._eq_bits(0.0)
            out = ge - le
        return self._record(out, [self], lambda g: (g * 0,))

    def where(self, condition: Any, other: Any) -> SharedTensor:
        """``torch.where(condition, self, other)``."""
        return _fn().where(condition, self, other)

    def var(self, dim: Any = None, unbiased: Any = None, keepdim: bool = False, **kw: Any) -> Any:
        return _fn().var(self, dim, unbiased, keepdim, **kw)

    def std(self, dim: Any = None, unbiased: Any = None, keepdim: bool = False, **kw: Any) -> Any:
        return _fn().std(self, dim, unbiased, keepdim, **kw)

    def pow(self, exponent: Any) -> SharedTensor:
        return self**exponent

    def square(self) -> SharedTensor:
        return self**2

    # -- torch interoperability -------------------------------------------------------------------
    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        impl = _TORCH.get(func)
        if impl is None:
            name = getattr(func, "__name__", None) or repr(func)
            raise UnsupportedOperation(
                f"torch operation {name!r} is not supported on SharedTensor "
                "(docs/ops.md lists the supported operations and layers)"
            )
        return impl(*args, **(kwargs or {}))

    # Last in the class: below these, ``float`` in an annotation would name the method.
    def float(self) -> SharedTensor:
        return self.to(torch.float32)

    def double(self) -> SharedTensor:
        return self.to(torch.float64)


def _linear(x: Any, weight: Any, bias: Any = None) -> Any:
    wshape = tuple(weight.shape)
    if len(wshape) != 2:
        raise ShapeError(f"linear: weight must be 2-d, got shape {wshape}")
    out_shape = S.matmul(tuple(x.shape), wshape[::-1])  # refuse before queueing weight.t()
    if bias is not None:
        S.broadcast("linear", out_shape, tuple(bias.shape))
    out = x @ weight.t()
    return out if bias is None else out + bias


def _relu(x: Any, inplace: bool = False) -> Any:
    if inplace:
        raise UnsupportedOperation("in-place relu is not supported on SharedTensor")
    return x.relu()


def _sum(x: Any, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
    return x.sum(dim, keepdim)


def _mean(x: Any, dim: Any = None, keepdim: bool = False, **kw: Any) -> Any:
    return x.mean(dim, keepdim)


_TORCH: dict[Any, Callable[..., Any]] = {
    torch.matmul: lambda a, b: a @ b if isinstance(a, SharedTensor) else b.__rmatmul__(a),
    torch.mm: lambda a, b: a @ b if isinstance(a, SharedTensor) else b.__rmatmul__(a),
    F.linear: _linear,
    F.relu: _relu,
    torch.relu: lambda x: x.relu(),
    torch.add: lambda a, b: a + b if isinstance(a, SharedTensor) else b + a,
    torch.sub: lambda a, b: a - b if isinstance(a, SharedTensor) else b.__rsub__(a),
    torch.mul: lambda a, b: a * b if isinstance(a, SharedTensor) else b * a,
    torch.neg: lambda a: -a,
    torch.sum: _sum,
    torch.mean: _mean,
    torch.t: lambda a: a.t(),
    torch.transpose: lambda a, d0, d1: a.transpose(d0, d1),
    torch.reshape: lambda a, shape: a.reshape(shape),
    torch.Tensor.__add__: lambda a, b: b + a,
    torch.Tensor.__radd__: lambda a, b: b + a,
    torch.Tensor.add: lambda a, b: b + a,
    torch.Tensor.__sub__: lambda a, b: b.__rsub__(a),
    torch.Tensor.__rsub__: lambda a, b: b - a,
    torch.Tensor.sub: lambda a, b: b.__rsub__(a),
    torch.Tensor.__mul__: lambda a, b: b * a,
    torch.Tensor.__rmul__: lambda a, b: b * a,
    torch.Tensor.mul: lambda a, b: b * a,
    torch.Tensor.__matmul__: lambda a, b: b.__rmatmul__(a),
    torch.Tensor.matmul: lambda a, b: b.__rmatmul__(a),
}
