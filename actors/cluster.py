"""The cluster: parties, crypto provider and the coordinator's side of the runtime.

``Cluster.start`` starts the network, the provider and every party under one trio nursery;
one failure cancels the rest and the ``async with`` block raises a single clear error
(:class:`PartyFailure` naming the actor, or :class:`ActorTimeout` naming the silent one).

The coordinator (the code inside the block) never holds a share: it sends commands, input
shares and dealer requests, and receives only the shares of values it asks to reveal and
owns. Commands are queued and sent in one batch at the coordinator's next checkpoint, so
a sequence of operations costs one control message per party, and the parties start each
op as soon as its inputs exist.
"""

from __future__ import annotations

import contextvars
import importlib
import math
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager
from typing import Any

import torch
import trio

from protocols import FixedPoint, Prg, needs_material, share
from protocols.errors import AccessDenied, PartyFailure, ProtocolError, ShapeError

from .actor import first_error
from .envelope import Envelope, Phase, encode_control, encode_tensors
from .executor import DEALER_KIND
from .log import get_logger
from .network import Chaos, Network, NetworkProfile, Roles
from .party import Party, access_denied, check_expect
from .provider import CryptoProvider
from .stats import CommStats

_label: contextvars.ContextVar[str | None] = contextvars.ContextVar("smpc_label", default=None)
_iteration: contextvars.ContextVar[int | None] = contextvars.ContextVar("smpc_iter", default=None)


@contextmanager
def _scoped(var: contextvars.ContextVar[Any], value: Any) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


class Cluster:
    """A running set of parties with a crypto provider, driven by this coordinator."""

    def __init__(
        self,
        parties: Sequence[str],
        provider: str,
        coordinator: str,
        network: Network,
        seed: int | None,
        frontend: str,
    ) -> None:
        self.parties = list(parties)
        self.provider = provider
        self.coordinator = coordinator
        self.network = network
        self.seed = seed
        self._frontend_name = frontend
        self._prg = Prg.fresh() if seed is None else Prg.from_seed(seed, "coordinator")
        self._mailbox = network.mailboxes[coordinator]
        self._next_tid = 0
        self._next_op = 0
        self._cmds: list[dict[str, Any]] = []
        self._reqs: list[dict[str, Any]] = []
        self._to_free: list[int] = []
        self._cmd_seq = 0
        self._req_seq = 0
        self._flush_scheduled = False
        self._nursery: trio.Nursery | None = None
        self._closed = False
        self._op_labels: dict[int, str | None] | None = None
        self._log = get_logger(actor=coordinator)

    # -- life cycle ---------------------------------------------------------------------
    @staticmethod
    @asynccontextmanager
    async def start(
        parties: Sequence[str] = ("alice", "bob"),
        provider: str = "james",
        seed: int | None = None,
        *,
        coordinator: str = "coordinator",
        network: NetworkProfile | None = None,
        links: Mapping[tuple[str, str], NetworkProfile] | None = None,
        timeout: float = 30.0,
        chaos: Chaos | None = None,
        frontend: str = "training",
    ) -> AsyncIterator[Cluster]:
        """Start a cluster.

        ``seed=None`` draws every key from the OS (secure). An integer seed makes shares
        and dealer material reproducible and is INSECURE: for tests and reproducible runs.
        ``network`` is the delay profile of every party-to-party link; ``links`` overrides
        single ordered links (provider and coordinator links are instantaneous unless
        listed, modelling offline preprocessing and a local coordinator). ``timeout``
        bounds every wait on another actor. ``chaos`` injects faults (see
        :class:`actors.network.Chaos`).
        """
        names = list(parties)
        if len(names) < 2:
            raise ValueError(f"a cluster needs at least 2 parties, got {names}")
        everyone = [*names, provider, coordinator]
        if len(set(everyone)) != len(everyone) or not all(
            isinstance(n, str) and n for n in everyone
        ):
            raise ValueError(f"actor names must be distinct non-empty strings, got {everyone}")
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
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
        cluster = Cluster(names, provider, coordinator, net, seed, frontend)
        dealer = CryptoProvider(provider, names, coordinator, net, seed)
        actors = [Party(n, names, provider, coordinator, net) for n in names]
        try:
            async with trio.open_nursery() as nursery:
                cluster._nursery = nursery
                await nursery.start(net.run)
                await nursery.start(dealer.run)
                for actor in actors:
                    await nursery.start(actor.run)
                try:
                    yield cluster
                    await cluster.flush()
                    cluster._check_quiet()
                    cluster._log_summary()
                finally:
                    cluster._closed = True
                    nursery.cancel_scope.cancel()
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
        stats = self.stats()
        for name, a in stats.per_actor.items():
            self._log.info(
                "actor_summary",
                summary_of=name,
                sent={p.name.lower(): v for p, v in a.sent.items() if v},
                received={p.name.lower(): v for p, v in a.received.items() if v},
                messages_sent=a.messages_sent,
                messages_received=a.messages_received,
            )

    # -- frontend entry points --------------------------------------------------------------
    def _frontend(self) -> Any:
        # Resolved by name so the runtime never imports the autograd frontend statically.
        return importlib.import_module(self._frontend_name)

    def share(
        self,
        tensor: Any,
        precision: int = 3,
        base: int = 10,
        *,
        requires_grad: bool = False,
    ) -> Any:
        """Secret-share a plaintext tensor among the parties; returns a SharedTensor."""
        return self._frontend().SharedTensor.from_plain(
            self, tensor, FixedPoint(base, precision), requires_grad=requires_grad
        )

    def share_module(
        self, module: Any, requires_grad: bool = True, precision: int = 3, base: int = 10
    ) -> Any:
        """A copy of ``module`` whose parameters are SharedTensors (see training.module)."""
        return self._frontend().share_module(
            self, module, requires_grad=requires_grad, fp=FixedPoint(base, precision)
        )

    # -- runtime used by the frontend ---------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed or self._nursery is None:
            raise RuntimeError("this cluster has been closed")

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
            body, n = encode_tensors([piece])
            self.network.send(
                Envelope(self.coordinator, party, f"{op}/in", Phase.INPUT, 0, body, n)
            )
        self._command(
            {"k": "input", "op": op, "in": [], "out": [tid], "p": {"shape": list(encoded.shape)}}
        )
        return tid

    def submit(
        self,
        kind: str,
        inputs: Sequence[int],
        n_out: int = 1,
        params: dict[str, Any] | None = None,
        dealer_shapes: Sequence[Sequence[int]] | None = None,
    ) -> list[int]:
        """Queue one op; returns the ids of its outputs at once (asynchronous dispatch)."""
        self._check_open()
        op = self._op_id()
        outs = [self.new_tid() for _ in range(n_out)]
        cmd: dict[str, Any] = {"k": kind, "op": op, "in": list(inputs), "out": outs}
        if params:
            cmd["p"] = params
        label = _label.get()
        if label is not None:
            cmd["label"] = label
        iteration = _iteration.get()
        if iteration is not None:
            cmd["it"] = iteration
        if self._op_labels is not None:
            self._op_labels[op] = label
        dealer_kind = DEALER_KIND.get(kind)
        divisor = int((params or {}).get("d", 1))
        if dealer_kind is not None and needs_material(dealer_kind, divisor, len(self.parties)):
            if dealer_shapes is None:
                raise ValueError(f"op kind {kind!r} needs dealer shapes")
            self._reqs.append(
                {"op": op, "k": dealer_kind, "s": [list(s) for s in dealer_shapes], "d": divisor}
            )
        self._command(cmd)
        return outs

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

    def track_op_costs(self) -> None:
        """Start recording each op's online/offline bytes and depth (see take_op_costs)."""
        self.network.meter.track_ops = True
        if self._op_labels is None:
            self._op_labels = {}

    def take_op_costs(self) -> list[tuple[int, str | None, int, int, int]]:
        """``(op id, label, online bytes, offline bytes, largest depth)`` of every op issued
        since the last call (call after ``await flush()``), and forget them."""
        labels, self._op_labels = self._op_labels or {}, {}
        costs, self.network.meter.op_costs = self.network.meter.op_costs, {}
        return [
            (op, label, *costs.get(op, (0, 0, 0)))  # type: ignore[misc]
            for op, label in sorted(labels.items())
        ]

    def current_label(self) -> str | None:
        return _label.get()

    async def reveal(self, tid: int, shape: Sequence[int], to: str | None = None) -> torch.Tensor:
        """Reveal a value to its owner (this coordinator) as the raw ring tensor."""
        self._check_open()
        to = self.coordinator if to is None else to
        if to != self.coordinator:
            raise AccessDenied(
                f"cannot reveal to {to!r}: values are revealed only to their owner "
                f"{self.coordinator!r}; nothing was sent"
            )
        op = self._op_id()
        self._command({"k": "reveal", "op": op, "in": [tid], "out": [], "p": {"to": to}})
        self._send_pending()
        total: torch.Tensor | None = None
        for party in self.parties:
            env = await self._mailbox.recv(party, f"{op}/out")
            if env.phase == Phase.CONTROL:
                raise access_denied(env)
            if env.phase != Phase.OUTPUT:
                raise ProtocolError(f"reveal {op}: {party} answered in phase {env.phase.name}")
            tensors = env.tensors()
            check_expect(tensors, [(tuple(shape), torch.int64)], f"reveal {op} from {party}")
            total = tensors[0] if total is None else total + tensors[0]
        assert total is not None
        return total

    async def flush(self) -> None:
        """Wait until every op issued so far has finished at every party."""
        self._check_open()
        op = self._op_id()
        self._command({"k": "barrier", "op": op, "in": [], "out": []})
        self._send_pending()
        for party in self.parties:
            await self._mailbox.recv(party, f"{op}/done")

    def stats(self) -> CommStats:
        """Measured communication so far (call after ``await flush()`` for settled numbers)."""
        return self.network.meter.snapshot()

    # -- command batching ---------------------------------------------------------------------
    def _op_id(self) -> int:
        op = self._next_op
        self._next_op += 1
        return op

    def _command(self, cmd: dict[str, Any]) -> None:
        self._cmds.append(cmd)
        if not self._flush_scheduled and self._nursery is not None:
            self._flush_scheduled = True
            self._nursery.start_soon(self._flush_soon)

    async def _flush_soon(self) -> None:
        self._send_pending()

    def _send_pending(self) -> None:
        self._flush_scheduled = False
        if self._to_free and not self._closed:
            self._cmds.append({"k": "free", "op": self._op_id(), "in": self._to_free, "out": []})
            self._to_free = []
        if self._reqs:
            body, n = encode_control(self._reqs)
            self.network.send(
                Envelope(
                    self.coordinator,
                    self.provider,
                    f"req/{self._req_seq}",
                    Phase.CONTROL,
                    0,
                    body,
                    n,
                )
            )
            self._req_seq += 1
            self._reqs = []
        if self._cmds:
            body, n = encode_control(self._cmds)
            for party in self.parties:
                self.network.send(
                    Envelope(
                        self.coordinator, party, f"cmd/{self._cmd_seq}", Phase.CONTROL, 0, body, n
                    )
                )
            self._cmd_seq += 1
            self._cmds = []
