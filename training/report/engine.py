"""What the report measures, in one run: :func:`build` fills a :class:`Report`."""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import torch

from protocols.suite import SUITES

from .measure import IterationCost, OpRow, Workload, measure_iterations, measure_ops, mlp_workload
from .networks import NetworkCost, measure_network
from .projection import LAN, WAN, Profile, Simulated, SweepPoint, simulate, sweep


@dataclass(frozen=True, slots=True)
class Config:
    """What to measure; :func:`config` gives the full and the quick set."""

    quick: bool
    suites: tuple[str, ...]
    parties: tuple[int, ...]
    sizes: tuple[int, ...]
    """Elements of the element-wise op cases (one cluster per suite and party count)."""
    mats: tuple[tuple[int, int, int], ...]
    """(m, k, n) of the matmul cases, paired with ``sizes``."""
    iterations: int
    """train_xor iterations per suite (the last is broken down; compute = their median)."""
    batches: tuple[int, ...]
    widths: tuple[int, ...]
    sweep_parties: tuple[int, ...]
    simulated: tuple[tuple[str, str, Profile], ...]
    """(workload: "train_xor" or "mlp", suite, profile) checked against simulated runs."""
    sim_iterations: int
    networks: tuple[str, ...] = ()
    """SecureNN's / Falcon's networks (keys of ``measure.NETWORKS``), one iteration each."""
    network_runs: tuple[tuple[str, int], ...] = ()
    """(suite, parties) each network is measured with."""
    network_batch: int = 128


BANDWIDTH_BOUND = Profile("1 ms, 10 Mbit/s", 1e-3, 10e6)
MLP_SIM = (256, 64)
"""Batch and width of the bandwidth-bound simulated run."""


def config(quick: bool = False) -> Config:
    suites = tuple(SUITES)
    if quick:
        return Config(
            True, suites, (2, 3), (64,), ((4, 8, 2),), 2, (4, 16, 64), (2, 8, 32), (2,),
            (("train_xor", "default", Profile("5 ms", 5e-3, 1e9)),), 2,
            ("D",), (("default", 2), ("carry", 2)), 8,
        )  # fmt: skip
    return Config(
        False, suites, (2, 3), (8, 1024), ((4, 2, 2), (32, 64, 16)), 5,
        tuple(2**i for i in range(10)), tuple(2**i for i in range(1, 10)), (2, 3),
        (
            ("train_xor", "default", LAN), ("train_xor", "default", WAN),
            ("train_xor", "carry", WAN), ("mlp", "carry", BANDWIDTH_BOUND),
        ),
        5, ("A", "B", "C", "D"), (("default", 2), ("carry", 2), ("default", 3)), 128,
    )  # fmt: skip


@dataclass
class Report:
    config: Config
    workload: str
    ops: list[OpRow] = field(default_factory=list)
    unmeasured: dict[str, list[str]] = field(default_factory=dict)
    """Suite -> registered kinds with no case (none expected)."""
    training: dict[tuple[str, int], list[IterationCost]] = field(default_factory=dict)
    sweeps: list[SweepPoint] = field(default_factory=list)
    simulated: list[Simulated] = field(default_factory=list)
    networks: list[NetworkCost] = field(default_factory=list)
    meta: dict[str, object] = field(default_factory=dict)

    def compute(self, suite: str, n: int) -> float:
        """Median seconds per iteration of train_xor without delays (this run)."""
        return statistics.median(s for it in self.training[suite, n] for s in it.seconds)

    def last(self, suite: str, n: int) -> IterationCost:
        return self.training[suite, n][-1]

    def projection(self, suite: str, n: int, p: Profile) -> float:
        it = self.last(suite, n)
        return p.project(it.record.online_rounds, it.busiest_party_online, self.compute(suite, n))

    @property
    def mismatches(self) -> list[str]:
        """Everything measured that differs from its closed form or fails a check."""
        out = [
            f"{r.suite} n={r.parties} {r.kind} {r.note} {r.shapes}: measured "
            f"{r.rounds} rounds, {r.online_per_party} B per party, {r.dealer} dealer B; "
            f"closed form {r.closed_rounds}, {r.closed_online}, {r.closed_dealer}"
            for r in self.ops
            if not r.equal
        ]
        for (s, n), its in self.training.items():
            for it in its:
                out += [f"train_xor {s} n={n}: {m}" for m in it.op_mismatches]
                out += [f"train_xor {s} n={n}: {k}" for k, ok in it.checks.items() if not ok]
        out += [
            f"sweep {p.axis}={p.x} n={p.parties}: measured {p.rounds}/{p.online}/{p.dealer}, "
            f"closed form {p.closed_rounds}/{p.closed_online}/{p.closed_dealer}"
            for p in self.sweeps
            if (p.rounds, p.online, p.dealer) != (p.closed_rounds, p.closed_online, p.closed_dealer)
        ]
        out += [f"suite {s}: no case for kinds {k}" for s, k in self.unmeasured.items() if k]
        out += [
            f"network {c.network} {c.suite} n={c.parties} batch {c.batch}: measured "
            f"{c.rounds}/{c.online}/{c.dealer}, closed form {c.closed_rounds}/"
            f"{c.closed_online}/{c.closed_dealer}, failed checks "
            f"{[k for k, ok in c.checks.items() if not ok]}"
            for c in self.networks
            if not c.ok
        ]
        return out


def _meta(t0: float, quick: bool) -> dict[str, object]:
    return {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "runtime_s": round(time.perf_counter() - t0, 1),
        "cpus": os.cpu_count(),
        "load": " ".join(f"{v:.1f}" for v in os.getloadavg()),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "mode": "quick" if quick else "full",
    }


async def measure_networks(cfg: Config) -> list[NetworkCost]:
    return [
        await measure_network(name, suite, n, cfg.network_batch)
        for name in cfg.networks
        for suite, n in cfg.network_runs
    ]


async def build_networks(cfg: Config, workload: str = "-") -> Report:
    """Only the networks section of ``cfg`` (``comm_report.py --networks-only``)."""
    t0 = time.perf_counter()
    rep = Report(cfg, workload, networks=await measure_networks(cfg))
    rep.meta = _meta(t0, cfg.quick)
    return rep


async def build(cfg: Config, train_xor: Workload) -> Report:
    """Run every measurement of ``cfg``; ``train_xor`` is the seed's workload."""
    t0 = time.perf_counter()
    rep = Report(cfg, train_xor.name)
    for suite in cfg.suites:
        for n in cfg.parties:
            rows, missing = await measure_ops(suite, n, cfg.sizes, cfg.mats)
            rep.ops += rows
            rep.unmeasured[suite] = missing
    for suite in cfg.suites:
        for n in cfg.parties:
            rep.training[suite, n] = await measure_iterations(train_xor, suite, n, cfg.iterations)
    for n in cfg.sweep_parties:
        rep.sweeps += await sweep("batch", cfg.batches, n, "default")
        rep.sweeps += await sweep("width", cfg.widths, n, "default")
    for name, suite, profile in cfg.simulated:
        work = train_xor if name == "train_xor" else mlp_workload(*MLP_SIM)
        rep.simulated += await simulate(work, suite, [profile], 1, cfg.sim_iterations)
    rep.networks = await measure_networks(cfg)
    rep.meta = _meta(t0, cfg.quick)
    return rep
