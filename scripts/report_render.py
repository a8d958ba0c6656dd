"""Markdown and PNG output of the communication report (matplotlib, Agg backend).

Renders the dict that scripts/comm_report.py also writes as report.json; it computes
nothing new (only percentages and per-element divisions of numbers in that dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after use("Agg"): the backend must be chosen first

OK, BAD = "yes", "**NO**"


def num(x: float | int | None, digits: int = 3) -> str:
    """Integers as integers, other numbers with at most ``digits`` decimals."""
    if x is None:
        return "n/a"
    if isinstance(x, int) or float(x).is_integer():
        return f"{int(x):,}".replace(",", " ")
    return f"{x:.{digits}f}".rstrip("0").rstrip(".")


def ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{1000 * seconds:.1f} ms"


def pct(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "-"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- markdown -------------------------------------------------------------------------------------
def protocol_table(section: Mapping[str, Any]) -> str:
    rows = []
    for r in section["rows"]:
        pe = r["per_element"]
        m, c = pe["measured"], pe["closed"]
        rows.append(
            [
                r["protocol"],
                r["parties"],
                r["shape"],
                r["traffic"],
                f"{m['rounds']} / {c['rounds']}",
                f"{num(m['bytes_per_party'])} / {num(c['bytes_per_party'])}",
                f"{num(m['offline'])} / {num(c['offline'])}",
                OK if r["match"] else BAD,
            ]
        )
    header = [
        "protocol",
        "parties",
        "shape",
        "traffic",
        "online rounds (measured / closed form)",
        "bytes per element per party (measured / closed form)",
        "dealer bytes per element (measured / closed form)",
        "equal",
    ]
    return table(header, rows)


def anchor_table(section: Mapping[str, Any]) -> str:
    rows = []
    for r in section["rows"]:
        if not r["anchors"]:
            continue
        m = r["per_element"]["measured"]
        ours = f"{m['rounds']} / {num(m['bytes_per_party'])} / {num(m['offline'])}"
        for a in r["anchors"]:
            rows.append(
                [
                    r["protocol"],
                    ours,
                    a["source"],
                    f"{num(a['rounds'])} / {num(a['online_per_party'])} / {num(a['offline'])}",
                    a["as_written"],
                ]
            )
    return table(
        [
            "our protocol",
            "ours, measured: rounds / online B per element per party / dealer B per element",
            "anchor",
            "anchor: rounds / online / dealer (per element)",
            "DESIGN.md row (rounds; online; dealer)",
        ],
        rows,
    )


def phases_md(t: Mapping[str, Any], barriers: Mapping[str, Any] | None) -> list[str]:
    """The by-phase table and what it means (phases overlap; the optional barrier mode)."""
    rounds, online, offline = t["rounds"], t["online_bytes"], t["offline_bytes"]
    spans = t.get("phases_from_log") or {}
    out = ["### By phase (train_iteration events: phases attributed from op labels and depths)"]
    out.append("")
    out.append(
        "train_xor.py runs the TrainingCoordinator with its defaults (`measure_phases=True, "
        "phase_barriers=False`): nothing waits between phases, and each op counts for the "
        "phase its label starts with. A phase's rounds are the growth of the largest depth "
        "its ops add beyond what the phases issued before it reached, so they add up to the "
        "iteration's rounds; the depths column shows where its interactive ops ran (first "
        "start -> last end, from the protocol_run events)."
    )
    out.append("")
    rows = []
    for name, ph in t["phases"].items():
        sp = spans.get(name, {})
        span = (
            f"{sp['first_start']} -> {sp['last_end']}" if sp.get("first_start") is not None else "-"
        )
        rows.append(
            [
                name,
                num(sp.get("ops")),
                span,
                ph["rounds"],
                num(ph["online_bytes"]),
                pct(ph["online_bytes"], online),
                num(ph["offline_bytes"]),
                pct(ph["offline_bytes"], offline),
            ]
        )
    out.append(
        table(
            [
                "phase",
                "interactive ops",
                "depths its ops span",
                "rounds (growth of the largest depth)",
                "online B",
                "share",
                "dealer B",
                "share",
            ],
            rows,
        )
    )
    overlaps = []
    for name, ph in t["phases"].items():
        sp = spans.get(name, {})
        if sp.get("first_start") is None:
            continue
        own = sp["last_end"] - sp["first_start"]
        if own > ph["rounds"]:
            overlaps.append(
                f"`{name}` ops span depths {sp['first_start']} -> {sp['last_end']} ({own} "
                f"rounds) and are credited with {ph['rounds']}"
            )
    if overlaps:
        out.append("")
        text = "Phases overlap where the dependencies allow: " + "; ".join(overlaps) + "."
        bwd, loss = spans.get("backward", {}), spans.get("loss", {})
        if (
            bwd.get("first_start") is not None
            and loss.get("last_end") is not None
            and bwd["first_start"] < loss["last_end"]
        ):
            text += (
                f" The backward pass starts at depth {bwd['first_start']}, before the loss's "
                f"ops end at {loss['last_end']}: it needs `pred - y`, not the loss's square."
            )
        out.append(text)
    if barriers and barriers.get("by_phase") is not None:
        waited = barriers["rounds_waited"]
        by = ", ".join(f"{ph} {barriers['by_phase'].get(ph, 0)}" for ph in t["phases"])
        out.append("")
        out.append(
            f"With the coordinator's optional `phase_barriers=True` (a flush after each "
            f"phase; not how train_xor.py runs) the parties wait for {waited} rounds per "
            f"iteration, not {rounds} ({by}; the depth growth between barriers in the "
            f"recorded commands of the timing run `{barriers['run']}`, section 4): a phase "
            f"cannot start before the previous phase has settled, even where it depends only "
            f"on older values."
        )
    return out


def training_md(t: Mapping[str, Any], barriers: Mapping[str, Any] | None) -> list[str]:
    out: list[str] = []
    rounds, online, offline = t["rounds"], t["online_bytes"], t["offline_bytes"]
    its = t["iterations"]
    out.append(
        f"Source: {t['source']}. {len(its)} iterations, {t['parties']} parties "
        f"({', '.join(t['party_names'])}); shown: iteration {t['shown_iteration']} "
        f"(all iterations identical in rounds and bytes: {OK if t['iterations_identical'] else BAD}). "
        f"Per iteration: **{rounds} online rounds, {num(online)} online bytes, "
        f"{num(offline)} dealer bytes**; loss {its[0]['loss']:.4f} -> {its[-1]['loss']:.4f}."
    )
    fields = t.get("log_fields") or {}
    if fields.get("iteration"):
        out.append("")
        out.append(
            "Ops are assigned to iterations by the `iteration` field of their protocol_run events."
        )
    out.append("")
    out += phases_md(t, barriers)
    out.append("")
    out.append("### By label (forward by layer, loss, backward by layer, update)")
    rows = []
    for g in t["by_label"]:
        kinds = ", ".join(f"{k} x{v}" for k, v in g["kinds"].items()) or "-"
        rows.append(
            [
                g["label"],
                kinds,
                num(g.get("local_ops")),
                g["rounds_on_path"],
                pct(g["rounds_on_path"], rounds),
                num(g["online_bytes"]),
                pct(g["online_bytes"], online),
                num(g["offline_bytes"]),
                pct(g["offline_bytes"], offline) if g["offline_bytes"] is not None else "n/a",
            ]
        )
    out.append(
        table(
            [
                "label",
                "interactive ops",
                "local ops",
                "rounds on critical path",
                "share",
                "online B",
                "share",
                "dealer B",
                "share",
            ],
            rows,
        )
    )
    out.append("")
    dealer_src = (
        "the dealer messages on the wire (equal per op to the log's `dealer_bytes`)"
        if "ops" in t
        else "the log's `dealer_bytes`"
    )
    out.append(
        "Labels: the coordinator gives leaf modules `forward/<name>` and the phases `loss` and "
        "`update`; an op's backward products get `backward/` plus its label without "
        "`forward/`; ReLU ops are labelled `<current label>/relu`, so `F.relu` (not a module) "
        "appears as `forward/relu` and its backward product as `backward/relu`. Dealer bytes "
        f"per label come from {dealer_src}."
    )
    out.append("")
    out.append(f"### Critical path of rounds ({t['critical_path_source']})")
    log_path = t.get("path_from_log") or []
    same = [p["op"] for p in log_path] == [p["op"] for p in t["critical_path"]]
    links = [p.get("link") or "-" for p in log_path] if same and log_path else None
    rows = []
    for k, p in enumerate(t["critical_path"]):
        row = [
            p["op"],
            p["kind"],
            p["label"],
            p["shapes"] or "-",
            f"{p['start']} -> {p['end']}",
            p["rounds"],
        ]
        if links is not None:
            row.append(links[k])
        rows.append(row)
    header = ["op id", "kind", "label", "input shapes", "depth", "rounds"]
    if links is not None:
        header.append("tied to the previous op by the log alone")
    out.append(table(header, rows))
    out.append("")
    out.append(
        f"The rounds on the path add up to {sum(p['rounds'] for p in t['critical_path'])} "
        f"= the iteration's {rounds} (depth {t['start_depth']} -> "
        f"{t['start_depth'] + rounds}). Every other interactive op overlaps with it."
    )
    n = t.get("path_from_log_links") or {}
    if log_path and fields.get("tensor_ids"):
        out.append("")
        lead = (
            "From the log alone (protocol_run events) the same path follows"
            if same and "ops" in t
            else "This path comes from the log alone"
            if same
            else "From the log alone a different chain with the same rounds follows "
            "(report.json: path_from_log)"
        )
        by_depth = n.get("depth, only op", 0) + n.get("depth, picked", 0)
        certain = (
            "certain here for every such link (one op ends at that depth)"
            if not n.get("depth, picked")
            else f"certain for {n.get('depth, only op', 0)} of them (one op ends at that "
            f"depth), a pick among ops of equal depth for {n['depth, picked']} (rounds exact)"
        )
        out.append(
            f"{lead}: {n.get('tensor id', 0)} link(s) by tensor id, where an op's input is "
            f"the previous op's output, and {by_depth} by depth, where local ops (add, sub, "
            f"transpose, ...), which the log does not record, sit between the two: there the "
            f"previous op is the one that ended at the depth the next op started from, "
            f"{certain}."
        )
    out.append("")
    if "traffic" in t:
        out += traffic_md(t)
    elif t.get("actor_totals"):
        out.append("### Whole-run traffic by actor (the log's actor_summary events)")
        rows = [
            [
                name,
                ", ".join(f"{k} {num(v)}" for k, v in a["sent"].items()) or "-",
                ", ".join(f"{k} {num(v)}" for k, v in a["received"].items()) or "-",
                a["messages_sent"],
            ]
            for name, a in t["actor_totals"].items()
        ]
        out.append(
            table(["actor", "sent (payload B)", "received (payload B)", "messages sent"], rows)
        )
        out.append("")
    if "ops" in t:
        out.append("### Every interactive op of the iteration")
        rows = []
        for o in t["ops"]:
            sent = sorted(set(o["online_sent"].values())) or [0]
            c = o["closed"]
            ok = o["rounds"] == c[0] and sent == [c[1]] and o["offline"] == c[2]
            rows.append(
                [
                    o["op"],
                    o["kind"],
                    o["label"],
                    o["shapes"] or "-",
                    f"{o['rounds']} / {c[0]}",
                    f"{'/'.join(num(s) for s in sent)} / {num(c[1])}",
                    f"{num(o['offline'])} / {num(c[2])}",
                    o["depth"],
                    OK if ok else BAD,
                ]
            )
        out.append(
            table(
                [
                    "op",
                    "kind",
                    "label",
                    "input shapes",
                    "rounds (meas / closed)",
                    "online B per party (meas / closed)",
                    "dealer B (meas / closed)",
                    "depth",
                    "equal",
                ],
                rows,
            )
        )
        out.append("")
    out.append("### Consistency checks")
    out.append(table(["check", "holds"], [[k, OK if v else BAD] for k, v in t["checks"].items()]))
    out.append("")
    return out


def traffic_md(t: Mapping[str, Any]) -> list[str]:
    tr = t["traffic"]
    it, setup = tr["iteration"], tr["setup"]
    keys = [
        ("online_bytes", "online (party <-> party)"),
        ("offline_bytes", "offline (dealer -> last party)"),
        ("input_bytes", "input (coordinator -> parties)"),
        ("output_bytes", "output (parties -> coordinator)"),
        ("control_bytes", "control (commands, dealer requests, barriers)"),
        ("header_bytes", "headers of all messages"),
    ]
    rows = [[label, num(it[k]), num(setup[k])] for k, label in keys]
    rows.append(["messages", num(it["messages"]), num(setup["messages"])])
    rows.append(["online messages", num(it["online_messages"]), num(setup["online_messages"])])
    outs = sorted(set(tr["output_bytes_by_iteration"]))
    lines = ["### Dealer, input, output and control traffic, apart"]
    lines.append(table(["traffic", "per iteration (shown)", "setup (share data and model)"], rows))
    lines.append("")
    lines.append(
        f"Output bytes per iteration over the run: {', '.join(num(o) for o in outs)} (the loss "
        f"is revealed every iteration; the last iteration also reveals the predictions, as "
        f"train_xor.py does). Online bytes on the wire per party including headers: "
        + ", ".join(f"{p} {num(v)}" for p, v in tr["online_wire_per_party"].items())
        + "."
    )
    lines.append("")
    per = tr["iteration_per_actor"]
    rows = []
    for name, a in per.items():
        rows.append(
            [
                name,
                ", ".join(f"{k} {num(v)}" for k, v in a["sent"].items()) or "-",
                ", ".join(f"{k} {num(v)}" for k, v in a["received"].items()) or "-",
                a["messages_sent"],
            ]
        )
    lines.append(
        table(["actor", "sent (payload B)", "received (payload B)", "messages sent"], rows)
    )
    lines.append("")
    return lines


def sweeps_md(sw: Mapping[str, Any], name: str) -> list[str]:
    axis = sw["axis"]
    out = [f"### {name}"]
    rows = []
    for p in sorted(sw["points"], key=lambda p: (p["parties"], p[axis])):
        m, c = p["measured"], p["closed"]
        ok = all(m[q] == c[q] for q in ("online_rounds", "online_bytes", "offline_bytes"))
        rows.append(
            [
                p["parties"],
                p[axis],
                f"{m['online_rounds']} / {c['online_rounds']}",
                f"{num(m['online_bytes'])} / {num(c['online_bytes'])}",
                f"{num(m['offline_bytes'])} / {num(c['offline_bytes'])}",
                num(m["control_bytes"]),
                ms(m["seconds"]),
                ms(p["projected"]["LAN"]),
                ms(p["projected"]["WAN"]),
                OK if ok else BAD,
            ]
        )
    out.append(
        table(
            [
                "parties",
                axis,
                "rounds (meas / closed)",
                "online B (meas / closed)",
                "dealer B (meas / closed)",
                "control B",
                "compute time",
                "projected LAN",
                "projected WAN",
                "equal",
            ],
            rows,
        )
    )
    out.append("")
    rows = []
    for f in sw["fits"]:
        full, up, cu = f["full"], f["upper"], f["closed_upper"]
        rows.append(
            [
                f["parties"],
                f["quantity"],
                num(full["exponent"]) if full else "n/a",
                f"{num(up['exponent'])} ({up['x_min']}..{up['x_max']})" if up else "n/a",
                num(cu["exponent"]) if cu else "-",
                f"{num(up['slope'], 2)} x + {num(up['intercept'], 1)}"
                if up and f["quantity"] != "seconds"
                else "-",
                f["verdict"],
            ]
        )
    out.append(
        table(
            [
                "parties",
                "quantity",
                "exponent, full range",
                "exponent, upper range",
                "closed-form exponent, upper",
                "straight-line fit, upper",
                "reading",
            ],
            rows,
        )
    )
    out.append("")
    return out


def projection_md(p: Mapping[str, Any]) -> list[str]:
    i = p["inputs"]
    out = [
        f"Inputs, all measured in this run: {i['rounds']} rounds per iteration, "
        f"{num(i['wire_bytes_per_party'])} online bytes on the wire for the busiest party "
        f"(payload + headers), local compute {ms(i['compute_s'])} per iteration (median of "
        f"{len(i['compute_runs_s'])} iterations without latency, coordinator defaults as "
        f"train_xor.py runs them), "
        f"{num(i['offline_bytes'])} dealer bytes per iteration.",
        "",
        "time = rounds x latency + wire bytes per party / bandwidth + compute",
        "",
    ]
    rows = [
        [
            q["profile"],
            f"{1000 * q['latency']:g} ms, {q['bandwidth'] / 1e6:g} Mbit/s",
            ms(q["latency_s"]),
            f"{1e6 * q['bandwidth_s']:.1f} us",
            ms(q["compute_s"]),
            f"**{ms(q['total_s'])}**",
            f"{1e6 * q['offline_transfer_s']:.1f} us",
        ]
        for q in p["profiles"]
    ]
    out.append(
        table(
            [
                "profile",
                "network",
                "rounds x latency",
                "bytes / bandwidth",
                "compute",
                "projected per iteration",
                "dealer material over the same link (apart)",
            ],
            rows,
        )
    )
    out.append("")
    out.append(
        "Checked against runs on the simulated network (every party-to-party link delayed by "
        "the latency, and busy for bytes / bandwidth per message). Each simulated run takes "
        "turns, iteration by iteration, with a run without latency of the same workload, "
        "whose median is the compute term, so that load from other processes affects both. "
        "*Rounds waited* is the depth growth between consecutive barriers in the run's "
        "recorded commands, summed over the iteration: the online rounds with the "
        "coordinator's defaults, more with the optional `phase_barriers=True` (paired with a "
        "run without latency in the same mode):"
    )
    out.append("")
    rows = []
    for c in p["checks"]:
        rows.append(
            [
                c["name"],
                c["workload"],
                "`phase_barriers=True` (optional)" if c["phase_barriers"] else "default",
                c["rounds_waited"],
                num(c["wire_bytes_per_party"]),
                f"{ms(c['latency_s'])} + {ms(c['bandwidth_s'])} + {ms(c['compute_s'])} "
                f"= **{ms(c['projected_s'])}**",
                f"{ms(c['measured_s'])} ({ms(c['spread_s'][0])}..{ms(c['spread_s'][1])})",
                f"{100 * c['rel_error']:+.1f}%",
            ]
        )
    out.append(
        table(
            [
                "simulated run",
                "workload",
                "coordinator mode",
                "rounds waited",
                "wire B per party",
                "projected: latency + bandwidth + compute",
                "measured median (min..max)",
                "projection error",
            ],
            rows,
        )
    )
    out.append("")
    return out


def summary_md(r: Mapping[str, Any]) -> list[str]:
    """Headline figures, each taken from the sections below."""
    t = r["training"]
    out = []
    rounds, online, offline = t["rounds"], t["online_bytes"], t["offline_bytes"]
    line = (
        f"- train_xor.py, {t['parties']} parties: **{rounds} online rounds, {num(online)} online "
        f"bytes and {num(offline)} dealer bytes per iteration**"
    )
    if "traffic" in t:
        ctl = t["traffic"]["iteration"]["control_bytes"]
        line += f"; the coordinator's commands add {num(ctl)} control bytes ({ctl / online:.1f}x online)"
    out.append(line + ".")
    groups = [g for g in t["by_label"] if g["ops"]]
    if groups:
        g = max(groups, key=lambda g: g["rounds_on_path"])
        share = f"{pct(g['rounds_on_path'], rounds)} of the rounds"
        if g["offline_bytes"] is not None:
            share += f", {pct(g['offline_bytes'], offline)} of the dealer bytes"
        kinds = "/".join(g["kinds"])
        out.append(
            f"- The {kinds} labelled `{g['label']}` takes {g['rounds_on_path']} rounds on the "
            f"critical path: {share}, {pct(g['online_bytes'], online)} of the online bytes."
        )
    if r.get("sweeps"):
        parts = []
        for axis in ("batch", "width"):
            fits = {(f["parties"], f["quantity"]): f for f in r["sweeps"][axis]["fits"]}
            for n in sorted({f["parties"] for f in r["sweeps"][axis]["fits"]}):
                ob, rd = fits[(n, "online_bytes")]["upper"], fits[(n, "online_rounds")]["upper"]
                fb = fits[(n, "offline_bytes")]["upper"]
                if ob and rd and fb:
                    parts.append(
                        f"{axis} ({n} parties): online bytes ~ {axis}^{ob['exponent']:.2f}, "
                        f"dealer bytes ~ {axis}^{fb['exponent']:.2f}, rounds ~ "
                        f"{axis}^{abs(rd['exponent']):.2f}"
                    )
        out.append("- Growth (upper half of each sweep): " + "; ".join(parts) + ".")
        const = []
        for n in sorted({q["parties"] for q in r["sweeps"]["batch"]["points"]}):
            seen = {
                q["measured"]["online_rounds"]
                for axis in ("batch", "width")
                for q in r["sweeps"][axis]["points"]
                if q["parties"] == n
            }
            const.append(f"{'/'.join(str(v) for v in sorted(seen))} with {n} parties")
        out.append(f"- Rounds per iteration at every sweep point: {', '.join(const)}.")
    relu = next(
        (x for x in r["protocols"]["rows"] if x["protocol"] == "relu" and x["parties"] == 2), None
    )
    if relu is not None:
        m = relu["per_element"]["measured"]
        anchors = "; ".join(
            f"{a['source']} {num(a['rounds'])} rounds, {num(a['online_per_party'])} B"
            for a in relu["anchors"]
        )
        out.append(
            f"- ReLU, 2 parties, measured: {m['rounds']} rounds, {num(m['bytes_per_party'])} B per "
            f"element per party online, {num(m['offline'])} dealer B per element (anchors quoted "
            f"from DESIGN.md: {anchors})."
        )
    p = r.get("projection")
    if p:
        prof = {q["profile"]: q for q in p["profiles"]}
        lan, wan = prof["LAN"], prof["WAN"]
        out.append(
            f"- Projected per iteration: LAN {ms(lan['total_s'])}, WAN {ms(wan['total_s'])} "
            f"({pct(wan['latency_s'], wan['total_s'])} of it latency)."
        )
        checks = ", ".join(f"{c['name']}: {100 * c['rel_error']:+.1f}%" for c in p["checks"])
        out.append(f"- Projection against simulated runs: {checks}.")
    return out


def render_markdown(r: Mapping[str, Any], plots: Sequence[str]) -> str:
    meta = r["meta"]
    lines = [
        "# Communication cost report",
        "",
        f"Generated by `{meta['command']}` on {meta['finished']} in {meta['runtime_s']:.0f} s "
        f"({meta['cpus']} CPUs, torch {meta['torch']}, Python {meta['python']}). Every number "
        f"below was measured in this run, except those marked *closed form* (computed from "
        f"the protocols' documented formulas: protocols/beaver.py, protocols/truncate.py, "
        f"protocols/compare.py) and the *anchors* quoted from DESIGN.md. Machine-readable: "
        f"report.json (every figure), {meta['log']} (the structlog JSON lines read for the "
        f"training section).",
        "",
        "Bytes are payload bytes as the meter counts them (8 per ring element, bits packed), "
        "per party = sent by each party (received, for input); rounds are the growth of the "
        "largest online dependency depth (DESIGN: metering).",
        "",
        "## Summary",
        "",
        *summary_md(r),
        "",
        "## 1. Protocols: measured against closed form",
        "",
    ]
    ps = r["protocols"]
    lines.append(
        f"Each protocol alone in a fresh cluster, `cluster.stats()` after minus before, with "
        f"`await cluster.flush()` around it; {ps['rows'][0]['elements']} elements "
        f"(matmul: square matrices, per output element). Frontend ops as the training uses "
        f"them: `mul`, `square` and `matmul` include their one truncation. All equal to the "
        f"closed form: {OK if ps['all_match'] else BAD}."
    )
    lines += ["", protocol_table(ps), ""]
    lines.append(
        "With 2 parties truncation is local (0 rounds, 0 bytes); with 3 it opens `x - r` once "
        "more (1 round, 8 B per element per peer, 8 B dealer). `share` counts input bytes "
        "each party receives, `reveal` output bytes each party sends; neither adds rounds."
    )
    lines += ["", "### Against the anchors of DESIGN.md (2 parties, per element)", ""]
    lines.append(anchor_table(ps))
    lines += [
        "",
        "Anchor figures are quoted, not measured (AriaNN's key is per party; ours is the "
        "dealer's correction to one party, the other draws its share from a PRG seed).",
        "",
    ]
    if "protocols.png" in plots:
        lines += ["![protocols](protocols.png)", ""]
    lines += ["## 2. One training iteration of train_xor.py", ""]
    lines += training_md(r["training"], r["training"].get("optional_phase_barriers"))
    if "breakdown.png" in plots:
        lines += ["![breakdown](breakdown.png)", ""]
    if r.get("sweeps"):
        sw = r["sweeps"]
        lines += ["## 3. How cost grows", ""]
        lines.append(
            f"Two-layer MLP Linear({sw['in_features']}, width), relu, Linear(width, 1), loss "
            f"((pred - y)**2).sum(), SGD; one cluster per point, {sw['iterations']} iteration(s) "
            f"each (costs of the last; compute time = fastest). Batch sweep at width "
            f"{sw['batch_sweep_width']}, width sweep at batch {sw['width_sweep_batch']}. "
            f"Closed form = the documented cost of every op of the iteration, summed from the "
            f"dealer requests (kind, shapes, divisor); rounds = longest path with closed-form "
            f"rounds per op. {sw['subsample_note']}"
        )
        lines.append("")
        lines.append(
            "Exponents are log-log least-squares slopes; *upper range* is the upper half of "
            "the sweep, where fixed overheads are small. Bytes are linear in batch and width "
            "in the closed form (a*x + c); c comes from the terms that do not grow with the "
            "swept axis (e.g. the weights' side of the Beaver openings and the loss)."
        )
        lines.append("")
        lines += sweeps_md(sw["batch"], "Batch-size sweep")
        if "sweep_batch.png" in plots:
            lines += ["![batch sweep](sweep_batch.png)", ""]
        lines += sweeps_md(sw["width"], "Hidden-width sweep")
        if "sweep_width.png" in plots:
            lines += ["![width sweep](sweep_width.png)", ""]
    if r.get("projection"):
        lines += ["## 4. Projected wall time per iteration", ""]
        lines += projection_md(r["projection"])
        if "projection.png" in plots:
            lines += ["![projection](projection.png)", ""]
    lines += ["## Notes", ""]
    lines += [f"- {n}" for n in r.get("notes", [])]
    lines.append("")
    return "\n".join(lines)


# -- plots -------------------------------------------------------------------------------------------
def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_protocols(ps: Mapping[str, Any], path: Path) -> None:
    rows = [r for r in ps["rows"] if r["traffic"] == "online"]
    names = list(dict.fromkeys(r["protocol"] for r in rows))
    parties = sorted({r["parties"] for r in rows})
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    width = 0.8 / max(len(parties), 1)
    for k, (key, title) in enumerate(
        [
            ("rounds", "online rounds"),
            ("bytes_per_party", "online bytes / element / party"),
            ("offline", "dealer bytes / element"),
        ]
    ):
        ax = axes[k]
        for j, n in enumerate(parties):
            xs, meas, closed = [], [], []
            for i, name in enumerate(names):
                r = next((r for r in rows if r["protocol"] == name and r["parties"] == n), None)
                if r is None:
                    continue
                xs.append(i + (j - (len(parties) - 1) / 2) * width)
                meas.append(r["per_element"]["measured"][key])
                closed.append(r["per_element"]["closed"][key])
            ax.bar(xs, meas, width, label=f"{n} parties, measured")
            ax.scatter(xs, closed, marker="_", s=200, color="black", zorder=3)
        for i, name in enumerate(names):
            r = next((r for r in rows if r["protocol"] == name and r["parties"] == 2), None)
            for a in (r or {}).get("anchors", []):
                v = {"rounds": a["rounds"], "bytes_per_party": a["online_per_party"]}.get(
                    key, a["offline"]
                )
                if v is not None:
                    ax.scatter([i], [v], marker="^", color="red", zorder=4, s=25)
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(
            [n.split(",")[0] + ("*" if "," in n else "") for n in names], rotation=30
        )
        ax.set_title(title)
        if key != "rounds":
            ax.set_yscale("symlog", linthresh=1)
    axes[0].legend(fontsize=8, title="black -: closed form; red ^: anchors", title_fontsize=7)
    fig.suptitle("Protocols: measured (bars) vs closed form; mul* = mul without truncation")
    _save(fig, path)


def plot_breakdown(t: Mapping[str, Any], path: Path) -> None:
    groups = t["by_label"]
    labels = [g["label"] for g in groups][::-1]
    gs = groups[::-1]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    ys = range(len(labels))
    axes[0].barh([y + 0.2 for y in ys], [g["online_bytes"] for g in gs], 0.4, label="online")
    if all(g["offline_bytes"] is not None for g in gs):
        axes[0].barh([y - 0.2 for y in ys], [g["offline_bytes"] for g in gs], 0.4, label="dealer")
    axes[0].set_yticks(list(ys))
    axes[0].set_yticklabels(labels)
    axes[0].set_xlabel("bytes per iteration")
    axes[0].legend()
    axes[1].barh(list(ys), [g["rounds_on_path"] for g in gs], color="tab:green")
    axes[1].set_yticks(list(ys))
    axes[1].set_yticklabels(labels)
    axes[1].set_xlabel(f"rounds on the critical path (total {t['rounds']})")
    fig.suptitle(f"train_xor.py: one iteration, {t['parties']} parties")
    _save(fig, path)


def plot_sweep(sw: Mapping[str, Any], path: Path, title: str) -> None:
    axis = sw["axis"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    fits = {(f["parties"], f["quantity"]): f for f in sw["fits"]}
    for n in sorted({p["parties"] for p in sw["points"]}):
        pts = sorted((p for p in sw["points"] if p["parties"] == n), key=lambda p: p[axis])
        xs = [p[axis] for p in pts]
        for q, marker in (("online_bytes", "o"), ("offline_bytes", "s")):
            f = fits[(n, q)]["upper"]
            e = f"{f['exponent']:.2f}" if f else "n/a"
            axes[0].loglog(
                xs, [p["measured"][q] for p in pts], marker, label=f"{n}p {q} (slope {e})"
            )
            axes[0].loglog(xs, [p["closed"][q] for p in pts], "k--", lw=0.7)
        axes[1].semilogx(xs, [p["measured"]["online_rounds"] for p in pts], "o-", label=f"{n}p")
        for prof, style in (("LAN", "o-"), ("WAN", "s-")):
            axes[2].loglog(xs, [p["projected"][prof] for p in pts], style, label=f"{n}p {prof}")
    axes[0].set_title("bytes per iteration (dashed: closed form)")
    axes[1].set_title("online rounds per iteration")
    axes[2].set_title("projected seconds per iteration")
    for ax in axes:
        ax.set_xlabel(axis)
        ax.legend(fontsize=7)
    axes[1].set_ylim(bottom=0)
    fig.suptitle(title)
    _save(fig, path)


def plot_projection(p: Mapping[str, Any], path: Path) -> None:
    bars = [(q["profile"] + " (projected)", q, None) for q in p["profiles"]]
    bars += [(c["name"], c, c["measured_s"]) for c in p["checks"]]
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(bars) + 1.5))
    ys = list(range(len(bars)))[::-1]
    left = [0.0] * len(bars)
    for key, color in (
        ("latency_s", "tab:blue"),
        ("bandwidth_s", "tab:orange"),
        ("compute_s", "tab:gray"),
    ):
        vals = [1000 * b[1][key] for b in bars]
        ax.barh(ys, vals, left=left, color=color, label=key.removesuffix("_s"))
        left = [a + v for a, v in zip(left, vals, strict=True)]
    for y, b in zip(ys, bars, strict=True):
        if b[2] is not None:
            ax.scatter([1000 * b[2]], [y], marker="D", color="red", zorder=3)
    ax.set_yticks(ys)
    ax.set_yticklabels([b[0] for b in bars])
    ax.set_xlabel("ms per iteration (red: measured on the simulated network)")
    ax.legend()
    _save(fig, path)


def render_plots(r: Mapping[str, Any], out: Path) -> list[str]:
    made = []
    plot_protocols(r["protocols"], out / "protocols.png")
    made.append("protocols.png")
    plot_breakdown(r["training"], out / "breakdown.png")
    made.append("breakdown.png")
    if r.get("sweeps"):
        plot_sweep(r["sweeps"]["batch"], out / "sweep_batch.png", "Batch-size sweep")
        plot_sweep(r["sweeps"]["width"], out / "sweep_width.png", "Hidden-width sweep")
        made += ["sweep_batch.png", "sweep_width.png"]
    if r.get("projection"):
        plot_projection(r["projection"], out / "projection.png")
        made.append("projection.png")
    return made
