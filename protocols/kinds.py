"""The built-in arithmetic and comparison op kinds, each declared once with
:func:`protocols.opkind.register`: its protocol (a builder), its plaintext reference, the
examples the communication report measures, and whether it truncates. The layer kinds
(convolutions, dropout, gathers) are declared the same way in :mod:`protocols.layers`.

* local linear kinds (``add`` ... ``expand``, ``slice``: basic indexing as a strided
  view): every party applies the op to its share
  (party 0 alone adds a public value). Free.
* ``trunc``: SecureML local truncation with 2 parties (0 rounds; fails with probability
  ``|x| / 2**64`` per element), the ABY3 truncation pair with 3+ (1 round).
* public products (``scale``, ``matmul_pub``): local, then the suite's truncation.
* Beaver products (``mul``, ``square``, ``matmul``): 1 round, then the suite's truncation.
* comparisons (``drelu``, ``relu``): the bit-sliced carry tree (7 rounds, any number of
  parties); :mod:`protocols.suite` swaps in the FSS comparison for 2 parties.
* ``abs``: the suite's ReLU, then ``2 relu(x) - x`` locally, with the bit kept for the
  backward pass (whatever comparison the suite has: one op instead of three commands).
* ``digits``: the one-hot indicators of a shared integer's digits from a dealer one-hot
  and one small opening per digit (:mod:`protocols.lookup`; exp's powers of two).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from math import prod

import torch

from . import local as L
from .beaver import matmul, matmul_spec, mul, mul_spec, square, square_spec
from .compare import DRELU_ROUNDS, drelu, drelu_online_bytes, drelu_spec, relu
from .context import PartyContext, Share
from .lookup import build_digits, digits_examples, digits_reference
from .material import MaterialSpec
from .opkind import (
    FREE,
    Builder,
    Cost,
    Example,
    InteractiveRun,
    LocalRun,
    OpKind,
    Shape,
    Suite,
    register,
    truncated_product,
)
from .params import Params, Pub
from .reference import linear
from .truncate import trunc_spec, truncate_local, truncate_pair

D = 1000
"""The examples' truncation divisor (the default encoding: base 10, precision 3)."""

Mat = tuple[int, int, int]


def _numel(s: Shape) -> int:
    return prod(s)


def example_pub(shape: Shape, integral: bool = False) -> Pub:
    """A fixed public operand for the examples (deterministic, so reports compare)."""
    hi = 5 if integral else 2000
    return Pub.of(torch.randint(-hi, hi, shape, generator=torch.Generator().manual_seed(3)))


def unary(note: str = "", params: Params | None = None) -> Callable[[int, Mat], list[Example]]:
    """Examples of an elementwise kind: one vector of ``size`` elements in, one out."""
    return lambda size, mat: [Example(note, ((size,),), ((size,),), params)]


# -- local linear kinds ------------------------------------------------------------------------


def _local(
    name: str, fn: LocalRun, examples: Callable[[int, Mat], list[Example]], n_in: int = 1
) -> None:
    register(
        name,
        lambda suite, n: OpKind(name, local=fn, n_in=n_in),
        reference=linear(fn),
        examples=examples,
    )


def _binary(size: int, mat: Mat) -> list[Example]:
    return [Example("", ((size,), (size,)), ((size,),))]


_local("add", L.add, _binary, n_in=2)
_local("sub", L.sub, _binary, n_in=2)
_local("neg", L.neg, unary())
_local("add_pub", L.add_pub, lambda v, m: unary("", Params(pub=example_pub((v,))))(v, m))
_local(
    "mul_pub", L.mul_pub, lambda v, m: unary("integer", Params(pub=example_pub((v,), True)))(v, m)
)
_local("sum", L.sum_, lambda v, m: [Example("all", ((v,),), ((),), Params())])
_local(
    "transpose",
    L.transpose,
    lambda v, m: [Example("", ((m[0], m[1]),), ((m[1], m[0]),), Params(d0=0, d1=1))],
)
_local(
    "slice",
    L.strided,
    lambda v, m: [Example("every other", ((2 * v,),), ((v,),), Params(dims=(1, 2, v), shape=(v,)))],
)
_local("reshape", L.reshape, lambda v, m: [Example("", ((v,),), ((v, 1),), Params(shape=(v, 1)))])
_local("expand", L.expand, lambda v, m: [Example("", ((1, v),), ((2, v),), Params(shape=(2, v)))])


# -- truncation and products ----------------------------------------------------------------------


def _trunc(suite: Suite, n: int) -> OpKind:
    """SecureML local truncation with 2 parties, the ABY3 truncation pair with 3+."""
    if n == 2:
        return OpKind("trunc", local=lambda rank, x, p: [truncate_local(x[0], p.d, rank)])

    async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
        return [await truncate_pair(ctx, x[0], p.d, sub=1)]

    return OpKind(
        "trunc",
        run=run,
        specs=lambda s, out, d, n: [trunc_spec(out, d, sub=1)] if d != 1 else [],
        cost=lambda s, out, d, n: Cost(1, 8 * _numel(out) * (n - 1)) if d != 1 else FREE,
    )


register(
    "trunc",
    _trunc,
    reference=lambda x, p, out, got: [x[0] / p.d],
    examples=unary("", Params(d=D)),
    truncating=True,
)


def _public_then_trunc(name: str, product: Callable[[Sequence[Share], Params], Share]) -> Builder:
    """A local product with a public operand, then the suite's truncation: local when the
    truncation is."""

    def build(suite: Suite, n: int) -> OpKind:
        t = suite.kind("trunc", n)
        if t.local is not None:
            fn = t.local
            return OpKind(name, local=lambda rank, x, p: fn(rank, [product(x, p)], p))
        assert t.run is not None
        tr = t.run

        async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
            return await tr(ctx, [product(x, p)], p)

        return OpKind(name, run=run, specs=t.specs, cost=t.cost)

    return build


register(
    "scale",
    _public_then_trunc("scale", L.public_product),
    reference=lambda x, p, out, got: [x[0] * p.public().to(torch.float64) / p.d],
    examples=lambda v, m: unary("", Params(pub=example_pub((v,)), d=D))(v, m),
    truncating=True,
)


def _sub_scaled(suite: Suite, n: int) -> OpKind:
    """``x_i - trunc(y_i pub)`` for every pair ``(x_i, y_i)`` of the operands (grouped):
    an optimiser's update ``p - lr g`` of every parameter of a group as one op, the same
    ring values as ``scale`` then ``sub`` per parameter. 2 parties: local; 3+: one
    truncation of all the products together (one dealer pair, one round)."""
    t = suite.kind("trunc", n)
    if t.local is not None:
        fn = t.local

        def local(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
            out = []
            for i in range(0, len(x), 2):
                (z,) = fn(rank, [L.public_product(x[i + 1 : i + 2], p)], p)
                out.append(Share(x[i].value - z.value, max(x[i].depth, z.depth)))
            return out

        return OpKind("sub_scaled", local=local, n_in=2, grouped=True)
    tr = t.run
    assert tr is not None

    def flat(s: Sequence[Shape]) -> Shape:
        return (sum(prod(y) for y in s[1::2]),)

    async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
        ys = [L.public_product([y], p).value.reshape(-1) for y in x[1::2]]
        depth = max(y.depth for y in x[1::2])
        (z,) = await tr(ctx, [Share(torch.cat(ys), depth)], p)
        parts = z.value.split([y.numel() for y in ys])
        return [
            Share(xi.value - part.view(xi.value.shape), max(xi.depth, z.depth))
            for xi, part in zip(x[0::2], parts, strict=True)
        ]

    return OpKind(
        "sub_scaled",
        run=run,
        specs=lambda s, out, d, n: t.specs([flat(s)], flat(s), d, n),
        cost=lambda s, out, d, n: t.cost([flat(s)], flat(s), d, n),
        n_in=2,
        grouped=True,
    )


def _sub_scaled_reference(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    f = p.public().to(torch.float64) / p.d
    return [x[i] - x[i + 1] * f for i in range(0, len(x), 2)]


register(
    "sub_scaled",
    _sub_scaled,
    reference=_sub_scaled_reference,
    examples=lambda v, m: [
        Example("", ((v,), (v,)), ((v,),), Params(pub=example_pub((v,)), d=D)),
        Example(
            "2 tensors",
            ((v,), (v,), (m[0], m[1]), (m[0], m[1])),
            ((v,), (m[0], m[1])),
            Params(pub=example_pub(()), d=D),
        ),
    ],
    truncating=True,
)


def _public_matmul(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    pub = p.public().to(torch.float64)
    return [(pub @ x[0] if p.left else x[0] @ pub) / p.d]


register(
    "matmul_pub",
    _public_then_trunc("matmul_pub", L.public_matmul),
    reference=_public_matmul,
    examples=lambda v, m: [
        Example("", ((m[0], m[1]),), ((m[0], m[2]),), Params(pub=example_pub(m[1:]), d=D))
    ],
    truncating=True,
)


def _beaver(
    name: str,
    product: Callable[[PartyContext, Sequence[Share]], Awaitable[Share]],
    spec: Callable[[Sequence[Shape]], MaterialSpec],
    n_in: int,
) -> Builder:
    """A Beaver product (1 round: each operand's masked difference opened, 8 B per element
    to each peer) followed by the suite's truncation."""
    return truncated_product(
        name,
        lambda ctx, x, p: product(ctx, x),
        lambda s, out: spec(s),
        lambda s, n: 8 * sum(_numel(t) for t in s[:n_in]) * (n - 1),
        n_in,
    )


async def _mul(ctx: PartyContext, x: Sequence[Share]) -> Share:
    return await mul(ctx, x[0], x[1])


async def _square(ctx: PartyContext, x: Sequence[Share]) -> Share:
    return await square(ctx, x[0])


async def _matmul(ctx: PartyContext, x: Sequence[Share]) -> Share:
    return await matmul(ctx, x[0], x[1])


register(
    "mul",
    _beaver("mul", _mul, lambda s: mul_spec(s[0], s[1]), 2),
    reference=lambda x, p, out, got: [x[0] * x[1] / p.d],
    examples=lambda v, m: [
        Example("", ((v,), (v,)), ((v,),), Params(d=D)),
        Example("x*bit, d=1", ((v,), (v,)), ((v,),)),
    ],
    truncating=True,
)
register(
    "square",
    _beaver("square", _square, lambda s: square_spec(s[0]), 1),
    reference=lambda x, p, out, got: [x[0] * x[0] / p.d],
    examples=unary("", Params(d=D)),
    truncating=True,
)
register(
    "matmul",
    _beaver("matmul", _matmul, lambda s: matmul_spec(s[0], s[1]), 2),
    reference=lambda x, p, out, got: [x[0] @ x[1] / p.d],
    examples=lambda v, m: [Example("", ((m[0], m[1]), (m[1], m[2])), ((m[0], m[2]),), Params(d=D))],
    truncating=True,
)


# -- comparisons -------------------------------------------------------------------------------


async def _drelu(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
    return [await drelu(ctx, x[0])]


async def _relu(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
    return list(await relu(ctx, x[0]))


def _comparison(name: str, fn: InteractiveRun, with_relu: bool) -> Builder:
    return lambda suite, n: OpKind(
        name,
        run=fn,
        specs=lambda s, out, d, n: [drelu_spec(s[0], with_relu=with_relu)],
        cost=lambda s, out, d, n: Cost(
            DRELU_ROUNDS, drelu_online_bytes(_numel(s[0]), n, with_relu=with_relu)
        ),
        n_out=2 if with_relu else 1,
    )


def _sign_bit(x: torch.Tensor) -> torch.Tensor:
    return (x >= 0).to(torch.float64)


def _relu_reference(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    return [x[0] * _sign_bit(x[0]), _sign_bit(x[0])]


def _with_bit(size: int, mat: Mat) -> list[Example]:
    return [Example("", ((size,),), ((size,), (size,)))]


register(
    "drelu",
    _comparison("drelu", _drelu, False),
    reference=lambda x, p, out, got: [_sign_bit(x[0])],
    examples=unary(),
)
register("relu", _comparison("relu", _relu, True), reference=_relu_reference, examples=_with_bit)


def _abs(suite: Suite, n: int) -> OpKind:
    """The suite's ReLU (whatever comparison it uses), then ``2 relu(x) - x`` locally; the
    comparison bit is the second output (the backward pass's sign)."""
    r = suite.kind("relu", n)
    relu_run = r.run
    assert relu_run is not None

    async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
        y, bit = await relu_run(ctx, x, p)
        return [Share(2 * y.value - x[0].value, y.depth), bit]

    return OpKind("abs", run=run, specs=r.specs, cost=r.cost, n_out=2)


register(
    "abs",
    _abs,
    reference=lambda x, p, out, got: [x[0].abs(), _sign_bit(x[0])],
    examples=_with_bit,
)


# -- digit lookups -----------------------------------------------------------------------------

register(
    "digits",
    build_digits,
    reference=digits_reference,
    examples=digits_examples,
)
