"""The report's sections as JSON-ready dicts, assembled from measured records.

Each builder takes what :mod:`report_measure` measured (or what a log holds) and adds the
closed forms, anchors, fits, projections and consistency checks beside it. Every number
it emits is either measured in this run or computed from measured numbers; closed forms
and anchors are labelled as such.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from actors.executor import INTERACTIVE
from report_analysis import (
    LoggedIteration,
    PathOp,
    chain_by_tensors,
    dag,
    dag_path,
    link_kind,
    log_has_dealer_bytes,
    log_has_tensor_ids,
    path_from_log,
    phase_of,
    phases_from_log,
    request_costs,
)
from report_costs import ANCHORS, LAN, WAN, ZERO, Fit, fit, matmul_anchor, project
from report_measure import TrainingRun

BYTES_FIT_LOW, BYTES_FIT_HIGH = 0.85, 1.15
ROUNDS_FIT_TOL = 0.05


# -- protocols ----------------------------------------------------------------------------------
def _anchors_for(row: Mapping[str, Any], mm: int) -> list[dict[str, Any]]:
    if row["parties"] != 2:
        return []
    name = row["protocol"]
    key = {"mul, no truncation (x * bit)": "mul"}.get(name, name)
    out = []
    for a in ANCHORS:
        if a.op != key:
            continue
        online, offline = a.online_per_party, a.offline
        if a.op == "matmul":
            online, offline = matmul_anchor(mm, mm, mm)
        out.append(
            {
                "source": a.source,
                "rounds": a.rounds,
                "online_per_party": online,
                "offline": offline,
                "as_written": a.as_written,
            }
        )
    return out


def protocols_section(rows: Sequence[dict[str, Any]], mm: int) -> dict[str, Any]:
    out = []
    for row in rows:
        r = dict(row)
        n = r["elements"]
        m, c = r["measured"], r["closed"]
        r["per_element"] = {
            "measured": {
                "rounds": m["rounds"],
                "bytes_per_party": m["bytes_per_party"] / n,
                "offline": m["offline"] / n,
            },
            "closed": {
                "rounds": c["rounds"],
                "bytes_per_party": c["bytes_per_party"] / n,
                "offline": c["offline"] / n,
            },
        }
        r["anchors"] = _anchors_for(r, mm)
        out.append(r)
    return {"rows": out, "all_match": all(r["match"] for r in out)}


# -- the training iteration ---------------------------------------------------------------------
def _path_json(path: Sequence[PathOp], shapes: Mapping[int, Any]) -> list[dict[str, Any]]:
    return [
        {
            "op": p.op,
            "kind": p.kind,
            "label": p.label,
            "shapes": shapes.get(p.op),
            "start": p.start,
            "end": p.end,
            "rounds": p.rounds,
            "link": p.link,
        }
        for p in path
    ]


def _actor_totals(events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Whole-run totals per actor from the ``actor_summary`` events at the end of a log."""
    out: dict[str, Any] = {}
    for ev in events:
        if ev.get("event") == "actor_summary":
            out[str(ev.get("summary_of"))] = {
                "sent": ev.get("sent", {}),
                "received": ev.get("received", {}),
                "messages_sent": ev.get("messages_sent"),
            }
    return out


def training_section(
    log_iters: Sequence[LoggedIteration],
    events: Sequence[Mapping[str, Any]],
    run: TrainingRun | None,
    source: str,
) -> dict[str, Any]:
    """Where one iteration's rounds and bytes go (see module doc of report_analysis)."""
    if not log_iters:
        raise ValueError(f"{source}: no train_iteration events")
    idx = 1 if len(log_iters) > 1 else 0
    it = log_iters[idx]
    ev = it.event
    rounds = int(ev["online_rounds"])
    parties = sorted({a for o in it.ops for a in o.bytes_sent})
    n = run.parties if run is not None else len(parties)
    iters = [
        {
            k: li.event.get(k)
            for k in (
                "iteration",
                "loss",
                "online_rounds",
                "online_bytes",
                "offline_bytes",
                "seconds",
            )
        }
        for li in log_iters
    ]
    key = [(i["online_rounds"], i["online_bytes"], i["offline_bytes"]) for i in iters]
    shapes = {o.op: o.shapes for o in it.ops}
    with_ids = log_has_tensor_ids(it.ops)
    with_dealer = log_has_dealer_bytes(it.ops)
    log_path = path_from_log(
        chain_by_tensors(it.ops, it.start_depth, use_ids=with_ids), it.start_depth
    )
    links = Counter(link_kind(p.link) for p in log_path[1:])
    log_phases = phases_from_log(it.ops, it.start_depth)
    event_phases = {
        k: {"rounds": v[0], "online_bytes": v[1], "offline_bytes": v[2]}
        for k, v in (ev.get("phases") or {}).items()
    }
    sec: dict[str, Any] = {
        "source": source,
        "parties": n,
        "party_names": parties,
        "iterations": iters,
        "iterations_identical": len(set(key)) == 1,
        "shown_iteration": int(ev["iteration"]),
        "start_depth": it.start_depth,
        "rounds": rounds,
        "online_bytes": int(ev["online_bytes"]),
        "offline_bytes": int(ev["offline_bytes"]),
        "seconds": float(ev["seconds"]),
        "phases": event_phases,
        "phases_from_log": log_phases,
        "log_fields": {
            "iteration": it.by_field,
            "tensor_ids": with_ids,
            "dealer_bytes": with_dealer,
        },
        "path_from_log": _path_json(log_path, shapes),
        "path_from_log_links": {
            k: links.get(k, 0) for k in ("tensor id", "depth, only op", "depth, picked")
        },
        "actor_totals": _actor_totals(events),
    }
    checks: dict[str, bool] = {
        "log path rounds add up to the iteration's rounds": sum(p.rounds for p in log_path)
        == rounds,
        "sum of protocol_run bytes_sent = train_iteration online_bytes": sum(
            o.online_bytes for o in it.ops
        )
        == int(ev["online_bytes"]),
    }
    if with_dealer:
        checks["sum of protocol_run dealer_bytes = train_iteration offline_bytes"] = sum(
            o.offline_bytes or 0 for o in it.ops
        ) == int(ev["offline_bytes"])
    if event_phases:
        keys = ("rounds", "online_bytes", *(("offline_bytes",) if with_dealer else ()))
        checks["phases from protocol_run labels and depths = train_iteration phases"] = all(
            {k: event_phases.get(ph, {}).get(k) for k in keys} == {k: v[k] for k in keys}
            for ph, v in log_phases.items()
        )
    offline_of: dict[int, int] = {}
    closed_of = {}
    path = log_path
    if run is not None:
        rec = run.recorder
        ri = run.iterations[idx]
        c0, c1 = ri["commands"]
        cmds = rec.commands[c0:c1]
        closed = request_costs(rec.requests, n)
        logged_ids = {o.op for o in it.ops}
        # Interactive kinds that ran as protocols: logged, on the wire or asking the dealer
        # (with 2 parties the library may run public-factor products locally).
        op_ids = [
            op
            for op in (int(c["op"]) for c in cmds if c["k"] in INTERACTIVE)
            if op in logged_ids or op in rec.ops or op in closed
        ]
        kinds = {int(c["op"]): (str(c["k"]), c.get("label")) for c in rec.commands if "op" in c}
        measured = dag(rec.commands, lambda op: rec.ops[op].rounds if op in rec.ops else 0)
        closed_dag = dag(rec.commands, lambda op: closed.get(op, ZERO).rounds)
        path = dag_path(measured, op_ids, it.start_depth, lambda op: kinds[op])
        offline_of = {op: rec.ops[op].offline if op in rec.ops else 0 for op in op_ids}
        closed_of = {op: closed.get(op, ZERO) for op in op_ids}
        before_ops = [int(c["op"]) for c in rec.commands[:c0] if "op" in c]

        def deepest(res_end: Mapping[int, int], ops: Iterable[int], talk: Any) -> int:
            return max((res_end[o] for o in ops if o in res_end and talk(o)), default=0)

        meas_talk = lambda o: o in rec.ops and rec.ops[o].rounds > 0  # noqa: E731
        closed_talk = lambda o: closed.get(o, ZERO).rounds > 0  # noqa: E731
        dag_start = deepest(measured.end, before_ops, meas_talk)
        closed_rounds = deepest(closed_dag.end, before_ops + op_ids, closed_talk) - deepest(
            closed_dag.end, before_ops, closed_talk
        )
        logged = {o.op: o for o in it.ops}
        per_op_ok = True
        wire_ok = True
        dealer_ok = True
        for op in op_ids:
            w = rec.ops.get(op)
            c = closed_of[op]
            lo = logged.get(op)
            sent = dict(w.online_sent) if w is not None else {}
            if lo is not None:
                dealer_ok &= lo.offline_bytes == offline_of[op]
                wire_ok &= lo.rounds == (w.rounds if w else 0)
                wire_ok &= all(lo.bytes_sent.get(p, 0) == sent.get(p, 0) for p in run.names)
                if w is not None and w.max_depth is not None:
                    wire_ok &= lo.depth == w.max_depth
            else:
                wire_ok &= not sent
            per_op_ok &= (w.rounds if w else 0) == c.rounds
            per_op_ok &= all(sent.get(p, 0) == c.online_per_party for p in run.names)
            per_op_ok &= offline_of[op] == c.offline
        stats = ri["stats"]
        sec["closed_rounds"] = closed_rounds
        sec["closed_online_bytes"] = n * sum(c.online_per_party for c in closed_of.values())
        sec["closed_offline_bytes"] = sum(c.offline for c in closed_of.values())
        sec["traffic"] = {
            "iteration": {k: stats[k] for k in stats if k != "per_actor"},
            "iteration_per_actor": stats["per_actor"],
            "setup": {k: run.setup[k] for k in run.setup if k != "per_actor"},
            "output_bytes_by_iteration": [r["stats"]["output_bytes"] for r in run.iterations],
            "online_wire_per_party": ri["online_wire_per_party"],
        }
        sec["ops"] = [
            {
                "op": op,
                "kind": kinds[op][0],
                "label": kinds[op][1],
                "shapes": shapes.get(op),
                "rounds": rec.ops[op].rounds if op in rec.ops else 0,
                "depth": measured.end[op],
                "online_sent": dict(rec.ops[op].online_sent) if op in rec.ops else {},
                "offline": offline_of[op],
                "closed": [
                    closed_of[op].rounds,
                    closed_of[op].online_per_party,
                    closed_of[op].offline,
                ],
            }
            for op in op_ids
        ]
        checks |= {
            "log and wire agree per op (rounds, depth, bytes per party)": wire_ok,
            "log dealer_bytes per op = dealer bytes on the wire per op": with_dealer and dealer_ok,
            "critical path from the log alone = command-graph critical path": [
                (p.op, p.start, p.end) for p in log_path
            ]
            == [(p.op, p.start, p.end) for p in path],
            "every op's measured cost = its closed form (from the dealer request)": per_op_ok,
            "command-graph critical path adds up to the iteration's rounds": sum(
                p.rounds for p in path
            )
            == rounds,
            "iteration start depth: log = command graph": dag_start == it.start_depth,
            "closed-form rounds (longest path) = measured rounds": closed_rounds == rounds,
            "sum of dealer bytes per op = train_iteration offline_bytes": sum(offline_of.values())
            == int(ev["offline_bytes"]),
            "meter online bytes = train_iteration online_bytes": stats["online_bytes"]
            == int(ev["online_bytes"]),
        }
    sec["critical_path"] = _path_json(path, shapes)
    sec["critical_path_source"] = (
        "command graph"
        if run is not None
        else "the log: tensor ids, depths across local ops"
        if with_ids
        else "the log: depths"
    )
    on_path = Counter[int]()
    for p in path:
        on_path[p.op] += p.rounds
    groups: dict[str, dict[str, Any]] = {}

    def group(label: str | None, op: int) -> dict[str, Any]:
        key = label or "(unlabelled)"
        g = groups.setdefault(
            key,
            {"label": key, "phase": phase_of(label), "first_op": op, "kinds": Counter[str](),
             "ops": 0, "local_ops": 0 if run else None, "rounds_on_path": 0, "online_bytes": 0,
             "offline_bytes": 0 if run is not None or with_dealer else None},
        )  # fmt: skip
        g["first_op"] = min(g["first_op"], op)
        return g

    for o in it.ops:
        g = group(o.label, o.op)
        g["kinds"][o.kind] += 1
        g["ops"] += 1
        g["rounds_on_path"] += on_path.get(o.op, 0)
        g["online_bytes"] += o.online_bytes
        if run is not None:
            g["offline_bytes"] += offline_of.get(o.op, 0)
        elif with_dealer:
            g["offline_bytes"] += o.offline_bytes or 0
    if run is not None:
        logged_ops = {o.op for o in it.ops}
        c0, c1 = run.iterations[idx]["commands"]
        for cmd in run.recorder.commands[c0:c1]:
            if cmd["k"] in ("free", "barrier", "reveal", "input") or int(cmd["op"]) in logged_ops:
                continue
            group(cmd.get("label"), int(cmd["op"]))["local_ops"] += 1
    for g in groups.values():
        g["kinds"] = dict(g["kinds"])
    sec["by_label"] = sorted(groups.values(), key=lambda g: g["first_op"])
    sec["online_bytes_by_phase_from_ops"] = {
        ph: sum(g["online_bytes"] for g in groups.values() if g["phase"] == ph)
        for ph in dict.fromkeys(g["phase"] for g in groups.values())
    }
    sec["checks"] = checks
    if run is not None:
        sec["wire_per_party"] = max(run.iterations[idx]["online_wire_per_party"].values())
        sec["wire_includes_headers"] = True
    else:
        per_party: Counter[str] = Counter()
        for o in it.ops:
            per_party.update(o.bytes_sent)
        sec["wire_per_party"] = max(per_party.values(), default=0)
        sec["wire_includes_headers"] = False
    return sec


# -- sweeps ---------------------------------------------------------------------------------------
QUANTITIES = ("online_bytes", "offline_bytes", "online_rounds")


def _fit_json(f: Fit | None) -> dict[str, Any] | None:
    if f is None:
        return None
    return {
        "x_min": f.x_min,
        "x_max": f.x_max,
        "points": f.points,
        "exponent": f.exponent,
        "slope": f.slope,
        "intercept": f.intercept,
        "fixed_share_at_x_min": f.fixed_share(f.x_min),
    }


def _safe_fit(xs: Sequence[float], ys: Sequence[float], x_min: float = 0) -> Fit | None:
    try:
        return fit(xs, ys, x_min)
    except ValueError:
        return None


def sweep_section(points: Sequence[dict[str, Any]], axis: str) -> dict[str, Any]:
    """Fits over one sweep (``axis`` is ``batch`` or ``width``), per number of parties."""
    out: dict[str, Any] = {"axis": axis, "points": list(points), "fits": []}
    for n in sorted({p["parties"] for p in points}):
        pts = sorted((p for p in points if p["parties"] == n), key=lambda p: p[axis])
        xs = [float(p[axis]) for p in pts]
        upper = xs[len(xs) // 2] if len(xs) >= 4 else xs[0]
        for q in (*QUANTITIES, "wire_per_party", "seconds"):
            ys = [float(p["measured"][q]) for p in pts]
            closed = [float(p["closed"][q]) for p in pts] if q in QUANTITIES else None
            entry = {
                "parties": n,
                "quantity": q,
                "full": _fit_json(_safe_fit(xs, ys)),
                "upper": _fit_json(_safe_fit(xs, ys, upper)),
                "closed_full": _fit_json(_safe_fit(xs, closed)) if closed else None,
                "closed_upper": _fit_json(_safe_fit(xs, closed, upper)) if closed else None,
            }
            entry["verdict"] = _verdict(q, entry)
            out["fits"].append(entry)
        out["all_match"] = all(
            p["measured"][q] == p["closed"][q] for p in points for q in QUANTITIES
        )
    return out


def _verdict(q: str, e: Mapping[str, Any]) -> str:
    up = e["upper"]
    if up is None:
        return "too few points"
    x = up["exponent"]
    if q == "online_rounds":
        ok = abs(x) <= ROUNDS_FIT_TOL
        return f"{'ok' if ok else 'NOT CONSTANT'}: rounds do not depend on shape (closed form)"
    if q == "wire_per_party":
        return (
            "payload grows as online_bytes does; the message headers are a fixed cost per "
            f"message (the message count does not grow), here {up['intercept']:.0f} B"
        )
    if q in ("online_bytes", "offline_bytes"):
        ok = BYTES_FIT_LOW <= x <= BYTES_FIT_HIGH
        share = up["fixed_share_at_x_min"]
        return (
            f"{'ok' if ok else 'OUT OF RANGE'}: linear closed form; a fixed part of "
            f"{up['intercept']:.0f} B ({100 * share:.1f}% at x={up['x_min']}) bends the log-log "
            f"slope below 1 (local slope at x is a*x/(a*x+c))"
        )
    return "measured compute time (no closed form)"


# -- projection -------------------------------------------------------------------------------------
def _rounds(run: Mapping[str, Any]) -> int:
    if len(run["rounds"]) != 1:
        raise ValueError(f"iterations differ in rounds: {run['rounds']}")
    return int(run["rounds"][0])


def projection_section(
    base: Mapping[str, Any],
    offline_bytes: int,
    simulated: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Projected seconds per iteration under LAN/WAN and checks against simulated runs.

    ``base`` is the timed run without latency (its rounds, wire bytes and compute time
    feed the projection); each of ``simulated`` holds ``name``, ``workload``, ``profile``,
    the timed ``run`` on the simulated network, the ``base`` run without latency it pairs
    with, and ``rounds_waited`` (the rounds the run waits for, from its own commands: more
    than the depth growth when ``phase_barriers=True`` serialises the phases)."""
    rounds, wire, c = _rounds(base), int(base["wire_per_party"]), float(base["median_s"])
    out: dict[str, Any] = {
        "inputs": {
            "rounds": rounds,
            "wire_bytes_per_party": wire,
            "offline_bytes": offline_bytes,
            "compute_s": c,
            "compute_runs_s": base["seconds"],
        },
        "profiles": [],
        "checks": [],
    }
    for prof in (LAN, WAN):
        p = project(prof, rounds, wire, c, offline_bytes)
        out["profiles"].append(
            {
                "profile": prof.name,
                "latency": prof.latency,
                "bandwidth": prof.bandwidth,
                "latency_s": p.latency_s,
                "bandwidth_s": p.bandwidth_s,
                "compute_s": p.compute_s,
                "total_s": p.total_s,
                "offline_transfer_s": p.offline_s,
            }
        )
    for sim in simulated:
        prof, run, b = sim["profile"], sim["run"], sim["base"]
        p = project(prof, int(sim["rounds_waited"]), int(b["wire_per_party"]), float(b["median_s"]))
        meas = float(run["median_s"])
        out["checks"].append(
            {
                "name": sim["name"],
                "workload": sim["workload"],
                "latency": prof.latency,
                "bandwidth": prof.bandwidth,
                "phase_barriers": run["phase_barriers"],
                "rounds_waited": int(sim["rounds_waited"]),
                "rounds_measured": run["rounds"],
                "wire_bytes_per_party": int(b["wire_per_party"]),
                "projected_s": p.total_s,
                "latency_s": p.latency_s,
                "bandwidth_s": p.bandwidth_s,
                "compute_s": p.compute_s,
                "measured_s": meas,
                "measured_runs_s": run["seconds"],
                "spread_s": [min(run["seconds"]), max(run["seconds"])],
                "rel_error": (p.total_s - meas) / meas,
            }
        )
    return out


def sweep_projections(points: Sequence[dict[str, Any]]) -> None:
    """Add LAN/WAN projected seconds to each sweep point (in place)."""
    for p in points:
        m = p["measured"]
        p["projected"] = {
            prof.name: project(prof, m["online_rounds"], m["wire_per_party"], m["seconds"]).total_s
            for prof in (LAN, WAN)
        }


def median(xs: Sequence[float]) -> float:
    return float(statistics.median(xs))
