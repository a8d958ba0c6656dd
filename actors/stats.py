"""Communication statistics: each actor meters the frames it sends and receives; the
coordinator combines the meters (in one process it reads them, across processes it asks
for them)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .phase import Phase, op_of

_EMPTY: Mapping[str, ActorStats] = MappingProxyType({})
_METERED = tuple(p for p in Phase if p != Phase.HEARTBEAT)


@dataclass(frozen=True, slots=True)
class ActorStats:
    """What one actor sent and received."""

    sent: Mapping[Phase, int]
    """Payload bytes sent, by phase."""
    received: Mapping[Phase, int]
    """Payload bytes received, by phase."""
    messages_sent: int
    messages_received: int
    online_depth: int
    """Largest dependency depth stamped on an online message this actor sent."""
    header_bytes: int = 0
    """Frame bytes sent beyond the payload (frame header, tag, tensor record headers)."""
    heartbeat_bytes: int = 0
    """Frame bytes of heartbeats sent (liveness, not part of any other figure)."""
    online_messages: int = 0

    def __sub__(self, other: ActorStats) -> ActorStats:
        return ActorStats(
            MappingProxyType({p: self.sent.get(p, 0) - other.sent.get(p, 0) for p in Phase}),
            MappingProxyType(
                {p: self.received.get(p, 0) - other.received.get(p, 0) for p in Phase}
            ),
            self.messages_sent - other.messages_sent,
            self.messages_received - other.messages_received,
            self.online_depth - other.online_depth,
            self.header_bytes - other.header_bytes,
            self.heartbeat_bytes - other.heartbeat_bytes,
            self.online_messages - other.online_messages,
        )


@dataclass(frozen=True, slots=True)
class CommStats:
    """Totals over a cluster's life (or, after subtraction, over an interval)."""

    online_rounds: int
    """The coordinator's round clock: the dependency depth of the last result it awaited
    (a reveal) or reached at a barrier (a flush). Ops issued after a synchronisation start
    at that depth, so the difference of two snapshots is the rounds a network spends in
    between (see DESIGN: metering). Work still in flight is not counted until awaited."""
    online_bytes: int
    """Party-to-party payload bytes during protocols, summed over senders."""
    offline_bytes: int
    """Dealer material and keys, provider to parties."""
    input_bytes: int
    """Shares sent by the coordinator when sharing inputs."""
    output_bytes: int
    """Shares sent to the coordinator when revealing."""
    control_bytes: int
    """Commands, dealer requests and barriers (public metadata)."""
    header_bytes: int
    """Frame bytes beyond the payloads, measured from the frames sent."""
    messages: int
    """Number of messages of every phase (heartbeats not counted)."""
    online_messages: int
    per_actor: Mapping[str, ActorStats] = field(default_factory=lambda: _EMPTY)
    """Detail per actor name."""

    def __sub__(self, other: CommStats) -> CommStats:
        return CommStats(
            self.online_rounds - other.online_rounds,
            self.online_bytes - other.online_bytes,
            self.offline_bytes - other.offline_bytes,
            self.input_bytes - other.input_bytes,
            self.output_bytes - other.output_bytes,
            self.control_bytes - other.control_bytes,
            self.header_bytes - other.header_bytes,
            self.messages - other.messages,
            self.online_messages - other.online_messages,
            MappingProxyType(
                {
                    k: v - other.per_actor[k] if k in other.per_actor else v
                    for k, v in self.per_actor.items()
                }
            ),
        )

    def sent_by(self, actor: str, phase: Phase = Phase.ONLINE) -> int:
        return self.per_actor[actor].sent.get(phase, 0) if actor in self.per_actor else 0

    @classmethod
    def combine(cls, actors: Mapping[str, ActorStats], floor: int = 0) -> CommStats:
        """Cluster totals from every actor's own meter; ``floor`` is the coordinator's round
        clock (the depth of its last synchronisation)."""
        total = dict.fromkeys(Phase, 0)
        for a in actors.values():
            for p in _METERED:
                total[p] += a.sent.get(p, 0)
        return cls(
            floor,
            total[Phase.ONLINE],
            total[Phase.OFFLINE],
            total[Phase.INPUT],
            total[Phase.OUTPUT],
            total[Phase.CONTROL],
            sum(a.header_bytes for a in actors.values()),
            sum(a.messages_sent for a in actors.values()),
            sum(a.online_messages for a in actors.values()),
            MappingProxyType(dict(actors)),
        )

    def table(self) -> str:
        """A readable summary (also what ``print(stats)`` shows)."""
        rows = [
            ("online rounds", f"{self.online_rounds:,}"),
            ("online bytes", f"{self.online_bytes:,}"),
            ("offline (dealer) bytes", f"{self.offline_bytes:,}"),
            ("input bytes", f"{self.input_bytes:,}"),
            ("output bytes", f"{self.output_bytes:,}"),
            ("control bytes", f"{self.control_bytes:,}"),
            ("frame header bytes", f"{self.header_bytes:,}"),
            ("messages", f"{self.messages:,} ({self.online_messages:,} online)"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v:>14}" for k, v in rows)

    def __str__(self) -> str:
        return self.table()


class Meter:
    """Counts the frames one actor sends and receives."""

    def __init__(self, actor: str) -> None:
        self.actor = actor
        self._sent = dict.fromkeys(Phase, 0)
        self._recv = dict.fromkeys(Phase, 0)
        self._msent = 0
        self._mrecv = 0
        self._online_sent = 0
        self._header = 0
        self._heartbeat = 0
        self.depth = 0
        """Largest depth stamped on an online message this actor sent."""
        self.track_ops = False
        self._ops: dict[int, list[int]] = {}

    def sent(self, phase: Phase, payload: int, frame: int, depth: int, tag: str = "") -> None:
        if phase == Phase.HEARTBEAT:
            self._heartbeat += frame
            return
        if self.track_ops and phase in (Phase.ONLINE, Phase.OFFLINE):
            op = op_of(tag)
            if op is not None:
                cost = self._ops.setdefault(op, [0, 0, 0])
                if phase == Phase.ONLINE:
                    cost[0] += payload
                    cost[2] = max(cost[2], depth)
                else:
                    cost[1] += payload
        self._sent[phase] += payload
        self._header += frame - payload
        self._msent += 1
        if phase == Phase.ONLINE:
            self._online_sent += 1
            if depth > self.depth:
                self.depth = depth

    def received(self, phase: Phase, payload: int, frame: int) -> None:
        self._recv[phase] += payload
        self._mrecv += 1

    def take_ops(self) -> dict[int, list[int]]:
        """Op id -> [online bytes, offline bytes, largest depth] sent since the last call."""
        ops, self._ops = self._ops, {}
        return ops

    @property
    def online_messages(self) -> int:
        return self._online_sent

    def snapshot(self) -> ActorStats:
        return ActorStats(
            MappingProxyType(dict(self._sent)),
            MappingProxyType(dict(self._recv)),
            self._msent,
            self._mrecv,
            self.depth,
            self._header,
            self._heartbeat,
            self._online_sent,
        )


def combine_meters(meters: Iterable[Meter], floor: int = 0) -> CommStats:
    return CommStats.combine({m.actor: m.snapshot() for m in meters}, floor)
