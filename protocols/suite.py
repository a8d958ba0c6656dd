"""The built-in protocol suites: named views of the registered op kinds
(:data:`protocols.opkind.KINDS`, declared in :mod:`protocols.kinds` and
:mod:`protocols.layers`), some with another protocol for the same meaning.

An :class:`OpKind` is everything the runtime needs to know about one kind of operation:

* how a party runs it: ``local(rank, shares, params)`` or ``run(ctx, shares, params)``
  (a coroutine over a :class:`~protocols.context.PartyContext`);
* the dealer material it needs, from public facts alone: ``specs(in_shapes, out_shape,
  param, n_parties)`` (the coordinator decides from it whether to ask the dealer, and the
  dealer builds the same specs), where ``param = OpKind.param(params)`` is the divisor
  ``params.d`` or, for dropout, its keep units ``params.keep``;
* its closed-form cost: ``cost(in_shapes, out_shape, param, n_parties)`` gives online
  rounds and the online bytes each party sends; the dealer bytes follow from the specs.

A :class:`Suite` maps names to registrations whose *builders* ``(suite, n_parties) ->
OpKind`` may depend on the number of parties and on other kinds of the same suite: the
products (``mul``, ``matmul``, ``scale``...) truncate with whatever the suite's ``trunc``
is, ``abs`` compares with whatever its ``relu`` is, and the choice "with 2 parties
truncation is local" is made once, in ``trunc``'s builder. ``Cluster.start(...,
protocols="fss")`` hands a suite to the parties and the provider; a test swaps one entry
with :meth:`Suite.replace`, never by patching a module.

Built-in suites (:data:`SUITES`), all with the same kinds:

* ``"carry"``: Beaver products, SecureML local truncation for 2 parties and the ABY3
  truncation pair for 3+, the carry-tree comparison (7 rounds);
* ``"fss"``: with 2 parties the function-secret-sharing comparison (1 round) for every
  size (3+ parties: as ``carry``);
* ``"default"``: FSS up to a limit of elements per op, the carry tree above. By name
  (:func:`get_suite`, :data:`DEFAULT`) the limit is :data:`FSS_MAX_NUMEL` (10^4, the WAN
  form); a cluster asked for ``"default"`` picks its own: :func:`fss_limit` of its party
  links' simulated latency in one process (205 without latency), the same 205 over TLS
  when every node is on a loopback address, 10^4 between hosts. ``"default@N"`` names
  the limit N (e.g. ``"default@10000"`` pins the WAN form anywhere);
* ``"fss-exact"``: the FSS comparison and the exact FSS truncation (2 parties).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

from . import fss
from . import kinds as _kinds  # noqa: F401  (registers the arithmetic kinds)
from . import layers as _layers  # noqa: F401  (registers the layer kinds)
from . import reuse as _reuse  # noqa: F401  (registers the kept-mask layer products)
from .context import PartyContext, Share
from .opkind import FREE, KINDS, Builder, Cost, OpKind, Registration, Shape, Suite
from .params import Params

__all__ = [
    "DEFAULT",
    "FSS_MAX_NUMEL",
    "KINDS",
    "SUITES",
    "Cost",
    "OpKind",
    "Suite",
    "default_suite",
    "describe",
    "fss_limit",
    "fss_limit_of",
    "get_suite",
    "register_suite",
]


def _numel(s: Shape) -> int:
    return prod(s)


def _two_party(name: str, two: Builder) -> Builder:
    """``two`` with 2 parties; the carry-tree suite's entry with 3 or more (FSS keys are
    2-party objects)."""
    fallback = KINDS[name].build

    def build(suite: Suite, n: int) -> OpKind:
        return two(suite, n) if n == 2 else fallback(suite, n)

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


def _variant(builds: dict[str, Builder]) -> list[Registration]:
    """Every registered kind, with another protocol (same meaning) for those in ``builds``."""
    return [reg.rebuilt(builds[k]) if k in builds else reg for k, reg in KINDS.items()]


_FSS_SIGN = {
    "drelu": _two_party("drelu", _fss_sign("drelu", False)),
    "relu": _two_party("relu", _fss_sign("relu", True)),
}
FSS_MAX_NUMEL = 10_000
"""The most elements per op for which a ``default`` suite uses the FSS comparison: the
limit of :data:`DEFAULT`, the form for slow links (and over TLS between hosts, whose
latency the coordinator does not know). Measured (scripts/bench_fss.py,
scripts/bench_relu.py): an FSS ReLU costs 1 round but ~4.1 KB of dealer keys and ~7 us
of key generation and evaluation per element; the bit-sliced carry tree costs 7 rounds,
~36 B of dealer material and well under 1 us per element. The six rounds saved are
worth ~240 ms on a 40 ms WAN, which the FSS compute repays up to ~3 10^4 elements (more
would cost dealer traffic the carry tree does not need: the limit stays 10^4); in one
process they are worth ~1.5 ms, repaid up to a couple of hundred elements:
:func:`fss_limit`."""

FSS_SECONDS_PER_ELEMENT = 7.3e-6
"""FSS key generation and evaluation per element beyond the carry tree's, all actors in
one process (ms per ReLU, FSS against carry, medians of 2 interleaved clusters, 2026-12-03
after the in-kernel AES and PRG): 4,096 -> 16,384 elements at 10 ms latency 44.5 -> 133.4
ms (7.2 us per element; the carry tree 81 ms at every size); 64 -> 512 elements without
latency 1.12 -> 4.49 ms (7.5 us; carry 1.8-1.9 ms). Before those kernels: 20 us."""
ROUND_SECONDS = 0.25e-3
"""What one online round costs beside its latency (the runtime's scheduling, framing and
the protocol's per-round work): fitted so that :func:`fss_limit` lands in the measured
crossovers, FSS against carry ReLU in one process (fss / carry time, 2026-12-03): 192
elements 0.98, 256 1.09 without latency; 512 0.46, 1,024 1.01, 2,048 1.17 at 1 ms; 4,096
0.55, 8,192 0.91, 16,384 1.66 at 10 ms. (Before the kernels: 160-192, 512-640 and
2,048-4,096; a loopback TLS cluster of node processes then crossed between 128 and 256,
as without latency.)"""
ROUNDS_SAVED = 6
"""The carry tree's 7 rounds against FSS's 1."""
FSS_MIN_NUMEL = 64
"""FSS is always used up to here (measured faster at every latency: 4.4 against 7.0 ms
at 16 elements in one process, 8.4 against 12.4 over loopback TLS)."""


def fss_limit(latency: float) -> int:
    """The element count up to which the FSS comparison is faster than the carry tree on
    party links of ``latency`` seconds: six rounds' worth of time over FSS's extra compute
    per element, kept between :data:`FSS_MIN_NUMEL` and :data:`FSS_MAX_NUMEL` (no latency:
    205; 1 ms: 1,027; 10 ms: 8,425; from ~12 ms: 10^4). Bandwidth is left out: FSS sends
    fewer online bytes than the carry tree, so a slow link only favours it more."""
    if not (isinstance(latency, (int, float)) and 0 <= latency < float("inf")):
        raise ValueError(f"latency must be a finite number of seconds >= 0, got {latency!r}")
    n = ROUNDS_SAVED * (latency + ROUND_SECONDS) / FSS_SECONDS_PER_ELEMENT
    return int(min(FSS_MAX_NUMEL, max(FSS_MIN_NUMEL, round(n))))


def _by_size(name: str, small: Builder, large: Builder, limit: int) -> Builder:
    """``small`` for ops on at most ``limit`` elements, ``large`` above: the choice depends
    only on the public shape and the suite, so the parties and the dealer agree."""

    def build(suite: Suite, n: int) -> OpKind:
        a, b = small(suite, n), large(suite, n)
        if a == b:
            return a

        def pick(shape: Shape) -> OpKind:
            return a if _numel(shape) <= limit else b

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


CARRY = Suite("carry", KINDS.values())
FSS = Suite("fss", _variant(_FSS_SIGN))
FSS_EXACT = Suite("fss-exact", _variant({**_FSS_SIGN, "trunc": _two_party("trunc", _fss_trunc)}))
_DEFAULTS: dict[int, Suite] = {}


def default_suite(limit: int = FSS_MAX_NUMEL) -> Suite:
    """The ``default`` suite with the FSS comparison up to ``limit`` elements per op and the
    carry tree above (2 parties; local truncation), named ``"default"`` for
    :data:`FSS_MAX_NUMEL` and ``"default@<limit>"`` otherwise: a name every node resolves
    to the same protocols (:func:`get_suite`), since the choice must agree everywhere."""
    if not (isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0):
        raise ValueError(f"an FSS limit is an element count >= 0, got {limit!r}")
    if limit not in _DEFAULTS:
        name = "default" if limit == FSS_MAX_NUMEL else f"default@{limit}"
        builds = {k: _by_size(k, _FSS_SIGN[k], KINDS[k].build, limit) for k in ("drelu", "relu")}
        _DEFAULTS[limit] = Suite(name, _variant(builds))
    return _DEFAULTS[limit]


def fss_limit_of(suite: Suite) -> int | None:
    """The FSS limit of a ``default`` suite, None for any other suite."""
    return next((n for n, s in _DEFAULTS.items() if s is suite), None)


def describe(suite: Suite, parties: int = 2) -> str:
    """The suite's name, and for a ``default`` suite the limit it runs with: what a log
    line or a report states, since ``"default"`` picks its limit by the link. With 3 or
    more parties a suite other than ``carry`` says that it runs as ``carry`` (FSS keys are
    2-party objects: comparisons take the carry tree, truncations the dealer's pair)."""
    if parties > 2 and suite.name != "carry":
        return (
            f"{suite.name} (with {parties} parties as carry: FSS is 2-party, so the carry "
            "tree and the dealer's truncation pair)"
        )
    limit = fss_limit_of(suite)
    if limit is None:
        return suite.name
    return f"{suite.name} (FSS comparison up to {limit:,} elements per op, carry tree above)"


DEFAULT = default_suite()
"""2 parties: FSS comparison for ops of at most FSS_MAX_NUMEL elements, the carry tree for
larger ones; local truncation: the WAN form, what :func:`get_suite` gives for
``"default"`` and what the communication report projects. ``Cluster.start`` asked for
``"default"`` (or for nothing) runs ``default_suite(fss_limit(its party links'
latency))`` instead, ``Cluster.connect`` the in-process limit when every node is on a
loopback address."""

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
    if isinstance(choice, str) and choice.startswith("default@"):
        limit = choice.removeprefix("default@")
        if limit.isdigit() and limit == str(int(limit)):
            return default_suite(int(limit))
    suite = SUITES.get(choice) if isinstance(choice, str) else None
    if suite is None:
        raise ValueError(
            f"unknown protocol suite {choice!r}; known suites: {', '.join(sorted(SUITES))} "
            "(and default@N: FSS up to N elements)"
        )
    return suite


def suite_arg(text: str) -> str:
    """``--protocols`` / ``--suites`` for argparse: a known name or ``default@N``, kept as
    written (the cluster resolves it); an unknown one fails with the message above."""
    import argparse

    try:
        get_suite(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text
