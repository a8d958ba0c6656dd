"""Op kinds for the layers, losses and smooth functions users bring (conv, pooling,
exp/log/reciprocal, ...). Each is registered here once; :mod:`protocols.suite` merges
:data:`LAYER_KINDS` into every built-in suite.

* ``conv``, ``conv_dx``, ``conv_dw``: Beaver products for a 2-d convolution and its two
  transposes (:mod:`protocols.conv`), followed by the suite's truncation. Cost like matmul:
  1 round + truncation, ``8 (numel x + numel y) (n - 1)`` online bytes per party, dealer
  ``8 numel(out)`` (+ the truncation pair's with 3+ parties).
* ``take``, ``put``: local gather / scatter-add by a public index tensor (slicing, permute,
  cat, padding, pooling windows). Free.

Smooth functions (exp, log, reciprocal, sigmoid, ...) and pooling maxima are compositions
of registered kinds (comparisons, products, public scalings) built by the frontend
(:mod:`training.functional`); they need no kind of their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from .context import PartyContext, Share
from .conv import BILINEAR, bilinear, bilinear_spec, put, take
from .opkind import Builder, Cost, OpKind, Suite
from .params import Params


def _bilinear_kind(name: str) -> Builder:
    def build(suite: Suite, n: int) -> OpKind:
        t = suite.kind("trunc", n)

        async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
            if p.shape is None:
                raise ValueError(f"{name} needs its output shape")
            z = await bilinear(ctx, name, x[0], x[1], tuple(p.shape))
            if t.local is not None:
                return t.local(ctx.rank, [z], p)
            assert t.run is not None
            return await t.run(ctx, [z], p)

        return OpKind(
            name,
            run=run,
            specs=lambda s, out, d, n: [
                bilinear_spec(name, s[0], s[1], out),
                *t.specs([out], out, d, n),
            ],
            cost=lambda s, out, d, n: Cost(1, 8 * (prod(s[0]) + prod(s[1])) * (n - 1)).then(
                t.cost([out], out, d, n)
            ),
            n_in=2,
        )

    return build


LAYER_KINDS: dict[str, Builder | OpKind] = {
    **{name: _bilinear_kind(name) for name in BILINEAR},
    "take": OpKind("take", local=take),
    "put": OpKind("put", local=put),
}
