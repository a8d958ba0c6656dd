"""The cluster runtime: parties, crypto provider and the coordinator's side of the protocol.

``Cluster.start`` starts the transport, the provider and every party under one trio
nursery; one failure cancels the rest and the ``async with`` block raises a single clear
error (:class:`PartyFailure` naming the actor, or :class:`ActorTimeout` naming the silent
one). The user-facing frontend (``training.Cluster``) subclasses this class and adds
``share`` and ``share_module``; this layer knows nothing of autograd.

Trust model as built: the coordinator is the data and model owner and is trusted. It makes
every input's shares itself (so for a moment it holds all of them), sends commands and
dealer requests, and receives only the shares of values it asks to reveal and owns. The
parties and the provider never see an unmasked value. Commands are queued and sent in one
batch at the coordinator's next checkpoint, so a sequence of operations costs one control
message per party, and the parties start each op as soon as its inputs exist.

Op log: the coordinator records every op it issues, local ones too (kind, label,
iteration, operand and result shapes, and the suite's closed-form cost); with
``track_op_costs`` each op's measured bytes and depth are collected from the actors'
meters. The communication report is built from these two sources.
"""

from __future__ import annotations

import contextvars
import math
import numbers
import operator
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import torch
import trio

from protocols import share
from protocols.errors import AccessDenied, PartyFailure, ProtocolError, ShapeError
from protocols.params import Params
from protocols.prg import Prg
from protocols.reference import Tolerance
from protocols.suite import Cost, Suite, get_suite

from .actor import first_error
from .config import ClusterConfig, load_config
from .endpoint import Transport
from .envelope import Envelope, Phase
from .log import debug_enabled, get_logger
from .mailbox import Roles
from .messages import Batch, Command, DealerRequest, Reply, Requests, encode_control
from .names import check_name
from .network import Chaos, Network, NetworkProfile
from .party import Party, check_expect
from .policy import RevealPolicy, RevealRefused, legacy_policies
from .provider import CryptoProvider
from .stats import CommStats, LabelBook

_label: contextvars.ContextVar[str | None] = contextvars.ContextVar("smpc_label", default=None)
_iteration: contextvars.ContextVar[int | None] = contextvars.ContextVar("smpc_iter", default=None)

C = TypeVar("C", bound="Cluster")
Shape = tuple[int, ...]


def require_trio(what: str) -> None:
    """Refuse, with the fix, to start outside a trio run (e.g. in an asyncio loop:
    Jupyter's top-level ``await``), where trio would fail with an obscure AttributeError."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise RuntimeError(
            f"{what} must run under trio (trio.run(main)); it was called outside a trio "
            "run, e.g. in an asyncio event loop (Jupyter's top-level await, asyncio.run). "
            "In a notebook or a plain script use training.sync.Session, which runs the "
            "cluster in a background trio thread and offers synchronous calls"
        ) from None


@contextmanager
def _scoped(var: contextvars.ContextVar[Any], value: Any) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One op the coordinator issued (the op log)."""

    op: int
    kind: str
    label: str | None
    iteration: int | None
    shapes: tuple[Shape, ...]
    out: tuple[Shape, ...]
    divisor: int
    interactive: bool
    cost: Cost
    """The suite's closed form for this op (rounds, online bytes per party, dealer bytes)."""


def access_denied(env: Envelope) -> AccessDenied | ProtocolError:
    """The refusal a party sent instead of a share: :class:`RevealRefused` (its policy
    or an owner's), ProtocolError for a malformed reveal command or a reply that is not a
    refusal."""
    reply = env.control(Reply)
    if reply.denied is None:
        raise ProtocolError(f"{env.sender} answered {env.tag!r} with a reply that is not a refusal")
    if reply.malformed:
        return ProtocolError(reply.denied)
    return RevealRefused(reply.denied)


def _int64s(values: Any, what: str, kind: str, bad_type: str) -> tuple[int, ...]:
    """Non-negative int64 values as the wire carries them, or TypeError/ValueError before
    anything is queued (a value the encoder refuses would fail the whole batch later)."""
    try:
        out = tuple(operator.index(v) for v in values)
    except TypeError:
        raise TypeError(f"{what}: {bad_type}, got {values!r}") from None
    if any(not 0 <= v < 2**63 for v in out):
        raise ValueError(f"{what}: {kind} must be non-negative int64 values, got {out}")
    return out


def _ids(values: Any, what: str) -> tuple[int, ...]:
    return _int64s(values, what, "tensor ids", "tensor ids are integers")


def _sizes(shape: Any, what: str) -> Shape:
    return _int64s(shape, what, "sizes", "a shape is a sequence of integers")


def _shape_list(shapes: Any, what: str) -> tuple[Shape, ...]:
    if isinstance(shapes, str | bytes) or not isinstance(shapes, Sequence | Iterator):
        raise TypeError(f"{what}: expected a sequence of shapes, got {shapes!r}")
    return tuple(_sizes(s, what) for s in shapes)


ValueBound = float | str | None


def _value_bound(bound: Any) -> ValueBound:
    """``"headroom"`` (the default), ``None`` (off) or a positive real bound."""
    if bound is None or bound == "headroom":
        return bound  # type: ignore[no-any-return]
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
        raise TypeError(f'value_bound must be "headroom", None or a positive number, got {bound!r}')
    value = float(bound)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"value_bound must be a positive finite number, got {bound!r}")
    return value


def _check_tolerance(check: Any) -> Tolerance | None:
    """``check=True`` (default tolerance), ``False`` or a :class:`Tolerance`."""
    if isinstance(check, Tolerance):
        return check
    if isinstance(check, bool):
        return Tolerance() if check else None
    raise TypeError(f"check must be True, False or a protocols.reference.Tolerance, got {check!r}")


def _checked_params(params: Any, what: str) -> Params | None:
    """``params`` if every field has its declared type and the wire can carry it."""
    if params is None:
        return None
    if not isinstance(params, Params):
        raise TypeError(f"{what}: params must be a Params or None, got {type(params).__name__}")
    try:
        checked = msgspec.msgpack.decode(msgspec.msgpack.encode(params), type=Params)
    except (msgspec.DecodeError, TypeError, OverflowError) as exc:
        raise ValueError(f"{what}: malformed params {params!r}: {exc}") from None
    if checked.d < 1:
        raise ValueError(f"{what}: the divisor must be a positive integer, got {checked.d}")
    return params


class Cluster:
    """A running set of parties with a crypto provider, driven by this coordinator."""

    def __init__(
        self,
        parties: Sequence[str],
        provider: str,
        coordinator: str,
        network: Transport,
        seed: int | None,
        suite: Suite,
        *,
        value_bound: ValueBound = "headroom",
        check: bool | Tolerance = False,
    ) -> None:
        self.value_bound = _value_bound(value_bound)
        """Bound on the magnitude of revealed values, read by the frontend: ``"headroom"``
        (a value's square must fit the ring, ``FixedPoint.headroom``), a real number, or
        ``None`` (no check)."""
        self.check = _check_tolerance(check)
        """Check mode's tolerance (``None``: off); the frontend runs the check."""
        self.parties = list(parties)
        self.provider = provider
        self.coordinator = coordinator
        self.network = network
        self.seed = seed
        self.suite = suite
        self._prg = Prg.fresh() if seed is None else Prg.from_seed(seed, "coordinator")
        self._thread = threading.get_ident()
        """The thread of the trio run this cluster lives in: ops are issued only there."""
        self._endpoint = network.endpoints[coordinator]
        self._mailbox = self._endpoint.mailbox
        self._next_tid = 0
        self._next_op = 0
        self.last_op: int | None = None
        """The id of the op issued last (input or submit)."""
        self._cmds: list[Command] = []
        self._reqs: list[DealerRequest] = []
        self._to_free: list[int] = []
        self._cmd_seq = 0
        self._req_seq = 0
        self._floor = 0
        self._flush_scheduled = False
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._op_log: list[OpRecord] | None = None
        self._labels = LabelBook()
        self._started = time.perf_counter()
        self._waits = 0
        self._endpoint.busy = lambda: self._waits
        self._log = get_logger(actor=coordinator)
        self.session: str | None = None
        """The session id (TLS clusters)."""
        self.catalog: dict[str, dict[str, Shape]] = {}
        """Named tensors each party holds: name -> shape (see :meth:`input_from`)."""

    # -- life cycle ---------------------------------------------------------------------
    @classmethod
    @asynccontextmanager
    async def start(
        cls: type[C],
        parties: Sequence[str] = ("alice", "bob"),
        provider: str = "james",
        seed: int | None = None,
        *,
        protocols: str | Suite | None = None,
        coordinator: str = "coordinator",
        network: NetworkProfile | None = None,
        links: Mapping[tuple[str, str], NetworkProfile] | None = None,
        timeout: float = 30.0,
        chaos: Chaos | None = None,
        data: Mapping[str, Mapping[str, torch.Tensor]] | None = None,
        reveal_policy: Mapping[str, Sequence[str] | RevealPolicy] | None = None,
        value_bound: ValueBound = "headroom",
        check: bool | Tolerance = False,
    ) -> AsyncIterator[C]:
        """Start a cluster.

        ``protocols`` names the protocol suite (``"default"``, ``"fss"``) or is a
        :class:`protocols.suite.Suite`. ``seed=None`` draws every key from the OS (secure).
        An integer seed makes shares and dealer material reproducible and is INSECURE: for
        tests and reproducible runs. ``network`` is the delay profile of every
        party-to-party link; ``links`` overrides single ordered links (provider and
        coordinator links are instantaneous unless listed, modelling offline preprocessing
        and a local coordinator). ``timeout`` bounds every wait on an actor that has
        stopped (one that is still computing gets more time). ``chaos`` injects faults.
        ``data`` gives parties named plaintext tensors they hold (see :meth:`input_from`);
        ``reveal_policy`` maps a party to its own rules for values derived from its data
        (:class:`actors.policy.RevealPolicy`, or a list of recipients allowed any reveal;
        a party not named allows nothing). A seeded cluster refuses party-held inputs.

        ``value_bound``: revealed values larger in magnitude raise ``ValueOutOfRange``
        naming the op: ``"headroom"`` (default) is ``FixedPoint.headroom`` of the value's
        encoding, ``2**31.5 / scale`` (3,037,000.5 at base 10 / precision 3, 46,340.95 at
        base 2 / 16 bits); a number is a bound in real units; ``None`` turns it off.
        ``check=True`` (or a :class:`protocols.reference.Tolerance`) turns on check mode:
        the coordinator reveals every op's result and compares it with its plaintext
        reference (``training.check``); slow, for finding the first op that goes wrong.
        """
        require_trio("Cluster.start")
        names = list(parties)
        if len(names) < 2:
            raise ValueError(f"a cluster needs at least 2 parties, got {names}")
        everyone = [*names, provider, coordinator]
        if len(set(everyone)) != len(everyone) or not all(
            isinstance(n, str) and n for n in everyone
        ):
            raise ValueError(f"actor names must be distinct non-empty strings, got {everyone}")
        for n in everyone:
            check_name(n)  # a party's name names its checkpoint file
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        _value_bound(value_bound), _check_tolerance(check)  # refuse before starting anything
        suite = get_suite(protocols)
        policies = legacy_policies(names, reveal_policy)
        pairs = {(a, b) for a in names for b in names if a != b}
        roles = Roles(coordinator, provider, frozenset(names))
        net = Network(
            everyone,
            timeout=timeout,
            default=network,
            default_pairs=pairs,
            links=links,
            roles=roles,
        )
        net.set_chaos(chaos)
        cluster = cls(
            names, provider, coordinator, net, seed, suite, value_bound=value_bound, check=check
        )
        dealer = CryptoProvider(provider, names, coordinator, net.endpoints[provider], seed, suite)
        actors = [
            Party(
                n,
                names,
                provider,
                coordinator,
                net.endpoints[n],
                suite,
                data=(data or {}).get(n),
                policy=policies[n],
                seeded=seed is not None,
            )
            for n in names
        ]
        cluster.catalog = {
            n: {k: tuple(v.shape) for k, v in (data or {}).get(n, {}).items()} for n in names
        }
        try:
            async with trio.open_nursery() as nursery:
                cluster._nursery = nursery
                await nursery.start(net.run)
                await nursery.start(dealer.run)
                for actor in actors:
                    await nursery.start(actor.run)
                async with cluster._serving(nursery):
                    yield cluster
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls: type[C],
        config: ClusterConfig | str | Path,
        seed: int | None = None,
        *,
        protocols: str | None = None,
        timeout: float = 30.0,
        chaos: Chaos | None = None,
        reveal_policy: object = None,
        connect_timeout: float = 60.0,
        value_bound: ValueBound = "headroom",
        check: bool | Tolerance = False,
    ) -> AsyncIterator[C]:
        """Drive a cluster whose parties and provider are node processes
        (``python -m actors.node``), over mutually authenticated TLS.

        ``config`` is the cluster file (:mod:`actors.config`). A fresh session id is drawn
        for every call; the nodes get the session's settings (suite name, timeout,
        chaos) and serve this one session. Same frames, meters and errors as
        :meth:`start`: a node that dies is reported as :class:`PartyFailure` naming it.
        ``value_bound`` and ``check`` as in :meth:`start` (check mode compares only what
        the coordinator may reveal).

        What the coordinator cannot set: each party's reveal policy comes from its own
        node's configuration (``reveal_policy`` here raises ``TypeError``), and a ``seed``
        goes to the provider only and is refused by every node not started with
        ``--allow-insecure-seed`` (:class:`actors.tls.SessionRefused`).
        """
        from .messages import Session
        from .tls import SessionRefused, TlsTransport

        require_trio("Cluster.connect")
        if reveal_policy is not None:
            raise TypeError(
                "Cluster.connect takes no reveal_policy: each party sets its own in its node's "
                "configuration ([actors.NAME.reveal] in the cluster file, or the node's "
                "--allow-reveal); the coordinator cannot grant itself access"
            )
        _value_bound(value_bound), _check_tolerance(check)
        cfg = config if isinstance(config, ClusterConfig) else load_config(config)
        if protocols is not None and not isinstance(protocols, str):
            raise TypeError("over TLS the protocol suite is given by name")
        suite = get_suite(protocols)
        names = list(cfg.parties)
        roles = Roles(cfg.coordinator, cfg.provider, frozenset(names))
        transport = TlsTransport(
            cfg.coordinator, cfg, timeout=timeout, roles=roles, connect_timeout=connect_timeout
        )
        transport.set_chaos(None)
        cluster = cls(
            names,
            cfg.provider,
            cfg.coordinator,
            transport,
            seed,
            suite,
            value_bound=value_bound,
            check=check,
        )
        session = Session(
            secrets.token_hex(16),
            protocols or "default",
            seed,
            timeout,
            chaos.seed if chaos else 0,
            chaos.crash if chaos else None,
            chaos.max_delay if chaos else 0.0,
        )
        cluster.session = session.id
        try:
            async with trio.open_nursery() as nursery:
                cluster._nursery = nursery
                await nursery.start(transport.run)
                transport.start_heartbeats()
                try:
                    ready = await transport.open_session(session)
                except SessionRefused:
                    with trio.CancelScope(shield=True):
                        await transport.close()
                    raise
                cluster.catalog = {
                    n: {k: tuple(v) for k, v in ready[n].catalog.items()} for n in names
                }
                async with cluster._serving(nursery, transport.close):
                    yield cluster
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    def _check_quiet(self) -> None:
        """After the final barrier no message may be left unclaimed anywhere: one that
        is names a tag or sender that no operation expected."""
        for name, box in self.network.mailboxes.items():
            left = box.unclaimed()
            if left:
                raise PartyFailure(
                    name,
                    ProtocolError(
                        f"{name} received messages no operation asked for: "
                        + ", ".join(f"{tag!r} from {sender}" for sender, tag in left[:5])
                    ),
                )

    def _log_summary(self) -> None:
        stats = self.stats(by_label=self._op_log is not None)
        self._log.debug("comm_stats", **stats.as_dict())  # the table's figures, as JSON
        for name, a in stats.per_actor.items():
            self._log.debug(
                "actor_summary",
                summary_of=name,
                sent={p.name.lower(): v for p, v in a.sent.items() if v},
                received={p.name.lower(): v for p, v in a.received.items() if v},
                messages_sent=a.messages_sent,
                messages_received=a.messages_received,
            )

    # -- runtime used by the frontend ---------------------------------------------------------
    @asynccontextmanager
    async def _serving(
        self, nursery: trio.Nursery, close: Callable[[], Awaitable[object]] | None = None
    ) -> AsyncIterator[None]:
        """The user's block of :meth:`start` / :meth:`connect`: on a normal exit, wait for
        every op, check nothing is left over and log the summary; always mark the cluster
        closed, run ``close`` (shielded) and stop the actors."""
        try:
            yield
            await self.flush()
            self._check_quiet()
            self._log_summary()
        finally:
            self._closed = True
            if close is not None:
                with trio.CancelScope(shield=True):
                    await close()
            nursery.cancel_scope.cancel()

    def _check_open(self) -> None:
        if self._closed or self._nursery is None:
            raise RuntimeError("this cluster has been closed")
        if threading.get_ident() != self._thread:
            raise RuntimeError(
                "this cluster runs in another thread (its trio run's); operations on its "
                "shares must be issued there: with training.sync.Session, pass the code to "
                "session.run(fn) (e.g. session.run(step) for a training step, "
                "session.run(lambda: Adam(model.parameters()))) and reveal with session.get"
            )

    def new_tid(self) -> int:
        self._next_tid += 1
        return self._next_tid

    def input(self, encoded: torch.Tensor) -> int:
        """Share an already-encoded int64 tensor; returns its tensor id."""
        self._check_open()
        if encoded.dtype != torch.int64:
            raise TypeError(f"input expects an encoded int64 tensor, got {encoded.dtype}")
        if encoded.numel() == 0:
            raise ShapeError(f"cannot share an empty tensor (shape {tuple(encoded.shape)})")
        tid = self.new_tid()
        op = self._op_id()
        for party, piece in zip(
            self.parties, share(encoded, len(self.parties), self._prg), strict=True
        ):
            self._endpoint.send_nowait(party, f"{op}/in", Phase.INPUT, tensors=[piece])
        shape = tuple(encoded.shape)
        self._command(Command("input", op, (), (tid,), Params(shape=shape)))
        self.last_op = op
        self._record(op, "input", (), (shape,), 1, False, Cost(0, 0, 0))
        return tid

    def input_from(self, owner: str, name: str, scale: int) -> tuple[int, Shape]:
        """Have party ``owner`` share its local tensor ``name`` (encoded at ``scale``);
        the plaintext never reaches this coordinator. Returns the tensor id and shape.
        The value is owned by ``owner``: it is revealed only to ``owner`` or to a recipient
        the reveal policy names for it."""
        self._check_open()
        if owner not in self.parties:
            raise ValueError(f"{owner!r} is not a party of this cluster")
        shape = self.catalog.get(owner, {}).get(name)
        if shape is None:
            raise KeyError(
                f"{owner} holds no tensor named {name!r} "
                f"(it holds {sorted(self.catalog.get(owner, {}))})"
            )
        if ":" in name:
            raise ValueError(f"tensor names may not contain ':', got {name!r}")
        tid = self.new_tid()
        op = self._op_id()
        params = Params(d=scale, shape=shape)
        self._command(Command("input", op, (), (tid,), params, f"{owner}:{name}"))
        self.last_op = op
        self._record(op, "input", (), (shape,), 1, False, Cost(0, 0, 0))
        return tid, shape

    def submit(
        self,
        kind: str,
        inputs: Sequence[int],
        shapes: Sequence[Sequence[int]],
        out: Sequence[Sequence[int]],
        params: Params | None = None,
    ) -> list[int]:
        """Queue one op; returns the ids of its outputs at once (asynchronous dispatch).

        ``shapes`` are the shared operands' shapes, ``out`` the results' shapes; the suite
        decides from them (and the divisor) which dealer material the op needs."""
        self._check_open()
        n = len(self.parties)
        if not isinstance(kind, str):
            raise TypeError(f"an op kind is a name, got {kind!r}")
        impl = self.suite.kind(kind, n)
        inputs = _ids(inputs, kind)
        in_shapes = _shape_list(shapes, kind)
        out_shapes = _shape_list(out, kind)
        if len(inputs) != impl.n_in or len(out_shapes) != impl.n_out:
            raise ValueError(
                f"op kind {kind!r} takes {impl.n_in} inputs and {impl.n_out} outputs, "
                f"got {len(inputs)} and {len(out_shapes)}"
            )
        if len(in_shapes) != len(inputs):
            raise ValueError(f"{kind}: {len(inputs)} inputs but {len(in_shapes)} shapes")
        params = _checked_params(params, kind)
        divisor = 1 if params is None else params.d
        specs = impl.specs(in_shapes, out_shapes[0], divisor, n)
        op = self._op_id()
        outs = [self.new_tid() for _ in out_shapes]
        if specs:
            self._reqs.append(DealerRequest(op, kind, list(in_shapes), out_shapes[0], divisor))
        self._command(Command(kind, op, tuple(inputs), tuple(outs), params))
        self.last_op = op
        if self._op_log is not None or debug_enabled():
            cost = self.suite.cost(kind, in_shapes, out_shapes[0], divisor, n)
            self._record(op, kind, in_shapes, out_shapes, divisor, impl.interactive, cost)
        return outs

    def _record(
        self,
        op: int,
        kind: str,
        shapes: tuple[Shape, ...],
        out: tuple[Shape, ...],
        divisor: int,
        interactive: bool,
        cost: Cost,
    ) -> None:
        rec = OpRecord(
            op, kind, _label.get(), _iteration.get(), shapes, out, divisor, interactive, cost
        )
        if self._op_log is not None:
            self._op_log.append(rec)
        self._log.debug(
            "op_issued",
            op_id=op,
            kind=kind,
            label=rec.label,
            iteration=rec.iteration,
            shapes=[list(s) for s in shapes],
            out=[list(s) for s in out],
            divisor=divisor,
            interactive=interactive,
            rounds=cost.rounds,
            online_bytes=cost.online_bytes,
            dealer_bytes=cost.dealer_bytes,
        )

    def release(self, tid: int) -> None:
        """Forget a tensor at the parties (called when its handle is garbage collected)."""
        if not self._closed:
            self._to_free.append(tid)

    def track(self, handle: object, tid: int) -> None:
        weakref.finalize(handle, self.release, tid)

    def label(self, name: str) -> AbstractContextManager[None]:
        """Label the ops issued inside (e.g. ``"forward/fc1"``); logs and reports group by it."""
        return _scoped(_label, name)

    def iteration(self, index: int) -> AbstractContextManager[None]:
        """Tag the ops issued inside with a training iteration (logged with each op)."""
        return _scoped(_iteration, index)

    def current_label(self) -> str | None:
        return _label.get()

    def track_op_costs(self) -> None:
        """Start the op log and per-op metering (see :meth:`take_op_costs`)."""
        self.network.track_ops()
        if self._op_log is None:
            self._op_log = []

    def take_op_costs(self) -> list[tuple[OpRecord, int, int, int]]:
        """``(record, online bytes, offline bytes, largest depth)`` of every op issued since
        the last call (call after ``await flush()``), measured, and forget them."""
        log, self._op_log = self._op_log or [], []
        self._labels.measure(self.network.take_ops())
        return self._labels.take(log)

    async def reveal(self, tid: int, shape: Sequence[int], to: str | None = None) -> torch.Tensor:
        """Reveal a value to its owner (this coordinator) as the raw ring tensor."""
        (out,) = await self.reveal_many([(tid, shape)], to)
        return out

    async def reveal_many(
        self, items: Sequence[tuple[int, Sequence[int]]], to: str | None = None
    ) -> list[torch.Tensor]:
        """Reveal several values ``(tid, shape)`` at once (one batch of commands, every
        answer awaited together) as raw ring tensors."""
        self._check_open()
        wanted = [(_ids([tid], "reveal")[0], _sizes(shape, "reveal")) for tid, shape in items]
        to = self.coordinator if to is None else to
        if to != self.coordinator:
            raise AccessDenied(
                f"cannot reveal to {to!r}: values are revealed only to their owner "
                f"{self.coordinator!r}; nothing was sent"
            )
        ops = []
        for tid, shape in wanted:
            ops.append(self._op_id())
            self._command(Command("reveal", ops[-1], (tid,), (), Params(shape=shape), to))
        self._send_pending()
        out: list[torch.Tensor] = []
        denied: AccessDenied | ProtocolError | None = None
        self._waits += 1
        try:
            for op, (_, shape) in zip(ops, wanted, strict=True):
                total: torch.Tensor | None = None
                for party in self.parties:
                    env = await self._mailbox.recv(party, f"{op}/out")
                    if env.phase == Phase.CONTROL:
                        denied = denied or access_denied(env)
                        continue  # every party answers; take every answer before raising
                    if env.phase != Phase.OUTPUT:
                        raise ProtocolError(
                            f"reveal {op}: {party} answered in phase {env.phase.name}"
                        )
                    tensors = env.tensors()
                    check_expect(tensors, [(shape, torch.int64)], f"reveal {op} from {party}")
                    total = tensors[0] if total is None else total + tensors[0]
                    self._floor = max(self._floor, env.depth)
                if total is not None:
                    out.append(total)
        finally:
            self._waits -= 1
        if denied is not None:
            raise denied
        return out

    def save_shares(self, tids: Sequence[int], directory: str | Path) -> None:
        """Have every party write its own shares of ``tids`` to ``<directory>/<party>.shares.pt``
        (in-process clusters: the parties see this file system). Done at the next flush."""
        self._check_open()
        op = self._op_id()
        self._command(Command("save", op, _ids(tids, "save"), (), None, str(directory)))

    def load_shares(self, directory: str | Path, count: int) -> list[int]:
        """Have every party read back its own ``count`` shares saved by :meth:`save_shares`;
        returns the new tensor ids (in the saved order)."""
        self._check_open()
        op = self._op_id()
        tids = [self.new_tid() for _ in range(count)]
        self._command(Command("load", op, (), tuple(tids), None, str(directory)))
        return tids

    def resume_op_ids(self, next_op: int) -> None:
        """Continue op ids from ``next_op`` (a resumed checkpoint: with a seeded cluster,
        the same op ids give the same masks and dealer material as the original run)."""
        self._next_op = max(self._next_op, int(next_op))

    async def flush(self) -> None:
        """Wait until every op issued so far has finished at every party."""
        self._check_open()
        op = self._op_id()
        self._command(Command("barrier", op))
        self._send_pending()
        self._waits += 1
        try:
            for party in self.parties:
                env = await self._mailbox.recv(party, f"{op}/done")
                self._floor = max(self._floor, env.control(Reply).depth)
            await self.network.settle()
        finally:
            self._waits -= 1

    def stats(self, *, by_label: bool = False) -> CommStats:
        """Measured communication so far (call after ``await flush()`` for settled numbers).

        Rounds are the largest depth reached, where every op issued after the coordinator
        synchronised (a reveal or a flush) starts no earlier than the depth reached then:
        the difference of two snapshots is what a network would spend in between.
        ``by_label=True`` adds per-label rows from the op log (needs ``track_op_costs()``,
        which a ``TrainingCoordinator`` turns on)."""
        labels = None
        if by_label:
            if self._op_log is None:
                raise RuntimeError(
                    "stats(by_label=True) needs the op log: call cluster.track_op_costs() "
                    "before the ops to break down (a TrainingCoordinator turns it on)"
                )
            self._labels.measure(self.network.take_ops())
            labels = self._labels.by_label(self._op_log)
        wall = time.perf_counter() - self._started
        return CommStats.combine(
            self.network.actor_stats(), self._floor, wall_seconds=wall, by_label=labels
        )

    # -- command batching ---------------------------------------------------------------------
    def _op_id(self) -> int:
        op = self._next_op
        self._next_op += 1
        return op

    def _command(self, cmd: Command) -> None:
        self._cmds.append(cmd)
        if not self._flush_scheduled and self._nursery is not None:
            self._flush_scheduled = True
            self._nursery.start_soon(self._flush_soon)

    async def _flush_soon(self) -> None:
        self._send_pending()

    def _send_pending(self) -> None:
        self._flush_scheduled = False
        if self._to_free and not self._closed:
            self._cmds.append(Command("free", self._op_id(), tuple(self._to_free)))
            self._to_free = []
        if self._reqs:
            body = encode_control(Requests(self._reqs))
            self._endpoint.send_nowait(
                self.provider, f"req/{self._req_seq}", Phase.CONTROL, control=body
            )
            self._req_seq += 1
            self._reqs = []
        if self._cmds:
            body = encode_control(Batch(self._floor, self._cmds))
            for party in self.parties:
                self._endpoint.send_nowait(
                    party, f"cmd/{self._cmd_seq}", Phase.CONTROL, control=body
                )
            self._cmd_seq += 1
            self._cmds = []
