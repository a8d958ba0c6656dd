"""SharedTensor arithmetic: addition, products, division by public values, matrix
products, sums, and the linear ops built from them (cumsum, prod, dot, outer, trace).

Fixed point: a handle stores integers at precision ``prec`` of its encoding ``fp``.
Addition aligns the precisions first (a public integer product, exact). Products of two
shares (Beaver triples) are truncated once, by ``base**min(p, q)``, so their precision is
``max(p, q)``; a comparison bit has precision 0, so ``x * bit`` needs no truncation at
all. Public operands go through the policy of :mod:`training.operands`: a public integer
multiplies without truncation; a public real factor is encoded with extra fractional
digits (:func:`training.operands.public_precision`) and the product truncated back
(``scale``); division by a public integer is one local truncation by it. Division by a
share and powers are the function modules' (reached through
:func:`training.handle.function`).

Every op records its backward rule beside its forward: a product's gradient is the other
factor times the incoming one, summed down to the operand's shape where it broadcast.

:class:`Arithmetic` is a level of :class:`training.tensor.SharedTensor` (on
:class:`training.shaping.Shaping`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import torch

from protocols import shapes as S
from protocols.errors import ShapeError, UnsupportedOperation
from protocols.params import Params, Pub

from .autograd import Value, one_value, twice, unbroadcast
from .handle import function
from .kept import KeptProducts
from .operands import as_public, integral, public, public_precision
from .shaping import cat


class Arithmetic(KeptProducts):
    """Sums, products and divisions of a SharedTensor (see module doc)."""

    __slots__ = ()

    def __add__(self, other: Any) -> Self:
        if isinstance(other, Arithmetic):
            p = max(self.prec, other.prec)
            a, b = self._at_prec(p), other._at_prec(p)
            shape = S.broadcast("add", a.shape, b.shape)
            out = a._op("add", [b], shape)
            return out._record_binary(a, b, lambda g: (g, g))
        pub = as_public(other)
        return self._add_encoded(pub, self._encode_public(pub, self.prec))

    __radd__ = __add__

    def _add_encoded(self, pub: torch.Tensor, enc: Pub) -> Self:
        shape = S.broadcast("add", self.shape, pub.shape)
        out = self._op("add_pub", [], shape, Params(pub=enc))
        return self._record(out, [self], lambda g: (unbroadcast(g, tuple(self.shape)),))

    def __neg__(self) -> Self:
        out = self._op("neg", [], self.shape)
        return self._record(out, [self], lambda g: (-g,))

    def __sub__(self, other: Any) -> Self:
        if isinstance(other, Arithmetic):
            p = max(self.prec, other.prec)
            a, b = self._at_prec(p), other._at_prec(p)
            shape = S.broadcast("sub", a.shape, b.shape)
            out = a._op("sub", [b], shape)
            # the subtrahend's -g only where it is wanted (a target's is not: one op less)
            return out._record_binary(a, b, lambda g: (g, -g if b.requires_grad else None))
        return self + public(-as_public(other))

    def __rsub__(self, other: Any) -> Self:
        pub = as_public(other)
        enc = self._encode_public(pub, self.prec)  # refuse bad input before queueing -x
        S.broadcast("sub", self.shape, pub.shape)
        return (-self)._add_encoded(pub, enc)

    def __mul__(self, other: Any) -> Self:
        if isinstance(other, Arithmetic):
            return self._mul_shared(other)
        pub = as_public(other)
        shape = S.broadcast("mul", self.shape, pub.shape)
        if one_value(pub) and shape == tuple(self.shape):
            pub = pub[(0,) * pub.dim()]  # one value expanded (a sum's gradient): a scalar
        if integral(pub):
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
        q = public_precision(self.fp, pub)
        prec = max(self.prec, self.fp.precision)
        return prec, q, self.fp.base ** (self.prec + q - prec)

    def _mul_shared(self, other: Arithmetic) -> Self:
        shape = S.broadcast("mul", self.shape, other.shape)
        prec, d = max(self.prec, other.prec), self.fp.base ** min(self.prec, other.prec)
        out = self._op("mul", [other], shape, Params(d=d), prec=prec)
        a, b = self, other
        return out._record_binary(
            a,
            b,
            lambda g: (g * b if a.requires_grad else None, g * a if b.requires_grad else None),
        )

    def __truediv__(self, other: Any) -> Self:
        if isinstance(other, Arithmetic):
            return function("div")(self, other)
        pub = as_public(other)
        if bool((pub == 0).any()):
            raise ZeroDivisionError("division of a SharedTensor by zero")
        if pub.numel() == 1 and integral(pub):
            # Division by a public integer is a truncation by it: one local op (2
            # parties), error below one unit in the last place.
            d = int(pub.reshape(()).item())
            out = self._op("trunc", [], self.shape, Params(d=abs(d)))
            out = self._record(out, [self], lambda g: (g / abs(d),))
            return -out if d < 0 else out
        return self * (1.0 / pub.to(torch.float64))

    def __floordiv__(self, other: Any) -> Self:
        raise UnsupportedOperation(
            "floor division of a SharedTensor is not supported; use / (true division)"
        )

    __rfloordiv__ = __floordiv__

    def __mod__(self, other: Any) -> Self:
        raise UnsupportedOperation("% (remainder) of a SharedTensor is not supported")

    __rmod__ = __mod__

    def __rtruediv__(self, other: Any) -> Self:
        return function("div")(as_public(other), self)

    def __pow__(self, exponent: Any) -> Self:
        """``x ** p`` (see :func:`training.composite.pow`): integer p (also 2.0, 3.0) by
        repeated squaring, negative p through the reciprocal, 0.5 / -0.5 by sqrt / rsqrt,
        other reals and tensor exponents as ``exp(p log x)`` for x > 0."""
        return function("pow")(self, exponent)

    def __rpow__(self, base: Any) -> Self:
        """``b ** x`` for a public b > 0: ``exp(x ln b)``."""
        return function("rpow")(base, self)

    def _square(self) -> Self:
        d = self.fp.base**self.prec
        out = self._op("square", [], self.shape, Params(d=d))
        # a public g (the loss's seed) folds into one public product: x (2 g), not (x 2) g
        return self._record(
            out,
            [self],
            lambda g: (self * twice(g) if isinstance(g, torch.Tensor) else g * (self * 2),),
        )

    def __matmul__(self, other: Any) -> Self:
        if isinstance(other, Arithmetic):
            shape = S.matmul(self.shape, other.shape)
            if self.dim() == 1 or other.dim() == 1:
                return _vector_matmul(self, other, shape)
            if other.requires_grad and torch.is_grad_enabled() and self._reuses_masks(other):
                b = other.detach()
                return self._kept_product(b, [self, other])
            prec, d = max(self.prec, other.prec), self.fp.base ** min(self.prec, other.prec)
            out = self._op("matmul", [other], shape, Params(d=d), prec=prec)
            a, b = self, other
            return out._record(
                out,
                [a, b],
                lambda g: (
                    unbroadcast(g @ _mt(b), tuple(a.shape)) if a.requires_grad else None,
                    unbroadcast(_mt(a) @ g, tuple(b.shape)) if b.requires_grad else None,
                ),
            )
        pub = as_public(other)
        if self.dim() == 1 or pub.dim() == 1:
            return _vector_matmul(self, pub, S.matmul(self.shape, pub.shape))
        return self._matmul_public(pub, left=False)

    def __rmatmul__(self, other: Any) -> Self:
        pub = as_public(other)
        if self.dim() == 1 or pub.dim() == 1:
            return _vector_matmul(pub, self, S.matmul(pub.shape, self.shape))
        return self._matmul_public(pub, left=True)

    def _matmul_public(self, pub: torch.Tensor, *, left: bool) -> Self:
        shapes = (pub.shape, self.shape) if left else (self.shape, pub.shape)
        shape = S.matmul(*shapes)
        prec, q, d = self._public_scaling(pub)
        params = Params(pub=self._encode_public(pub, q), d=d, left=left)
        out = self._op("matmul_pub", [], shape, params, prec=prec)
        pt = pub.mT
        mine = tuple(self.shape)

        def back(g: Value) -> tuple[Value]:
            if isinstance(g, torch.Tensor):  # a public gradient: torch's matmul needs one dtype
                g = g.to(torch.promote_types(g.dtype, pt.dtype))
            return (unbroadcast((pt @ g) if left else (g @ pt), mine),)

        return self._record(out, [self], back)

    # -- shape ops ---------------------------------------------------------------------------
    def sum(
        self,
        dim: int | Sequence[int] | None = None,
        keepdim: bool = False,
        *,
        axis: Any = None,
        dtype: Any = None,
    ) -> Self:
        _float_dtype("sum", dtype)
        dim = axis if dim is None else dim  # numpy's name, which torch accepts too
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

    def mean(
        self,
        dim: int | Sequence[int] | None = None,
        keepdim: bool = False,
        *,
        axis: Any = None,
        dtype: Any = None,
    ) -> Self:
        _float_dtype("mean", dtype)
        total = self.sum(axis if dim is None else dim, keepdim)
        return total / (self.numel() // max(total.numel(), 1))

    def trace(self) -> Self:
        """Sum of the main diagonal of a 2-d tensor (local)."""
        if self.dim() != 2:
            raise ShapeError(f"trace expects a 2-d tensor, got shape {tuple(self.shape)}")
        return self.diagonal().sum()

    def cumsum(self, dim: int, *, dtype: Any = None) -> Self:
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

    def dot(self, other: Any) -> Self:
        """1-d inner product: one product (1 round) and a sum."""
        if self.dim() != 1 or len(tuple(other.shape)) != 1:
            raise ShapeError(
                f"dot expects 1-d tensors, got {tuple(self.shape)} and {tuple(other.shape)}"
            )
        if int(other.shape[0]) != int(self.shape[0]):
            raise ShapeError(f"dot: sizes {self.shape[0]} and {other.shape[0]} differ")
        return (self * other).sum()

    def outer(self, other: Any) -> Self:
        """Outer product of 1-d tensors (``torch.outer``/``ger``): one product."""
        if self.dim() != 1 or len(tuple(other.shape)) != 1:
            raise ShapeError(
                f"outer expects 1-d tensors, got {tuple(self.shape)} and {tuple(other.shape)}"
            )
        return self.reshape(-1, 1) * other.reshape(1, -1)

    ger = outer

    def clone(self) -> Self:
        return self + 0

    # -- method forms of the operators (torch.Tensor.add, ...; CrypTen writes these) -----
    def add(self, other: Any, *, alpha: Any = 1) -> Self:
        """``self + alpha * other``."""
        return self + (other if alpha == 1 else other * alpha)

    def sub(self, other: Any, *, alpha: Any = 1) -> Self:
        """``self - alpha * other``."""
        return self - (other if alpha == 1 else other * alpha)

    def mul(self, other: Any) -> Self:
        return self * other

    def div(self, other: Any, *, rounding_mode: str | None = None) -> Self:
        if rounding_mode is not None:
            raise UnsupportedOperation(
                "SharedTensor.div with rounding_mode is not supported (true division only)"
            )
        return self / other

    def matmul(self, other: Any) -> Self:
        return self @ other

    def neg(self) -> Self:
        return -self

    subtract, multiply, divide, true_divide, mm, negative = sub, mul, div, div, matmul, neg


def _mt(x: Value) -> Value:
    """The transpose of the last two dimensions (``x.t()`` for a matrix)."""
    return x.t() if x.dim() == 2 else x.transpose(-2, -1)


def _vector_matmul(a: Any, b: Any, shape: tuple[int, ...]) -> Any:
    """torch.matmul with a 1-d operand: the vector as a matrix (a row on the left, a column
    on the right), the product of matrices, the added dimension dropped (``shape``), as
    torch defines it; autograd goes through the reshapes."""
    a2 = a.reshape(1, a.shape[0]) if a.dim() == 1 else a
    b2 = b.reshape(b.shape[0], 1) if b.dim() == 1 else b
    # a public operand was unwrapped (and warned about) once: marked, it is not again
    a2, b2 = (public(t) if isinstance(t, torch.Tensor) else t for t in (a2, b2))
    left: Any = a2
    return (left @ b2).reshape(shape)


def _float_dtype(name: str, dtype: Any) -> None:
    """``sum(dtype=torch.float64)``: a floating dtype changes nothing on shares (they keep
    their fixed-point encoding); any other is refused by name."""
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise UnsupportedOperation(
            f"{name}(dtype={dtype}) on a SharedTensor: shares are fixed point; only a "
            "floating dtype (which changes nothing) is accepted"
        )
