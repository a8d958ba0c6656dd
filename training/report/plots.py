"""The communication-cost report's PNG plots (matplotlib's object-oriented Figure API,
no pyplot state): bytes per element by op kind and suite, the training iteration's
breakdown by label, the batch and width sweeps, and projected against simulated times.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from .engine import Report

PNGS = ("protocols.png", "breakdown.png", "sweep_batch.png", "sweep_width.png", "projection.png")

"""The files :func:`plots` writes."""


def _save(fig: Figure, path: Path) -> None:
    fig.subplots_adjust(left=0.1, right=0.98, bottom=0.2, wspace=0.3)
    fig.savefig(path, dpi=90)


def plots(rep: Report, out: Path) -> None:
    suites = rep.config.suites
    big = max(rep.config.sizes)
    kinds = sorted({r.kind for r in rep.ops if r.interactive and not r.note})
    fig = Figure(figsize=(10, 4))
    for ax, what in zip(fig.subplots(1, 2), ("online B per party", "dealer B"), strict=True):
        width = 0.8 / len(suites)
        for j, s in enumerate(suites):
            vals = []
            for k in kinds:
                rs = [r for r in rep.ops if (r.suite, r.kind, r.parties, r.note) == (s, k, 2, "")]
                r = max(rs, key=lambda r: r.elements) if rs else None
                v = 0.0 if r is None else (r.online_per_party[0] if "online" in what else r.dealer)
                vals.append(v / r.elements if r else math.nan)
            ax.bar([i + j * width for i in range(len(kinds))], vals, width, label=s)
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(kinds))], kinds, rotation=30, fontsize=8
        )
        ax.set_yscale("log")
        ax.set_title(f"{what} per element (2 parties, {big} elements)", fontsize=9)
    fig.legend(*fig.axes[0].get_legend_handles_labels(), loc="upper center", ncols=len(suites))
    fig.subplots_adjust(top=0.82)
    _save(fig, out / "protocols.png")

    fig = Figure(figsize=(10, 4))
    ax1, ax2 = fig.subplots(1, 2)
    names = list(dict.fromkeys(lab.label for s in suites for lab in rep.last(s, 2).labels))
    for j, s in enumerate(suites):
        left = [0.0, 0.0]
        for lab in rep.last(s, 2).labels:
            colour = f"C{names.index(lab.label) % 10}"
            for ax, v, side in ((ax1, lab.critical_rounds, 0), (ax2, lab.online, 1)):
                if v:
                    ax.barh(j, v, left=left[side], color=colour, edgecolor="white")
                    text = lab.label.split("/")[-1]
                    ax.text(left[side] + v / 2, j, text, ha="center", va="center", fontsize=6)
                    left[side] += v
    for ax, t in ((ax1, "rounds on the critical path"), (ax2, "online bytes (all parties)")):
        ax.set_yticks(range(len(suites)), suites)
        ax.set_title(f"{rep.workload}: {t}", fontsize=9)
    _save(fig, out / "breakdown.png")

    for axis in ("batch", "width"):
        fig = Figure(figsize=(6, 4))
        ax = fig.subplots()
        for n in sorted({p.parties for p in rep.sweeps}):
            ps = sorted(
                (p for p in rep.sweeps if p.axis == axis and p.parties == n), key=lambda p: p.x
            )
            ax.loglog(
                [p.x for p in ps], [p.online for p in ps], "o-", label=f"online B, {n} parties"
            )
            ax.loglog(
                [p.x for p in ps], [p.dealer for p in ps], "s--", label=f"dealer B, {n} parties"
            )
        ax.set_xlabel(axis)
        ax.set_ylabel("bytes per iteration")
        ax.set_title(f"MLP iteration cost vs {axis} (suite default)")
        ax.legend(fontsize=7)
        _save(fig, out / f"sweep_{axis}.png")

    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    names = [f"{s.workload}\n{s.suite}, {s.profile.name}" for s in rep.simulated]
    xs = range(len(names))
    ax.bar(
        [x - 0.2 for x in xs], [1e3 * s.projected for s in rep.simulated], 0.4, label="projected"
    )
    ax.bar([x + 0.2 for x in xs], [1e3 * s.measured for s in rep.simulated], 0.4, label="simulated")
    ax.set_xticks(list(xs), names, fontsize=7)
    ax.set_ylabel("ms per iteration")
    ax.legend()
    _save(fig, out / "projection.png")
