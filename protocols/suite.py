"""The protocol suite: every op kind registered once, chosen by name.

An :class:`OpKind` is everything the runtime needs to know about one kind of operation:

* how a party runs it: ``local(rank, shares, params)`` or ``run(ctx, shares, params)``
  (a coroutine over a :class:`~protocols.context.PartyContext`);
* the dealer material it needs, from public facts alone: ``specs(in_shapes, out_shape,
  divisor, n_parties)`` (the coordinator decides from it whether to ask the dealer, and the
  dealer builds the same specs);
* its closed-form cost: ``cost(in_shapes, out_shape, divisor, n_parties)`` gives online
  rounds and the online bytes each party sends; the dealer bytes follow from the specs.

A :class:`Suite` maps names to *builders* ``(suite, n_parties) -> OpKind``, so a kind can
depend on the number of parties and on other kinds of the same suite: the products
(``mul``, ``matmul``, ``scale``...) truncate with whatever the suite's ``trunc`` is, and
the choice "with 2 parties truncation is local" is made once, in ``trunc``'s builder.
``Cluster.start(..., protocols="fss")`` hands a suite to the parties and the provider; a
test swaps one entry with :meth:`Suite.replace`, never by patching a module.

Built-in suites (:data:`SUITES`): ``"carry"`` (Beaver products, SecureML local
truncation for 2 parties and the ABY3 truncation pair for 3+, the carry-tree comparison),
``"fss"`` (2 parties: the function-secret-sharing comparison for every size), ``"default"``
(FSS up to :data:`FSS_MAX_NUMEL` elements per op, the carry tree above) and
``"fss-exact"`` (FSS comparison and exact FSS truncation).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from math import prod

from . import fss
from . import local as L
from .beaver import matmul, matmul_spec, mul, mul_spec, square, square_spec
from .compare import DRELU_ROUNDS, drelu, drelu_online_bytes, drelu_spec, relu
from .context import PartyContext, Share
from .layers import LAYER_KINDS
from .material import MaterialSpec
from .opkind import (
    FREE,
    Builder,
    Cost,
    InteractiveRun,
    LocalRun,
    OpKind,
    Shape,
    Suite,
    _constant,
    truncated_product,
)
from .params import Params
from .truncate import trunc_spec, truncate_local, truncate_pair

__all__ = [
    "DEFAULT",
    "DEFAULT_KINDS",
    "SUITES",
    "Cost",
    "OpKind",
    "Suite",
    "get_suite",
    "register_suite",
]


# -- registrations -------------------------------------------------------------------------


def _numel(s: Shape) -> int:
    return prod(s)


def _local(name: str, fn: LocalRun, n_in: int = 1) -> Builder:
    return lambda suite, n: OpKind(name, local=fn, n_in=n_in)


def _trunc_default(suite: Suite, n: int) -> OpKind:
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


def _truncated_product(
    name: str,
    product: Callable[[PartyContext, Sequence[Share]], Awaitable[Share]],
    spec: Callable[[Sequence[Shape]], MaterialSpec],
    online: Callable[[Sequence[Shape], int], int],
    n_in: int,
) -> Builder:
    """An interactive Beaver product followed by the suite's truncation."""
    return truncated_product(
        name, lambda ctx, x, p: product(ctx, x), lambda s, out: spec(s), online, n_in
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


async def _mul(ctx: PartyContext, x: Sequence[Share]) -> Share:
    return await mul(ctx, x[0], x[1])


async def _square(ctx: PartyContext, x: Sequence[Share]) -> Share:
    return await square(ctx, x[0])


async def _matmul(ctx: PartyContext, x: Sequence[Share]) -> Share:
    return await matmul(ctx, x[0], x[1])


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


DEFAULT_KINDS: dict[str, Builder | OpKind] = {
    "add": _local("add", L.add, 2),
    "sub": _local("sub", L.sub, 2),
    "neg": _local("neg", L.neg),
    "add_pub": _local("add_pub", L.add_pub),
    "mul_pub": _local("mul_pub", L.mul_pub),
    "sum": _local("sum", L.sum_),
    "transpose": _local("transpose", L.transpose),
    "reshape": _local("reshape", L.reshape),
    "expand": _local("expand", L.expand),
    "trunc": _trunc_default,
    "scale": _public_then_trunc("scale", L.public_product),
    "matmul_pub": _public_then_trunc("matmul_pub", L.public_matmul),
    "mul": _truncated_product(
        "mul",
        _mul,
        lambda s: mul_spec(s[0], s[1]),
        lambda s, n: 8 * (_numel(s[0]) + _numel(s[1])) * (n - 1),
        2,
    ),
    "square": _truncated_product(
        "square", _square, lambda s: square_spec(s[0]), lambda s, n: 8 * _numel(s[0]) * (n - 1), 1
    ),
    "matmul": _truncated_product(
        "matmul",
        _matmul,
        lambda s: matmul_spec(s[0], s[1]),
        lambda s, n: 8 * (_numel(s[0]) + _numel(s[1])) * (n - 1),
        2,
    ),
    "drelu": _comparison("drelu", _drelu, False),
    "relu": _comparison("relu", _relu, True),
    **LAYER_KINDS,
}


def _two_party(name: str, two: Builder) -> Builder:
    """``two`` with 2 parties; the carry-tree suite's entry with 3 or more (FSS keys are
    2-party objects)."""
    fallback = CARRY_KINDS[name]

    def build(suite: Suite, n: int) -> OpKind:
        if n == 2:
            return two(suite, n)
        return fallback(suite, n) if not isinstance(fallback, OpKind) else fallback

    return build


def _fss_sign(name: str, with_relu: bool) -> Builder:
    async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
        if with_relu:
            return list(await fss.relu_fss(ctx, x[0]))
        return [await fss.drelu_fss(ctx, x[0])]

    return lambda suite, n: OpKind(
        name,
        run=run,
        specs=lambda s, out, d, n: [
            fss.relu_fss_spec(s[0]) if with_relu else fss.drelu_fss_spec(s[0])
        ],
        cost=lambda s, out, d, n: Cost(1, 8 * _numel(s[0])),
        n_out=2 if with_relu else 1,
    )


def _fss_trunc(suite: Suite, n: int) -> OpKind:
    async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
        return [await fss.truncate_fss(ctx, x[0], p.d, sub=1)]

    return OpKind(
        "trunc",
        run=run,
        specs=lambda s, out, d, n: [fss.trunc_fss_spec(out, d, sub=1)] if d != 1 else [],
        cost=lambda s, out, d, n: Cost(1, 8 * _numel(out)) if d != 1 else FREE,
    )


CARRY_KINDS = DEFAULT_KINDS
"""Carry-tree comparison (7 rounds, any n), local truncation (2 parties) or the dealer
truncation pair (3+)."""

FSS_KINDS: dict[str, Builder | OpKind] = {
    **CARRY_KINDS,
    "drelu": _two_party("drelu", _fss_sign("drelu", False)),
    "relu": _two_party("relu", _fss_sign("relu", True)),
}
"""2 parties: FSS comparison (1 round) with local truncation (0 rounds, fails with
probability |x|/2^64 per element)."""

FSS_EXACT_KINDS: dict[str, Builder | OpKind] = {
    **FSS_KINDS,
    "trunc": _two_party("trunc", _fss_trunc),
}
"""2 parties: FSS comparison and exact FSS truncation (1 round each, no failure for
|x| < 2^62)."""

FSS_MAX_NUMEL = 10_000
"""The default suite's FSS comparison is used up to this many elements per op, the carry
tree above it. Measured (scripts/bench_fss.py, scripts/bench_relu.py, here): an FSS ReLU
costs 1 round but ~4.1 KB of dealer keys and ~25 us of key generation and evaluation per
element; the bit-sliced carry tree costs 7 rounds, ~36 B of dealer material and well under
1 us per element. The six rounds saved are worth ~240 ms on a 40 ms WAN and ~1.2 ms on a
0.2 ms LAN, which the FSS compute repays up to ~10^4 elements on the WAN (the dealer's keys
are offline traffic, sent ahead of the online phase). Network A's 16,384-element ReLUs
therefore use the carry tree; the seed's, a softmax's or a 10^4-element sigmoid's use FSS."""


def _by_size(name: str, small: Builder, large: Builder) -> Builder:
    """``small`` for ops on at most :data:`FSS_MAX_NUMEL` elements, ``large`` above: the
    choice depends only on the public shape, so the parties and the dealer agree."""

    def build(suite: Suite, n: int) -> OpKind:
        a, b = small(suite, n), large(suite, n)
        if a == b:
            return a

        def pick(shape: Shape) -> OpKind:
            return a if _numel(shape) <= FSS_MAX_NUMEL else b

        async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
            kind = pick(tuple(x[0].value.shape))
            assert kind.run is not None
            return await kind.run(ctx, x, p)

        return OpKind(
            name,
            run=run,
            specs=lambda s, out, d, n: pick(s[0]).specs(s, out, d, n),
            cost=lambda s, out, d, n: pick(s[0]).cost(s, out, d, n),
            n_out=a.n_out,
        )

    return build


def _builder(kinds: dict[str, Builder | OpKind], name: str) -> Builder:
    entry = kinds[name]
    return _constant(entry) if isinstance(entry, OpKind) else entry


DEFAULT_KINDS_BY_SIZE: dict[str, Builder | OpKind] = {
    **CARRY_KINDS,
    **{k: _by_size(k, _builder(FSS_KINDS, k), _builder(CARRY_KINDS, k)) for k in ("drelu", "relu")},
}
"""2 parties: FSS comparison for ops of at most FSS_MAX_NUMEL elements, the carry tree for
larger ones; local truncation."""

CARRY = Suite("carry", CARRY_KINDS)
FSS = Suite("fss", FSS_KINDS)
FSS_EXACT = Suite("fss-exact", FSS_EXACT_KINDS)
DEFAULT = Suite("default", DEFAULT_KINDS_BY_SIZE)

SUITES: dict[str, Suite] = {s.name: s for s in (DEFAULT, CARRY, FSS, FSS_EXACT)}


def register_suite(suite: Suite) -> Suite:
    """Make ``suite`` selectable by name (``Cluster.start(..., protocols=name)``)."""
    SUITES[suite.name] = suite
    return suite


def get_suite(choice: str | Suite | None) -> Suite:
    """A suite from its name (or the suite itself); ValueError names the known ones."""
    if choice is None:
        return DEFAULT
    if isinstance(choice, Suite):
        return choice
    suite = SUITES.get(choice) if isinstance(choice, str) else None
    if suite is None:
        raise ValueError(
            f"unknown protocol suite {choice!r}; known suites: {', '.join(sorted(SUITES))}"
        )
    return suite
