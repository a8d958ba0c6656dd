"""The coordinator's runtime: issuing ops, command batching, reveals, barriers, stats.

Every op the frontend issues becomes a :class:`actors.messages.Command` queued here and sent
in one batch per party at the coordinator's next checkpoint (and a dealer request to the
provider where the op needs material), so a sequence of operations costs one control
message per party; the parties start each op as soon as its inputs exist. A reveal asks
every party for its share; a party may refuse (:class:`actors.policy.RevealRefused`, decided
by every owner's own rules, see :mod:`actors.policy`), and the refusal is raised here. The
op log (:mod:`actors.oplog`) records every op with its label and closed-form cost.
:class:`actors.cluster.Cluster` adds the life cycle (start in one process, connect to node
processes).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path

import torch
import trio

from protocols import share
from protocols.errors import AccessDenied, ProtocolError, ShapeError
from protocols.params import NO_PARAMS, Params
from protocols.prg import Prg
from protocols.reference import Tolerance
from protocols.suite import Cost, Suite

from .arguments import (
    ValueBound,
    check_tolerance,
    checked_params,
    ids,
    shape_list,
    sizes,
    value_bound_of,
)
from .constants import PublicCache
from .endpoint import Transport
from .envelope import Phase
from .log import debug_enabled, get_logger
from .messages import (
    Batch,
    Command,
    DealerRequest,
    Folder,
    FromParty,
    Recipient,
    Reply,
    Requests,
    encode_control,
)
from .opcontext import check_expect
from .oplog import OpFacts, OpRecord, Shape, iteration_var, label_var, log_op, scoped
from .policy import access_denied
from .provider import CryptoProvider
from .recording import Entry, Recording
from .stats import CommStats, LabelBook


class Runtime:
    """The coordinator's side of a running cluster (see the module doc)."""

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
        self.value_bound = value_bound_of(value_bound)
        """Bound on the magnitude of revealed values, read by the frontend: ``"headroom"``
        (a value's square must fit the ring, ``FixedPoint.headroom``), a real number, or
        ``None`` (no check)."""
        self.check = check_tolerance(check)
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
        self._constants = PublicCache()
        """Public operands sent before go by reference (:mod:`actors.constants`)."""
        self._facts = OpFacts(suite, len(self.parties))
        self._waits = 0
        self._endpoint.busy = lambda: self._waits
        self._log = get_logger(actor=coordinator)
        self.session: str | None = None
        """The session id (TLS clusters)."""
        self.catalog: dict[str, dict[str, Shape]] = {}
        """Named tensors each party holds: name -> shape (see :meth:`input_from`)."""
        self.dealer: CryptoProvider | None = None
        """The provider actor when it runs in this process (its ``compute_seconds``)."""
        self.recording: Recording | None = None
        """Where :meth:`submit` records while a span is recorded (:mod:`actors.recording`)."""

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
        self._unreplayable("it shares an input")
        tid = self.new_tid()
        op = self._op_id()
        for party, piece in zip(
            self.parties, share(encoded, len(self.parties), self._prg), strict=True
        ):
            self._endpoint.send_nowait(party, f"{op}/in", Phase.INPUT, tensors=[piece])
        shape = tuple(encoded.shape)
        params = Params(shape=shape)
        self._command(Command("input", op, (), (tid,), params))
        self.last_op = op
        log_op(self._op_log, self._log, op, "input", (), (shape,), params, False, Cost(0, 0, 0))
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
        self._unreplayable("a party shares an input")
        tid = self.new_tid()
        op = self._op_id()
        if not isinstance(scale, int) or scale < 1:
            raise ValueError(f"the encoding scale is a positive integer, got {scale!r}")
        params = Params(scale=scale, shape=shape)
        self._command(Command("input", op, (), (tid,), params, FromParty(owner, name)))
        self.last_op = op
        log_op(self._op_log, self._log, op, "input", (), (shape,), params, False, Cost(0, 0, 0))
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
        decides from them (and the kind's parameter: the divisor, dropout's keep units)
        which dealer material the op needs."""
        self._check_open()
        n = len(self.parties)
        if not isinstance(kind, str):
            raise TypeError(f"an op kind is a name, got {kind!r}")
        impl = self.suite.kind(kind, n)
        inputs = ids(inputs, kind)
        in_shapes = shape_list(shapes, kind)
        out_shapes = shape_list(out, kind)
        if len(in_shapes) != len(inputs):
            raise ValueError(f"{kind}: {len(inputs)} inputs but {len(in_shapes)} shapes")
        params = checked_params(params, kind)
        if len(inputs) != impl.n_in or len(out_shapes) != impl.n_out or impl.optional_out:
            why = impl.arity_error(len(inputs), len(out_shapes), params)
            if why is not None:
                raise ValueError(why)
        given = NO_PARAMS if params is None else params
        param = impl.param(given)
        logged = self.logs_ops
        dealt, cost = self._facts.of(kind, impl, in_shapes, out_shapes[0], param, logged)
        op = self._op_id()
        outs = tuple(self.new_tid() for _ in out_shapes)
        entry = Entry(kind, inputs, outs, in_shapes, out_shapes[0], params, dealt)
        self._queue(entry, op, inputs, outs)
        if self.recording is not None:
            entry.label = label_var.get()
            self.recording.add(entry)
        if logged:
            assert cost is not None
            interactive = impl.interactive
            log_op(
                self._op_log, self._log, op, kind, in_shapes, out_shapes, given, interactive, cost
            )
        return list(outs)

    def _queue(self, e: Entry, op: int, ins: tuple[int, ...], outs: tuple[int, ...]) -> None:
        """Queue op ``op`` of kind and facts ``e`` on tensors ``ins`` -> ``outs``, and its
        dealer request where it is dealt for: :meth:`submit`'s last step, and a replay's."""
        if e.dealt:
            g = NO_PARAMS if e.params is None else e.params
            self._reqs.append(DealerRequest(op, e.kind, list(e.shapes), e.out_shape, g.d, g.keep))
        self._command(Command(e.kind, op, ins, outs, self._constants.outgoing(e.params)))
        self.last_op = op

    def _unreplayable(self, why: str) -> None:
        if self.recording is not None:  # (not queued ops alone)
            self.recording.block(why)

    def release(self, tid: int) -> None:
        """Forget a tensor at the parties (called when its handle is garbage collected)."""
        if not self._closed:
            self._to_free.append(tid)

    def label(self, name: str) -> AbstractContextManager[None]:
        """Label the ops issued inside (e.g. ``"forward/fc1"``); logs and reports group by it."""
        return scoped(label_var, name)

    def iteration(self, index: int) -> AbstractContextManager[None]:
        """Tag the ops issued inside with a training iteration (logged with each op)."""
        return scoped(iteration_var, index)

    def current_label(self) -> str | None:
        return label_var.get()

    @property
    def logs_ops(self) -> bool:  # (then something reads the ops' labels)
        return self._op_log is not None or debug_enabled()

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

    async def reveal(
        self, tid: int, shape: Sequence[int], to: str | None = None, *, flush: bool = False
    ) -> torch.Tensor:
        """Reveal a value to its owner (this coordinator) as the raw ring tensor."""
        (out,) = await self.reveal_many([(tid, shape)], to, flush=flush)
        return out

    async def reveal_many(
        self,
        items: Sequence[tuple[int, Sequence[int]]],
        to: str | None = None,
        *,
        flush: bool = False,
    ) -> list[torch.Tensor]:
        """Reveal several values ``(tid, shape)`` at once (one batch of commands, every
        answer awaited together) as raw ring tensors; ``flush=True``: and :meth:`flush`,
        its barrier in the same batch (one exchange with the parties instead of two)."""
        self._check_open()
        self._unreplayable("it reveals")
        wanted = [(ids([tid], "reveal")[0], sizes(shape, "reveal")) for tid, shape in items]
        to = self.coordinator if to is None else to
        if to != self.coordinator:
            raise AccessDenied(
                f"cannot reveal to {to!r}: values are revealed only to their owner "
                f"{self.coordinator!r}; nothing was sent"
            )
        ops = []
        for tid, shape in wanted:
            ops.append(self._op_id())
            self._command(
                Command("reveal", ops[-1], (tid,), (), Params(shape=shape), Recipient(to))
            )
        barrier = self._barrier() if flush else None
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
            if barrier is not None:  # every party answers it, a refused reveal or not
                await self._barrier_done(barrier)
        finally:
            self._waits -= 1
        if denied is not None:
            raise denied
        return out

    def save_shares(self, tids: Sequence[int], directory: str | Path) -> None:
        """Have every party write its own shares of ``tids`` to ``<directory>/<party>.shares.pt``
        (in-process clusters: the parties see this file system). Done at the next flush."""
        self._check_open()
        self._unreplayable("it saves shares")
        op = self._op_id()
        self._command(Command("save", op, ids(tids, "save"), target=Folder(str(directory))))

    def load_shares(self, directory: str | Path, count: int) -> list[int]:
        """Have every party read back its own ``count`` shares saved by :meth:`save_shares`;
        returns the new tensor ids (in the saved order)."""
        self._check_open()
        self._unreplayable("it loads shares")
        op = self._op_id()
        tids = [self.new_tid() for _ in range(count)]
        self._command(Command("load", op, (), tuple(tids), target=Folder(str(directory))))
        return tids

    def resume_op_ids(self, next_op: int) -> None:
        """Continue op ids from ``next_op`` (a resumed checkpoint: with a seeded cluster,
        the same op ids give the same masks and dealer material as the original run)."""
        self._next_op = max(self._next_op, int(next_op))

    async def flush(self) -> None:
        """Wait until every op issued so far has finished at every party."""
        self._check_open()
        op = self._barrier()
        self._send_pending()
        self._waits += 1
        try:
            await self._barrier_done(op)
        finally:
            self._waits -= 1

    def _barrier(self) -> int:
        op = self._op_id()
        self._command(Command("barrier", op))
        return op

    async def _barrier_done(self, op: int) -> None:
        """Every party's answer to barrier ``op``, then the network's meters settled."""
        for party in self.parties:
            env = await self._mailbox.recv(party, f"{op}/done")
            self._floor = max(self._floor, env.control(Reply).depth)
        await self.network.settle()

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
