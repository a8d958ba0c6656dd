"""Where an iteration's rounds and bytes go: from the JSON-lines log and from the wire.

Two sources, one result type:

* the structlog JSON lines of a run (``train_xor.py --log-json``): one ``protocol_run``
  event per interactive op per party (op id, kind, label, training iteration, input and
  output tensor ids, shapes, rounds, depth, online bytes sent, dealer bytes received) and
  one ``train_iteration`` event per iteration. Ops are assigned to iterations by their
  ``iteration`` field (by file order for ops logged without one: an op's events come
  before the ``train_iteration`` event of its iteration, as the coordinator flushes before
  it logs). Local ops (add, sub, transpose, ...) are not logged, so the log's dependency
  graph has gaps: :func:`chain_by_tensors` follows tensor ids where one logged op consumes
  another's output and falls back to depths where local ops sit in between;
* the envelopes a :class:`report_measure.Recorder` saw: the coordinator's commands (every
  op, local ones included, with input and output tensor ids, so the complete dependency
  graph), its dealer requests and every online and offline message per op. :func:`dag`
  walks that graph.

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

PHASES = ("forward", "loss", "backward", "update")
"""The coordinator's phases, in the order it issues them (training/coordinator.py)."""


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
    """Largest depth among the op's outputs."""
    bytes_sent: dict[str, int] = field(default_factory=dict)
    """Online bytes each party logged as sent."""
    dealer_bytes: dict[str, int] | None = None
    """Dealer bytes each party logged as received (None: a log without the field)."""
    iteration: int | None = None
    """The training iteration that issued the op (None: not logged)."""
    inputs: list[int] | None = None
    """Input tensor ids (None: not logged)."""
    outputs: list[int] | None = None
    """Output tensor ids (None: not logged)."""

    @property
    def start(self) -> int:
        return self.depth - self.rounds

    @property
    def online_bytes(self) -> int:
        return sum(self.bytes_sent.values())

    @property
    def offline_bytes(self) -> int | None:
        return None if self.dealer_bytes is None else sum(self.dealer_bytes.values())


@dataclass(slots=True)
class LoggedIteration:
    """One ``train_iteration`` event and the ops logged for it."""

    event: dict[str, Any]
    ops: list[LoggedOp]
    start_depth: int
    """Largest depth of any op of an earlier iteration (0 for the first)."""
    by_field: bool = False
    """Every op was assigned by its ``iteration`` field (not by file order)."""


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


def _ids(value: Any) -> list[int] | None:
    return None if value is None else [int(v) for v in value]


def iterations_from_log(events: Iterable[Mapping[str, Any]]) -> list[LoggedIteration]:
    """Group ``protocol_run`` events by op and assign ops to iterations: by the event's
    ``iteration`` field, or (ops logged without one) by file order."""
    merged: dict[int, LoggedOp] = {}
    untagged: list[int] = []
    order: list[tuple[dict[str, Any], list[int]]] = []
    for ev in events:
        name = ev.get("event")
        if name == "protocol_run":
            op = int(ev["op_id"])
            rec = merged.get(op)
            if rec is None:
                it = ev.get("iteration")
                rec = merged[op] = LoggedOp(
                    op,
                    str(ev["kind"]),
                    ev.get("label"),
                    [list(s) for s in ev.get("shapes", [])],
                    int(ev["rounds"]),
                    int(ev["depth"]),
                    iteration=None if it is None else int(it),
                    inputs=_ids(ev.get("inputs")),
                    outputs=_ids(ev.get("outputs")),
                )
                if rec.iteration is None:
                    untagged.append(op)
            rec.rounds = max(rec.rounds, int(ev["rounds"]))
            rec.depth = max(rec.depth, int(ev["depth"]))
            actor = str(ev.get("actor"))
            rec.bytes_sent[actor] = int(ev.get("bytes_sent", 0))
            if "dealer_bytes" in ev:
                if rec.dealer_bytes is None:
                    rec.dealer_bytes = {}
                rec.dealer_bytes[actor] = int(ev["dealer_bytes"])
        elif name == "train_iteration":
            order.append((dict(ev), untagged))
            untagged = []
    tagged: dict[int, list[LoggedOp]] = defaultdict(list)
    for rec in merged.values():
        if rec.iteration is not None:
            tagged[rec.iteration].append(rec)
    out: list[LoggedIteration] = []
    max_depth = 0
    for ev, file_order in order:
        ops = tagged.pop(int(ev["iteration"]), []) if "iteration" in ev else []
        ops += [merged[op] for op in file_order]
        ops.sort(key=lambda o: o.op)
        by_field = not file_order
        out.append(LoggedIteration(ev, ops, max_depth, by_field))
        max_depth = max([max_depth, *(o.depth for o in ops)])
    return out


def log_has_dealer_bytes(ops: Iterable[LoggedOp]) -> bool:
    return all(o.dealer_bytes is not None for o in ops)


def log_has_tensor_ids(ops: Iterable[LoggedOp]) -> bool:
    return all(o.inputs is not None and o.outputs is not None for o in ops)


def chain_by_depth(ops: Sequence[LoggedOp], start_depth: int) -> list[LoggedOp]:
    """A chain of ops whose rounds add up to the iteration's rounds, from depths alone
    (for logs without tensor ids; see :func:`chain_by_tensors`)."""
    return [o for o, _ in chain_by_tensors(ops, start_depth, use_ids=False)]


def chain_by_tensors(
    ops: Sequence[LoggedOp], start_depth: int, *, use_ids: bool = True
) -> list[tuple[LoggedOp, str]]:
    """The critical path of an iteration from the log, first op first, each op with how
    the log ties it to its predecessor on the path ("" for the first).

    Start at the op that reached the largest depth. Its predecessor produced the value
    that set its start depth (the largest depth among its inputs), so it reached exactly
    that depth. Where one of the op's input tensor ids is the output of a logged op of
    that depth, that op is the predecessor: a data dependency the log states. Where the
    inputs come from local ops (not logged: add, transpose, ...), the log cannot say
    which value they consumed, so the predecessor is an earlier op whose depth equals the
    start depth: certain when only one op reached that depth, otherwise the most recent
    of them (a pick among equals; the rounds per link are exact either way). Stop at the
    iteration's starting depth. Assumes, as the log does, that an op's outputs all have
    the op's logged depth.
    """
    talking = [o for o in ops if o.rounds > 0]
    if not talking:
        return []
    producer: dict[int, LoggedOp] = {}
    if use_ids:
        for o in talking:
            for tid in o.outputs or []:
                producer[tid] = o
    cur = max(talking, key=lambda o: (o.depth, o.op))
    chain: list[tuple[LoggedOp, str]] = []
    while True:
        prev: LoggedOp | None = None
        link = ""
        if cur.start > start_depth:
            by_id = [
                (tid, producer[tid])
                for tid in (cur.inputs or [])
                if tid in producer and producer[tid].depth == cur.start
            ]
            same = [o for o in talking if o.depth == cur.start and o.op < cur.op]
            if by_id:
                tid, prev = max(by_id, key=lambda p: p[1].op)
                link = f"tensor id: input {tid} is op {prev.op}'s output"
            elif same:
                prev = max(same, key=lambda o: o.op)
                link = (
                    f"depth: op {prev.op} is the only op ending at depth {cur.start}"
                    if len(same) == 1
                    else f"depth: op {prev.op} picked among {len(same)} ops ending at depth "
                    f"{cur.start}"
                )
        chain.append((cur, link))
        if prev is None:
            break
        cur = prev
    return chain[::-1]


def link_kind(link: str) -> str:
    """``tensor id``, ``depth, only op`` or ``depth, picked`` for a link of
    :func:`chain_by_tensors` (``""`` for the first op of a path)."""
    if not link:
        return ""
    if link.startswith("tensor id"):
        return "tensor id"
    return "depth, picked" if " picked " in link else "depth, only op"


def phases_from_log(ops: Sequence[LoggedOp], start_depth: int) -> dict[str, dict[str, Any]]:
    """Per phase (label prefix), from the logged ops alone: the depths its ops span, the
    growth of the largest depth it adds beyond the phases issued before it (the rule the
    coordinator logs its phase rounds by), and its online and dealer bytes."""
    out: dict[str, dict[str, Any]] = {}
    reached = start_depth
    for phase in PHASES:
        mine = [o for o in ops if phase_of(o.label) == phase]
        talking = [o for o in mine if o.rounds > 0]
        top = max([reached, *(o.depth for o in mine)])
        dealer = [o.offline_bytes for o in mine]
        out[phase] = {
            "ops": len(mine),
            "first_start": min((o.start for o in talking), default=None),
            "last_end": max((o.depth for o in talking), default=None),
            "rounds": top - reached,
            "online_bytes": sum(o.online_bytes for o in mine),
            "offline_bytes": None if None in dealer else sum(d or 0 for d in dealer),
        }
        reached = top
    return out


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
    link: str = ""
    """How it is tied to its predecessor on the path (log-derived paths only)."""


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


def path_from_log(chain: Sequence[tuple[LoggedOp, str]], start_depth: int) -> list[PathOp]:
    return [
        PathOp(o.op, o.kind, o.label, o.start, o.depth, o.depth - max(o.start, start_depth), link)
        for o, link in chain
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
