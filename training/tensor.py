"""SharedTensor: a handle to a secret-shared tensor living at the parties.

Every operation returns a new handle at once and queues a command (asynchronous
dispatch); the parties run it as soon as its inputs exist. Operators and
``__torch_function__`` make ``F.linear``, ``F.relu``, ``torch.matmul`` and friends work in
an unmodified ``nn.Module.forward``; anything else raises
:class:`protocols.UnsupportedOperation` naming the function.

The class is assembled in levels, each a module with one job: the handle itself (life
cycle, issuing ops, autograd recording, reveal: :mod:`training.handle`), the local
rearrangements (:mod:`training.shaping`), the arithmetic and its fixed-point rules
(:mod:`training.arithmetic`) and PyTorch's habits (``.to``, ``.data``, ``new_*``, and the
refused ``.item()``; :mod:`training.idioms`); what a plaintext operand may be is
:mod:`training.operands`. This module adds the comparisons (shared 0/1 results from
DReLUs), ReLU, the method forms of the smooth functions and maxima (implemented in the
function modules and reached through :func:`training.handle.function`), and the torch
torch bindings of its own operators (into :data:`training.registry.TORCH`, the one
table, which the function modules and :mod:`training.dispatch` complete).

Autograd: an op records its parents and its backward rule beside its forward.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from protocols import shapes as S
from protocols.errors import ShapeError, UnsupportedOperation

from .arithmetic import Arithmetic
from .errors import in_layer
from .handle import function
from .idioms import Idioms
from .operands import public
from .registry import TORCH, bind
from .shaping import cat


class SharedTensor(Arithmetic, Idioms):
    """A secret-shared tensor (see module doc)."""

    __slots__ = ()

    # -- methods implemented in the function modules (via training.handle.function); the
    # plain ones (exp, log, sigmoid, abs, clamp, ...) are bound there with @implements
    def unfold(self, dimension: int, size: int, step: int) -> SharedTensor:
        """``Tensor.unfold``: windows of ``size`` every ``step`` along ``dimension`` as a new
        last dimension (a local gather; :func:`training.convolution.tensor_unfold`)."""
        return function("unfold")(self, dimension, size, step)

    def softmax(self, dim: int, **kw: Any) -> SharedTensor:
        return function("softmax")(self, dim)

    def log_softmax(self, dim: int, **kw: Any) -> SharedTensor:
        return function("log_softmax")(self, dim)

    def max(self, dim: Any = None, keepdim: bool = False) -> Any:
        """``max()`` (a value), ``max(dim)`` (values, shared indices) or ``max(other)``."""
        if dim is None:
            return function("max_dim")(self.reshape(-1), 0)[0]
        if isinstance(dim, SharedTensor | torch.Tensor | float):
            return function("maximum")(self, dim)
        values, _ = function("max_dim")(self, dim, keepdim)
        return torch.return_types.max((values, function("argmax")(self, dim, keepdim)))

    def min(self, dim: Any = None, keepdim: bool = False) -> Any:
        if dim is None:
            return -function("max_dim")((-self).reshape(-1), 0)[0]
        if isinstance(dim, SharedTensor | torch.Tensor | float):
            return -function("maximum")(-self, -dim)
        values, _ = function("max_dim")(-self, dim, keepdim)
        return torch.return_types.min((-values, function("argmax")(-self, dim, keepdim)))

    def argmax(self, dim: int | None = None, keepdim: bool = False, *, axis: Any = None) -> Any:
        return function("argmax")(self, axis if dim is None else dim, keepdim)

    def argmin(self, dim: int | None = None, keepdim: bool = False, *, axis: Any = None) -> Any:
        return function("argmax")(-self, axis if dim is None else dim, keepdim)

    def maximum(self, other: Any) -> SharedTensor:
        return function("maximum")(self, other)

    def minimum(self, other: Any) -> SharedTensor:
        return -function("maximum")(-self, -other)

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
        return function("where")(condition, self, other)

    def var(self, dim: Any = None, unbiased: Any = None, keepdim: bool = False, **kw: Any) -> Any:
        return function("var")(self, dim, unbiased, keepdim, **kw)

    def std(self, dim: Any = None, unbiased: Any = None, keepdim: bool = False, **kw: Any) -> Any:
        return function("std")(self, dim, unbiased, keepdim, **kw)

    def norm(
        self, p: Any = "fro", dim: Any = None, keepdim: bool = False, dtype: Any = None
    ) -> SharedTensor:
        return function("norm")(self, p, dim, keepdim, dtype=dtype)

    def pow(self, exponent: Any) -> SharedTensor:
        return self**exponent

    def square(self) -> SharedTensor:
        return self**2

    # -- torch interoperability -------------------------------------------------------------------
    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        impl = TORCH.get(func)
        if impl is None:
            name = getattr(func, "__name__", None) or repr(func)
            message = (
                f"torch operation {name!r} is not supported on SharedTensor "
                "(docs/ops.md lists the supported operations and layers)"
            )
            raise UnsupportedOperation(in_layer(message, f"torch operation {name!r}"))
        return impl(*args, **(kwargs or {}))

    # Last in the class: below these, ``float`` in an annotation would name the method.
    def float(self) -> SharedTensor:
        return self.to(torch.float32)

    def double(self) -> SharedTensor:
        return self.to(torch.float64)

    def type(self, dtype: Any = None, non_blocking: bool = False) -> Any:
        """``x.type(torch.float64)`` is ``x.to(torch.float64)`` (an integer dtype is refused
        with the reveal to write instead); ``x.type()`` names the class."""
        return "training.SharedTensor" if dtype is None else self.to(dtype)


def _linear(x: Any, weight: Any, bias: Any = None) -> Any:
    wshape = tuple(weight.shape)
    if len(wshape) != 2:
        raise ShapeError(f"linear: weight must be 2-d, got shape {wshape}")
    out_shape = S.matmul(tuple(x.shape), wshape[::-1])  # refuse before queueing weight.t()
    if bias is not None:
        S.broadcast("linear", out_shape, tuple(bias.shape))
    if isinstance(x, SharedTensor) and isinstance(weight, SharedTensor) and x.dim() == 2:
        if weight.requires_grad and torch.is_grad_enabled() and x._reuses_masks(weight):
            out, biased = x._kept_linear(weight, bias)  # the bias in the same op if it can
            if biased:
                return out
        else:
            out = _linear_shared(x, weight)
    else:
        out = x @ weight.t()
    return out if bias is None else out + bias


def _linear_shared(x: SharedTensor, weight: SharedTensor) -> SharedTensor:
    """``x @ weight.t()`` with the layer's own backward: ``g @ weight`` and ``g.t() @ x``.

    Why: through the generic rules the gradients would be ``g @ (weight.t()).t()`` and
    ``(x.t() @ g).t()``, three transposes per layer (two without an input gradient); these
    are the same values (transposes are exact, a matmul's truncation is element-wise) with
    one transpose, of ``g``, and only where the weight needs its gradient. When the weight's
    gradient will be needed, :func:`_linear` issues ``linear_t_keep`` instead
    (:mod:`protocols.reuse`: ``linear_keep`` taking the weight as nn.Linear holds it and
    the bias, no transpose or add command): the dealer deals the backward's material with
    it, and the backward opens only ``g``."""
    out = x.detach() @ weight.detach().t()
    return x._record(
        out,
        [x, weight],
        lambda g: (
            g @ weight.detach() if x.requires_grad else None,
            g.t() @ x.detach() if weight.requires_grad else None,
        ),
    )


def _relu(x: Any, inplace: bool = False) -> Any:
    if inplace:
        raise UnsupportedOperation("in-place relu is not supported on SharedTensor")
    return x.relu()


def _sum(x: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    return x.sum(dim, keepdim, dtype=dtype)


def _mean(x: Any, dim: Any = None, keepdim: bool = False, *, dtype: Any = None) -> Any:
    return x.mean(dim, keepdim, dtype=dtype)


bind(
    {
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
)
