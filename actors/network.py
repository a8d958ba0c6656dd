"""The transport seam: per-actor endpoints, the in-memory network, mailboxes, observers.

Every actor owns an :class:`Endpoint`: it packs what the actor sends into frames
(:mod:`actors.wire`), meters them (each actor meters what it sends and receives; the
coordinator combines the meters), and hands them to a transport. The transport delivers
frames to the receiver's endpoint, which unpacks them with the sender *the link* vouches
for and files them in the receiver's :class:`Mailbox`. This module's :class:`Network` is
the in-memory transport: one link per ordered pair of actors; a link without a
:class:`NetworkProfile` delivers at once, a link with one holds each frame until its
delivery time (``latency + bytes / bandwidth``, the link busy while it transmits).

Middleware: ``network.observers`` is a list of callables that see every envelope on its
way to a mailbox and may pass it on, change it or drop it (return None). Taps, fault
injection (:class:`Chaos`) and the fuzz tests are observers.

Liveness: every endpoint sends each peer a small heartbeat (metered apart) every quarter
of the timeout, carrying whether its actor is busy and whom it is blocked on. A wait that
runs past its bound blames the awaited peer only if that peer really stopped: nothing at
all heard from it (not even a heartbeat), or it is idle, or blocked in a cycle; a peer that
is computing, or waiting on one that is, gets more time. No endpoint ever reads another
actor's mailbox: what it knows of a peer is what the peer's heartbeats said.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Protocol

import msgspec
import torch
import trio

from protocols.errors import ActorTimeout, ProtocolError

from .envelope import Envelope, Phase, op_of
from .stats import ActorStats, Meter
from .wire import pack_frame, unpack_frame


@dataclass(frozen=True, slots=True)
class NetworkProfile:
    """Delay model of one link."""

    latency: float = 0.0
    """Seconds from send to delivery for every message."""
    bandwidth: float | None = None
    """Bits per second, or None for unlimited."""

    def __post_init__(self) -> None:
        if not (self.latency >= 0 and math.isfinite(self.latency)):
            raise ValueError(f"latency must be a finite number >= 0, got {self.latency!r}")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0 bits/s, got {self.bandwidth!r}")

    def transmit_seconds(self, nbytes: int) -> float:
        return 0.0 if self.bandwidth is None else 8 * nbytes / self.bandwidth

    @property
    def delays(self) -> bool:
        return self.latency > 0 or self.bandwidth is not None


MAX_BUFFERED_BYTES = 1 << 30
MAX_BUFFERED_FRAMES = 1 << 16
"""Default budget of unclaimed messages per sender at one mailbox: 1 GiB, 65,536 messages
(a peer that floods a receiver with frames nobody asked for is stopped, not buffered)."""

_CONTROL_TAG = re.compile(r"(cmd|req)/\d+|setup/key|setup/policy|hb")


@dataclass(frozen=True, slots=True)
class Roles:
    """Who may send which tags to whom; the mailbox refuses anything else on arrival."""

    coordinator: str
    provider: str
    parties: frozenset[str]

    def wrong_sender(self, receiver: str, sender: str, tag: str) -> str | None:
        """Why ``sender`` may not send ``tag`` to ``receiver``, or None if it may."""
        if sender == receiver:
            return "an actor does not message itself"
        head, _, step = tag.partition("/")
        if head in ("cmd", "req"):
            allowed = {self.coordinator}
        elif step == "in":  # shares of an input: from the coordinator or the owning party
            allowed = {self.coordinator, *self.parties}
        elif tag == "setup/key" or step.startswith("dealer"):
            allowed = {self.provider}
        else:
            allowed = set(self.parties)
        if receiver == self.provider and head != "req":
            return "the provider accepts only dealer requests"
        if receiver == self.coordinator and step not in ("out", "done"):
            return "the coordinator accepts only outputs and barrier replies"
        if sender not in allowed:
            return f"only {sorted(allowed)} may send it"
        return None


class Heartbeat(msgspec.Struct, frozen=True, array_like=True):
    """What an endpoint tells its peers about its actor, a few times per timeout."""

    busy: int
    """Operations the actor is running (0: idle)."""
    waiting: list[str]
    """Actors it is blocked on right now (bounded waits only)."""
    stray: list[str]
    """Senders of messages that arrived and were not asked for (yet)."""


_HB_DEC = msgspec.msgpack.Decoder(Heartbeat)
_HB_ENC = msgspec.msgpack.Encoder()


class Mailbox:
    """An actor's inbox: messages wait here until the actor asks for ``(sender, tag)``."""

    def __init__(self, owner: str, timeout: float) -> None:
        self.owner = owner
        self.timeout = timeout
        self._ready: dict[tuple[str, str], Envelope] = {}
        self._waiting: dict[tuple[str, str], trio.Event] = {}
        self._blocked: dict[tuple[str, str], str] = {}
        self._pending_ops: dict[int, int] = defaultdict(int)
        self._fault: ProtocolError | None = None
        self.is_finished: Callable[[int], bool] = lambda op: False
        self.roles: Roles | None = None
        self.judge: Callable[[str, float], tuple[str, ...] | None] = lambda s, waited: (
            self.owner,
            s,
        )
        """At a bound: the wait chain to blame, or None to keep waiting (set by the endpoint)."""
        self.stalled: Callable[[], None] = lambda: None
        self.max_buffered_bytes = MAX_BUFFERED_BYTES
        """Payload bytes one sender may have waiting here, unclaimed (then: ProtocolError)."""
        self.max_buffered_frames = MAX_BUFFERED_FRAMES
        """Messages one sender may have waiting here, unclaimed."""
        self._buffered: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def waiting_for(self) -> list[str]:
        """Actors this mailbox's owner is blocked on right now (bounded waits only)."""
        return sorted(set(self._blocked.values()))

    def stray_senders(self) -> list[str]:
        return sorted({s for s, _ in self._ready})

    def fail(self, error: ProtocolError) -> None:
        if self._fault is None:
            self._fault = error
            for ev in self._waiting.values():
                ev.set()

    def deliver(self, env: Envelope) -> None:
        """Called by the transport; never raises into the sender. A bad message poisons the
        mailbox and the owner's next wait raises ProtocolError."""
        key = (env.sender, env.tag)
        op = op_of(env.tag)
        if op is None and not _CONTROL_TAG.fullmatch(env.tag):
            self.fail(
                ProtocolError(
                    f"{self.owner} got a message with a malformed tag {env.tag!r} from {env.sender}"
                )
            )
            return
        if self.roles is not None:
            wrong = self.roles.wrong_sender(self.owner, env.sender, env.tag)
            if wrong is not None:
                self.fail(ProtocolError(f"{self.owner} got {env.tag!r} from {env.sender}: {wrong}"))
                return
        if key in self._ready:
            self.fail(
                ProtocolError(f"{self.owner} got a duplicate message {env.tag!r} from {env.sender}")
            )
            return
        if op is not None and self.is_finished(op):
            self.fail(
                ProtocolError(
                    f"{self.owner} got an unexpected message {env.tag!r} from {env.sender} "
                    f"for operation {op}, which has already finished"
                )
            )
            return
        held = self._buffered[env.sender]
        held[0] += 1
        held[1] += env.payload_bytes
        if held[0] > self.max_buffered_frames or held[1] > self.max_buffered_bytes:
            self.fail(
                ProtocolError(
                    f"{self.owner} holds {held[0]} unclaimed messages ({held[1]} bytes) from "
                    f"{env.sender}, over its budget of {self.max_buffered_frames} messages / "
                    f"{self.max_buffered_bytes} bytes per sender"
                )
            )
            return
        self._ready[key] = env
        if op is not None:
            self._pending_ops[op] += 1
        ev = self._waiting.get(key)
        if ev is not None:
            ev.set()

    async def recv(self, sender: str, tag: str, timeout: float | None = -1.0) -> Envelope:
        """The message ``tag`` from ``sender``; waits at most ``timeout`` seconds (the
        mailbox default when omitted, forever when None) unless the sender is known to be
        working (see the module doc)."""
        key = (sender, tag)
        if self._fault is not None:
            raise self._fault
        env = self._ready.pop(key, None)
        if env is None:
            limit = self.timeout if timeout is not None and timeout < 0 else timeout
            ev = self._waiting[key] = trio.Event()
            if limit is not None:
                self._blocked[key] = sender
            waited = 0.0
            try:
                while True:
                    bound = math.inf if limit is None else limit
                    deadline = trio.current_time() + bound
                    with trio.move_on_after(bound) as scope:
                        await ev.wait()
                    if not scope.cancelled_caught or limit is None:
                        break
                    waited += bound
                    if trio.current_time() - deadline > bound / 4:
                        # Woken long after the deadline: this process's loop was blocked
                        # by a computation, which proves nothing about the peer.
                        self.stalled()
                        continue
                    chain = self.judge(sender, waited)
                    if chain is not None:
                        raise ActorTimeout(self.owner, sender, repr(tag), waited, chain)
            finally:
                del self._waiting[key]
                self._blocked.pop(key, None)
            if self._fault is not None:
                raise self._fault
            env = self._ready.pop(key)
        held = self._buffered[sender]
        held[0] -= 1
        held[1] -= env.payload_bytes
        op = op_of(tag)
        if op is not None:
            left = self._pending_ops[op] - 1
            if left:
                self._pending_ops[op] = left
            else:
                del self._pending_ops[op]
        return env

    def leftovers(self, op: int) -> list[tuple[str, str]]:
        """Messages of ``op`` that arrived but were never asked for."""
        if not self._pending_ops.get(op):
            return []
        return [k for k in self._ready if op_of(k[1]) == op]

    def __len__(self) -> int:
        return len(self._ready)

    def unclaimed(self) -> list[tuple[str, str]]:
        """(sender, tag) of every message that arrived and was never asked for."""
        return list(self._ready)


class InjectedCrash(RuntimeError):
    """Raised inside an actor by :class:`Chaos` to simulate that actor crashing."""


@dataclass(frozen=True, slots=True)
class Chaos:
    """Fault injection, for reliability tests.

    ``crash=(actor, k)`` makes ``actor`` raise :class:`InjectedCrash` when it sends its
    k-th message (1-based, heartbeats not counted). ``max_delay`` holds every message for
    a random time in ``[0, max_delay]`` seconds, independently, so messages are also
    reordered, within and across links. Draws come from ``random.Random(seed)``: a chaos
    run is reproducible.
    """

    seed: int = 0
    crash: tuple[str, int] | None = None
    max_delay: float = 0.0

    def __post_init__(self) -> None:
        if not (self.max_delay >= 0 and math.isfinite(self.max_delay)):
            raise ValueError(f"max_delay must be a finite number >= 0, got {self.max_delay!r}")
        if self.crash is not None and self.crash[1] < 1:
            raise ValueError(f"crash index is 1-based, got {self.crash[1]}")


Observer = Callable[[Envelope], Envelope | None]
"""Middleware: sees each envelope before delivery; returns it (maybe changed) or None."""


class Transport(Protocol):
    """What endpoints and the coordinator need of a transport: :class:`Network` (every
    actor in memory) or :class:`actors.tls.TlsTransport` (one actor, TLS links)."""

    endpoints: dict[str, Endpoint]
    observers: list[Observer]

    @property
    def mailboxes(self) -> dict[str, Mailbox]: ...

    def observe(self, observer: Observer) -> Callable[[], None]: ...

    def before_send(self, sender: str) -> None: ...

    async def capacity(self, sender: str, receiver: str) -> None: ...

    def carry(self, sender: str, receiver: str, frame: bytearray) -> None: ...

    def actor_stats(self) -> dict[str, ActorStats]: ...

    async def settle(self) -> None: ...

    def track_ops(self) -> None: ...

    def take_ops(self) -> list[dict[int, list[int]]]: ...


class Endpoint:
    """One actor's end of the transport: frames out, envelopes in, its own meter."""

    def __init__(self, name: str, network: Transport, timeout: float) -> None:
        self.name = name
        self.network = network
        self.timeout = timeout
        self.mailbox = Mailbox(name, timeout)
        self.mailbox.judge = self._judge
        self.mailbox.stalled = self._note_stall
        self.meter = Meter(name)
        self.busy: Callable[[], int] = lambda: 0
        """Set by the actor: how many operations it is running."""
        self._heard: dict[str, float] = {}
        self._states: dict[str, Heartbeat] = {}
        self._stalled_at = -math.inf
        """When this process was last seen stalled (a long computation blocked its loop)."""

    # -- sending ---------------------------------------------------------------------------
    def send_nowait(
        self,
        receiver: str,
        tag: str,
        phase: Phase,
        depth: int = 0,
        *,
        tensors: Sequence[torch.Tensor] | None = None,
        control: bytes | None = None,
    ) -> int:
        """Frame, meter and hand over one message; returns its payload bytes."""
        frame, payload = pack_frame(tag, phase, depth, tensors=tensors, control=control)
        if phase != Phase.HEARTBEAT:
            self.network.before_send(self.name)
        self.meter.sent(phase, payload, len(frame), depth, tag)
        self.network.carry(self.name, receiver, frame)
        return payload

    async def send(
        self,
        receiver: str,
        tag: str,
        phase: Phase,
        depth: int = 0,
        *,
        tensors: Sequence[torch.Tensor] | None = None,
        control: bytes | None = None,
    ) -> int:
        """As :meth:`send_nowait`, waiting while the link is full (back-pressure)."""
        await self.network.capacity(self.name, receiver)
        return self.send_nowait(receiver, tag, phase, depth, tensors=tensors, control=control)

    # -- receiving -------------------------------------------------------------------------
    def receive(self, env: Envelope) -> None:
        """Called by the transport with an envelope whose sender it vouches for."""
        self._heard[env.sender] = trio.current_time()
        if env.phase == Phase.HEARTBEAT:
            try:
                self._states[env.sender] = _HB_DEC.decode(env.body)
            except msgspec.DecodeError:
                self.mailbox.fail(
                    ProtocolError(f"{self.name}: malformed heartbeat from {env.sender}")
                )
            return
        self.meter.received(env.phase, env.payload_bytes, env.frame_bytes)
        self.mailbox.deliver(env)

    # -- liveness --------------------------------------------------------------------------
    def _note_stall(self) -> None:
        self._stalled_at = trio.current_time()

    def heartbeat(self) -> bytes:
        return _HB_ENC.encode(
            Heartbeat(self.busy(), self.mailbox.waiting_for(), self.mailbox.stray_senders())
        )

    async def run_heartbeats(self, peers: Sequence[str]) -> None:
        interval = self.timeout / 4
        while True:
            body = self.heartbeat()
            for p in peers:
                self.send_nowait(p, "hb", Phase.HEARTBEAT, control=body)
            due = trio.current_time() + interval
            await trio.sleep_until(due)
            if trio.current_time() - due > interval:
                # The loop was blocked (a long computation here or, in one process, in any
                # actor): silence measured across the stall proves nothing.
                self._note_stall()

    def _silent(self, peer: str, waited: float) -> bool:
        heard = self._heard.get(peer)
        now = trio.current_time()
        return (heard is None and waited >= self.timeout) or (
            heard is not None and now - heard > self.timeout
        )

    def _judge(self, sender: str, waited: float) -> tuple[str, ...] | None:
        """The wait chain to blame after waiting ``waited`` s for ``sender``, or None if
        ``sender`` (or whoever it waits for) is still working."""
        if trio.current_time() - self._stalled_at < self.timeout:
            return None
        chain = [self.name, sender]
        while True:
            peer = chain[-1]
            if self._silent(peer, waited):
                return tuple(chain)
            st = self._states.get(peer)
            if st is None:
                return None  # heard from it but no state yet: give it time
            nxt = st.waiting[0] if st.waiting else None
            if nxt is None:
                return None if st.busy else tuple(chain)
            if nxt == self.name or nxt in chain:
                cycle = [*chain[chain.index(nxt) :], nxt] if nxt in chain else [*chain, nxt]
                for waiter, awaited in pairwise(cycle):
                    wst = self._states.get(waiter)
                    if wst is not None and awaited in wst.stray:
                        return (*chain[: chain.index(waiter) + 1], awaited)
                # No one in the cycle sent something unasked to its waiter: an actor
                # outside it that did (a message went to the wrong place) is to blame.
                for waiter in cycle[:-1]:
                    wst = self._states.get(waiter)
                    if wst is not None and wst.stray and waiter in chain:
                        return (*chain[: chain.index(waiter) + 1], wst.stray[0])
                return tuple(chain)
            chain.append(nxt)


class Middleware:
    """What every transport shares: observers (taps, corruption, drops) and fault
    injection (:class:`Chaos`), applied the same way whatever carries the frames."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []
        self.chaos: Chaos | None = None
        self._chaos_rng = random.Random(0)
        self._sent_count: defaultdict[str, int] = defaultdict(int)

    def observe(self, observer: Observer) -> Callable[[], None]:
        """Add middleware; returns a function that removes it."""
        self.observers.append(observer)
        return lambda: self.observers.remove(observer) if observer in self.observers else None

    def set_chaos(self, chaos: Chaos | None) -> None:
        self.chaos = chaos
        self._chaos_rng = random.Random(chaos.seed if chaos else 0)
        self._sent_count.clear()

    def before_send(self, sender: str) -> None:
        """Runs in the sender: fault injection happens here, inside the crashing actor."""
        chaos = self.chaos
        if chaos is not None and chaos.crash is not None and chaos.crash[0] == sender:
            self._sent_count[sender] += 1
            if chaos.crash[1] == self._sent_count[sender]:
                raise InjectedCrash(
                    f"chaos: {sender} crashed sending its message #{chaos.crash[1]}"
                )

    def chaos_delay(self) -> float | None:
        """A random delivery delay when chaos reorders messages, else None."""
        chaos = self.chaos
        if chaos is None or chaos.max_delay <= 0:
            return None
        return self._chaos_rng.uniform(0, chaos.max_delay)

    async def capacity(self, sender: str, receiver: str) -> None:
        await trio.lowlevel.checkpoint()

    def deliver_frame(self, endpoint: Endpoint, sender: str, frame: bytes | bytearray) -> None:
        """Unpack a frame that came over the link from ``sender``, pass it through the
        observers (not heartbeats) and hand it to ``endpoint``; a malformed frame poisons
        the endpoint's mailbox instead of raising into the transport."""
        try:
            env: Envelope | None = unpack_frame(frame, sender, endpoint.name)
        except ProtocolError as exc:
            endpoint.mailbox.fail(exc)
            return
        assert env is not None
        if env.phase != Phase.HEARTBEAT:
            for obs in list(self.observers):
                env = obs(env)
                if env is None:
                    return
        endpoint.receive(env)


class _Link:
    __slots__ = ("busy_until", "profile", "recv_ch", "send_ch")

    def __init__(self, profile: NetworkProfile | None) -> None:
        self.profile = profile
        self.busy_until = 0.0
        if profile is not None and profile.delays:
            self.send_ch, self.recv_ch = trio.open_memory_channel[tuple[float, bytearray]](math.inf)
        else:
            self.send_ch = self.recv_ch = None  # type: ignore[assignment]


class Network(Middleware):
    """The in-memory transport of one cluster: links, endpoints, observers."""

    def __init__(
        self,
        actors: list[str],
        *,
        timeout: float,
        default: NetworkProfile | None = None,
        default_pairs: set[tuple[str, str]] | None = None,
        links: Mapping[tuple[str, str], NetworkProfile] | None = None,
        roles: Roles | None = None,
        heartbeats: bool = True,
    ) -> None:
        self.endpoints = {a: Endpoint(a, self, timeout) for a in actors}
        if roles is not None:
            for ep in self.endpoints.values():
                ep.mailbox.roles = roles
        super().__init__()
        self.heartbeats = heartbeats
        self._nursery: trio.Nursery | None = None
        self._links: dict[tuple[str, str], _Link] = {}
        links = dict(links or {})
        for a, b in links:
            if a not in self.endpoints or b not in self.endpoints:
                raise ValueError(f"network profile for unknown link {a!r} -> {b!r}")
        for a in actors:
            for b in actors:
                if a != b:
                    prof = links.get((a, b))
                    if (
                        prof is None
                        and default is not None
                        and (default_pairs is None or (a, b) in default_pairs)
                    ):
                        prof = default
                    self._links[(a, b)] = _Link(prof)

    @property
    def mailboxes(self) -> dict[str, Mailbox]:
        return {a: ep.mailbox for a, ep in self.endpoints.items()}

    # -- what the coordinator reads (the TLS transport asks remote actors instead) ----------
    def actor_stats(self) -> dict[str, ActorStats]:
        """Every actor's meter, by name."""
        return {a: ep.meter.snapshot() for a, ep in self.endpoints.items()}

    async def settle(self) -> None:
        """Make :meth:`actor_stats` current (in memory it always is)."""

    def track_ops(self) -> None:
        for ep in self.endpoints.values():
            ep.meter.track_ops = True

    def take_ops(self) -> list[dict[int, list[int]]]:
        return [ep.meter.take_ops() for ep in self.endpoints.values()]

    def carry(self, sender: str, receiver: str, frame: bytearray) -> None:
        """Move one frame over the link ``sender -> receiver``."""
        link = self._links.get((sender, receiver))
        if link is None:
            raise ProtocolError(f"no link from {sender!r} to {receiver!r}")
        delay = self.chaos_delay() if self._nursery is not None else None
        if delay is not None and self._nursery is not None:
            self._nursery.start_soon(self._deliver_later, delay, sender, receiver, frame)
            return
        if link.send_ch is None:
            self._deliver(sender, receiver, frame)
            return
        prof = link.profile
        assert prof is not None
        now = trio.current_time()
        start = max(now, link.busy_until)
        link.busy_until = start + prof.transmit_seconds(len(frame))
        link.send_ch.send_nowait((link.busy_until + prof.latency, frame))

    def _deliver(self, sender: str, receiver: str, frame: bytearray) -> None:
        self.deliver_frame(self.endpoints[receiver], sender, frame)

    async def _deliver_later(
        self, delay: float, sender: str, receiver: str, frame: bytearray
    ) -> None:
        await trio.sleep(delay)
        self._deliver(sender, receiver, frame)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Pump delayed links and heartbeats until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for (a, b), link in self._links.items():
                if link.recv_ch is not None:
                    nursery.start_soon(self._pump, a, b, link)
            if self.heartbeats:
                for name, ep in self.endpoints.items():
                    peers = [p for p in self.endpoints if p != name]
                    nursery.start_soon(ep.run_heartbeats, peers)
            task_status.started()
            await trio.sleep_forever()

    async def _pump(self, sender: str, receiver: str, link: _Link) -> None:
        async for deliver_at, frame in link.recv_ch:
            await trio.sleep_until(deliver_at)
            self._deliver(sender, receiver, frame)
