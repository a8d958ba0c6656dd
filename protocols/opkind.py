"""The shapes of a protocol suite: :class:`Cost`, :class:`OpKind` and :class:`Suite`
(see :mod:`protocols.suite` for what they mean and the built-in registrations)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from .context import PartyContext, Share
from .errors import UnsupportedOperation
from .material import MaterialSpec
from .params import Params

Shape = tuple[int, ...]
LocalRun = Callable[[int, Sequence[Share], Params], list[Share]]
InteractiveRun = Callable[[PartyContext, Sequence[Share], Params], Awaitable[list[Share]]]
SpecFn = Callable[[Sequence[Shape], Shape, int, int], list[MaterialSpec]]
CostFn = Callable[[Sequence[Shape], Shape, int, int], "Cost"]


@dataclass(frozen=True, slots=True)
class Cost:
    """Closed-form cost of one op."""

    rounds: int
    """Online rounds (dependency depth it adds)."""
    online_bytes: int
    """Payload bytes each party sends to its peers (summed over peers)."""
    dealer_bytes: int = 0
    """Payload bytes of dealer material, summed over the parties that receive it."""

    def then(self, other: Cost) -> Cost:
        """This op followed by a dependent one."""
        return Cost(
            self.rounds + other.rounds,
            self.online_bytes + other.online_bytes,
            self.dealer_bytes + other.dealer_bytes,
        )


FREE = Cost(0, 0, 0)


def _no_specs(shapes: Sequence[Shape], out: Shape, d: int, n: int) -> list[MaterialSpec]:
    return []


def _free(shapes: Sequence[Shape], out: Shape, d: int, n: int) -> Cost:
    return FREE


@dataclass(frozen=True, slots=True)
class OpKind:
    """One registered kind of operation (see module doc)."""

    name: str
    local: LocalRun | None = None
    run: InteractiveRun | None = None
    specs: SpecFn = field(default=_no_specs)
    cost: CostFn = field(default=_free)
    """Rounds and online bytes; :meth:`Suite.cost` adds the dealer bytes from ``specs``."""
    n_out: int = 1
    n_in: int = 1

    def __post_init__(self) -> None:
        if (self.local is None) == (self.run is None):
            raise ValueError(f"op kind {self.name!r} needs exactly one of local= and run=")

    @property
    def interactive(self) -> bool:
        return self.run is not None


Builder = Callable[["Suite", int], OpKind]


def _constant(kind: OpKind) -> Builder:
    return lambda suite, n: kind


class Suite:
    """A named set of op kinds (see module doc)."""

    def __init__(self, name: str, builders: Mapping[str, Builder | OpKind]) -> None:
        self.name = name
        self._builders: dict[str, Builder] = {
            k: _constant(b) if isinstance(b, OpKind) else b for k, b in builders.items()
        }
        self._cache: dict[tuple[str, int], OpKind] = {}

    def __repr__(self) -> str:
        return f"Suite({self.name!r}, {len(self._builders)} kinds)"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._builders))

    def __contains__(self, name: object) -> bool:
        return name in self._builders

    def kind(self, name: str, n_parties: int) -> OpKind:
        """The op kind ``name`` for ``n_parties`` parties; UnsupportedOperation if unknown."""
        key = (name, n_parties)
        op = self._cache.get(key)
        if op is None:
            build = self._builders.get(name)
            if build is None:
                raise UnsupportedOperation(
                    f"protocol suite {self.name!r} has no op kind {name!r} "
                    f"(it has: {', '.join(self.names)})"
                )
            op = self._cache[key] = build(self, n_parties)
        return op

    def replace(self, name: str | None = None, **builders: Builder | OpKind) -> Suite:
        """A new suite with some entries replaced or added (for tests and experiments)."""
        return Suite(name or f"{self.name}+{'+'.join(builders)}", {**self._builders, **builders})

    def specs(
        self, kind: str, shapes: Sequence[Shape], out: Shape, divisor: int, n_parties: int
    ) -> list[MaterialSpec]:
        return self.kind(kind, n_parties).specs(
            [tuple(s) for s in shapes], tuple(out), divisor, n_parties
        )

    def cost(
        self, kind: str, shapes: Sequence[Shape], out: Shape, divisor: int, n_parties: int
    ) -> Cost:
        """Closed-form rounds, online bytes per party and dealer bytes of one op."""
        op = self.kind(kind, n_parties)
        shapes = [tuple(s) for s in shapes]
        base = op.cost(shapes, tuple(out), divisor, n_parties)
        dealer = sum(
            s.dealer_bytes(n_parties) for s in op.specs(shapes, tuple(out), divisor, n_parties)
        )
        return replace(base, dealer_bytes=dealer)


def truncated_product(
    name: str,
    product: Callable[[PartyContext, Sequence[Share], Params], Awaitable[Share]],
    spec: Callable[[Sequence[Shape], Shape], MaterialSpec],
    online: Callable[[Sequence[Shape], int], int],
    n_in: int,
) -> Builder:
    """An interactive Beaver-style product (1 round, ``online(shapes, n)`` bytes per party,
    material ``spec(shapes, out)``) followed by the suite's truncation, whatever it is:
    local, the dealer pair or FSS. Every product kind (mul, matmul, conv, ...) is this."""

    def build(suite: Suite, n: int) -> OpKind:
        t = suite.kind("trunc", n)

        async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
            z = await product(ctx, x, p)
            if t.local is not None:
                return t.local(ctx.rank, [z], p)
            assert t.run is not None
            return await t.run(ctx, [z], p)

        return OpKind(
            name,
            run=run,
            specs=lambda s, out, d, n: [spec(s, out), *t.specs([out], out, d, n)],
            cost=lambda s, out, d, n: Cost(1, online(s, n)).then(t.cost([out], out, d, n)),
            n_in=n_in,
        )

    return build
