"""Links between actors, mailboxes, simulated latency and bandwidth, and the meter.

There is one link per ordered pair of actors. A link without a profile hands a message
straight to the receiver's mailbox; a link with a :class:`NetworkProfile` runs a trio
memory channel and a pump task that holds each message until its delivery time
(``latency + bytes / bandwidth``, with the link busy while it transmits), so simulated
delays really delay. The mailbox matches messages by ``(sender, tag)``, so arrival order
never matters, and every wait on it has a bound.
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import pairwise

import trio

from protocols.errors import ActorTimeout, ProtocolError

from .envelope import Envelope, op_of
from .stats import Meter


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


_CONTROL_TAG = re.compile(r"(cmd|req)/\d+|setup/key")


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
        if head in ("cmd", "req") or step == "in":
            allowed = {self.coordinator}
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


class Mailbox:
    """An actor's inbox: messages wait here until the actor asks for ``(sender, tag)``."""

    def __init__(self, owner: str, timeout: float) -> None:
        self.owner = owner
        self.timeout = timeout
        self._ready: dict[tuple[str, str], Envelope] = {}
        self._waiting: dict[tuple[str, str], trio.Event] = {}
        self._blocked: dict[tuple[str, str], str] = {}
        self._timed_out_on: str | None = None
        self._pending_ops: dict[int, int] = defaultdict(int)
        self._fault: ProtocolError | None = None
        self.is_finished: Callable[[int], bool] = lambda op: False
        self.lookup: Callable[[str], Mailbox | None] = lambda name: None
        self.roles: Roles | None = None

    def waiting_for(self) -> str | None:
        """An actor this mailbox's owner is blocked on right now (a bounded wait), if any.
        Idle waits (for the next command) do not count."""
        for sender in self._blocked.values():
            return sender
        # An actor whose own bound just ran out (in the same instant) still counts as
        # blocked on what it waited for.
        return self._timed_out_on

    def holds_from(self, sender: str) -> bool:
        """Whether unclaimed messages from ``sender`` are waiting here."""
        return any(s == sender for s, _ in self._ready)

    def _wait_chain(self, sender: str) -> tuple[str, ...]:
        """Who waits for whom, from this owner to an actor that waits for nobody. When the
        waits close a cycle (a deadlock: a message went astray), the blame goes to the
        first actor in it whose waiter holds other, unclaimed messages from it: it sent
        something, but not what was awaited."""
        chain = [self.owner, sender]
        while True:
            box = self.lookup(chain[-1])
            nxt = box.waiting_for() if box is not None else None
            if nxt is None:
                return tuple(chain)
            if nxt in chain:
                cycle = [*chain[chain.index(nxt) :], nxt]
                for waiter, awaited in pairwise(cycle):
                    wbox = self.lookup(waiter)
                    if wbox is not None and wbox.holds_from(awaited):
                        return (*chain[: chain.index(waiter) + 1], awaited)
                return tuple(chain)
            chain.append(nxt)

    def fail(self, error: ProtocolError) -> None:
        if self._fault is None:
            self._fault = error
            for ev in self._waiting.values():
                ev.set()

    def deliver(self, env: Envelope) -> None:
        """Called by the network; never raises into the sender. A bad message poisons the
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
        self._ready[key] = env
        if op is not None:
            self._pending_ops[op] += 1
        ev = self._waiting.get(key)
        if ev is not None:
            ev.set()

    async def recv(self, sender: str, tag: str, timeout: float | None = -1.0) -> Envelope:
        """The message ``tag`` from ``sender``; waits at most ``timeout`` seconds (the
        mailbox default when omitted, forever when None)."""
        key = (sender, tag)
        if self._fault is not None:
            raise self._fault
        env = self._ready.pop(key, None)
        if env is None:
            limit = self.timeout if timeout is not None and timeout < 0 else timeout
            ev = self._waiting[key] = trio.Event()
            if limit is not None:
                self._blocked[key] = sender
            try:
                with trio.move_on_after(math.inf if limit is None else limit) as scope:
                    await ev.wait()
            finally:
                del self._waiting[key]
                self._blocked.pop(key, None)
            if self._fault is not None:
                raise self._fault
            if scope.cancelled_caught:
                self._timed_out_on = sender
                raise ActorTimeout(
                    self.owner, sender, repr(tag), float(limit or 0), self._wait_chain(sender)
                )
            env = self._ready.pop(key)
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


class _Link:
    __slots__ = ("busy_until", "profile", "recv_ch", "send_ch")

    def __init__(self, profile: NetworkProfile | None) -> None:
        self.profile = profile
        self.busy_until = 0.0
        if profile is not None and profile.delays:
            self.send_ch, self.recv_ch = trio.open_memory_channel[tuple[float, Envelope]](math.inf)
        else:
            self.send_ch = self.recv_ch = None  # type: ignore[assignment]


Interceptor = Callable[[Envelope], Envelope | None]


class InjectedCrash(RuntimeError):
    """Raised inside an actor by :class:`Chaos` to simulate that actor crashing."""


@dataclass(frozen=True, slots=True)
class Chaos:
    """Fault injection on the network, for reliability tests.

    ``crash=(actor, k)`` makes ``actor`` raise :class:`InjectedCrash` when it sends its
    k-th message (1-based). ``max_delay`` holds every message for a random time in
    ``[0, max_delay]`` seconds, independently, so messages are also reordered, within and
    across links. Draws come from ``random.Random(seed)``: a chaos run is reproducible.
    """

    seed: int = 0
    crash: tuple[str, int] | None = None
    max_delay: float = 0.0

    def __post_init__(self) -> None:
        if not (self.max_delay >= 0 and math.isfinite(self.max_delay)):
            raise ValueError(f"max_delay must be a finite number >= 0, got {self.max_delay!r}")
        if self.crash is not None and self.crash[1] < 1:
            raise ValueError(f"crash index is 1-based, got {self.crash[1]}")


class Network:
    """All links of one cluster, the mailboxes they feed and the meter that counts them."""

    def __init__(
        self,
        actors: list[str],
        *,
        timeout: float,
        default: NetworkProfile | None = None,
        default_pairs: set[tuple[str, str]] | None = None,
        links: Mapping[tuple[str, str], NetworkProfile] | None = None,
        roles: Roles | None = None,
    ) -> None:
        self.meter = Meter(actors)
        self.mailboxes = {a: Mailbox(a, timeout) for a in actors}
        for box in self.mailboxes.values():
            box.lookup = self.mailboxes.get
        if roles is not None:
            for box in self.mailboxes.values():
                box.roles = roles
        self.interceptor: Interceptor | None = None
        self.chaos: Chaos | None = None
        self._chaos_rng = random.Random(0)
        self._sent_count: dict[str, int] = dict.fromkeys(actors, 0)
        self._nursery: trio.Nursery | None = None
        self._links: dict[tuple[str, str], _Link] = {}
        links = dict(links or {})
        for a, b in links:
            if a not in self.mailboxes or b not in self.mailboxes:
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

    def send(self, env: Envelope) -> None:
        """Meter and deliver (or schedule) one envelope. Never blocks."""
        link = self._links.get((env.sender, env.receiver))
        if link is None:
            raise ProtocolError(f"no link from {env.sender!r} to {env.receiver!r}")
        if self.interceptor is not None:
            maybe = self.interceptor(env)
            if maybe is None:
                return
            env = maybe
        chaos = self.chaos
        if chaos is not None:
            self._sent_count[env.sender] += 1
            if chaos.crash is not None and chaos.crash == (
                env.sender,
                self._sent_count[env.sender],
            ):
                raise InjectedCrash(
                    f"chaos: {env.sender} crashed sending its message #{chaos.crash[1]} ({env.tag!r})"
                )
        self.meter.record(env)
        if chaos is not None and chaos.max_delay > 0 and self._nursery is not None:
            delay = self._chaos_rng.uniform(0, chaos.max_delay)
            self._nursery.start_soon(self._deliver_later, delay, env)
            return
        if link.send_ch is None:
            self.mailboxes[env.receiver].deliver(env)
            return
        prof = link.profile
        assert prof is not None
        now = trio.current_time()
        start = max(now, link.busy_until)
        link.busy_until = start + prof.transmit_seconds(env.payload_bytes + env.header_bytes)
        link.send_ch.send_nowait((link.busy_until + prof.latency, env))

    def set_chaos(self, chaos: Chaos | None) -> None:
        self.chaos = chaos
        self._chaos_rng = random.Random(chaos.seed if chaos else 0)
        self._sent_count = dict.fromkeys(self._sent_count, 0)

    async def _deliver_later(self, delay: float, env: Envelope) -> None:
        await trio.sleep(delay)
        self.mailboxes[env.receiver].deliver(env)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Pump delayed links until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for link in self._links.values():
                if link.recv_ch is not None:
                    nursery.start_soon(self._pump, link)
            task_status.started()
            await trio.sleep_forever()

    async def _pump(self, link: _Link) -> None:
        async for deliver_at, env in link.recv_ch:
            await trio.sleep_until(deliver_at)
            self.mailboxes[env.receiver].deliver(env)
