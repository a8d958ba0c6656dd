"""An in-memory harness for protocol coroutines: no actors, no network, exact accounting.

Every protocol test and view test runs protocols through :func:`run_protocol` (or
:func:`run_parties` for several ops in a row): ``n`` tasks, one per party, each with a
:class:`LocalContext` over a shared :class:`Board`. The board is the message board and an
independent dealer (it shares every item itself, so a test can fix the secret value of a
random item with ``overrides`` to aim at edge cases) and records, per party, what that
party knows: its material, everything it received and the depth of every message, which
is what the security harness analyses.

With ``Board(..., real_dealer=True)`` the board deals material the way the runtime does
instead: every party holds its own PRG key (:class:`Prg`), draws its shares of the
random items with :func:`protocols.material.party_material` under the label
``(op_id, sub)``, and the last party gets the dealer's corrections from
:func:`protocols.material.dealer_messages`. A party's :class:`View` then also holds its key,
so a view analysis sees everything the party could compute from. The hooks
:meth:`Board.material_label` and :meth:`Board.secret` let a test build a deliberately
broken dealer (a subclass) without touching library code.

For security tests: :func:`fresh_board` draws every protocol secret from the OS,
:class:`FixedSecretsBoard` lets a test choose the dealer's secrets (a mask, a dropout draw)
per op, and :class:`TamperContext` runs a protocol on a swapped spec or tampered material
(a leaky variant built from the real protocol).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import trio

from .context import Received, Share
from .material import Item, Kind, MaterialSpec, deal, dealer_messages, party_material
from .prg import Prg
from .sharing import share


@dataclass
class View:
    """What one party saw during a run, in order."""

    material: list[tuple[int, str, torch.Tensor]] = field(default_factory=list)
    """``(op id, item name, this party's share or key)``."""
    received: list[tuple[int, str, int, tuple[torch.Tensor, ...]]] = field(default_factory=list)
    """``(op id, step, sender rank, tensors)``."""
    sent: list[tuple[int, str, int, tuple[torch.Tensor, ...]]] = field(default_factory=list)
    """``(op id, step, receiver rank, tensors)``."""
    inputs: list[torch.Tensor] = field(default_factory=list)
    """This party's shares of the inputs (filled by :func:`run_protocol`)."""
    prg_key: bytes | None = None
    """The party's PRG key with the dealer (``real_dealer`` boards only)."""
    kinds: dict[tuple[int, str], Kind] = field(default_factory=dict)
    """``(op id, item name) -> kind`` of every material item recorded (a view analysis
    unpacks ``WORDS`` items to per-element bits)."""


def _nbytes(t: torch.Tensor) -> int:
    return (t.numel() + 7) // 8 if t.dtype == torch.bool else t.numel() * t.element_size()


class Board:
    """Message board, dealer and per-party views for one in-memory run."""

    def __init__(
        self,
        n: int,
        seed: int = 0,
        overrides: dict[str, torch.Tensor] | None = None,
        *,
        real_dealer: bool = False,
        party_keys: Sequence[Prg] | None = None,
        dealer_keys: Sequence[Prg] | None = None,
        dealer_prg: Prg | None = None,
    ) -> None:
        """``real_dealer``: deal through the runtime's path (module doc). ``party_keys``:
        each party's :class:`Prg` (default: derived from ``seed`` and the rank);
        ``dealer_keys``: the dealer's copies of them (default: new :class:`Prg` objects on
        the same keys, so each holder draws from its own object); ``dealer_prg``: the
        dealer's own generator (key items)."""
        if n < 2:
            raise ValueError(f"a run needs at least 2 parties, got {n}")
        self.n = n
        self.prg = Prg.from_seed(seed, "testing-dealer")
        self.overrides = overrides or {}
        self.msgs: dict[tuple[int, int, int, str], tuple[tuple[torch.Tensor, ...], int]] = {}
        self.events: defaultdict[tuple[int, int, int, str], trio.Event] = defaultdict(trio.Event)
        self.dealt: dict[tuple[int, str, int], list[dict[str, torch.Tensor]]] = {}
        self.sent = [0] * n
        """Online bytes each party sent."""
        self.dealer_bytes = 0
        """Bytes the dealer would send (corrections to the last party, keys to every party)."""
        self.rounds = 0
        """Largest depth stamped on any message."""
        self.views = [View() for _ in range(n)]
        self.real_dealer = real_dealer
        self.dealer_sent: list[tuple[int, int, tuple[torch.Tensor, ...]]] = []
        """``(op id, receiver rank, tensors)`` the dealer sent (``real_dealer`` only)."""
        self.party_keys: list[Prg] = []
        self.dealer_keys: list[Prg] = []
        if not real_dealer:
            if party_keys is not None or dealer_keys is not None or dealer_prg is not None:
                raise ValueError("party_keys, dealer_keys and dealer_prg need real_dealer=True")
            return
        if self.overrides:
            raise ValueError("overrides need the independent dealer (real_dealer=False)")
        self.party_keys = (
            list(party_keys)
            if party_keys is not None
            else [Prg.from_seed(seed, f"testing-party-{rank}") for rank in range(n)]
        )
        self.dealer_keys = (
            list(dealer_keys) if dealer_keys is not None else [Prg(k.key) for k in self.party_keys]
        )
        if len(self.party_keys) != n or len(self.dealer_keys) != n:
            raise ValueError(f"need {n} party keys and {n} dealer copies")
        if dealer_prg is not None:
            self.prg = dealer_prg
        for rank, key in enumerate(self.party_keys):
            self.views[rank].prg_key = key.key

    def material_label(self, op_id: int, spec: MaterialSpec) -> int:
        """The op id that labels the material streams ``(op_id, spec.sub)`` of an op
        (``real_dealer`` boards). A test subclass may break it (nonce reuse)."""
        return op_id

    def secret(self, op_id: int, spec: MaterialSpec, item: Item) -> torch.Tensor:
        """The plaintext of a random item (independent dealer): the override, if any,
        else uniform. A test subclass may bias it."""
        v = self.overrides.get(item.name)
        return self._random(item.shape, item.dtype) if v is None else v.to(item.dtype)

    def _share(self, value: torch.Tensor, xor: bool) -> list[torch.Tensor]:
        if not xor:
            return share(value, self.n, self.prg)
        parts = [self._random(tuple(value.shape), value.dtype) for _ in range(self.n - 1)]
        last = value.clone()
        for p in parts:
            last = last ^ p
        return [*parts, last]

    def _random(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        return self.prg.bits(shape) if dtype == torch.bool else self.prg.ring(shape)

    def deal(self, op_id: int, spec: MaterialSpec) -> list[dict[str, torch.Tensor]]:
        key = (op_id, spec.kind, spec.sub)
        if key not in self.dealt and self.real_dealer:
            self.dealt[key] = self._deal_real(op_id, spec)
        if key not in self.dealt:
            secrets: dict[str, torch.Tensor] = {}
            for item in spec.items:
                if item.shared and not item.derived:
                    secrets[item.name] = self.secret(op_id, spec, item)
            values = deal(secrets, spec)
            out: list[dict[str, torch.Tensor]] = [{} for _ in range(self.n)]
            for item in spec.items:
                if not item.shared:
                    continue
                v = values[item.name]
                if tuple(v.shape) != item.shape or v.dtype != item.dtype:
                    raise AssertionError(
                        f"{spec.kind}: item {item} derived as {v.dtype} {tuple(v.shape)}"
                    )
                for rank, s in enumerate(self._share(v, item.xor)):
                    out[rank][item.name] = s
            self.dealer_bytes += sum(i.nbytes() for i in spec.corrections)
            if spec.keys:
                assert spec.keygen is not None
                keys = spec.keygen(values, self.n, self.prg, (op_id, spec.sub))
                for rank in range(self.n):
                    for item in spec.keys:
                        k = keys[rank][item.name]
                        if tuple(k.shape) != item.shape or k.dtype != item.dtype:
                            raise AssertionError(
                                f"{spec.kind}: key {item} is {k.dtype} {tuple(k.shape)}"
                            )
                        out[rank][item.name] = k
                        self.dealer_bytes += item.nbytes()
            for rank in range(self.n):
                self.views[rank].material += [(op_id, k, v) for k, v in out[rank].items()]
                self.views[rank].kinds.update({(op_id, i.name): i.kind for i in spec.items})
            self.dealt[key] = out
        return self.dealt[key]

    def _deal_real(self, op_id: int, spec: MaterialSpec) -> list[dict[str, torch.Tensor]]:
        label = self.material_label(op_id, spec)
        msgs = dealer_messages(spec, self.dealer_keys, label, self.prg)
        out = []
        for rank in range(self.n):
            got = tuple(t.clone() for t in msgs[rank])
            if got:
                self.dealer_sent.append((op_id, rank, got))
            self.dealer_bytes += sum(_nbytes(t) for t in got)
            mine = party_material(spec, rank, self.n, self.party_keys[rank], label, got)
            self.views[rank].material += [(op_id, k, v) for k, v in mine.items()]
            self.views[rank].kinds.update({(op_id, i.name): i.kind for i in spec.items})
            out.append(mine)
        return out


class LocalContext:
    """A :class:`protocols.PartyContext` over a :class:`Board`."""

    def __init__(self, board: Board, rank: int, op_id: int = 5) -> None:
        self.board = board
        self._rank = rank
        self._op_id = op_id

    @property
    def rank(self) -> int:
        return self._rank

    @property
    def n_parties(self) -> int:
        return self.board.n

    @property
    def op_id(self) -> int:
        return self._op_id

    async def send(self, peer: int, step: str, tensors: Sequence[torch.Tensor], depth: int) -> None:
        key = (self._op_id, self._rank, peer, step)
        if key in self.board.msgs or peer == self._rank or not 0 <= peer < self.board.n:
            raise AssertionError(f"bad or duplicate message {key}")
        copies = tuple(t.clone() for t in tensors)
        self.board.sent[self._rank] += sum(_nbytes(t) for t in copies)
        self.board.rounds = max(self.board.rounds, depth)
        self.board.msgs[key] = (copies, depth)
        self.board.views[self._rank].sent.append((self._op_id, step, peer, copies))
        self.board.events[key].set()

    async def recv(self, peer: int, step: str, expect: Any) -> Received:
        key = (self._op_id, peer, self._rank, step)
        await self.board.events[key].wait()
        tensors, depth = self.board.msgs.pop(key)
        got = [(tuple(t.shape), t.dtype) for t in tensors]
        want = [(tuple(s), d) for s, d in expect]
        if got != want:
            raise AssertionError(f"{key}: expected {want}, got {got}")
        self.board.views[self._rank].received.append((self._op_id, step, peer, tensors))
        return Received(tensors, depth)

    async def material(self, spec: MaterialSpec) -> dict[str, torch.Tensor]:
        return self.board.deal(self._op_id, spec)[self._rank]


async def run_parties(
    n: int,
    body: Callable[[int, Callable[[int], LocalContext]], Awaitable[Any]],
    *,
    seed: int = 0,
    overrides: dict[str, torch.Tensor] | None = None,
    timeout: float = 60.0,
    board: Board | None = None,
) -> tuple[list[Any], Board]:
    """Run ``body(rank, ctx_for)`` for every party at once; ``ctx_for(op_id)`` gives the
    party's context for one op (use a new op id per protocol call, as the runtime does).
    ``board``: run on this board (e.g. a ``real_dealer`` one) instead of a new one."""
    if board is None:
        board = Board(n, seed, overrides)
    elif board.n != n or overrides:
        raise ValueError("a given board fixes n and takes no overrides here")
    results: list[Any] = [None] * n

    async def one(rank: int) -> None:
        results[rank] = await body(rank, lambda op: LocalContext(board, rank, op))

    with trio.fail_after(timeout):
        async with trio.open_nursery() as nursery:
            for rank in range(n):
                nursery.start_soon(one, rank)
    if board.msgs:
        raise AssertionError(f"messages never received: {list(board.msgs)}")
    return results, board


def share_inputs(
    xs: Sequence[torch.Tensor], n: int, seed: int = 0, *, prg: Prg | None = None
) -> list[list[Share]]:
    """``shares[rank][i]``: party ``rank``'s share of input ``i`` (depth 0). ``prg``: share
    with this generator (e.g. :meth:`Prg.fresh`) instead of one derived from ``seed``."""
    prg = Prg.from_seed(seed, "testing-input") if prg is None else prg
    per_input = [share(x.to(torch.int64), n, prg) for x in xs]
    return [[Share(s[rank], 0) for s in per_input] for rank in range(n)]


async def run_protocol(
    fn: Callable[..., Awaitable[Any]],
    *xs: torch.Tensor,
    n: int = 2,
    seed: int = 0,
    overrides: dict[str, torch.Tensor] | None = None,
    op_id: int = 5,
    board: Board | None = None,
    **kwargs: Any,
) -> tuple[list[Any], Board]:
    """Share ``xs``, run ``fn(ctx, *shares, **kwargs)`` at every party; returns each party's
    result and the board (bytes, rounds, views; each view's ``inputs`` holds the party's
    input shares). ``board``: as in :func:`run_parties`."""
    shares = share_inputs(xs, n, seed)

    async def body(rank: int, ctx_for: Callable[[int], LocalContext]) -> Any:
        return await fn(ctx_for(op_id), *shares[rank], **kwargs)

    results, used = await run_parties(n, body, seed=seed, overrides=overrides, board=board)
    for rank in range(n):
        used.views[rank].inputs += [s.value for s in shares[rank]]
    return results, used


def reveal(results: Sequence[Share]) -> torch.Tensor:
    """The secret from every party's additive share."""
    total = results[0].value.clone()
    for s in results[1:]:
        total += s.value
    return total


# ---------------------------------------------------------------------------------------
# For security tests: fresh keys, chosen dealer secrets, tampered material
# ---------------------------------------------------------------------------------------


def fresh_board(n: int, *, real_dealer: bool = True, cls: type[Board] | None = None) -> Board:
    """A board whose every secret comes from the operating system (:meth:`Prg.fresh`): the
    party keys and the dealer's generator with ``real_dealer``, the dealer's generator
    (shares, keys, random items) without. A statistical security test runs the protocol's
    secrets fresh, so its false-alarm rate is the one it states, not a seed's luck.
    ``cls``: a (broken) subclass of :class:`Board` to build instead."""
    make = Board if cls is None else cls
    if real_dealer:
        return make(
            n,
            real_dealer=True,
            party_keys=[Prg.fresh() for _ in range(n)],
            dealer_prg=Prg.fresh(),
        )
    board = make(n)
    board.prg = Prg.fresh()
    return board


class FixedSecretsBoard(Board):
    """The independent dealer with chosen secrets: ``secrets[(op id, spec kind, item
    name)]`` is the plaintext of that random item (a mask ``r``, a dropout draw ``u``); every
    other item is uniform (from a fresh generator) and every share and key is fresh. A
    view analysis varies the dealer's secrets with it, not only the inputs."""

    def __init__(self, n: int, secrets: dict[tuple[int, str, str], torch.Tensor]) -> None:
        super().__init__(n)
        self.prg = Prg.fresh()
        self.fixed = dict(secrets)

    def secret(self, op_id: int, spec: MaterialSpec, item: Item) -> torch.Tensor:
        v = self.fixed.get((op_id, spec.kind, item.name))
        if v is None:
            return super().secret(op_id, spec, item)
        if tuple(v.shape) != item.shape:
            raise ValueError(f"secret {item.name} of op {op_id}: shape {tuple(v.shape)}")
        return v.to(item.dtype)


SpecSwap = Callable[[MaterialSpec], "MaterialSpec | None"]
"""A replacement for a spec (None: keep it), e.g. a broken dealer's derivation."""
Tamper = Callable[[int, MaterialSpec, dict[str, torch.Tensor]], dict[str, torch.Tensor]]
"""``tamper(rank, spec, material)``: what a broken protocol makes of its material."""


class TamperContext:
    """A party context that forwards everything to ``ctx`` but asks the dealer for
    ``swap(spec)`` instead of ``spec`` and hands the protocol ``tamper(rank, spec,
    material)``: how a security test builds a deliberately leaky protocol or dealer from
    the real one without touching library code (works over any :class:`PartyContext`)."""

    def __init__(self, ctx: Any, swap: SpecSwap | None = None, tamper: Tamper | None = None):
        self.ctx = ctx
        self.swap = swap
        self.tamper = tamper

    @property
    def rank(self) -> int:
        return int(self.ctx.rank)

    @property
    def n_parties(self) -> int:
        return int(self.ctx.n_parties)

    @property
    def op_id(self) -> int:
        return int(self.ctx.op_id)

    async def send(self, peer: int, step: str, tensors: Sequence[torch.Tensor], depth: int) -> None:
        await self.ctx.send(peer, step, tensors, depth)

    async def recv(self, peer: int, step: str, expect: Any) -> Received:
        got: Received = await self.ctx.recv(peer, step, expect)
        return got

    async def material(self, spec: MaterialSpec) -> dict[str, torch.Tensor]:
        asked = (self.swap(spec) if self.swap is not None else None) or spec
        got = dict(await self.ctx.material(asked))
        return got if self.tamper is None else self.tamper(self.rank, spec, got)


__all__ = [
    "Board",
    "FixedSecretsBoard",
    "Kind",
    "LocalContext",
    "TamperContext",
    "View",
    "fresh_board",
    "reveal",
    "run_parties",
    "run_protocol",
    "share_inputs",
]
