"""The markdown sections of the communication-cost report, one function per section.

Each ``*_section(rep)`` turns one part of a :class:`~training.report.engine.Report` into
markdown lines: every op kind against its closed form (1), training iterations and their
labels (2), the batch and width sweeps (3), the LAN/WAN projection (4), the quoted
anchors (5) and SecureNN's / Falcon's networks A-D (6). :mod:`.render` puts them together
in ``report.md``; the figures they print are measured in the run, except the anchors,
which say they are quoted. :func:`num`, :func:`ms` and :func:`table` are the formatting
helpers every section shares.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocols.suite import FSS_MAX_NUMEL, describe, get_suite

from .engine import Report
from .measure import IterationCost, OpRow
from .networks import NETWORKS
from .projection import LAN, WAN, exponent

PEERS = "/work/shared/peers/README.md"
DESIGN = "/work/shared/DESIGN.md"


def num(v: float) -> str:
    """A count with thousands separators, or a short decimal."""
    if isinstance(v, int) or float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.3f}".rstrip("0")


def ms(s: float) -> str:
    """Seconds as milliseconds, one decimal."""
    return f"{1000 * s:.1f} ms"


def table(head: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A markdown table (and a blank line after it)."""
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return [*out, ""]


def _kinds(k: dict[str, int]) -> str:
    return ", ".join(f"{name} x{c}" if c > 1 else name for name, c in k.items()) or "-"


def ops_section(rep: Report) -> list[str]:
    cfg = rep.config
    out = [
        "## 1. Every op kind against its suite's closed form",
        "",
        f"Each op alone, between two `await cluster.flush()` calls in one cluster per suite "
        f"and party count: rounds and bytes from the meter (`cluster.stats()` after minus "
        f"before) and from the op log (`take_op_costs`), beside `suite.cost(...)`. Shapes: "
        f"element-wise {', '.join(str(s) for s in cfg.sizes)} elements, matmul "
        f"{', '.join(f'({m},{k})@({k},{n})' for m, k, n in cfg.mats)}; figures per result "
        f"element at the largest shape. *equal*: meter, op log and closed form agree at "
        f"every shape (rounds; every party's online bytes; dealer bytes).",
        "",
    ]
    for suite in cfg.suites:
        rows = [r for r in rep.ops if r.suite == suite]
        talk = {r.kind for r in rows if r.interactive}
        local = sorted({r.kind for r in rows} - talk)
        inter: dict[tuple[str, str], dict[int, list[OpRow]]] = {}
        for r in rows:
            if r.kind in talk:
                inter.setdefault((r.kind, r.note), {}).setdefault(r.parties, []).append(r)
        body = []
        for (kind, note), by_n in sorted(inter.items()):
            cells: list[object] = [f"{kind} ({note})" if note else kind]
            for n in cfg.parties:
                group = by_n[n]
                big = max(group, key=lambda r: r.elements)
                e = big.elements
                cells.append(
                    f"{big.rounds} / {num(big.online_per_party[0] / e)} / {num(big.dealer / e)}"
                    + ("" if big.interactive else " (local)")
                    + ("" if all(r.equal for r in group) else " **MISMATCH**")
                )
            body.append(cells)
        local_ok = all(r.equal and r.rounds == r.dealer == 0 for r in rows if not r.interactive)
        out += [f"### Suite `{suite}`", ""]
        if describe(get_suite(suite)) != suite:
            out += [f"As named: {describe(get_suite(suite))}.", ""]
        out += table(
            ["op", *(f"{n} parties: rounds / online B per party / dealer B" for n in cfg.parties)],
            body,
        )
        out.append(
            f"Local for every party count ({', '.join(local)}): 0 rounds, 0 bytes measured: "
            f"{'yes' if local_ok else '**NO**'}. Every case equal to the closed form: "
            f"{'yes' if all(r.equal for r in rows) else '**NO**'}."
        )
        out.append("")
    return out


def _label_rows(it: IterationCost) -> list[list[object]]:
    return [
        [lab.label, _kinds(lab.kinds), lab.local_ops, lab.critical_rounds, num(lab.online),
         num(lab.dealer), "yes" if (lab.online, lab.dealer) == (lab.closed_online, lab.closed_dealer) else "**NO**"]
        for lab in it.labels
    ]  # fmt: skip


def training_section(rep: Report) -> list[str]:
    cfg = rep.config
    out = [
        f"## 2. One iteration of {rep.workload}",
        "",
        f"{rep.workload}'s network, data, init, loss and SGD with the TrainingCoordinator's "
        f"defaults, {cfg.iterations} iterations per suite and party count; the last is broken "
        "down from the op log (every op issued, local ones too, with its measured bytes and "
        "depth). Rounds on the critical path: the longest chain of ops through their "
        "operands, each op's rounds from its measured end depth minus the depth its "
        "operands were ready at. *equal*: measured bytes = closed form for the label's ops.",
        "",
    ]
    rows = []
    for (suite, n), its in rep.training.items():
        it = its[-1]
        r = it.record
        same = len({(i.record.online_rounds, i.record.online_bytes) for i in its}) == 1
        rows.append(
            [suite, n, r.online_rounds, num(r.online_bytes), num(r.offline_bytes),
             sum(sum(lab.kinds.values()) for lab in it.labels), ms(rep.compute(suite, n)),
             "yes" if all(it.checks.values()) and same else "**NO**"]
        )  # fmt: skip
    out += table(
        ["suite", "parties", "rounds", "online B", "dealer B", "interactive ops",
         "compute (median, no latency)", "all checks hold"],
        rows,
    )  # fmt: skip
    first = next(iter(rep.training.values()))[-1]
    out += ["Checks per iteration (all suites): " + "; ".join(first.checks) + ".", ""]
    for suite in cfg.suites:
        it = rep.last(suite, 2)
        out += [f"### Suite `{suite}`, 2 parties", ""]
        out += table(
            ["label", "interactive ops", "local ops", "rounds on critical path", "online B",
             "dealer B", "equal"],
            _label_rows(it),
        )  # fmt: skip
        path = " -> ".join(f"{lab} {kind} ({r})" for _, kind, lab, r in it.path)
        phases = ", ".join(f"{k} {v.online_rounds}" for k, v in it.record.phases.items())
        out += [
            f"Critical path ({sum(p[3] for p in it.path)} rounds = the iteration's "
            f"{it.record.online_rounds}): {path}. The coordinator's own phase attribution "
            f"(growth of the largest depth, in issue order): {phases}.",
            "",
        ]
    return out


def sweep_section(rep: Report) -> list[str]:
    out = [
        "## 3. Growth of one iteration's cost",
        "",
        "Two-layer MLP Linear(2, width), ReLU, Linear(width, 1), loss ((pred - y)**2).sum(), "
        "SGD at lr 0.01 x min(1, 8 / batch) x min(1, 64 / width), at least 5e-4 (the loss "
        "sums over the batch: a fixed 0.01 diverges at large batch or width, beyond the "
        "reveal bound; `training.report.measure.mlp_lr`), suite `default`; one cluster per "
        "point, cost of its second iteration. Batch "
        "sweep at width 2, width sweep at batch 4. Exponents: least-squares slope of log "
        "cost on log x, over all points and over the upper half. Every point's measured "
        f"rounds and bytes equal the closed form: "
        f"{'yes' if not any('sweep' in m for m in rep.mismatches) else '**NO**'}.",
        "",
    ]
    for axis in ("batch", "width"):
        pts = [p for p in rep.sweeps if p.axis == axis]
        ns = sorted({p.parties for p in pts})
        xs = sorted({p.x for p in pts})
        rows = []
        for x in xs:
            row: list[object] = [x]
            for n in ns:
                (p,) = [q for q in pts if q.x == x and q.parties == n]
                row += [p.rounds, num(p.online), num(p.dealer), ms(p.seconds)]
            rows.append(row)
        head = [axis]
        for n in ns:
            head += [f"{n}p rounds", f"{n}p online B", f"{n}p dealer B", f"{n}p compute"]
        out += [f"### {axis}", "", *table(head, rows)]
        fits = []
        for n in ns:
            ps = sorted((p for p in pts if p.parties == n), key=lambda p: p.x)
            upper = ps[len(ps) // 2 :]
            for q in ("online", "dealer", "rounds"):
                ex = [exponent([p.x for p in s], [getattr(p, q) for p in s]) for s in (ps, upper)]
                fits.append(
                    [
                        n,
                        q,
                        num(round(ex[0], 3)),
                        f"{num(round(ex[1], 3))} ({upper[0].x}..{upper[-1].x})",
                    ]
                )
        out += table(["parties", "quantity", "exponent, all points", "exponent, upper half"], fits)
        out += [f"![{axis} sweep](sweep_{axis}.png)", ""]
    return out


def _losses(losses: Sequence[float]) -> str:
    return f"{losses[0]:.4g} -> {losses[-1]:.4g}" if losses else "-"


def projection_section(rep: Report) -> list[str]:
    out = [
        "## 4. Projected time per iteration",
        "",
        f"time = rounds x latency + the busiest party's online payload bytes / bandwidth + "
        f"compute (median seconds per iteration measured without latency in this run). "
        f"{LAN.name}: {LAN.latency * 1e3:g} ms, {LAN.bandwidth / 1e9:g} Gbit/s; {WAN.name}: "
        f"{WAN.latency * 1e3:g} ms, {WAN.bandwidth / 1e6:g} Mbit/s. Dealer material is "
        "preprocessing, not on this path.",
        "",
    ]
    rows = []
    for suite, n in rep.training:
        it = rep.last(suite, n)
        rows.append(
            [suite, n, it.record.online_rounds, num(it.busiest_party_online),
             ms(rep.compute(suite, n)), ms(rep.projection(suite, n, LAN)),
             ms(rep.projection(suite, n, WAN))]
        )  # fmt: skip
    out += table(
        ["suite", "parties", "rounds", "busiest party online B", "compute", "LAN", "WAN"], rows
    )
    out += [
        "Cross-check on the simulated network (`Cluster.start(network=NetworkProfile(...))`, "
        "every party-to-party link delayed by the latency and busy for frame bytes / "
        "bandwidth). Each simulated cluster takes turns, step by step, with one without "
        "delays whose median is the compute term. Difference = (projected - measured) / "
        "measured. Loss: the simulated cluster's revealed loss at its first and last step "
        "(every revealed value is below the reveal bound, or the run fails).",
        "",
    ]
    sim = [
        [s.workload, s.suite, s.profile.name, s.rounds, num(s.bytes_per_party), ms(s.compute),
         ms(s.projected), ms(s.measured), f"{100 * s.error:+.1f}%", _losses(s.losses)]
        for s in rep.simulated
    ]  # fmt: skip
    out += table(
        ["workload", "suite", "network", "rounds", "busiest party B", "compute", "projected",
         "measured (median)", "difference", "loss"],
        sim,
    )  # fmt: skip
    return [*out, "![projection](projection.png)", ""]


def anchor_section(rep: Report) -> list[str]:
    it = rep.last("default", 2)
    relu = {
        r.suite: r
        for r in rep.ops
        if r.kind == "relu" and r.parties == 2 and r.elements == max(rep.config.sizes)
    }
    rows = [
        [f"ReLU, suite `{s}` (measured)", r.rounds, num(r.online_per_party[0] / r.elements),
         num(r.dealer / r.elements)]
        for s, r in relu.items()
    ] + [
        ["ReLU, CrypTen A2B adder (anchor, DESIGN.md)", 9, "232", "~120"],
        ["ReLU, FSS gates, Boyle et al. 2021 (anchor, DESIGN.md)", 1, "16", "~2,100"],
    ]  # fmt: skip
    return [
        "## 5. Anchors",
        "",
        f"Quoted, not measured here: {DESIGN} (per element, 2 parties) and {PEERS} (CrypTen "
        "0.4.1 measured on a 2-core machine; CrypTen counts a round per communicator call).",
        "",
        *table(["", "rounds", "online B per element per party", "dealer B per element"], rows),
        f"{rep.workload}, 2 parties: CrypTen (anchor, {PEERS}) 60 communicator calls, 9,776 "
        f"B (party 1) and 285-291 ms per iteration; here (measured, suite `default`) "
        f"{it.record.online_rounds} rounds, {num(it.busiest_party_online)} online B for the "
        f"busiest party and {ms(rep.compute('default', 2))} per iteration.",
        "",
    ]


CRYPTEN_A = (
    "CrypTen 0.4.1, Network A, batch 128, 2 parties + TTP (anchor, "
    f"{PEERS}): 1,155-1,345 ms/step, 92 communicator calls (CrypTen counts a round per call), "
    "82.3 MB at party 1 (about 57 MB of it gradient thresholding)"
)
PAPERS_NOTE = (
    "Published figures of SecureNN (Wagh, Gupta, Chandran, PETS 2019) and Falcon (Wagh et "
    "al., PETS 2021) for these networks: not quoted. The search tool reached the papers' "
    "abstracts and their public code (snwagh/securenn-public, snwagh/falcon-public), not "
    "their result tables, so the column is left empty rather than filled from memory. Their "
    "settings differ from ours in any case: 3 parties (SecureNN: 2 share holders and a "
    "helper; Falcon: 3-party replicated secret sharing), ring Z_2^64 (SecureNN's code: "
    "uint64_t) / Z_2^32 (Falcon's code: uint32_t), semi-honest with privacy against one "
    "malicious party (SecureNN's abstract) / malicious security with abort, honest majority "
    "(Falcon's abstract), no dealer. Ours: 2 or 3 parties, ring Z_2^64 (fixed "
    "point base 10, precision 3), semi-honest, a trusted dealer sends the correlated "
    "randomness (the *dealer B* column, preprocessing), online phase only on the network."
)


def networks_section(rep: Report, number: int = 6) -> list[str]:
    """SecureNN's / Falcon's networks A-D: one training iteration each, measured."""
    if not rep.networks:
        return []
    cfg = rep.config
    out = [
        f"## {number}. SecureNN's and Falcon's networks A-D",
        "",
        f"One training iteration each (forward, sum-of-squares loss on one-hot targets, "
        f"backward, SGD update; the first iteration, so *compute* includes warm-up) on random "
        f"MNIST-shaped data (1x28x28, 10 classes), batch {cfg.network_batch}, all measured in "
        f"this run with the meter and the op log; *closed form* is `suite.cost(...)` summed "
        f"over the op log (rounds: its longest path). Projection as in section 4: rounds x "
        f"latency + busiest party's online B / bandwidth + the iteration's own wall time "
        f"without delays (LAN {LAN.latency * 1e3:g} ms, {LAN.bandwidth / 1e9:g} Gbit/s; WAN "
        f"{WAN.latency * 1e3:g} ms, {WAN.bandwidth / 1e6:g} Mbit/s). Batch "
        f"{cfg.network_batch} measured directly (no scaling). The `default` suite (as named, "
        f"the WAN form) uses FSS comparisons for ops of at most {FSS_MAX_NUMEL:,} elements "
        "and the carry tree above, so its rounds depend on the batch.",
        "",
        "Definitions (ours; architectures checked against the papers' public code, the "
        "letters A-D follow this project's brief and were not confirmed against the papers' "
        "text):",
        "",
        *table(
            ["network", "layers (ours)", "checked against", "differs from the papers' code"],
            [[n, d.layers, d.source, d.differs] for n, d in NETWORKS.items() if n in cfg.networks],
        ),
    ]
    rows = []
    for c in rep.networks:
        rows.append(
            [c.network, c.suite, c.parties, c.batch, c.rounds, num(c.online),
             num(c.busiest_party_online), num(c.dealer), ms(c.seconds), ms(c.project(LAN)),
             ms(c.project(WAN)), "yes" if c.ok else "**NO**", ""]
        )  # fmt: skip
    out += table(
        ["network", "suite", "parties", "batch", "online rounds", "online B (all parties)",
         "busiest party online B", "dealer B", "compute", "LAN", "WAN", "= closed form",
         "paper (not found)"],
        rows,
    )  # fmt: skip
    same = sorted(
        {
            c.network
            for c in rep.networks
            for d in rep.networks
            if (c.network, c.parties, c.suite, d.suite)
            == (d.network, d.parties, "default", "carry")
            and (c.rounds, c.online, c.dealer) == (d.rounds, d.online, d.dealer)
        }
    )
    if same:
        out += [
            f"Suites `default` and `carry` cost the same for network(s) {', '.join(same)} at "
            f"batch {cfg.network_batch}: every comparison there (ReLU, max-pool) has more "
            f"than {FSS_MAX_NUMEL:,} elements, so `default` also takes the carry tree.",
            "",
        ]
    out += [f"- {CRYPTEN_A}.", f"- {PAPERS_NOTE}", ""]
    a = [c for c in rep.networks if c.network == "A" and c.parties == 2]
    if a and cfg.network_batch == 128:
        out += [
            "Network A, 2 parties, batch 128, here (measured) against CrypTen (anchor): "
            + "; ".join(
                f"suite `{c.suite}` {c.rounds} rounds, {num(c.busiest_party_online)} online B "
                f"for the busiest party ({c.busiest_party_online / 82.3e6:.2f}x CrypTen's "
                f"party 1), {ms(c.seconds)} per iteration"
                for c in a
            )
            + ". CrypTen's figures are from another run on a similar 2-core machine.",
            "",
        ]
    return out
