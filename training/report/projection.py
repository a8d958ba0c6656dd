"""Growth sweeps and LAN/WAN projections for the communication report: how an iteration's
rounds and bytes grow with batch and width (:func:`sweep`, fitted exponents), and what
they cost on a link (:class:`Profile`, :func:`simulate`: a projection checked against a
run with simulated latency and bandwidth). Built on :mod:`training.report.measure`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from actors import NetworkProfile
from protocols.suite import get_suite

from ..cluster import Cluster
from ..coordinator import TrainingCoordinator
from ..optim import SGD
from .measure import PARTIES, Workload, measure_iterations, mlp_workload, party_sent


# -- (c) growth sweeps -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SweepPoint:
    axis: str
    x: int
    parties: int
    rounds: int
    online: int
    dealer: int
    closed_rounds: int
    closed_online: int
    closed_dealer: int
    seconds: float


async def sweep(
    axis: str, xs: Sequence[int], n: int, suite: str, fixed_batch: int = 4, fixed_width: int = 2
) -> list[SweepPoint]:
    """Iteration cost of the MLP at each batch size (width fixed) or width (batch fixed)."""
    points = []
    for x in xs:
        b, w = (x, fixed_width) if axis == "batch" else (fixed_batch, x)
        its = await measure_iterations(mlp_workload(b, w), suite, n, 2)
        it = its[-1]
        points.append(
            SweepPoint(
                axis, x, n, it.record.online_rounds, it.record.online_bytes,
                it.record.offline_bytes, it.closed_rounds,
                sum(lab.closed_online for lab in it.labels),
                sum(lab.closed_dealer for lab in it.labels),
                min(s for i in its for s in i.seconds),
            )
        )  # fmt: skip
    return points


def exponent(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log y on log x (nan if some y <= 0)."""
    if len(xs) < 2 or any(y <= 0 for y in ys):
        return math.nan
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = statistics.fmean(lx), statistics.fmean(ly)
    sxx = sum((a - mx) ** 2 for a in lx)
    return sum((a - mx) * (b - my) for a, b in zip(lx, ly, strict=True)) / sxx


# -- (d) projections and simulated runs ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    latency: float
    """Seconds."""
    bandwidth: float
    """Bits per second."""

    def project(self, rounds: int, bytes_per_party: int, compute: float) -> float:
        """rounds x latency + busiest party's online bytes / bandwidth + compute."""
        return rounds * self.latency + 8 * bytes_per_party / self.bandwidth + compute

    @property
    def network(self) -> NetworkProfile:
        return NetworkProfile(latency=self.latency, bandwidth=self.bandwidth)


LAN = Profile("LAN", 0.2e-3, 10e9)
WAN = Profile("WAN", 40e-3, 100e6)


@dataclass(frozen=True, slots=True)
class Simulated:
    workload: str
    suite: str
    profile: Profile
    rounds: int
    bytes_per_party: int
    compute: float
    """Median seconds per iteration of the same workload without delays (interleaved)."""
    measured: float
    """Median seconds per iteration on the simulated network."""
    losses: tuple[float, ...] = ()
    """The simulated cluster's revealed loss at each step (warm-up included)."""

    @property
    def projected(self) -> float:
        return self.profile.project(self.rounds, self.bytes_per_party, self.compute)

    @property
    def error(self) -> float:
        return (self.projected - self.measured) / self.measured


async def simulate(
    work: Workload, suite: str, profiles: Sequence[Profile], warmup: int, iterations: int
) -> list[Simulated]:
    """Each profile's cluster takes turns, step by step, with one without delays (whose
    median is the compute term), so that machine load hits both alike."""
    async with AsyncExitStack() as stack:
        runs = []
        for p in [None, *profiles]:
            c = await stack.enter_async_context(
                Cluster.start(
                    PARTIES[:2],
                    protocols=get_suite(suite),  # as named: not re-tuned to the latency
                    seed=7,
                    network=None if p is None else p.network,
                )
            )
            x, y = c.share(work.data), c.share(work.target)
            model = c.share_module(work.model())
            opt = SGD(model.parameters(), lr=work.lr)
            runs.append(
                (c, TrainingCoordinator(c, model, opt, work.loss, measure_phases=False), x, y)
            )
        times: list[list[float]] = [[] for _ in runs]
        losses: list[list[float]] = [[] for _ in runs]
        shape: list[tuple[int, int]] = [(0, 0)] * len(runs)
        for i in range(warmup + iterations):
            for k, (c, coord, x, y) in enumerate(runs):
                before = c.stats()
                rec = await coord.step(x, y)
                shape[k] = (rec.online_rounds, max(party_sent(c.stats() - before, 2)))
                losses[k].append(rec.loss)
                if i >= warmup:
                    times[k].append(rec.seconds)
    compute = statistics.median(times[0])
    return [
        Simulated(
            work.name, suite, p, *shape[k + 1], compute, statistics.median(times[k + 1]),
            tuple(losses[k + 1]),
        )
        for k, p in enumerate(profiles)
    ]  # fmt: skip
