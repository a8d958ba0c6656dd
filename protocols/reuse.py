"""A layer's Beaver product with its backward pass dealt ahead: the backward opens only the
gradient, and reuses the forward's openings.

A layer computes ``z = f(x, y)`` for a bilinear ``f`` (a linear layer: ``x @ wt``; a
convolution: ``conv(x, w)``) and its backward needs ``gx(g, y)`` and ``gy(x, g)``, both
bilinear too (``g @ wt^T`` and ``g^T @ x``; ``conv_dx``, ``conv_dw``). As fresh Beaver
products the backward would open x and y again, and g twice. But the forward already
opened ``ex = x - a`` and ``ey = y - b`` of the *same* values, so with one fresh mask r for
g, dealt with the forward while the dealer still knows a and b:

* dealt, shared: ``c = f(a, b)``, ``cy = gy(a, r)`` and (if x needs its gradient)
  ``cx = gx(r, b)``; r is a PRG draw like a and b;
* forward: open ``ex``, ``ey``; ``z_i = c_i + f(ex, b_i) + f(x_i, ey)``;
* backward: open ``delta = g - r`` once; ``gy_i = cy_i + gy(ex, r_i) + gy(x_i, delta)``
  and ``gx_i = cx_i + gx(r_i, ey) + gx(delta, y_i)``.

Sums: ``gy(a, r) + gy(ex, r) + gy(x, delta) = gy(x, r) + gy(x, delta) = gy(x, g)`` and
``gx(r, b) + gx(r, ey) + gx(delta, y) = gx(g, y)``: two products per result and party, as
a fresh Beaver product. Security: x and y are never masked again (the parties keep the
``ex``, ``ey`` they opened), g is masked once by a fresh uniform r, and ``cy``, ``cx`` are
shares of dealt products like any triple's ``c``. What a reused mask must never do is mask
a *different* value (``x' - a`` would open ``x' - x``); nothing here masks anything with a
or b again. ``tests/test_reuse.py`` checks the views, and that two realistic broken
variants are caught: the next step's weight masked with the old b, and g masked with a.

Kinds, per family (``linear``: x (m, k), y = wt (k, n), the weight's gradient as
``g^T @ x`` (n, k), nn.Linear's; ``linear_t``: the same with the weight operand w = y^T
(n, k) as nn.Linear holds it, transposed on entry, so a layer needs no transpose command;
``conv``: x (N, C, H, W), y = w, out in ``params.shape``, the geometry of
:mod:`protocols.conv`), with N the element counts:

================== ======= ================================= ==============================
kind               rounds  online bytes sent by each party   dealer bytes (2 parties)
================== ======= ================================= ==============================
``<f>_keep``       1       8 (N_x + N_y) (n-1)               8 (N_z + N_y + N_x)
``<f>_keep_w``     1       8 (N_x + N_y) (n-1)               8 (N_z + N_y)
``<f>_grad``       1       8 N_z (n-1)                       0
``<f>_grad_w``     1       8 N_z (n-1)                       0
================== ======= ================================= ==============================

(+ the suite's truncation of each result: local with 2 parties, one dealer pair over all
of an op's results with 3+.) Against three Beaver products (forward, ``gx``, ``gy``) the
same dealer bytes, and ``8 (N_z + N_x + N_y) (n-1)`` fewer online bytes per party and
step; ``8 N_x (n-1)`` when only the weight needs its gradient (a first layer: ``_keep_w``
leaves ``cx`` out). ``<f>_keep`` outputs ``z, ex, ey, r, cy(, cx)``: the opened
differences are the same at every party, the others shares.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from math import prod

import msgspec
import torch

from .beaver import masked
from .context import PartyContext, Share
from .conv import conv_dw_ring, conv_dx_ring, conv_ring, geometry
from .material import Item, MaterialSpec
from .opkind import Builder, Cost, Example, OpKind, Reference, Shape, Suite, register
from .params import Params
from .sharing import open_ring

Map = Callable[[torch.Tensor, torch.Tensor, Shape], torch.Tensor]
"""``f(p, q, out_shape)``: a bilinear map on ring tensors."""
Fused = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, Shape], torch.Tensor
]
"""``sum3(c, p1, q1, p2, q2, out) = c + f(p1, q1) + f(p2, q2)``."""


def _summed(f: Map) -> Fused:
    return lambda c, p1, q1, p2, q2, out: c + f(p1, q1, out) + f(p2, q2, out)


def _addmm2(
    c: torch.Tensor, p1: torch.Tensor, q1: torch.Tensor, p2: torch.Tensor, q2: torch.Tensor
) -> torch.Tensor:
    """``c + p1 @ q1 + p2 @ q2`` as two fused GEMMs (measured 10-17% faster than apart)."""
    return torch.addmm(c, p1, q1).addmm_(p2, q2)


@dataclass(frozen=True, slots=True)
class Family:
    """A layer's bilinear forward and its two backward maps (see module doc)."""

    name: str
    f: Map
    gx: Map
    """``gx(g, y, x_shape)``: x's gradient."""
    gy: Map
    """``gy(x, g, grad_shape)``: the weight's gradient (nn.Linear's orientation)."""
    gy_shape: Callable[[Shape, Shape], Shape]
    """The weight gradient's shape from x's and y's."""
    out: Callable[[Shape, Shape, Params], Shape]
    """The forward result's shape from x's, y's and the params."""
    fz: Fused
    """``fz(c, p1, q1, p2, q2, out) = c + f(p1, q1) + f(p2, q2)``, fused where it can be;
    ``fx`` and ``fy`` the same for ``gx`` and ``gy``."""
    fx: Fused
    fy: Fused


def _linear_out(x: Shape, y: Shape, p: Params) -> Shape:
    if len(x) != 2 or len(y) != 2 or x[1] != y[0]:
        raise ValueError(f"linear_keep: x {x} @ wt {y} is not an m x k @ k x n product")
    return (x[0], y[1])


def _conv_out(x: Shape, y: Shape, p: Params) -> Shape:
    if p.shape is None:
        raise ValueError("conv_keep needs its output shape (params.shape)")
    geometry(x, y, tuple(p.shape))  # a ShapeError unless x * y gives it exactly
    return tuple(p.shape)


FAMILIES = {
    fam.name: fam
    for fam in (
        Family(
            "linear",
            lambda x, y, out: x @ y,
            lambda g, y, out: g @ y.t(),
            lambda x, g, out: g.t() @ x,
            lambda x, y: (y[1], y[0]),
            _linear_out,
            lambda c, x1, y1, x2, y2, out: _addmm2(c, x1, y1, x2, y2),
            lambda c, g1, y1, g2, y2, out: _addmm2(c, g1, y1.t(), g2, y2.t()),
            lambda c, x1, g1, x2, g2, out: _addmm2(c, g1.t(), x1, g2.t(), x2),
        ),
        Family(
            "conv",
            conv_ring,
            conv_dx_ring,
            conv_dw_ring,
            lambda x, y: y,
            _conv_out,
            _summed(conv_ring),
            _summed(conv_dx_ring),
            _summed(conv_dw_ring),
        ),
    )
}


@lru_cache(maxsize=256)
def keep_spec(family: str, x: Shape, y: Shape, out: Shape, with_input_grad: bool) -> MaterialSpec:
    """The forward triple ``(a, b, c = f(a, b))`` and the backward's ``r, cy(, cx)``."""
    fam = FAMILIES[family]
    if fam.out(x, y, Params(shape=out)) != out:
        raise ValueError(f"{family}_keep: {x} and {y} do not give {out}")
    gys = fam.gy_shape(x, y)
    items = [Item("a", x), Item("b", y), Item("r", out)]
    items += [Item("c", out, derived=True), Item("cy", gys, derived=True)]
    if with_input_grad:
        items.append(Item("cx", x, derived=True))

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        a, b, r = s["a"], s["b"], s["r"]
        got = {"c": fam.f(a, b, out), "cy": fam.gy(a, r, gys)}
        if with_input_grad:
            got["cx"] = fam.gx(r, b, x)
        return got

    return MaterialSpec(f"{family}_keep", 0, tuple(items), derive)


def _truncation(suite: Suite, n: int, shapes: Sequence[Shape], d: int) -> list[MaterialSpec]:
    """The suite's truncation specs for the results of ``shapes``, truncated together as
    one flat vector (element-wise, so the same cost as one truncation each)."""
    flat = (sum(prod(s) for s in shapes),)
    return suite.kind("trunc", n).specs([flat], flat, d, n)


async def _truncate(ctx: PartyContext, suite: Suite, zs: Sequence[Share], p: Params) -> list[Share]:
    """The suite's truncation of each result: 2 parties locally, one by one; otherwise
    all of them in one interactive truncation of their concatenation."""
    t = suite.kind("trunc", ctx.n_parties)
    if t.local is not None:
        return [t.local(ctx.rank, [z], p)[0] for z in zs]
    assert t.run is not None
    depth = max(z.depth for z in zs)
    flat = torch.cat([z.value.reshape(-1) for z in zs])
    (done,) = await t.run(ctx, [Share(flat, depth)], p)
    parts = done.value.split([z.value.numel() for z in zs])
    return [Share(v.view(z.value.shape), done.depth) for v, z in zip(parts, zs, strict=True)]


async def keep_product(
    ctx: PartyContext, family: str, x: Share, y: Share, out: Shape, with_input_grad: bool
) -> list[Share]:
    """``f(x, y)`` (not truncated) and what the backward needs: ``ex, ey, r, cy(, cx)``."""
    fam = FAMILIES[family]
    xs, ys = tuple(x.value.shape), tuple(y.value.shape)
    t = await ctx.material(keep_spec(family, xs, ys, out, with_input_grad))
    (ex, ey), depth = await open_ring(
        ctx, "keep", [masked(x, t["a"]), masked(y, t["b"])], max(x.depth, y.depth)
    )
    z = fam.fz(t["c"], ex, t["b"], x.value, ey, out)  # as any Beaver product
    kept = [Share(ex, depth), Share(ey, depth), Share(t["r"], 0), Share(t["cy"], 0)]
    return [Share(z, depth), *kept, *([Share(t["cx"], 0)] if with_input_grad else [])]


async def grad_products(
    ctx: PartyContext,
    family: str,
    g: Share,
    x: Share,
    ex: Share,
    r: Share,
    cy: Share,
    input_grad: tuple[Share, Share, Share] | None = None,
) -> list[Share]:
    """``gy(x, g)`` and (with ``input_grad = (y, ey, cx)``) ``gx(g, y)``, not truncated,
    from the forward's kept tensors: one opening of ``g - r``."""
    fam = FAMILIES[family]
    (delta,), depth = await open_ring(ctx, "grad", [g.value - r.value], max(g.depth, x.depth))
    gy = fam.fy(cy.value, ex.value, r.value, x.value, delta, tuple(cy.value.shape))
    if input_grad is None:
        return [Share(gy, depth)]
    y, ey, cx = input_grad
    gx = fam.fx(cx.value, r.value, ey.value, delta, y.value, tuple(x.value.shape))
    return [Share(gx, depth), Share(gy, depth)]


def _bias(name: str, s: Sequence[Shape], out: Shape) -> list[MaterialSpec]:
    """No material; ValueError (before anything is queued) for a bias that is not (n,)."""
    if len(s) == 3 and tuple(s[2]) != tuple(out)[-1:]:
        raise ValueError(f"{name}: a bias of shape {tuple(s[2])} for a result {tuple(out)}")
    return []


def _t(y: Share) -> Share:
    """A ``_t`` kind's weight operand (n, k) as the family's maps take it: its transpose, a
    view (the opening's ``y - b`` makes the contiguous copy it sends anyway)."""
    return Share(y.value.t(), y.depth)


def _keep_kind(family: str, with_input_grad: bool, transposed: bool = False) -> Builder:
    """``<family>_keep(_w)``; ``transposed``: ``linear_t_keep(_w)``, the weight operand as
    nn.Linear holds it (n, k), transposed on entry (the same ring values and material as
    ``linear_keep`` on its transpose, one transpose command fewer per layer), and an
    optional third operand, the layer's bias (n,), added to the truncated result (local:
    one add command fewer per layer)."""
    fam = FAMILIES[family]
    base = f"{family}_t" if transposed else family
    name = f"{base}_keep" if with_input_grad else f"{base}_keep_w"

    def ys(s: Sequence[Shape]) -> Shape:
        return tuple(s[1])[::-1] if transposed else tuple(s[1])

    def build(suite: Suite, n: int) -> OpKind:
        async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
            y = _t(x[1]) if transposed else x[1]
            shapes = tuple(x[0].value.shape), tuple(y.value.shape)
            out = await keep_product(ctx, family, x[0], y, fam.out(*shapes, p), with_input_grad)
            (z,) = await _truncate(ctx, suite, out[:1], p)
            if len(x) == 3:  # the bias: every party adds its share
                b = x[2]
                _bias(name, [*shapes, tuple(b.value.shape)], tuple(z.value.shape))
                z = Share(z.value + b.value, max(z.depth, b.depth))
            return [z, *out[1:]]

        def cost(s: Sequence[Shape], out: Shape, d: int, n: int) -> Cost:
            trunc = suite.kind("trunc", n).cost([out], out, d, n)
            return Cost(1, 8 * (prod(s[0]) + prod(s[1])) * (n - 1)).then(trunc)

        return OpKind(
            name,
            run=run,
            specs=lambda s, out, d, n: [
                keep_spec(family, s[0], ys(s), out, with_input_grad),
                *_truncation(suite, n, [out], d),
                *_bias(name, s, out),
            ],
            cost=cost,
            n_in=2,
            n_out=6 if with_input_grad else 5,
            optional_in=1 if transposed else 0,
        )

    return build


def _grad_kind(family: str, with_input_grad: bool, transposed: bool = False) -> Builder:
    """Inputs ``g, x, (y,) ex, (ey,) r, cy(, cx)``; outputs ``(grad_x,) grad_y``
    (``transposed``: ``linear_t_grad(_w)``, y as ``linear_t_keep`` takes it, ey as it gave it)."""
    fam = FAMILIES[family]
    base = f"{family}_t" if transposed else family
    name = f"{base}_grad" if with_input_grad else f"{base}_grad_w"

    def out_shapes(s: Sequence[Shape]) -> list[Shape]:
        """The results' shapes, once the operands' are checked against each other."""
        if len(s) != (8 if with_input_grad else 5):
            raise ValueError(f"{name}: {len(s)} operands, expected {8 if with_input_grad else 5}")
        g, x, cy = s[0], s[1], s[-2 if with_input_grad else -1]
        y = s[2] if with_input_grad else None
        if y is not None and transposed:
            y = tuple(y)[::-1]  # the family's y; the operand is its transpose
        yo = [tuple(s[2])] if y else []
        want = [g, x, *yo, x, *([y] if y else []), g, cy, *([x] if y else [])]
        if list(s) != want or (y is not None and fam.gy_shape(x, y) != cy):
            raise ValueError(f"{name}: operands {list(s)} do not agree: expected {want}")
        return [x, cy] if with_input_grad else [cy]

    def build(suite: Suite, n: int) -> OpKind:
        async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
            if with_input_grad:  # g, x, y, ex, ey, r, cy, cx
                y = _t(x[2]) if transposed else x[2]
                z = await grad_products(ctx, family, x[0], x[1], x[3], x[5], x[6], (y, x[4], x[7]))
            else:  # g, x, ex, r, cy
                z = await grad_products(ctx, family, x[0], x[1], x[2], x[3], x[4])
            out = await _truncate(ctx, suite, z, p)
            if p.dims is not None:  # the layer's bias gradient: g summed (no sum command)
                out.append(Share(x[0].value.sum(dim=tuple(p.dims)), x[0].depth))
            return out

        def cost(s: Sequence[Shape], out: Shape, d: int, n: int) -> Cost:
            flat = (sum(prod(o) for o in out_shapes(s)),)
            trunc = suite.kind("trunc", n).cost([flat], flat, d, n)
            return Cost(1, 8 * prod(s[0]) * (n - 1)).then(trunc)

        return OpKind(
            name,
            run=run,
            specs=lambda s, out, d, n: _truncation(suite, n, out_shapes(s), d),
            cost=cost,
            n_in=8 if with_input_grad else 5,
            n_out=2 if with_input_grad else 1,
            optional_out=1,
        )

    return build


def _reference(family: str, backward: bool, transposed: bool = False) -> Reference:
    """The forward's product (its kept tensors are random, masked differences and dealt
    shares: the backward products that use them are checked instead), or the gradients
    (``transposed``: the weight operand as ``linear_t`` takes it)."""
    fam = FAMILIES[family]

    def ref(
        x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
    ) -> list[torch.Tensor]:
        if not backward:
            y = x[1].t() if transposed else x[1]
            z = fam.f(x[0], y, out[0]) / p.d
            return [z + x[2] if len(x) == 3 else z, *got[1:]]
        bias = [x[0].sum(dim=tuple(p.dims))] if p.dims is not None else []
        gy = fam.gy(x[1], x[0], out[len(out) - len(bias) - 1]) / p.d
        if len(out) == 1 + len(bias):
            return [gy, *bias]
        y = x[2].t() if transposed else x[2]
        return [fam.gx(x[0], y, out[0]) / p.d, gy, *bias]

    return ref


_EXAMPLE: dict[str, tuple[Shape, Shape, Shape, Params]] = {
    "linear": ((6, 5), (5, 4), (6, 4), Params(d=1000)),
    "conv": ((2, 3, 6, 6), (4, 3, 3, 3), (2, 4, 4, 4), Params(d=1000, shape=(2, 4, 4, 4))),
}
"""Per family: x, y, the result and the params of the measured op."""


def _examples(
    family: str, kind: str, transposed: bool = False
) -> Callable[[int, tuple[int, int, int]], list[Example]]:
    def examples(size: int, mat: tuple[int, int, int]) -> list[Example]:
        x, y, z, p = _EXAMPLE[family]
        if family == "linear":
            (m, k, n) = mat
            x, y, z = (m, k), (k, n), (m, n)
        gy = FAMILIES[family].gy_shape(x, y)
        w = y[::-1] if transposed else y  # the weight operand; y is what is masked and kept
        if kind in ("keep", "keep_w"):
            kept = (z, x, y, z, gy, x) if kind == "keep" else (z, x, y, z, gy)
            biased = [Example("with a bias", (x, w, z[-1:]), kept, p)] if transposed else []
            return [Example("", (x, w), kept, p), *biased]
        # the bias gradient too: g summed over every dimension but the channels'
        dims, b = ((0,), z[-1:]) if family == "linear" else ((0, 2, 3), z[1:2])
        summed = msgspec.structs.replace(p, dims=dims)
        if kind == "grad":
            ins: tuple[Shape, ...] = (z, x, w, x, y, z, gy, x)
            return [Example("", ins, (x, gy), p), Example("with a bias", ins, (x, gy, b), summed)]
        ins = (z, x, x, z, gy)
        return [Example("", ins, (gy,), p), Example("with a bias", ins, (gy, b), summed)]

    return examples


for _family, _transposed in (*((f, False) for f in FAMILIES), ("linear", True)):
    for _kind, _builder, _ref in (
        ("keep", _keep_kind(_family, True, _transposed), _reference(_family, False, _transposed)),
        (
            "keep_w",
            _keep_kind(_family, False, _transposed),
            _reference(_family, False, _transposed),
        ),
        ("grad", _grad_kind(_family, True, _transposed), _reference(_family, True, _transposed)),
        ("grad_w", _grad_kind(_family, False, _transposed), _reference(_family, True, _transposed)),
    ):
        register(
            f"{_family}{'_t' if _transposed else ''}_{_kind}",
            _builder,
            reference=_ref,
            examples=_examples(_family, _kind, _transposed),
            truncating=True,
        )
