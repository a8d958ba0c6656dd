"""The shapes of a protocol suite: :class:`Cost`, :class:`OpKind`, :class:`Registration`
and :class:`Suite`.

An op kind is declared once, as a :class:`Registration`: its name, how to build it for a
number of parties (the runner, its dealer specs and its closed-form cost: an
:class:`OpKind`), its plaintext reference (what check mode compares with), the examples the
communication report measures, and whether it divides by ``params.d``. :func:`register`
keeps every built-in registration in :data:`KINDS` and refuses a second one of the same
name; the built-in suites (:mod:`protocols.suite`) are views of it. Adding a kind is one
``register(...)`` call in the module that implements it (:mod:`protocols.kinds` for the
arithmetic and comparisons, :mod:`protocols.layers` for the layers) and one test; the
report, check mode and every suite pick it up from there."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from .context import PartyContext, Share
from .errors import UnsupportedOperation
from .material import MaterialSpec
from .params import Params

if TYPE_CHECKING:
    import torch

Shape = tuple[int, ...]
LocalRun = Callable[[int, Sequence[Share], Params], list[Share]]
InteractiveRun = Callable[[PartyContext, Sequence[Share], Params], Awaitable[list[Share]]]
SpecFn = Callable[[Sequence[Shape], Shape, int, int], list[MaterialSpec]]
CostFn = Callable[[Sequence[Shape], Shape, int, int], "Cost"]
Reference = Callable[
    [Sequence["torch.Tensor"], Params, Sequence[Shape], Sequence["torch.Tensor"]],
    list["torch.Tensor"],
]
"""``reference(inputs, params, out_shapes, revealed)``: the plaintext result, in float64 on
*encoded* values (see :mod:`protocols.reference`)."""


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


def _divisor(params: Params) -> int:
    return params.d


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
    grouped: bool = False
    """The op may take k >= 1 groups of ``n_in`` operands and give k groups of ``n_out``
    results (``sub_scaled``: every parameter of an optimiser's group in one command)."""
    optional_in: int = 0
    """Up to this many operands more (``linear_t_keep``'s bias, added to the result)."""
    optional_out: int = 0
    """This many results more exactly when ``params.dims`` names dimensions (a ``*_grad``
    kind's bias gradient: the gradient operand summed over them, a local sum in the op)."""
    param: Callable[[Params], int] = field(default=_divisor)
    """The public integer ``specs`` and ``cost`` take from the op's params (and the dealer
    from its request): the divisor ``params.d``, unless the kind reads another field
    (dropout: ``params.keep``)."""

    def __post_init__(self) -> None:
        if (self.local is None) == (self.run is None):
            raise ValueError(f"op kind {self.name!r} needs exactly one of local= and run=")

    @property
    def interactive(self) -> bool:
        return self.run is not None

    def arity_error(self, n_in: int, n_out: int, params: Params | None = None) -> str | None:
        """Why ``n_in`` operands and ``n_out`` results (with ``params``) do not fit this kind,
        or None."""
        if self.grouped:
            k, rest = divmod(n_in, self.n_in)
            if k and not rest and n_out == k * self.n_out:
                return None
            return (
                f"op kind {self.name!r} takes k >= 1 groups of {self.n_in} inputs and "
                f"{self.n_out} outputs, got {n_in} and {n_out}"
            )
        extra = self.optional_out if params is not None and params.dims is not None else 0
        if self.n_in <= n_in <= self.n_in + self.optional_in and n_out == self.n_out + extra:
            return None
        more = f" (or up to {self.optional_in} more)" if self.optional_in else ""
        outs = f"{self.n_out} outputs"
        if self.optional_out:
            outs += f" ({self.n_out + self.optional_out} with params.dims)"
        return (
            f"op kind {self.name!r} takes {self.n_in} inputs{more} and {outs}, "
            f"got {n_in} and {n_out}"
        )


Builder = Callable[["Suite", int], OpKind]


def _constant(kind: OpKind) -> Builder:
    return lambda suite, n: kind


def _as_builder(entry: Builder | OpKind) -> Builder:
    return _constant(entry) if isinstance(entry, OpKind) else entry


@dataclass(frozen=True, slots=True)
class Example:
    """One op the communication report measures for a kind: operand shapes, result
    shapes, public parameters, and a note for the table."""

    note: str
    shapes: tuple[Shape, ...]
    out: tuple[Shape, ...]
    params: Params | None = None


Examples = Callable[[int, tuple[int, int, int]], list[Example]]
"""``examples(size, (m, k, n))``: the ops to measure at ``size`` elements (vectors) and an
``m x k @ k x n`` product (matrices)."""


def _no_examples(size: int, mat: tuple[int, int, int]) -> list[Example]:
    return []


@dataclass(frozen=True, slots=True)
class Registration:
    """Everything about one op kind, declared together (see module doc)."""

    name: str
    build: Builder
    reference: Reference | None = None
    """None only for kinds a test or an experiment registers (check mode reports them)."""
    examples: Examples = _no_examples
    truncating: bool = False
    """The ring holds ``params.d`` times the result before the kind's truncation."""

    def rebuilt(self, build: Builder | OpKind) -> Registration:
        """The same meaning (reference, examples) with another protocol."""
        return replace(self, build=_as_builder(build))


KINDS: dict[str, Registration] = {}
"""Every built-in op kind, by name (filled by :func:`register` on import)."""


def register(
    name: str,
    build: Builder | OpKind,
    *,
    reference: Reference,
    examples: Examples,
    truncating: bool = False,
) -> Registration:
    """Declare a built-in op kind (see module doc); a second kind of the same name is an
    error, never a silent override (a test swaps a protocol with :meth:`Suite.replace`)."""
    if name in KINDS:
        raise ValueError(f"op kind {name!r} is registered twice")
    reg = KINDS[name] = Registration(name, _as_builder(build), reference, examples, truncating)
    return reg


Entry = Registration | Builder | OpKind


class Suite:
    """A named set of op kinds: registrations, each built per number of parties."""

    def __init__(self, name: str, entries: Mapping[str, Entry] | Iterable[Registration]) -> None:
        self.name = name
        items = entries.items() if isinstance(entries, Mapping) else ((r.name, r) for r in entries)
        self._entries: dict[str, Registration] = {
            k: v if isinstance(v, Registration) else Registration(k, _as_builder(v))
            for k, v in items
        }
        self._cache: dict[tuple[str, int], OpKind] = {}

    def __repr__(self) -> str:
        return f"Suite({self.name!r}, {len(self._entries)} kinds)"

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def registration(self, name: str) -> Registration:
        """The declaration of kind ``name``; UnsupportedOperation if the suite has none."""
        reg = self._entries.get(name)
        if reg is None:
            raise UnsupportedOperation(
                f"protocol suite {self.name!r} has no op kind {name!r} "
                f"(it has: {', '.join(self.names)})"
            )
        return reg

    def reference(self, name: str) -> Reference | None:
        """Kind ``name``'s plaintext reference (None: unknown or none declared)."""
        reg = self._entries.get(name)
        return None if reg is None else reg.reference

    def truncating(self, name: str) -> bool:
        reg = self._entries.get(name)
        return reg is not None and reg.truncating

    def examples(self, name: str, size: int, mat: tuple[int, int, int]) -> list[Example]:
        return self.registration(name).examples(size, mat)

    def kind(self, name: str, n_parties: int) -> OpKind:
        """The op kind ``name`` for ``n_parties`` parties; UnsupportedOperation if unknown."""
        key = (name, n_parties)
        op = self._cache.get(key)
        if op is None:
            op = self._cache[key] = self.registration(name).build(self, n_parties)
        return op

    def replace(self, name: str | None = None, **entries: Entry) -> Suite:
        """A new suite with some entries replaced or added (for tests and experiments). A
        bare builder or OpKind for a known name keeps that kind's meaning (reference,
        examples), so a swapped-in protocol is checked against what the kind should give."""
        merged = dict(self._entries)
        for k, v in entries.items():
            old = merged.get(k)
            if isinstance(v, Registration):
                merged[k] = v
            elif old is not None:
                merged[k] = old.rebuilt(v)
            else:
                merged[k] = Registration(k, _as_builder(v))
        return Suite(name or f"{self.name}+{'+'.join(entries)}", merged)

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
