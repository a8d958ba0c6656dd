"""Communication statistics: measured from every message the network carried."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .envelope import Envelope, Phase, op_of

_EMPTY: Mapping[str, ActorStats] = MappingProxyType({})


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

    def __sub__(self, other: ActorStats) -> ActorStats:
        return ActorStats(
            MappingProxyType({p: self.sent.get(p, 0) - other.sent.get(p, 0) for p in Phase}),
            MappingProxyType(
                {p: self.received.get(p, 0) - other.received.get(p, 0) for p in Phase}
            ),
            self.messages_sent - other.messages_sent,
            self.messages_received - other.messages_received,
            self.online_depth - other.online_depth,
        )


@dataclass(frozen=True, slots=True)
class CommStats:
    """Totals over a cluster's life (or, after subtraction, over an interval)."""

    online_rounds: int
    """Growth of the largest online dependency depth (see DESIGN: metering)."""
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
    """Envelope and tensor-record headers of all messages, counted apart."""
    messages: int
    """Number of messages of every phase."""
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


class Meter:
    """Counts every envelope the network accepts. Owned by the network, not by any actor."""

    def __init__(self, actors: list[str]) -> None:
        self._by_phase = dict.fromkeys(Phase, 0)
        self._header = 0
        self._messages = 0
        self._online_messages = 0
        self._rounds = 0
        self._sent = {a: dict.fromkeys(Phase, 0) for a in actors}
        self._recv = {a: dict.fromkeys(Phase, 0) for a in actors}
        self._msent = dict.fromkeys(actors, 0)
        self._mrecv = dict.fromkeys(actors, 0)
        self._depth = dict.fromkeys(actors, 0)
        self.track_ops = False
        self.op_costs: dict[int, list[int]] = {}
        """With ``track_ops``: op id -> [online bytes, offline bytes, largest online depth]."""

    def record(self, env: Envelope) -> None:
        n = env.payload_bytes
        self._by_phase[env.phase] += n
        self._header += env.header_bytes
        self._messages += 1
        self._sent[env.sender][env.phase] += n
        self._recv[env.receiver][env.phase] += n
        self._msent[env.sender] += 1
        self._mrecv[env.receiver] += 1
        if self.track_ops and env.phase in (Phase.ONLINE, Phase.OFFLINE):
            op = op_of(env.tag)
            if op is not None:
                cost = self.op_costs.setdefault(op, [0, 0, 0])
                if env.phase == Phase.ONLINE:
                    cost[0] += n
                    cost[2] = max(cost[2], env.depth)
                else:
                    cost[1] += n
        if env.phase == Phase.ONLINE:
            self._online_messages += 1
            if env.depth > self._rounds:
                self._rounds = env.depth
            if env.depth > self._depth[env.sender]:
                self._depth[env.sender] = env.depth

    def snapshot(self) -> CommStats:
        per_actor = {
            a: ActorStats(
                MappingProxyType(dict(self._sent[a])),
                MappingProxyType(dict(self._recv[a])),
                self._msent[a],
                self._mrecv[a],
                self._depth[a],
            )
            for a in self._sent
        }
        p = self._by_phase
        return CommStats(
            self._rounds,
            p[Phase.ONLINE],
            p[Phase.OFFLINE],
            p[Phase.INPUT],
            p[Phase.OUTPUT],
            p[Phase.CONTROL],
            self._header,
            self._messages,
            self._online_messages,
            MappingProxyType(per_actor),
        )
