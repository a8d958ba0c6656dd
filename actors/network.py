"""The in-memory transport and the middleware every transport shares.

:class:`Network` has one link per ordered pair of actors; a link without a
:class:`NetworkProfile` delivers at once, a link with one holds each frame until its
delivery time (``latency + bytes / bandwidth``, the link busy while it transmits).

Middleware (:class:`Middleware`, also under :class:`actors.tls.TlsTransport`):
``observers`` is a list of callables that see every envelope on its way to a mailbox and
may pass it on, change it or drop it (return None). Taps, fault injection (:class:`Chaos`)
and the fuzz tests are observers. Endpoints and mailboxes: :mod:`actors.endpoint`,
:mod:`actors.mailbox`.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio
import trio.testing

from protocols.errors import ProtocolError

from .endpoint import Endpoint, Observer
from .envelope import Envelope, Phase
from .mailbox import Mailbox, Roles
from .stats import ActorStats
from .wire import unpack_frame


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


class Middleware:
    """What every transport shares: observers (taps, corruption, drops) and fault
    injection (:class:`Chaos`), applied the same way whatever carries the frames."""

    hands_over = False
    """Whether :meth:`carry` takes envelopes in place of frames (the in-memory network;
    a test that corrupts frames on the link turns it off)."""

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
        await trio.lowlevel.checkpoint_if_cancelled()

    def immediate(self, sender: str, receiver: str) -> Endpoint | None:
        """The receiver's endpoint when a message on ``sender -> receiver`` may be handed
        to it at once (in memory, nothing on the way: no observer, no chaos, no delay),
        else None (the message takes :meth:`Endpoint.send_nowait`'s path)."""
        return None

    def deliver_frame(self, endpoint: Endpoint, sender: str, frame: bytes | bytearray) -> None:
        """Unpack a frame that came over the link from ``sender``, pass it through the
        observers (not heartbeats) and hand it to ``endpoint``; a malformed frame poisons
        the endpoint's mailbox instead of raising into the transport."""
        try:
            env: Envelope | None = unpack_frame(frame, sender, endpoint.name)
        except ProtocolError as exc:
            endpoint.mailbox.fail(exc)
            return
        self.deliver_envelope(endpoint, env)

    def deliver_envelope(self, endpoint: Endpoint, env: Envelope | None) -> None:
        """Pass an envelope through the observers (not heartbeats) to ``endpoint``."""
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
            self.send_ch, self.recv_ch = trio.open_memory_channel[
                tuple[float, bytearray | Envelope]
            ](math.inf)
        else:
            self.send_ch = self.recv_ch = None  # type: ignore[assignment]


class Network(Middleware):
    """The in-memory transport of one cluster: links, endpoints, observers.

    Without observers an endpoint hands a message over as an envelope holding copies of
    its tensors (:func:`actors.wire.hand_over`) instead of packing a frame that the
    receiver would unpack and copy again; it is delayed and metered by the length the frame
    would have had. With observers (taps, corruption) every message travels as a frame."""

    hands_over = True

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
        self._own_carry = type(self).carry is not Network.carry
        """A subclass that carries messages its own way (a test's reordering link) sees
        every one: no send bypasses it."""
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

    def immediate(self, sender: str, receiver: str) -> Endpoint | None:
        if self.observers or self.chaos is not None or self._own_carry:
            return None
        link = self._links.get((sender, receiver))
        if link is None or link.send_ch is not None:
            return None  # no link (carry names it) or a delayed one
        return self.endpoints[receiver]

    def carry(self, sender: str, receiver: str, frame: bytearray | Envelope) -> None:
        """Move one frame over the link ``sender -> receiver`` (or, from
        :meth:`Endpoint.send_nowait`, an envelope handed over in place of its frame:
        delayed and metered by the frame's length all the same)."""
        link = self._links.get((sender, receiver))
        if link is None:
            raise ProtocolError(f"no link from {sender!r} to {receiver!r}")
        if self._nursery is not None and self.chaos is not None:
            delay = self.chaos_delay()
            if delay is not None:
                self._nursery.start_soon(self._deliver_later, delay, sender, receiver, frame)
                return
        if link.send_ch is None:
            self._deliver(sender, receiver, frame)
            return
        prof = link.profile
        assert prof is not None
        now = trio.current_time()
        start = max(now, link.busy_until)
        size = frame.frame_bytes if isinstance(frame, Envelope) else len(frame)
        link.busy_until = start + prof.transmit_seconds(size)
        link.send_ch.send_nowait((link.busy_until + prof.latency, frame))

    def _deliver(self, sender: str, receiver: str, frame: bytearray | Envelope) -> None:
        endpoint = self.endpoints[receiver]
        if not isinstance(frame, Envelope):
            self.deliver_frame(endpoint, sender, frame)
        elif self.observers and frame.phase != Phase.HEARTBEAT:
            # an observer came after the send: it sees the body the frame would have had
            self.deliver_envelope(endpoint, frame.framed())
        else:
            endpoint.receive(frame)

    async def _deliver_later(
        self, delay: float, sender: str, receiver: str, frame: bytearray | Envelope
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
            for ep in self.endpoints.values():
                nursery.start_soon(ep.mailbox.watch)
            if self.heartbeats:
                for name, ep in self.endpoints.items():
                    peers = [p for p in self.endpoints if p != name]
                    nursery.start_soon(ep.run_heartbeats, peers)
            task_status.started()
            await trio.sleep_forever()

    async def _pump(self, sender: str, receiver: str, link: _Link) -> None:
        async for deliver_at, frame in link.recv_ch:
            await sleep_until_precisely(deliver_at)
            self._deliver(sender, receiver, frame)


TIMER_SLACK = 0.002
"""How early a simulated delivery stops sleeping and starts yielding (seconds): the event
loop's timer wakes at millisecond resolution (epoll's timeout; a 0.2 ms ``trio.sleep``
lasted ~1.2 ms here), so a sub-millisecond link latency slept plainly is simulated as ~1 ms
and more."""


async def sleep_until_precisely(deadline: float) -> None:
    """Wait until ``deadline`` (trio's clock) to within a scheduling pass: a plain sleep until
    :data:`TIMER_SLACK` before it, then yield to every other runnable task (a checkpoint per
    pass) until the clock reaches it. The last stretch spins when nothing else runs: this is
    the simulator, its links' latencies are what it measures. Under a test's
    ``trio.testing.MockClock`` (time moves only when every task sleeps, or by hand) it is a
    plain sleep: spinning would keep that clock from ever reaching the deadline."""
    if isinstance(trio.lowlevel.current_clock(), trio.testing.MockClock):
        await trio.sleep_until(deadline)
        return
    early = deadline - TIMER_SLACK
    if trio.current_time() < early:
        await trio.sleep_until(early)
    while trio.current_time() < deadline:
        await trio.lowlevel.checkpoint()
