"""Where an iteration's rounds and bytes go: from the JSON-lines log and from the wire.

Two sources, one result type:

* the structlog JSON lines of a run (``train_xor.py --log-json``): one ``protocol_run``
  event per interactive op per party (op id, kind, label, shapes, rounds, depth, bytes
  sent) and one ``train_iteration`` event per iteration. An op's events come before the
  ``train_iteration`` event of its iteration (the coordinator flushes before it logs), so
  the file order assigns ops to iterations. The log has no inputs per op, so its critical
  path is *a* chain of ops whose depths link up (see :func:`chain_by_depth`);
* the envelopes a :class:`report_measure.Recorder` saw: the coordinator's commands (with
  input and output tensor ids, so the exact dependency graph), its dealer requests and
  every online and offline message per op. :func:`dag` walks that graph.

Nothing here runs a cluster; everything is arithmetic on measured records.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from report_costs import ZERO, OpCost, closed_form


# -- the log ---------------------------------------------------------------------------------
@dataclass(slots=True)
class LoggedOp:
    """One interactive op as the parties logged it (merged over parties)."""

    op: int
    kind: str
    label: str | None
    shapes: list[list[int]]
    rounds: int
    depth: int
    bytes_sent: dict[str, int] = field(default_factory=dict)
    """Online bytes each party logged as sent."""

    @property
    def start(self) -> int:
        return self.depth - self.rounds

    @property
    def online_bytes(self) -> int:
        return sum(self.bytes_sent.values())


@dataclass(slots=True)
class LoggedIteration:
    """One ``train_iteration`` event and the ops logged before it."""

    event: dict[str, Any]
    ops: list[LoggedOp]
    start_depth: int
    """Largest depth of any op logged before this iteration (0 for the first)."""


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The JSON lines of ``path`` (lines that are not JSON objects are skipped)."""
    events = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                events.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return events


def iterations_from_log(events: Iterable[Mapping[str, Any]]) -> list[LoggedIteration]:
    """Group ``protocol_run`` events by op and assign them to iterations by file order."""
    out: list[LoggedIteration] = []
    pending: dict[int, LoggedOp] = {}
    max_depth = 0
    for ev in events:
        name = ev.get("event")
        if name == "protocol_run":
            op = int(ev["op_id"])
            rec = pending.get(op)
            if rec is None:
                rec = pending[op] = LoggedOp(
                    op,
                    str(ev["kind"]),
                    ev.get("label"),
                    [list(s) for s in ev.get("shapes", [])],
                    int(ev["rounds"]),
                    int(ev["depth"]),
                )
            rec.rounds = max(rec.rounds, int(ev["rounds"]))
            rec.depth = max(rec.depth, int(ev["depth"]))
            rec.bytes_sent[str(ev.get("actor"))] = int(ev.get("bytes_sent", 0))
        elif name == "train_iteration":
            ops = sorted(pending.values(), key=lambda o: o.op)
            out.append(LoggedIteration(dict(ev), ops, max_depth))
            max_depth = max([max_depth, *(o.depth for o in ops)])
            pending = {}
    return out


def chain_by_depth(ops: Sequence[LoggedOp], start_depth: int) -> list[LoggedOp]:
    """A chain of ops whose rounds add up to the iteration's rounds, from depths alone.

    Start at the op that reached the largest depth; its predecessor is an earlier op
    whose depth equals this op's start depth (the most recent such op: the log does not
    say which input it waited for, so among equals this is a guess, but the depths, and
    so the rounds per link, are exact). Stop at the iteration's starting depth.
    """
    talking = [o for o in ops if o.rounds > 0]
    if not talking:
        return []
    cur = max(talking, key=lambda o: (o.depth, o.op))
    chain = [cur]
    while cur.start > start_depth:
        prev = [o for o in talking if o.depth == cur.start and o.op < cur.op]
        if not prev:
            break
        cur = max(prev, key=lambda o: o.op)
        chain.append(cur)
    return chain[::-1]


# -- the wire (commands, requests, envelopes per op) -------------------------------------------
@dataclass(slots=True)
class OpWire:
    """Every message of one op the network carried."""

    online_sent: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Online payload bytes by sender."""
    online_wire: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    """Online payload + header bytes by sender (what a real link would carry)."""
    offline: int = 0
    """Dealer payload bytes for this op."""
    online_messages: int = 0
    min_depth: int | None = None
    max_depth: int | None = None

    @property
    def rounds(self) -> int:
        if self.min_depth is None or self.max_depth is None:
            return 0
        return self.max_depth - self.min_depth + 1

    @property
    def start(self) -> int | None:
        return None if self.min_depth is None else self.min_depth - 1

    def to_json(self) -> dict[str, Any]:
        return {
            "online_sent": dict(self.online_sent),
            "online_wire": dict(self.online_wire),
            "offline": self.offline,
            "online_messages": self.online_messages,
            "rounds": self.rounds,
            "depth": self.max_depth,
        }


@dataclass(frozen=True, slots=True)
class PathOp:
    """One op on a critical path."""

    op: int
    kind: str
    label: str | None
    start: int
    end: int
    rounds: int
    """Rounds it adds above the iteration's starting depth."""


@dataclass(slots=True)
class DagResult:
    """Longest paths through the command graph."""

    end: dict[int, int]
    """Op id -> depth of its outputs."""
    start: dict[int, int]
    parent: dict[int, int | None]
    """Op id -> the op that produced its deepest input (through local ops), if any."""
    segment: dict[int, int]
    """Op id -> number of barriers before it."""


def dag(
    commands: Sequence[Mapping[str, Any]],
    rounds_of: Callable[[int], int],
    *,
    barriers_reset: bool = False,
) -> DagResult:
    """Depth of every op's outputs: ``max(input depths) + rounds_of(op)``.

    Local ops and zero-round ops pass their deepest input's producer on as the parent.
    With ``barriers_reset``, a value made before the latest barrier counts as depth 0
    (it was already there when the phase started): that gives the rounds a phase-by-phase
    run waits for, which can exceed the depth growth when phases could have overlapped.
    """
    depth: dict[int, tuple[int, int | None, int]] = {}
    res = DagResult({}, {}, {}, {})
    segment = 0
    for cmd in commands:
        kind = cmd["k"]
        if kind == "barrier":
            segment += 1
            continue
        if kind in ("free", "reveal"):
            continue
        op = int(cmd["op"])
        start, parent = 0, None
        for tid in cmd["in"]:
            d, src, seg = depth.get(tid, (0, None, 0))
            if barriers_reset and seg < segment:
                d, src = 0, None
            if d > start or (parent is None and src is not None and d == start):
                start, parent = d, src
        r = 0 if kind == "input" else rounds_of(op)
        end = start + r
        res.start[op], res.end[op], res.parent[op], res.segment[op] = start, end, parent, segment
        src_out = op if r > 0 else parent
        for tid in cmd["out"]:
            depth[tid] = (end, src_out, segment)
    return res


def dag_path(
    res: DagResult,
    ops: Iterable[int],
    start_depth: int,
    describe: Callable[[int], tuple[str, str | None]],
) -> list[PathOp]:
    """The critical path among ``ops`` (one iteration): from the deepest op back through
    parents while they are in the iteration and above ``start_depth``."""
    members = set(ops)
    talking = [o for o in members if res.end[o] > res.start[o]]
    if not talking:
        return []
    cur: int | None = max(talking, key=lambda o: (res.end[o], o))
    chain: list[PathOp] = []
    while cur is not None and cur in members and res.end[cur] > start_depth:
        kind, label = describe(cur)
        s, e = res.start[cur], res.end[cur]
        chain.append(PathOp(cur, kind, label, s, e, e - max(s, start_depth)))
        cur = res.parent[cur]
    return chain[::-1]


def path_from_log(chain: Sequence[LoggedOp], start_depth: int) -> list[PathOp]:
    return [
        PathOp(o.op, o.kind, o.label, o.start, o.depth, o.depth - max(o.start, start_depth))
        for o in chain
    ]


def request_costs(requests: Iterable[Mapping[str, Any]], n_parties: int) -> dict[int, OpCost]:
    """Closed-form cost of every op that asked the dealer for material, from the request
    alone (kind, shapes, divisor: the public metadata the coordinator sends the provider).
    Ops without a request are local or truncate locally: their closed form is zero."""
    out: dict[int, OpCost] = {}
    for req in requests:
        cost = closed_form(str(req["k"]), req["s"], n_parties, {"d": int(req.get("d", 1))})
        op = int(req["op"])
        out[op] = out.get(op, ZERO) + cost
    return out


def phase_of(label: str | None) -> str:
    return (label or "unlabelled").split("/")[0]


def wall_rounds(
    commands: Sequence[Mapping[str, Any]], rounds_of: Callable[[int], int], ops: Iterable[int]
) -> dict[str, int]:
    """Rounds each barrier-separated segment of an iteration waits for, by phase name of
    its ops (see :func:`dag` with ``barriers_reset``)."""
    res = dag(commands, rounds_of, barriers_reset=True)
    labels = {int(c["op"]): c.get("label") for c in commands if "op" in c}
    by_segment: dict[int, tuple[str, int]] = {}
    for op in ops:
        if op not in res.end:
            continue
        seg = res.segment[op]
        name, best = by_segment.get(seg, (phase_of(labels.get(op)), 0))
        by_segment[seg] = (name, max(best, res.end[op]))
    out: dict[str, int] = {}
    for name, value in by_segment.values():
        out[name] = out.get(name, 0) + value
    return out
