"""The SharedTensor handle: identity, life cycle, issuing ops, recording autograd, reveal.

A handle names a secret-shared tensor living at the parties (its tensor id, owned by a
:class:`_Ref` that frees it at the parties when the last handle using it is collected),
with its shape, its fixed-point encoding ``fp`` and precision ``prec`` (the base is fixed
per handle), and the dtype ``get()`` returns. Every operation returns a new handle at once
and queues a command (asynchronous dispatch): :meth:`Handle._op` / :meth:`Handle._submit`
issue one op and give its results their origin (kind, op id, label) and, in check mode,
queue them for checking; :meth:`Handle._record` attaches the parents and the backward rule
beside the forward (micrograd style, see :mod:`training.autograd`).

The class is the base of :class:`training.tensor.SharedTensor`: the local rearrangements
(:mod:`training.shaping`), the arithmetic (:mod:`training.arithmetic`), the PyTorch
habits (:mod:`training.idioms`) and the comparisons and functions (:mod:`training.tensor`)
are built on it. Methods return ``Self``, which is the SharedTensor; a torch.Tensor method
none of them defines raises :class:`training.errors.UnsupportedAttribute` naming it (and
the torch layer it was needed in, :func:`training.errors.in_layer`); operands of two
clusters raise :class:`training.errors.ClusterMismatch`. Functions implemented in the function modules
(``exp``, ``softmax``, division by a share, ...) are called through :data:`FUNCTIONS`, a
table :mod:`training.dispatch` fills on import of :mod:`training`, so that no module here
imports the function modules (which import this one).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar

import torch

from protocols import FixedPoint
from protocols.errors import EncodingError, ShapeError, UnsupportedOperation
from protocols.params import Params, Pub

from . import autograd
from .autograd import Value, unbroadcast
from .check import Origin, Shadow, check_range
from .errors import ClusterMismatch, NotCopyable, RevealRequired, UnsupportedAttribute, in_layer
from .precision import check_values

if TYPE_CHECKING:
    from .tensor import SharedTensor

_H = TypeVar("_H", bound="Handle")

FUNCTIONS: dict[str, Callable[..., Any]] = {}
"""SharedTensor methods implemented in the function modules (``"exp"``, ``"div"``,
``"softmax"``, ...), by name; filled by :mod:`training.dispatch`."""


def function(name: str) -> Callable[..., Any]:
    """The implementation of a method that lives in a function module."""
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise UnsupportedOperation(
            f"SharedTensor.{name} is implemented in the function modules, which register it "
            "on `import training`; import the package, not only training.tensor"
        ) from None


class _Ref:
    """Owns one tensor id; when the last handle using it is collected, the parties free it.

    ``__del__``, not ``weakref.finalize``: every op's result makes one, and a finalizer
    is a registry entry and several objects per tensor (the same release, called when the
    last reference goes, also from the cyclic collector)."""

    __slots__ = ("__weakref__", "_release", "tid")

    def __init__(self, cluster: Any, tid: int) -> None:
        self.tid = tid
        self._release: Callable[[int], None] = cluster.release

    def __del__(self) -> None:
        self._release(self.tid)


class Handle:
    """A handle to a secret-shared tensor (see module doc)."""

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
        self._parents: tuple[Handle, ...] = ()
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
    ) -> Self:
        """Encode and share ``tensor``; a :class:`PrecisionWarning` names ``what`` (default:
        the shape) if many of its nonzero values are below the encoding's resolution."""
        if isinstance(tensor, Handle):
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

    def __len__(self) -> int:
        if not self.shape:  # a TypeError, as torch's; torch.tensor(x) asks for it
            raise RevealRequired(
                "len() of a 0-d tensor; its value is secret (a SharedTensor): for a torch "
                "tensor of a SharedTensor's values reveal it first: "
                "`torch.as_tensor(await x.get())`"
            )
        return int(self.shape[0])

    def __deepcopy__(self, memo: Any) -> Self:
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
    ) -> Self:
        return type(self)(
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
        others: Sequence[Handle],
        shape: Sequence[int],
        params: Params | None = None,
        prec: int | None = None,
    ) -> Self:
        for o in others:
            if o.cluster is not self.cluster:
                raise ClusterMismatch(
                    f"cannot combine SharedTensors of two clusters ({kind}): each cluster's "
                    "parties hold their own shares; reveal one (`await x.get()`) and share "
                    "it with the other cluster"
                )
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
        operands: Sequence[Handle],
        outs: Sequence[tuple[Sequence[int], int | None]],
        params: Params | None = None,
    ) -> list[Self]:
        """Issue one op; its results (``(shape, precision)`` each, None: this handle's)
        remember the op (kind, id, label) and, in check mode, are queued for checking."""
        cluster = self.cluster
        tids = cluster.submit(  # it checks and copies the shapes (torch.Size is a tuple)
            kind,
            [o._ref.tid for o in operands],
            [o.shape for o in operands],
            [shape for shape, _ in outs],
            params,
        )
        origin = Origin(cluster.last_op, kind, cluster.current_label())
        dtype = self.dtype
        for o in operands:
            if o.dtype is not dtype:
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
        out: _H,
        parents: Sequence[Handle],
        rule: Callable[[Value], Sequence[Value | None]],
    ) -> _H:
        if torch.is_grad_enabled() and any(p.requires_grad for p in parents):
            out.requires_grad = True
            out._parents = tuple(parents)
            out._backward = rule
            out._label = self.cluster.current_label()
        return out

    # -- in-place assignment used by optimisers ----------------------------------------------
    def _assign(self, other: Handle) -> None:
        if other.shape != self.shape:
            raise ShapeError(f"cannot assign shape {tuple(other.shape)} to {tuple(self.shape)}")
        self._ref = other._ref
        self.prec = other.prec
        self.fp = other.fp
        self._origin = other._origin
        self._shadow = other._shadow

    def detach(self) -> Self:
        """The same shared value without autograd history (shares the tensor id: no new
        reference is tracked, so nothing is freed while either handle lives)."""
        out = type(self).__new__(type(self))
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

    def requires_grad_(self, flag: bool = True) -> Self:
        if not self.is_leaf:
            raise RuntimeError("requires_grad can be changed only on leaf SharedTensors")
        self.requires_grad = flag
        return self

    def backward(self, gradient: Value | None = None) -> None:
        autograd.backward(self, gradient)

    def is_floating_point(self) -> bool:
        return True

    # -- reveal ---------------------------------------------------------------------------------
    async def get(self, dtype: torch.dtype | None = None, *, flush: bool = False) -> torch.Tensor:
        """Reveal to the coordinator that owns the value, as ``dtype`` (default
        :attr:`dtype`, the dtype it was shared with: float32 in, float32 out, as torch keeps
        an op's input dtype; ``get(dtype=torch.float64)`` keeps every fixed-point digit,
        which float32 loses above 2**24 units of the encoding, e.g. 16,384 at base 10 /
        precision 3). ValueOutOfRange if a value exceeds the cluster's ``value_bound`` (it
        wrapped or a truncation failed; see training.check); in check mode every op issued
        so far is checked first (ShadowMismatch names the first wrong one). ``flush=True``
        also waits for every op issued so far, as ``await cluster.flush()`` after it would,
        in the same exchange with the parties (the end of a training step)."""
        return await self.reveal_to(self.cluster.coordinator, dtype=dtype, flush=flush)

    @property
    def origin(self) -> Origin | None:
        """The op that produced this value: kind, op id and label."""
        return self._origin

    async def reveal_to(
        self, actor: str, dtype: torch.dtype | None = None, *, flush: bool = False
    ) -> torch.Tensor:
        """Reveal to ``actor`` as ``dtype`` (default :attr:`dtype`); refused with
        AccessDenied unless it owns the value (``flush``: as :meth:`get`)."""
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"get(dtype=...) takes a torch.dtype, got {type(dtype).__name__}")
        checker = getattr(self.cluster, "checker", None)
        if checker is not None and actor == self.cluster.coordinator:
            await checker.verify(self.cluster)
        raw = await self.cluster.reveal(self.tid, self.shape, to=actor, flush=flush)
        return check_range(self, raw).to(self.dtype if dtype is None else dtype)

    # -- precision alignment -------------------------------------------------------------------
    def _at_prec(self, prec: int) -> Self:
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

    def _record_binary(
        self,
        a: Handle,
        b: Handle,
        rule: Callable[[Value], tuple[Value | None, Value | None]],
    ) -> Self:
        sa, sb = tuple(a.shape), tuple(b.shape)

        def back(g: Value) -> tuple[Value | None, Value | None]:
            ga, gb = rule(g)
            return (
                None if ga is None else unbroadcast(ga, sa),
                None if gb is None else unbroadcast(gb, sb),
            )

        return a._record(self, [a, b], back)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names SharedTensor does not define: a torch.Tensor method we
        # have no secure version of. Refuse by name instead of a bare AttributeError.
        if name.startswith("__") or name.startswith("_"):
            raise AttributeError(name)
        if hasattr(torch.Tensor, name):
            message = (
                f"torch.Tensor.{name} is not supported on SharedTensor "
                "(see docs/ops.md for the supported operations)"
            )
            raise UnsupportedAttribute(in_layer(message, f"torch.Tensor.{name}"))
        raise AttributeError(f"'SharedTensor' object has no attribute {name!r}")
