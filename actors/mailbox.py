"""One actor's mailbox: messages matched by (sender, tag), whatever their arrival order.

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


class Mailbox:
    """An actor's inbox: messages wait here until the actor asks for ``(sender, tag)``."""

    def __init__(self, owner: str, timeout: float) -> None:
        self.owner = owner
        self.timeout = timeout
        self._ready: dict[tuple[str, str], Envelope] = {}
        self._waiting: dict[tuple[str, str], trio.Event] = {}
        self._blocked: dict[tuple[str, str], tuple[str, float]] = {}
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
        for sender, since in self._blocked.values():
            oldest[sender] = min(since, oldest.get(sender, math.inf))
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
        working (see the module doc)."""
        key = (sender, tag)
        if self._fault is not None:
            raise self._fault
        env = self._ready.pop(key, None)
        if env is None:
            limit = self.timeout if timeout is not None and timeout < 0 else timeout
            ev = self._waiting[key] = trio.Event()
            if limit is not None:
                self._blocked[key] = (sender, trio.current_time())
            waited = 0.0
            suspect = False
            try:
                while True:
                    bound = math.inf if limit is None else (limit / 4 if suspect else limit)
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
                        suspect = False
                        continue
                    chain = self.judge(sender, waited)
                    if chain is None:
                        suspect = False
                    elif not suspect:
                        # Look once more after a short grace before blaming: when a
                        # computation has just released this process's loop, this timer
                        # can fire before the peers' heartbeats (due as long) are sent.
                        suspect = True
                    else:
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
