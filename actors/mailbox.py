"""One actor's mailbox: messages matched by (sender, tag), whatever their arrival order.

Bounded waits share one timer per mailbox when its transport runs :meth:`Mailbox.watch`
(the in-memory network does: no cancel scope per wait); at each bound the endpoint is
asked whom to blame and the wait is woken with the error.

Arrival checks (a bad message poisons the mailbox; the owner's next wait raises
ProtocolError): a malformed tag, a sender the :class:`Roles` do not allow for the tag, a
duplicate, a message for an op that already finished, and a sender over its budget of
unclaimed messages (a peer that floods a receiver is stopped, not buffered). A bounded
wait that runs out asks the endpoint whom to blame (see :mod:`actors.endpoint`).
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import trio

from protocols.errors import ActorTimeout, ProtocolError

from .envelope import Envelope, op_of

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
        """Why ``sender`` may not send ``tag`` to ``receiver``, or None if it may (runs for
        every message: the allowed senders are built only to name them in a refusal)."""
        if sender == receiver:
            return "an actor does not message itself"
        head, _, step = tag.partition("/")
        if receiver == self.provider and head != "req":
            return "the provider accepts only dealer requests"
        if receiver == self.coordinator and step not in ("out", "done"):
            return "the coordinator accepts only outputs and barrier replies"
        if head in ("cmd", "req"):
            ok = sender == self.coordinator
        elif step == "in":  # shares of an input: from the coordinator or the owning party
            ok = sender == self.coordinator or sender in self.parties
        elif tag == "setup/key" or step.startswith("dealer"):
            ok = sender == self.provider
        else:
            ok = sender in self.parties
        return None if ok else f"only {sorted(self._allowed(head, step, tag))} may send it"

    def _allowed(self, head: str, step: str, tag: str) -> set[str]:
        if head in ("cmd", "req"):
            return {self.coordinator}
        if step == "in":
            return {self.coordinator, *self.parties}
        if tag == "setup/key" or step.startswith("dealer"):
            return {self.provider}
        return set(self.parties)


class _Wait:
    """One bounded wait: the mailbox's watchdog checks it at each bound (not a timer of
    its own) and, when the endpoint blames someone, wakes it with the error."""

    __slots__ = (
        "bound",
        "deadline",
        "error",
        "event",
        "limit",
        "orphaned",
        "sender",
        "since",
        "suspect",
        "tag",
        "waited",
    )

    def __init__(self, sender: str, tag: str, limit: float, event: trio.Event) -> None:
        self.sender = sender
        self.tag = tag
        self.limit = limit
        self.event = event
        self.since = trio.current_time()
        self.bound = limit
        self.deadline = self.since + limit
        self.waited = 0.0
        self.suspect = False
        self.error: BaseException | None = None
        self.orphaned = False
        """Woken because the watchdog ended, not by a message or a verdict."""


class _Watchdog:
    """The sleep of :meth:`Mailbox.watch`, woken earlier when a wait's bound comes first."""

    __slots__ = ("scope",)

    def __init__(self) -> None:
        self.scope: trio.CancelScope | None = None

    def wake_by(self, deadline: float) -> None:
        scope = self.scope
        if scope is not None and deadline < scope.deadline:
            scope.deadline = deadline


class Mailbox:
    """An actor's inbox: messages wait here until the actor asks for ``(sender, tag)``."""

    def __init__(self, owner: str, timeout: float) -> None:
        self.owner = owner
        self.timeout = timeout
        self._ready: dict[tuple[str, str], Envelope] = {}
        self._waiting: dict[tuple[str, str], trio.Event] = {}
        self._blocked: dict[tuple[str, str], _Wait] = {}
        self._watchdog: _Watchdog | None = None
        """The timer of every bounded wait while :meth:`watch` runs."""
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

    def waits(self) -> tuple[list[str], list[float]]:
        """The actors this mailbox's owner is blocked on (bounded waits only), sorted, and
        how long its oldest wait on each has lasted, in seconds."""
        oldest: dict[str, float] = {}
        for w in self._blocked.values():
            oldest[w.sender] = min(w.since, oldest.get(w.sender, math.inf))
        now = trio.current_time()
        names = sorted(oldest)
        return names, [now - oldest[n] for n in names]

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
        working (see the module doc and :meth:`_expired`)."""
        key = (sender, tag)
        if self._fault is not None:
            raise self._fault
        env = self._ready.pop(key, None)
        if env is None:
            limit = self.timeout if timeout is not None and timeout < 0 else timeout
            ev = self._waiting[key] = trio.Event()
            wait = None
            if limit is not None:
                wait = self._blocked[key] = _Wait(sender, tag, limit, ev)
            try:
                while True:
                    if wait is None:
                        await ev.wait()
                        break
                    if self._watchdog is not None:  # one timer for every wait
                        self._watchdog.wake_by(wait.deadline)
                        await ev.wait()
                        if not wait.orphaned:
                            break
                        # the watchdog ended (its transport is closing): time it here
                        wait.orphaned = False
                        ev = self._waiting[key] = wait.event = trio.Event()
                        continue
                    with trio.move_on_at(wait.deadline):
                        await ev.wait()
                    if ev.is_set():
                        break
                    self._expired(wait, trio.current_time())
                    if wait.error is not None:
                        break
            finally:
                del self._waiting[key]
                if wait is not None:
                    del self._blocked[key]
            if wait is not None and wait.error is not None:
                raise wait.error
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

    async def watch(self) -> None:
        """Serve every bounded wait of this mailbox from one timer until cancelled (the
        in-memory network runs one per endpoint); without it each wait times itself."""
        dog = self._watchdog = _Watchdog()
        try:
            while True:
                due = min((w.deadline for w in self._blocked.values()), default=math.inf)
                with trio.CancelScope(deadline=due) as dog.scope:
                    await trio.sleep_forever()
                dog.scope = None
                now = trio.current_time()
                for wait in list(self._blocked.values()):
                    if wait.deadline <= now and not wait.event.is_set():
                        self._expired(wait, now)
                        if wait.error is not None:
                            wait.event.set()
        finally:
            self._watchdog = None
            for wait in self._blocked.values():
                if not wait.event.is_set():
                    wait.orphaned = True
                    wait.event.set()

    def _expired(self, wait: _Wait, now: float) -> None:
        """What the wait loop did at each bound: a wait woken long after its deadline (this
        process's loop was blocked by a computation, which proves nothing about the peer)
        starts again; otherwise the endpoint judges, and a first verdict is looked at once
        more after a quarter bound (when a computation has just released the loop, this
        timer can fire before the peers' heartbeats, due as long, are sent)."""
        bound = wait.bound
        wait.waited += bound
        try:
            if now - wait.deadline > bound / 4:
                self.stalled()
                wait.suspect = False
            else:
                chain = self.judge(wait.sender, wait.waited)
                if chain is None:
                    wait.suspect = False
                elif not wait.suspect:
                    wait.suspect = True
                else:
                    wait.error = ActorTimeout(
                        self.owner, wait.sender, repr(wait.tag), wait.waited, chain
                    )
        except Exception as exc:  # noqa: BLE001  (not into the watchdog: the waiter raises it)
            wait.error = exc
        if wait.error is not None:
            return
        wait.bound = wait.limit / 4 if wait.suspect else wait.limit
        wait.deadline = now + wait.bound

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
