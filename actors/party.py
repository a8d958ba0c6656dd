"""The party actor: holds shares, executes commands, runs protocols with its peers.

A party receives numbered command batches from the coordinator, always in the same order
as every other party, so the op ids in message tags agree without coordination. Each
command starts as soon as its inputs exist (a local op whose inputs are ready runs
inline), so independent ops overlap and share rounds. How each kind runs comes from the
cluster's protocol suite (:mod:`protocols.suite`); the runtime kinds ``input``,
``reveal``, ``free``, ``barrier``, ``save`` and ``load`` are this module's own (``save``
writes this party's own shares of the named tensors to ``<dir>/<party>.shares.pt``,
``load`` reads them back: checkpoints, see ``training.checkpoint``).

Every value a party holds carries its owners (:mod:`actors.policy`): the parties whose own
inputs it was computed from. A result's owners are its operands' owners together, set when
the command is dispatched, so every party knows them in command order; a reveal is decided
then, from every owner's own policy (exchanged between the parties at start), and a refused
one sends nothing but the refusal. Checkpoint files record the owners and loading restores
them: a save and load cannot launder a party's data into the coordinator's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import msgspec
import torch
import trio

from protocols import Prg, Share
from protocols.errors import ProtocolError, UnknownTensorError
from protocols.params import NO_PARAMS
from protocols.prg import KEY_BYTES
from protocols.sharing import share as make_shares
from protocols.suite import OpKind, Suite

from .actor import control_batches, failures_named, malformed
from .constants import PublicCache
from .endpoint import Endpoint
from .envelope import Phase
from .holdings import (
    NOBODY,
    OpReused,
    Slot,
    checkpoint_dir,
    encode_local,
    load_own,
    save_own,
    shares_file,
)
from .log import debug_enabled, get_logger
from .messages import Command, Reply, encode_control
from .opcontext import OpContext, check_expect
from .policy import NO_REVEALS, RevealLedger, RevealPolicy

RUNTIME_KINDS = frozenset({"input", "reveal", "free", "barrier", "save", "load"})


class Party:
    """One secret-sharing party."""

    def __init__(
        self,
        name: str,
        parties: Sequence[str],
        provider: str,
        coordinator: str,
        endpoint: Endpoint,
        suite: Suite,
        *,
        data: Mapping[str, torch.Tensor] | None = None,
        policy: RevealPolicy = NO_REVEALS,
        checkpoint_root: Path | None = None,
        seeded: bool = False,
    ) -> None:
        self.name = name
        self.data = dict(data or {})
        """Named plaintext tensors this party holds (shared on request, see ``input``)."""
        self.policy = policy
        """This party's own rules for values derived from its data (:mod:`actors.policy`)."""
        self.ledger: RevealLedger | None = None
        """Every party's rules, known after the exchange at start."""
        self.checkpoint_root = checkpoint_root
        """The folder save/load may use (None: any path, for one trusted process)."""
        self.seeded = seeded
        """The session's masks come from a seed the coordinator knows: own inputs refused."""
        self._open: set[int] = set()
        self._constants = PublicCache()
        """The public operands the coordinator sent by reference (:mod:`actors.constants`)."""
        self.parties = list(parties)
        self.rank = self.parties.index(name)
        self.provider = provider
        self.coordinator = coordinator
        self.endpoint = endpoint
        self.mailbox = endpoint.mailbox
        self.mailbox.is_finished = self._is_finished
        endpoint.busy = lambda: len(self._running)
        self.suite = suite
        self.store: dict[int, Slot] = {}
        self.prg: Prg | None = None
        self.depth = 0
        """Largest depth of any share this party produced or received."""
        self._floor = 0
        self._done_below = 0
        self._done: set[int] = set()
        self._running: set[int] = set()
        """Ops started and not finished."""
        self._barriers: list[tuple[set[int], trio.Event]] = []
        """Each waiting barrier's ops still running, and its event, set when none is left."""
        self._nursery: trio.Nursery | None = None
        self._kinds: dict[str, OpKind] = {}
        """The suite's kinds by name, looked up once (the suite is fixed for the session)."""
        self._log = get_logger(actor=name)

    # -- bookkeeping ------------------------------------------------------------------
    def _is_finished(self, op: int) -> bool:
        return op < self._done_below or op in self._done

    def _finish(self, op: int) -> None:
        self._open.discard(op)
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

    def _kind(self, kind: str) -> OpKind:
        impl = self._kinds.get(kind)
        if impl is None:
            if kind not in self.suite:
                raise ProtocolError(f"{self.name}: unknown command kind {kind!r}")
            impl = self._kinds[kind] = self.suite.kind(kind, len(self.parties))
        return impl

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
                await self._exchange_policies()  # before any command: reveals need it
                async with aclosing(control_batches(self.mailbox, self.coordinator)) as batches:
                    async for batch in batches:
                        self._floor = max(self._floor, batch.floor)
                        for cmd in batch.ops:
                            with malformed(self.name, "command", cmd):
                                self._dispatch(cmd, self.coordinator)

    async def _exchange_policies(self) -> None:
        """Tell every peer this party's reveal rules, learn theirs (never via the coordinator)."""
        body = encode_control(self.policy)
        for peer in self.parties:
            if peer != self.name:
                await self.endpoint.send(peer, "setup/policy", Phase.CONTROL, control=body)
        policies = {self.name: self.policy}
        for peer in self.parties:
            if peer != self.name:
                env = await self.mailbox.recv(peer, "setup/policy")
                if env.phase != Phase.CONTROL:
                    raise ProtocolError(
                        f"{self.name}: policy from {peer} in phase {env.phase.name}"
                    )
                policies[peer] = env.control(RevealPolicy)
        self.ledger = RevealLedger(policies)

    def _dispatch(self, cmd: Command, sender: str) -> None:
        kind, op = cmd.kind, cmd.op
        assert self._nursery is not None
        if self._is_finished(op) or op in self._open:
            raise OpReused(f"{self.name}: operation id {op} is not new in this session ({kind})")
        self._open.add(op)
        if cmd.params is not None and cmd.params.pub is not None and cmd.params.pub.ref:
            params = self._constants.incoming(cmd.params, f"{self.name}: {kind} {op}")
            cmd = msgspec.structs.replace(cmd, params=params)
        if kind == "free":
            for tid in cmd.ins:
                self.store.pop(tid, None)
            self._finish(op)
            return
        if kind == "barrier":
            done = trio.Event()
            if self._running:
                self._barriers.append((set(self._running), done))
            else:
                done.set()
            self._nursery.start_soon(self._barrier, op, done)
            return
        store = self.store
        ins = [store[t] if t in store else self._slot(t, op) for t in cmd.ins]
        impl = None if kind in RUNTIME_KINDS else self._kinds.get(kind) or self._kind(kind)
        if impl is not None and (
            len(ins) != impl.n_in or len(cmd.outs) != impl.n_out or impl.optional_out
        ):
            why = impl.arity_error(len(ins), len(cmd.outs), cmd.params)
            if why is not None:
                raise ProtocolError(f"{self.name}: operation {op}: {why}")
        if len(ins) == 1:
            owners = ins[0].owners
        else:
            owners = frozenset().union(*[s.owners for s in ins]) if ins else NOBODY
        outs = []
        for tid in cmd.outs:
            if tid in store:
                raise ProtocolError(f"{self.name}: operation {op} would overwrite tensor {tid}")
            slot = store[tid] = Slot(owners)
            outs.append(slot)
        if kind == "input" and cmd.owner is not None:
            source, tensor = cmd.owner, cmd.tensor
            if tensor is None:
                raise ProtocolError(f"{self.name}: input {op} from {source!r} names no tensor")
            if source not in self.parties:
                raise ProtocolError(f"{self.name}: input {op} from {source!r}, not a party")
            if self.seeded:
                raise ProtocolError(
                    f"{self.name}: input {op} from {source}'s own data refused: this session "
                    "is seeded (its masks are known to whoever knows the seed)"
                )
            outs[0].owners = frozenset({source})
            if source == self.name:
                self._start(op, self._input_own(op, outs[0], tensor, cmd))
            else:
                self._start(op, self._input(op, outs[0], cmd, source))
        elif kind == "input":
            self._start(op, self._input(op, outs[0], cmd))
        elif kind == "reveal":
            no = self._decide(op, ins[0], cmd)
            self._when_ready(
                op, ins, cmd, lambda: self._start(op, self._reveal(op, ins[0], cmd, sender, no))
            )
        elif kind == "save":
            self._start(op, self._save(op, ins, cmd))
        elif kind == "load":
            self._load(op, outs, cmd)
            self._finish(op)
        elif impl is not None and impl.local is not None:
            self._local_when_ready(op, impl, ins, outs, cmd)
        else:
            assert impl is not None
            f = self._floor  # an op issued after a synchronisation starts no earlier
            self._when_ready(
                op, ins, cmd, lambda: self._start(op, self._run_op(op, impl, ins, outs, cmd, f))
            )

    def _local_when_ready(
        self, op: int, impl: OpKind, ins: list[Slot], outs: list[Slot], cmd: Command
    ) -> None:
        """Run a local op once its inputs exist: a callback, never a task of its own."""
        fn = impl.local
        assert fn is not None
        params = cmd.params or NO_PARAMS

        def run() -> None:
            shares = [s.share for s in ins]
            results = fn(self.rank, shares, params)  # type: ignore[arg-type]
            for slot, share in zip(outs, results, strict=True):
                slot.set(share)
            self._stopped(op)
            self._finish(op)

        self._when_ready(op, ins, cmd, run)

    def _when_ready(self, op: int, ins: list[Slot], cmd: Command, run: Callable[[], None]) -> None:
        """``run()`` now if every slot of ``ins`` is set, else when the last one is (the op
        counts as running meanwhile): a task is spawned with its inputs, not to wait for them."""
        missing = [s for s in ins if s.share is None]
        if not missing:
            run()
            return
        self._running.add(op)
        count = [len(missing)]

        def arrived() -> None:
            count[0] -= 1
            if count[0] == 0:
                with malformed(self.name, "command", cmd):
                    run()

        for slot in missing:
            slot.callbacks.append(arrived)

    def _start(self, op: int, coro: Any) -> None:
        self._running.add(op)  # (a barrier may wait for it already)
        assert self._nursery is not None
        self._nursery.start_soon(self._runner, op, coro)

    async def _runner(self, op: int, coro: Any) -> None:
        await coro
        self._stopped(op)
        self._finish(op)

    def _stopped(self, op: int) -> None:
        """``op`` is no longer running: release the barriers that waited for it last."""
        self._running.discard(op)
        if self._barriers:
            left = []
            for waiting, done in self._barriers:
                waiting.discard(op)
                if waiting:
                    left.append((waiting, done))
                else:
                    done.set()
            self._barriers = left

    # -- command kinds ----------------------------------------------------------------
    async def _run_op(
        self, op: int, impl: OpKind, ins: list[Slot], outs: list[Slot], cmd: Command, floor: int
    ) -> None:
        shares = [await s.get() for s in ins]
        # An op issued after the coordinator synchronised cannot start before that point.
        start = max([floor, *(s.depth for s in shares)])
        shares = [s if s.depth >= start else Share(s.value, start) for s in shares]
        ctx = OpContext(self, op)
        assert impl.run is not None
        with malformed(self.name, "command", cmd):
            results = await impl.run(ctx, shares, cmd.params or NO_PARAMS)
        for slot, share in zip(outs, results, strict=True):
            slot.set(share)
        depth = max(r.depth for r in results)
        self.depth = max(self.depth, depth)
        if debug_enabled():  # the event's fields cost more than a small op's bookkeeping
            self._log.debug(
                "protocol_run",
                op_id=op,
                kind=cmd.kind,
                inputs=list(cmd.ins),
                outputs=list(cmd.outs),
                shapes=[list(s.value.shape) for s in shares],
                rounds=depth - start,
                depth=depth,
                bytes_sent=ctx.bytes_sent,
                dealer_bytes=ctx.dealer_bytes,
            )

    async def _input_own(self, op: int, out: Slot, tensor: str, cmd: Command) -> None:
        """Share one of this party's own tensors: one share per peer, one kept."""
        values = self.data.get(tensor)
        if values is None:
            raise UnknownTensorError(f"{self.name} holds no local tensor named {tensor!r}")
        shape = cmd.params.shape if cmd.params is not None else None
        if shape is None or tuple(shape) != tuple(values.shape):
            raise ProtocolError(
                f"{self.name}: input {op} names shape {shape}, {tensor!r} is {tuple(values.shape)}"
            )
        assert cmd.params is not None
        if cmd.params.scale < 1:
            raise ProtocolError(
                f"{self.name}: input {op} names encoding scale {cmd.params.scale}, not positive"
            )
        encoded = encode_local(values, cmd.params.scale, self.name, tensor)
        pieces = make_shares(encoded, len(self.parties), Prg.fresh())
        for peer, piece in zip(self.parties, pieces, strict=True):
            if peer != self.name:
                await self.endpoint.send(peer, f"{op}/in", Phase.INPUT, tensors=[piece])
        out.set(Share(pieces[self.rank], 0))

    async def _input(self, op: int, out: Slot, cmd: Command, source: str | None = None) -> None:
        env = await self.mailbox.recv(source or self.coordinator, f"{op}/in")
        if env.phase != Phase.INPUT:
            raise ProtocolError(f"{self.name}: input {op} arrived in phase {env.phase.name}")
        tensors = env.tensors()
        shape = cmd.params.shape if cmd.params is not None else None
        if shape is None:
            raise ProtocolError(f"{self.name}: input {op} names no shape")
        check_expect(tensors, [(tuple(shape), torch.int64)], f"{self.name}: input {op}")
        out.set(Share(tensors[0], 0))

    def _decide(self, op: int, slot: Slot, cmd: Command) -> str | None:
        """Why reveal ``op`` is refused, or None. Decided at dispatch, in command order,
        from every owner's own rules, so every party decides alike (see the module doc)."""
        to = cmd.to
        shape = cmd.params.shape if cmd.params is not None else None
        if to is None or shape is None:
            return f"{self.name} refused reveal {op}: it names no recipient or no shape"
        if to not in (self.coordinator, *self.parties):
            return f"{self.name} refused to reveal to {to!r}: only the coordinator and parties receive reveals"
        assert self.ledger is not None
        why = self.ledger.refusal(slot.owners, to, math.prod(shape))
        return None if why is None else f"{self.name} refused to reveal to {to!r}: {why}"

    async def _reveal(
        self, op: int, slot: Slot, cmd: Command, sender: str, refused: str | None
    ) -> None:
        to = cmd.to
        share = await slot.get()
        shape = cmd.params.shape if cmd.params is not None else None
        malformed = False
        if refused is None and tuple(share.value.shape) != tuple(shape or ()):
            malformed = True
            refused = (
                f"{self.name} refused reveal {op}: it names shape {shape}, "
                f"the value is {tuple(share.value.shape)}"
            )
        if refused is not None:  # _decide refuses a reveal that names no recipient
            self._log.warning("reveal_refused", op_id=op, to=to, owners=sorted(slot.owners))
            reply = Reply(denied=refused, malformed=malformed)
            await self.endpoint.send(
                sender, f"{op}/out", Phase.CONTROL, control=encode_control(reply)
            )
            return
        assert to is not None
        await self.endpoint.send(to, f"{op}/out", Phase.OUTPUT, share.depth, tensors=[share.value])

    async def _save(self, op: int, ins: list[Slot], cmd: Command) -> None:
        """Write this party's own shares of ``ins`` and their owners (nothing else) to its
        file, readable by this user only."""
        path = shares_file(checkpoint_dir(self.name, self.checkpoint_root, op, cmd), self.name)
        save_own(path, self.name, [(await s.get()).value for s in ins], ins)

    def _load(self, op: int, outs: list[Slot], cmd: Command) -> None:
        """Read back this party's own shares written by ``save`` (fresh depth 0), with the
        owners recorded beside them (at dispatch: later reveals need the owners)."""
        path = shares_file(checkpoint_dir(self.name, self.checkpoint_root, op, cmd), self.name)
        load_own(path, self.name, self.parties, outs, op)

    async def _barrier(self, op: int, done: trio.Event) -> None:
        await done.wait()
        reply = encode_control(Reply(depth=max(self.depth, self.endpoint.meter.depth)))
        await self.endpoint.send(self.coordinator, f"{op}/done", Phase.CONTROL, control=reply)
        self._finish(op)
