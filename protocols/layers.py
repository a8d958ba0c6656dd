"""Op kinds for the layers, losses and smooth functions users bring (conv, pooling,
exp/log/reciprocal, ...), each declared here once with
:func:`protocols.opkind.register` (protocol, plaintext reference, report examples).

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

from collections.abc import Callable, Sequence
from math import prod

import torch

from .beaver import mul, mul_spec
from .context import PartyContext, Share
from .conv import BILINEAR, bilinear, bilinear_spec, put, take
from .kinds import D, Mat
from .material import Item, MaterialSpec
from .opkind import (
    Builder,
    Cost,
    Example,
    OpKind,
    Reference,
    Shape,
    Suite,
    register,
    truncated_product,
)
from .params import Params, Pub
from .reference import linear


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
"""Dropout's keep probability travels in its own field, :attr:`Params.keep`, as
``round(keep * 2**20)`` (1 to ``2**20``)."""


def dropout_mask_spec(shape: tuple[int, ...], keep_units: int, sub: int = 0) -> MaterialSpec:
    """A dropout mask dealt as arithmetic shares of 0/1 bits, 1 with probability
    ``keep_units / 2**20``: the dealer draws a uniform ``u`` and derives ``b = [u < t]``
    (unsigned 20-bit reading). No party and not the coordinator knows the mask."""
    if not isinstance(keep_units, int) or not 1 <= keep_units <= KEEP_UNITS:
        raise ValueError(
            f"dropout keeps 1 to {KEEP_UNITS} units of 2**-20 (params.keep), got {keep_units!r}"
        )
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
        m = await ctx.material(dropout_mask_spec(shape, p.keep))
        bit = Share(m["b"], x[0].depth)
        return [await mul(ctx, x[0], bit, sub=1), bit]

    return OpKind(
        "dropout",
        run=run,
        specs=lambda s, out, keep, n: [dropout_mask_spec(s[0], keep), mul_spec(s[0], s[0], sub=1)],
        cost=lambda s, out, keep, n: Cost(1, 16 * prod(s[0]) * (n - 1)),
        n_out=2,
        param=lambda p: p.keep,
    )


def _dropout_reference(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """The mask is known to nobody: check the revealed one is 0/1 and ``x * mask``."""
    bit = (got[1].to(torch.float64) > 0.5).to(torch.float64)  # a non-0/1 mask will differ
    return [x[0] * bit, bit]


register(
    "dropout",
    _dropout,
    reference=_dropout_reference,
    examples=lambda v, m: [
        Example("keep 3/4", ((v,),), ((v,), (v,)), Params(keep=3 * KEEP_UNITS // 4))
    ],
)

_CONV: tuple[Shape, Shape, Shape] = ((2, 3, 6, 6), (4, 3, 3, 3), (2, 4, 4, 4))
"""x, w and the result of the measured convolution (stride 1, no padding)."""
_OPERANDS: dict[str, tuple[tuple[Shape, Shape], Shape]] = {
    "conv": ((_CONV[0], _CONV[1]), _CONV[2]),
    "conv_dx": ((_CONV[2], _CONV[1]), _CONV[0]),
    "conv_dw": ((_CONV[0], _CONV[2]), _CONV[1]),
}


def _conv_examples(name: str) -> Callable[[int, Mat], list[Example]]:
    shapes, out = _OPERANDS[name]
    note = f"{_CONV[0]}*{_CONV[1]}"
    return lambda v, m: [Example(note, shapes, (out,), Params(d=D, shape=out))]


def _bilinear_reference(name: str) -> Reference:
    fn = BILINEAR[name]
    return lambda x, p, out, got: [fn(x[0], x[1], out[0]) / p.d]


for _name in BILINEAR:
    register(
        _name,
        _bilinear_kind(_name),
        reference=_bilinear_reference(_name),
        examples=_conv_examples(_name),
        truncating=True,
    )


def _reversed(size: int) -> Pub:
    return Pub.of(torch.arange(size - 1, -1, -1))


register(
    "take",
    OpKind("take", local=take),
    reference=linear(take),
    examples=lambda v, m: [Example("reversed", ((v,),), ((v,),), Params(pub=_reversed(v)))],
)
register(
    "put",
    OpKind("put", local=put),
    reference=linear(put),
    examples=lambda v, m: [
        Example("reversed", ((v,),), ((v,),), Params(pub=_reversed(v), shape=(v,)))
    ],
)
