"""The party actor: holds shares, executes commands, runs protocols with its peers.

A party receives numbered command batches from the coordinator, always in the same order
as every other party, so the op ids in message tags agree without coordination. Each
command starts as soon as its inputs exist (a local op whose inputs are ready runs
inline), so independent ops overlap and share rounds.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import trio

from protocols import Prg, Share, party_material
from protocols.context import Expect, Received
from protocols.errors import (
    AccessDenied,
    ProtocolError,
    UnknownTensorError,
)
from protocols.material import MaterialSpec
from protocols.prg import KEY_BYTES

from .actor import control_batches, failures_named, malformed
from .envelope import Envelope, Phase, encode_control, encode_tensors
from .executor import INTERACTIVE, local_table
from .log import get_logger
from .network import Network


class Slot:
    """A value a party holds or will hold."""

    __slots__ = ("_event", "callbacks", "owner", "share")

    def __init__(self, owner: str) -> None:
        self.share: Share | None = None
        self.owner = owner
        self.callbacks: list[Callable[[], None]] = []
        self._event: trio.Event | None = None  # made only if a task has to wait

    @property
    def ready(self) -> bool:
        return self.share is not None

    def set(self, share: Share) -> None:
        self.share = share
        if self._event is not None:
            self._event.set()
        callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            cb()

    async def get(self) -> Share:
        if self.share is None:
            if self._event is None:
                self._event = trio.Event()
            await self._event.wait()
        assert self.share is not None
        return self.share


def check_expect(tensors: Sequence[torch.Tensor], expect: Expect, what: str) -> None:
    if len(tensors) != len(expect):
        raise ProtocolError(f"{what}: expected {len(expect)} tensors, got {len(tensors)}")
    for t, (shape, dtype) in zip(tensors, expect, strict=True):
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise ProtocolError(
                f"{what}: expected {dtype} {tuple(shape)}, got {t.dtype} {tuple(t.shape)}"
            )


class OpContext:
    """The :class:`protocols.PartyContext` of one party for one op."""

    __slots__ = ("_party", "bytes_sent", "dealer_bytes", "op_id")

    def __init__(self, party: Party, op_id: int) -> None:
        self._party = party
        self.op_id = op_id
        self.bytes_sent = 0
        self.dealer_bytes = 0

    @property
    def rank(self) -> int:
        return self._party.rank

    @property
    def n_parties(self) -> int:
        return len(self._party.parties)

    async def send(self, peer: int, step: str, tensors: Sequence[torch.Tensor], depth: int) -> None:
        p = self._party
        body, payload = encode_tensors(tensors)
        self.bytes_sent += payload
        p.network.send(
            Envelope(
                p.name, p.parties[peer], f"{self.op_id}/{step}", Phase.ONLINE, depth, body, payload
            )
        )

    async def recv(self, peer: int, step: str, expect: Expect) -> Received:
        p = self._party
        env = await p.mailbox.recv(p.parties[peer], f"{self.op_id}/{step}")
        if env.phase != Phase.ONLINE:
            raise ProtocolError(f"{p.name}: {env.tag!r} from {env.sender} is not an online message")
        tensors = env.tensors()
        check_expect(tensors, expect, f"{p.name}: {env.tag!r} from {env.sender}")
        return Received(tensors, env.depth)

    async def material(self, spec: MaterialSpec) -> dict[str, torch.Tensor]:
        p = self._party
        fixes: tuple[torch.Tensor, ...] = ()
        expected = spec.received(self.rank, self.n_parties)
        if expected:
            env = await p.mailbox.recv(p.provider, f"{self.op_id}/{spec.step()}")
            if env.phase != Phase.OFFLINE:
                raise ProtocolError(f"{p.name}: dealer message {env.tag!r} in wrong phase")
            fixes = env.tensors()
            self.dealer_bytes += env.payload_bytes
            expect = [(i.shape, i.dtype) for i in expected]
            check_expect(fixes, expect, f"{p.name}: dealer material {env.tag!r}")
        assert p.prg is not None
        return party_material(spec, self.rank, self.n_parties, p.prg, self.op_id, fixes)


class Party:
    """One secret-sharing party."""

    def __init__(
        self,
        name: str,
        parties: Sequence[str],
        provider: str,
        coordinator: str,
        network: Network,
    ) -> None:
        self.name = name
        self.parties = list(parties)
        self.rank = self.parties.index(name)
        self.provider = provider
        self.coordinator = coordinator
        self.network = network
        self.mailbox = network.mailboxes[name]
        self.mailbox.is_finished = self._is_finished
        self.store: dict[int, Slot] = {}
        self._local = local_table(len(self.parties))
        self.prg: Prg | None = None
        self._done_below = 0
        self._done: set[int] = set()
        self._running: dict[int, trio.Event] = {}
        self._nursery: trio.Nursery | None = None
        self._log = get_logger(actor=name)

    # -- bookkeeping ------------------------------------------------------------------
    def _is_finished(self, op: int) -> bool:
        return op < self._done_below or op in self._done

    def _finish(self, op: int) -> None:
        self._done.add(op)
        while self._done_below in self._done:
            self._done.remove(self._done_below)
            self._done_below += 1
        left = self.mailbox.leftovers(op)
        if left:
            raise ProtocolError(
                f"{self.name}: operation {op} ended with unexpected messages left: "
                + ", ".join(f"{tag!r} from {s}" for s, tag in left)
            )

    def _slot(self, tid: int, op: int) -> Slot:
        try:
            return self.store[tid]
        except KeyError:
            raise UnknownTensorError(
                f"{self.name}: operation {op} refers to tensor {tid}, which it does not hold"
            ) from None

    # -- main loop --------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with failures_named(self.name):
            env = await self.mailbox.recv(self.provider, "setup/key")
            if env.phase != Phase.OFFLINE:
                raise ProtocolError(f"{self.name}: key message in phase {env.phase.name}")
            keys = env.tensors()
            check_expect(keys, [((KEY_BYTES,), torch.uint8)], f"{self.name}: key message")
            self.prg = Prg(bytes(keys[0].numpy().tobytes()))
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                async for batch in control_batches(self.mailbox, self.coordinator, "cmd"):
                    for cmd in batch:
                        with malformed(self.name, "command", cmd):
                            self._dispatch(cmd, self.coordinator)

    def _dispatch(self, cmd: dict[str, Any], sender: str) -> None:
        kind, op = cmd["k"], cmd["op"]
        assert self._nursery is not None
        if kind == "free":
            for tid in cmd["in"]:
                self.store.pop(tid, None)
            self._finish(op)
            return
        if kind == "barrier":
            self._nursery.start_soon(self._barrier, op, list(self._running.values()))
            return
        ins = [self._slot(t, op) for t in cmd["in"]]
        outs = []
        for tid in cmd["out"]:
            if tid in self.store:
                raise ProtocolError(f"{self.name}: operation {op} would overwrite tensor {tid}")
            outs.append(self.store.setdefault(tid, Slot(sender)))
        params = cmd.get("p", {})
        if kind == "input":
            self._start(op, self._input(op, outs[0], params))
        elif kind == "reveal":
            self._start(op, self._reveal(op, ins[0], params, sender))
        elif kind in self._local:
            self._local_when_ready(op, kind, ins, outs, params)
        elif kind in INTERACTIVE:
            self._start(op, self._run_op(op, kind, ins, outs, params, cmd))
        else:
            raise ProtocolError(f"{self.name}: unknown command kind {kind!r} in operation {op}")

    def _local_when_ready(
        self, op: int, kind: str, ins: list[Slot], outs: list[Slot], params: dict[str, Any]
    ) -> None:
        """Run a local op now if its inputs exist, else as soon as the last one is set
        (a callback, not a task: local ops need no scheduling of their own)."""
        missing = [s for s in ins if not s.ready]

        def run() -> None:
            shares = [s.share for s in ins]
            results = self._local[kind](self.rank, shares, params)  # type: ignore[arg-type]
            for slot, share in zip(outs, results, strict=True):
                slot.set(share)
            done = self._running.pop(op, None)
            if done is not None:
                done.set()
            self._finish(op)

        if not missing:
            run()
            return
        self._running[op] = trio.Event()
        count = [len(missing)]

        def arrived() -> None:
            count[0] -= 1
            if count[0] == 0:
                run()

        for slot in missing:
            slot.callbacks.append(arrived)

    def _start(self, op: int, coro: Any) -> None:
        done = self._running[op] = trio.Event()

        async def runner() -> None:
            await coro
            del self._running[op]
            done.set()
            self._finish(op)

        assert self._nursery is not None
        self._nursery.start_soon(runner)

    # -- command kinds ----------------------------------------------------------------
    async def _run_op(
        self,
        op: int,
        kind: str,
        ins: list[Slot],
        outs: list[Slot],
        params: dict[str, Any],
        cmd: dict[str, Any],
    ) -> None:
        shares = [await s.get() for s in ins]
        ctx = OpContext(self, op)
        start = max((s.depth for s in shares), default=0)
        results = await INTERACTIVE[kind](ctx, shares, params)
        for slot, share in zip(outs, results, strict=True):
            slot.set(share)
        self._log.debug(
            "protocol_run",
            op_id=op,
            kind=kind,
            label=cmd.get("label"),
            iteration=cmd.get("it"),
            inputs=cmd["in"],
            outputs=cmd["out"],
            shapes=[list(s.value.shape) for s in shares],
            rounds=max(r.depth for r in results) - start,
            depth=max(r.depth for r in results),
            bytes_sent=ctx.bytes_sent,
            dealer_bytes=ctx.dealer_bytes,
        )

    async def _input(self, op: int, out: Slot, params: dict[str, Any]) -> None:
        env = await self.mailbox.recv(self.coordinator, f"{op}/in")
        if env.phase != Phase.INPUT:
            raise ProtocolError(f"{self.name}: input {op} arrived in phase {env.phase.name}")
        tensors = env.tensors()
        check_expect(tensors, [(tuple(params["shape"]), torch.int64)], f"{self.name}: input {op}")
        out.set(Share(tensors[0], 0))

    async def _reveal(self, op: int, slot: Slot, params: dict[str, Any], sender: str) -> None:
        to = params["to"]
        share = await slot.get()
        if to != slot.owner or sender != slot.owner:
            reason = (
                f"{self.name} refused to reveal to {to!r}: the value is owned by {slot.owner!r}"
            )
            self._log.warning("reveal_refused", op_id=op, to=to, owner=slot.owner)
            body, n = encode_control({"denied": reason})
            self.network.send(Envelope(self.name, sender, f"{op}/out", Phase.CONTROL, 0, body, n))
            return
        body, n = encode_tensors([share.value])
        self.network.send(Envelope(self.name, to, f"{op}/out", Phase.OUTPUT, 0, body, n))

    async def _barrier(self, op: int, running: list[trio.Event]) -> None:
        for ev in running:
            await ev.wait()
        body, n = encode_control({"barrier": op})
        self.network.send(
            Envelope(self.name, self.coordinator, f"{op}/done", Phase.CONTROL, 0, body, n)
        )
        self._finish(op)


def access_denied(env: Envelope) -> AccessDenied:
    """The refusal a party sent instead of a share (ProtocolError if it is not one)."""
    body = env.control()
    if not isinstance(body, dict) or not isinstance(body.get("denied"), str):
        raise ProtocolError(
            f"{env.sender} answered {env.tag!r} with a control message that is not a refusal"
        )
    return AccessDenied(body["denied"])
