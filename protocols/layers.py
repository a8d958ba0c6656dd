"""Op kinds for the layers, losses and smooth functions users bring (conv, pooling,
exp/log/reciprocal, ...). Each is registered here once; :mod:`protocols.suite` merges
:data:`LAYER_KINDS` into every built-in suite.

* ``conv``, ``conv_dx``, ``conv_dw``: Beaver products for a 2-d convolution and its two
  transposes (:mod:`protocols.conv`), followed by the suite's truncation. Cost like matmul:
  1 round + truncation, ``8 (numel x + numel y) (n - 1)`` online bytes per party, dealer
  ``8 numel(out)`` (+ the truncation pair's with 3+ parties).
* ``dropout``: ``x * b`` for a mask b of 0/1 bits dealt by the provider as arithmetic
  shares (no party and not the coordinator knows it); 1 Beaver round, 16 bytes per element
  per party (x - a and b - a' opened), dealer 16 bytes per element; the mask share is kept
  for the backward pass.
* ``take``, ``put``: local gather / scatter-add by a public index tensor (slicing, permute,
  cat, padding, pooling windows). Free.

Smooth functions (exp, log, reciprocal, sigmoid, ...) and pooling maxima are compositions
of registered kinds (comparisons, products, public scalings) built by the frontend
(:mod:`training.maxima`, :mod:`training.composite`); they need no kind of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from .beaver import mul, mul_spec
from .context import PartyContext, Share
from .conv import BILINEAR, bilinear, bilinear_spec, put, take
from .material import Item, MaterialSpec
from .opkind import Builder, Cost, OpKind, Suite, truncated_product
from .params import Params


def _bilinear_kind(name: str) -> Builder:
    async def product(ctx: PartyContext, x: Sequence[Share], p: Params) -> Share:
        if p.shape is None:
            raise ValueError(f"{name} needs its output shape")
        return await bilinear(ctx, name, x[0], x[1], tuple(p.shape))

    return truncated_product(
        name,
        product,
        lambda s, out: bilinear_spec(name, s[0], s[1], out),
        lambda s, n: 8 * (prod(s[0]) + prod(s[1])) * (n - 1),
        2,
    )


KEEP_UNITS = 2**20
"""Dropout's keep probability travels as the divisor field: ``d = round(keep * 2**20)``."""


def dropout_mask_spec(shape: tuple[int, ...], keep_units: int, sub: int = 0) -> MaterialSpec:
    """A dropout mask dealt as arithmetic shares of 0/1 bits, 1 with probability
    ``keep_units / 2**20``: the dealer draws a uniform ``u`` and derives ``b = [u < t]``
    (unsigned 20-bit reading). No party and not the coordinator knows the mask."""
    return MaterialSpec(
        "dropout",
        sub,
        (Item("u", shape), Item("b", shape, derived=True)),
        lambda s: {"b": ((s["u"] & (KEEP_UNITS - 1)) < keep_units).long()},
    )


def _dropout(suite: Suite, n: int) -> OpKind:
    """``x * b`` for a dealt mask b (1 Beaver round, no truncation: b is an integer); the
    mask share is kept as the second output for the backward pass."""

    async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
        shape = tuple(x[0].value.shape)
        m = await ctx.material(dropout_mask_spec(shape, p.d))
        bit = Share(m["b"], x[0].depth)
        return [await mul(ctx, x[0], bit, sub=1), bit]

    return OpKind(
        "dropout",
        run=run,
        specs=lambda s, out, d, n: [dropout_mask_spec(s[0], d), mul_spec(s[0], s[0], sub=1)],
        cost=lambda s, out, d, n: Cost(1, 16 * prod(s[0]) * (n - 1)),
        n_out=2,
    )


LAYER_KINDS: dict[str, Builder | OpKind] = {
    "dropout": _dropout,
    **{name: _bilinear_kind(name) for name in BILINEAR},
    "take": OpKind("take", local=take),
    "put": OpKind("put", local=put),
}
