"""Products that deal their backward with their forward (:mod:`protocols.reuse`): ``x @ w``
and ``nn.Linear``'s ``x @ w^T`` (and, through :meth:`KeptProducts._kept_bilinear`, the
convolutions) as one ``*_keep`` op whose backward opens only the incoming gradient and
reuses the forward's openings. A level of :class:`training.tensor.SharedTensor` between
:class:`training.shaping.Shaping` and :class:`training.arithmetic.Arithmetic`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Self

from protocols.params import Params

from .autograd import Value, unbroadcast
from .shaping import Shaping


class KeptProducts(Shaping):
    """The ``*_keep`` products (see module doc)."""

    __slots__ = ()

    def _reuses_masks(self, other: KeptProducts) -> bool:
        """``self @ other`` can deal its backward ahead (:mod:`protocols.reuse`): 2-d
        operands of one cluster and encoding, and a suite that has the kinds."""
        return (
            self.dim() == 2
            and other.dim() == 2
            and self.cluster is other.cluster
            and self.fp == other.fp
            and self.prec == other.prec
            and "linear_keep" in self.cluster.suite
        )

    def _kept_product(self, w: KeptProducts, parents: list[KeptProducts]) -> Self:
        """``self @ w`` (a shared ``w`` that needs its gradient) as ``linear_keep``: the
        family's weight gradient ``g^T @ self`` is transposed back to w's layout
        (nn.Linear's weight takes ``linear_t_keep``, :meth:`_kept_linear`)."""
        m, k, n = self.shape[0], self.shape[1], w.shape[1]
        x = self.detach()

        def fallback(g: Value, both: bool) -> tuple[Value | None, Value | None]:
            gw: Value = g.t() @ x
            return (g @ w.t() if both else None, gw.t())

        return self._kept_bilinear(
            "linear",
            w,
            parents,
            (m, n),
            (n, k),
            Params(d=self.fp.base**self.prec),
            fallback,
            post=lambda gw: gw.t(),
        )

    def _kept_linear(self, w: KeptProducts, bias: Any = None) -> tuple[Self, bool]:
        """``self @ w^T`` (nn.Linear's ``w`` (n, k), as it holds it) as ``linear_t_keep``:
        the weight's gradient ``g^T @ self`` in w's layout, and no transpose command; a
        shared ``bias`` (n,) of this encoding and precision is added in the same op (then
        True, else the caller adds it)."""
        m, k, n = self.shape[0], self.shape[1], w.shape[0]
        x, wd = self.detach(), w.detach()
        fused = (
            isinstance(bias, KeptProducts)
            and bias.cluster is self.cluster
            and bias.fp == self.fp
            and bias.prec == self.prec
            and tuple(bias.shape) == (n,)
        )

        def fallback(g: Value, both: bool) -> tuple[Value | None, Value | None]:
            return (g @ wd if both else None, g.t() @ x)

        params = Params(d=self.fp.base**self.prec)
        out = self._kept_bilinear(
            "linear_t",
            wd,
            [self, w],
            (m, n),
            (n, k),
            params,
            fallback,
            kept_y=(k, n),
            bias=bias if fused else None,
        )
        return out, fused

    def _kept_bilinear(
        self,
        family: str,
        y: KeptProducts,
        parents: Sequence[KeptProducts],
        out_shape: tuple[int, ...],
        gy_shape: tuple[int, ...],
        params: Params,
        fallback: Callable[[Value, bool], tuple[Value | None, Value | None]],
        *,
        shared: Callable[[Value], Value] | None = None,
        post: Callable[[KeptProducts], Value] | None = None,
        kept_y: tuple[int, ...] | None = None,
        bias: KeptProducts | None = None,
    ) -> Self:
        """``f(self, y)`` of a :mod:`protocols.reuse` family as ``<family>_keep`` (or
        ``_keep_w`` when ``parents[0]``, the input, needs no gradient): its backward opens
        only the gradient g (made shared by ``shared``). A gradient of another encoding
        takes ``fallback(g, input needs its gradient)``; ``post`` maps the weight's;
        ``kept_y`` is the kept ``ey``'s shape where it is not y's (``linear_t``); ``bias``
        (``linear_t``) is added in the op, a third parent with the gradient ``g`` summed."""
        both = parents[0].requires_grad
        xs = tuple(self.shape)
        ey = tuple(y.shape) if kept_y is None else kept_y  # the masked y the kind keeps
        shapes = [out_shape, xs, ey, out_shape, gy_shape, *([xs] if both else [])]
        x = self.detach()
        kind = f"{family}_keep" if both else f"{family}_keep_w"
        operands: list[KeptProducts] = [x, y] if bias is None else [x, y, bias.detach()]
        out, *kept = x._submit(kind, operands, [(s, None) for s in shapes], params)
        bshape = None if bias is None else tuple(bias.shape)
        # with a bias (n,) the gradient op also gives g summed over the batch: no sum command
        d = Params(d=params.d, dims=None if bias is None else (0,))
        extra = [] if bshape is None else [(bshape, None)]

        def grads(g: Value) -> tuple[Value | None, ...]:
            g = g if shared is None else shared(g)
            if not (isinstance(g, KeptProducts) and g.fp == self.fp and g.prec == self.prec):
                fell = fallback(g, both)
                return fell if bshape is None else (*fell, unbroadcast(g, bshape))
            gx: KeptProducts | None = None
            if both:
                gx, gy, *gb = g._submit(
                    f"{family}_grad", [g, x, y, *kept], [(xs, None), (gy_shape, None), *extra], d
                )
            else:
                ex, _, r, cy = kept
                gy, *gb = g._submit(
                    f"{family}_grad_w", [g, x, ex, r, cy], [(gy_shape, None), *extra], d
                )
            return (gx, gy if post is None else post(gy), *gb)

        return self._record(out, parents if bias is None else [*parents, bias], grads)
