"""Communication statistics: each actor meters the frames it sends and receives; the
coordinator combines the meters (in one process it reads them, across processes it asks
for them). :class:`CommStats` prints as a table with the wall time and a legend of every
row (:data:`LEGEND`); with the op log on, :class:`LabelBook` adds per-label rows (the
meters' per-op bytes grouped by the ops' labels) that add up to the byte totals."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from protocols.suite import Cost

from .phase import Phase, op_of

_EMPTY: Mapping[str, ActorStats] = MappingProxyType({})
_NO_LABELS: Mapping[str, LabelStats] = MappingProxyType({})
UNLABELLED = "(no label)"
"""The row of ops issued outside any ``cluster.label(...)``."""

ROWS: Mapping[str, str] = MappingProxyType(
    {
        "wall_seconds": "wall time",
        "online_rounds": "online rounds",
        "online_bytes": "online bytes",
        "offline_bytes": "offline (dealer) bytes",
        "input_bytes": "input bytes",
        "output_bytes": "output bytes",
        "control_bytes": "control bytes",
        "header_bytes": "frame header bytes",
        "messages": "messages",
    }
)
"""The table's row names, by :class:`CommStats` field (also the JSON log's keys)."""

LEGEND: Mapping[str, str] = MappingProxyType(
    {
        "wall_seconds": "seconds since the cluster started (between snapshots if subtracted)",
        "online_rounds": "sequential party-to-party exchanges: what latency multiplies",
        "online_bytes": "payload the parties sent each other while running protocols",
        "offline_bytes": "correlated randomness and keys the provider sent the parties",
        "input_bytes": "shares the coordinator sent the parties when sharing inputs",
        "output_bytes": "shares the parties sent the coordinator when revealing",
        "control_bytes": "public metadata: commands (with their public operands, indices "
        "and shapes, to each party), dealer requests, barrier replies, refusals, policies",
        "header_bytes": "frame bytes beyond the payloads (headers, tags, tensor records)",
        "messages": "frames every actor sent, heartbeats excluded (online: party to party)",
    }
)
"""One line per row of the table (its footer; the README's explanation)."""

LABEL_COLUMNS: Mapping[str, str] = MappingProxyType(
    {
        "ops": "ops",
        "interactive": "interactive",
        "online_bytes": "online bytes",
        "offline_bytes": "offline bytes",
        "rounds": "rounds",
    }
)
"""The per-label table's column names, by :class:`LabelStats` field."""

LABEL_LEGEND: Mapping[str, str] = MappingProxyType(
    {
        "ops": "ops issued under the label (local ones too)",
        "interactive": "of those, the ops that message other parties",
        "online_bytes": "their measured online bytes (the rows add up to the total)",
        "offline_bytes": "their measured dealer bytes (the rows add up to the total)",
        "rounds": "their rounds one after another (closed form per op); ops overlap, so "
        "the rows do not add up to online rounds",
    }
)
"""One line per column of the per-label rows."""


@dataclass(frozen=True, slots=True)
class LabelStats:
    """What the ops issued under one label (``cluster.label("forward/fc1")``) cost."""

    ops: int = 0
    interactive: int = 0
    online_bytes: int = 0
    """Measured, summed over senders; the rows add up to the interval's online bytes."""
    offline_bytes: int = 0
    """Measured; the rows add up to the interval's offline bytes."""
    rounds: int = 0
    """The label's interactive ops' rounds summed (closed form per op): what the label
    would cost if nothing overlapped. Not additive across labels."""

    def __add__(self, other: LabelStats) -> LabelStats:
        return LabelStats(
            self.ops + other.ops,
            self.interactive + other.interactive,
            self.online_bytes + other.online_bytes,
            self.offline_bytes + other.offline_bytes,
            self.rounds + other.rounds,
        )

    def __sub__(self, other: LabelStats) -> LabelStats:
        return LabelStats(
            self.ops - other.ops,
            self.interactive - other.interactive,
            self.online_bytes - other.online_bytes,
            self.offline_bytes - other.offline_bytes,
            self.rounds - other.rounds,
        )

    def as_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in LABEL_COLUMNS}


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
    wall_seconds: float = field(default=0.0, compare=False)
    """Seconds since the cluster started (after subtraction: between the two snapshots).
    Not compared: two snapshots with the same traffic are equal whenever they were taken."""
    by_label: Mapping[str, LabelStats] = field(default_factory=lambda: _NO_LABELS)
    """Per label, from the op log (``cluster.stats(by_label=True)``; empty otherwise).
    Covers the ops issued since ``cluster.track_op_costs()``; ops without a label are
    under :data:`UNLABELLED`."""

    def __sub__(self, other: CommStats) -> CommStats:
        labels = {
            k: v - other.by_label[k] if k in other.by_label else v for k, v in self.by_label.items()
        }
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
            self.wall_seconds - other.wall_seconds,
            MappingProxyType({k: v for k, v in labels.items() if v != LabelStats()}),
        )

    def sent_by(self, actor: str, phase: Phase = Phase.ONLINE) -> int:
        return self.per_actor[actor].sent.get(phase, 0) if actor in self.per_actor else 0

    @classmethod
    def combine(
        cls,
        actors: Mapping[str, ActorStats],
        floor: int = 0,
        *,
        wall_seconds: float = 0.0,
        by_label: Mapping[str, LabelStats] | None = None,
    ) -> CommStats:
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
            wall_seconds,
            MappingProxyType(dict(by_label or {})),
        )

    def group_labels(self, depth: int = 1) -> CommStats:
        """The same figures with labels merged by their first ``depth`` parts
        (``"forward/fc1/relu"`` -> ``"forward"`` at depth 1, ``"forward/fc1"`` at 2)."""
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        merged: dict[str, LabelStats] = {}
        for k, v in self.by_label.items():
            key = "/".join(k.split("/")[:depth])
            merged[key] = merged.get(key, LabelStats()) + v
        return replace(self, by_label=MappingProxyType(merged))

    def as_dict(self) -> dict[str, Any]:
        """The table's figures under :data:`LEGEND`'s names (the JSON log's fields), with
        ``online_messages`` and, when collected, ``by_label``."""
        out: dict[str, Any] = {k: getattr(self, k) for k in ROWS}
        out["wall_seconds"] = round(self.wall_seconds, 6)
        out["online_messages"] = self.online_messages
        if self.by_label:
            out["by_label"] = {k: v.as_dict() for k, v in self.by_label.items()}
        return out

    def table(self, *, legend: bool = True) -> str:
        """A readable summary (also what ``print(stats)`` shows): the totals, the per-label
        rows when collected, and a legend of every row and column."""
        values = {k: f"{getattr(self, k):,}" for k in ROWS}
        values["wall_seconds"] = f"{self.wall_seconds:,.3f} s"
        values["messages"] += f" ({self.online_messages:,} online)"
        width = max(len(v) for v in ROWS.values())
        lines = [f"{ROWS[k]:<{width}}  {v:>14}" for k, v in values.items()]
        if self.by_label:
            lines += ["", *self._label_rows()]
        if legend:
            lines += ["", "legend:", *(f"  {ROWS[k]}: {t}" for k, t in LEGEND.items())]
            if self.by_label:
                lines += [f"  {LABEL_COLUMNS[k]}: {t}" for k, t in LABEL_LEGEND.items()]
        return "\n".join(lines)

    def _label_rows(self) -> list[str]:
        total = sum(self.by_label.values(), LabelStats())
        table = [
            ("label", *LABEL_COLUMNS.values()),
            *(
                (k, *(f"{getattr(v, c):,}" for c in LABEL_COLUMNS))
                for k, v in [*self.by_label.items(), ("total", total)]
            ),
        ]
        widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
        rest = (self.online_bytes - total.online_bytes, self.offline_bytes - total.offline_bytes)
        note = (
            [
                f"outside the rows: {rest[0]:,} online, {rest[1]:,} offline bytes (not in "
                "the op log: sent before track_op_costs(), e.g. the provider's setup keys)"
            ]
            if any(rest)
            else []
        )
        return [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in table
        ] + note

    def __str__(self) -> str:
        return self.table()


class LoggedOp(Protocol):
    """What the label book reads of an op-log entry (``actors.cluster.OpRecord``)."""

    @property
    def op(self) -> int: ...
    @property
    def label(self) -> str | None: ...
    @property
    def interactive(self) -> bool: ...
    @property
    def cost(self) -> Cost: ...


Op = TypeVar("Op", bound=LoggedOp)


class LabelBook:
    """Per-label totals of the op log, with the per-op costs the meters measured.

    The coordinator's ``take_op_costs`` (a training step's phases) and
    ``stats(by_label=True)`` both read the meters through this book: the step takes its
    ops and the book keeps their sums, so neither reader steals the other's figures."""

    def __init__(self) -> None:
        self._measured: dict[int, list[int]] = {}
        self._totals: dict[str, LabelStats] = {}

    def measure(self, taken: Iterable[Mapping[int, Sequence[int]]]) -> None:
        """Add what the meters measured since they were last read: per op ``[online
        bytes, offline bytes, largest depth]`` (one mapping per meter)."""
        for ops in taken:
            for op, (on, off, depth) in ops.items():
                m = self._measured.setdefault(op, [0, 0, 0])
                m[0] += on
                m[1] += off
                m[2] = max(m[2], depth)

    def take(self, log: Sequence[Op]) -> list[tuple[Op, int, int, int]]:
        """``(record, online, offline, depth)`` of the ops in ``log``; they join the totals
        and their measurements are forgotten (with those of ops no longer logged)."""
        out = [(rec, *self._cost(rec)) for rec in log]
        self._measured = {}
        for rec, on, off, _ in out:
            self._add(self._totals, rec, on, off)
        return out  # type: ignore[return-value]

    def by_label(self, pending: Sequence[LoggedOp]) -> dict[str, LabelStats]:
        """Totals of every op taken so far and of ``pending`` (logged, not yet taken)."""
        totals = dict(self._totals)
        for rec in pending:
            on, off, _ = self._cost(rec)
            self._add(totals, rec, on, off)
        return totals

    @staticmethod
    def sums(costs: Iterable[tuple[LoggedOp, int, int, int]]) -> dict[str, LabelStats]:
        """Per-label sums of ``take``'s entries (one training step's ops, say)."""
        totals: dict[str, LabelStats] = {}
        for rec, on, off, _ in costs:
            LabelBook._add(totals, rec, on, off)
        return totals

    def _cost(self, rec: LoggedOp) -> tuple[int, int, int]:
        on, off, depth = self._measured.get(rec.op, (0, 0, 0))
        return on, off, depth

    @staticmethod
    def _add(totals: dict[str, LabelStats], rec: LoggedOp, on: int, off: int) -> None:
        key = rec.label or UNLABELLED
        row = LabelStats(
            1, int(rec.interactive), on, off, rec.cost.rounds if rec.interactive else 0
        )
        totals[key] = totals.get(key, LabelStats()) + row


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
