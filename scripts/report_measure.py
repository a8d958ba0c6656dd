"""Measurements for the communication report: every number here comes from a running cluster.

* :func:`measure_protocols`: each protocol alone in a fresh cluster, ``cluster.stats()``
  after minus before (with ``await cluster.flush()`` on both sides);
* :func:`measure_training`: the train_xor.py loop (same network, data, init, loss, SGD,
  TrainingCoordinator with its defaults: phases attributed from op labels and depths, no
  barriers between them), writing the structlog JSON lines that the report then reads,
  with a :class:`Recorder` on the network for what the log lacks (local ops and so the
  complete command graph, the dealer requests behind the closed forms, message headers,
  input/output/control traffic);
* :func:`timed_runs`: the same loop timed, with or without a simulated network, and
  optionally with ``phase_barriers=True`` (the coordinator's optional mode that settles
  each phase before the next starts);
* :func:`sweep_point`: one iteration-cost sample of a two-layer MLP.
"""

from __future__ import annotations

import inspect
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from actors.executor import INTERACTIVE
from report_analysis import OpWire, dag, request_costs, wall_rounds
from report_costs import ZERO, OpCost, closed_form
from seed_net import DATA, TARGET, make_net
from torch import nn

from actors import CommStats, Envelope, NetworkProfile, Phase, configure_logging
from actors.network import op_of
from protocols import FixedPoint
from training import SGD, Cluster, TrainingCoordinator

PARTY_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
"""As in scripts/train_xor.py."""
PROVIDER = "james"


def mse_sum(pred: Any, target: Any) -> Any:
    """The seed's loss, ``((pred - y) ** 2).sum()`` (scripts/seed_net.py)."""
    return ((pred - target) ** 2).sum()


class MLP(nn.Module):
    """Linear(in, width), relu, Linear(width, 1): the sweep's network."""

    def __init__(self, in_features: int, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, width)
        self.fc2 = nn.Linear(width, 1)

    def forward(self, x: Any) -> Any:
        return self.fc2(F.relu(self.fc1(x)))


class Recorder:
    """Network interceptor: records commands, dealer requests and per-op messages.

    It passes every envelope on unchanged (it is installed the way the tests' Tap is).
    """

    def __init__(self, cluster: Cluster) -> None:
        self.parties = list(cluster.parties)
        self.provider = cluster.provider
        self.coordinator = cluster.coordinator
        self.commands: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.ops: dict[int, OpWire] = defaultdict(OpWire)
        self.online_wire: dict[str, int] = dict.fromkeys(self.parties, 0)
        """Cumulative online payload + header bytes sent, by party."""
        self.online_headers = 0
        cluster.network.interceptor = self

    def __call__(self, env: Envelope) -> Envelope:
        if env.phase == Phase.CONTROL and env.sender == self.coordinator:
            if env.receiver == self.parties[0] and env.tag.startswith("cmd/"):
                self.commands.extend(env.control())
            elif env.receiver == self.provider and env.tag.startswith("req/"):
                self.requests.extend(env.control())
            return env
        op = op_of(env.tag)
        if env.phase == Phase.ONLINE:
            wire = env.payload_bytes + env.header_bytes
            self.online_wire[env.sender] = self.online_wire.get(env.sender, 0) + wire
            self.online_headers += env.header_bytes
            if op is not None:
                w = self.ops[op]
                w.online_sent[env.sender] += env.payload_bytes
                w.online_wire[env.sender] += wire
                w.online_messages += 1
                w.min_depth = env.depth if w.min_depth is None else min(w.min_depth, env.depth)
                w.max_depth = env.depth if w.max_depth is None else max(w.max_depth, env.depth)
        elif env.phase == Phase.OFFLINE and op is not None:
            self.ops[op].offline += env.payload_bytes
        return env

    def mark(self) -> tuple[int, int]:
        return len(self.commands), len(self.requests)

    def wire_snapshot(self) -> dict[str, int]:
        return dict(self.online_wire)


def stats_json(d: CommStats) -> dict[str, Any]:
    """A CommStats (delta) as plain JSON, with per-party sent/received by phase."""
    return {
        "online_rounds": d.online_rounds,
        "online_bytes": d.online_bytes,
        "offline_bytes": d.offline_bytes,
        "input_bytes": d.input_bytes,
        "output_bytes": d.output_bytes,
        "control_bytes": d.control_bytes,
        "header_bytes": d.header_bytes,
        "messages": d.messages,
        "online_messages": d.online_messages,
        "per_actor": {
            name: {
                "sent": {p.name.lower(): v for p, v in a.sent.items() if v},
                "received": {p.name.lower(): v for p, v in a.received.items() if v},
                "messages_sent": a.messages_sent,
                "messages_received": a.messages_received,
            }
            for name, a in d.per_actor.items()
        },
    }


async def _delta(c: Cluster, action: Callable[[], Any]) -> CommStats:
    await c.flush()
    before = c.stats()
    result = action()
    if inspect.isawaitable(result):
        await result
    await c.flush()
    return c.stats() - before


# -- protocols --------------------------------------------------------------------------------
def _row(
    name: str,
    names: Sequence[str],
    shape: str,
    elements: int,
    per: str,
    traffic: str,
    d: CommStats,
    closed: OpCost,
    source: str,
) -> dict[str, Any]:
    phase = {"online": Phase.ONLINE, "input": Phase.INPUT, "output": Phase.OUTPUT}[traffic]
    if traffic == "input":
        per_party = [d.per_actor[p].received.get(phase, 0) for p in names]
    else:
        per_party = [d.per_actor[p].sent.get(phase, 0) for p in names]
    measured = {
        "rounds": d.online_rounds,
        "bytes_per_party": max(per_party),
        "bytes_per_party_min": min(per_party),
        "offline": d.offline_bytes,
        "online_total": d.online_bytes,
        "input_total": d.input_bytes,
        "output_total": d.output_bytes,
        "control_total": d.control_bytes,
        "messages": d.messages,
        "online_messages": d.online_messages,
    }
    want = {
        "rounds": closed.rounds,
        "bytes_per_party": closed.online_per_party,
        "offline": closed.offline,
    }
    match = (
        measured["rounds"] == want["rounds"]
        and measured["bytes_per_party"]
        == measured["bytes_per_party_min"]
        == want["bytes_per_party"]
        and measured["offline"] == want["offline"]
    )
    return {
        "protocol": name,
        "parties": len(names),
        "shape": shape,
        "elements": elements,
        "per": per,
        "traffic": traffic,
        "measured": measured,
        "closed": want,
        "closed_source": source,
        "match": match,
    }


async def _alone(
    names: Sequence[str],
    seed: int | None,
    setup: Callable[[Cluster], Any],
    action: Callable[[Cluster, Any], Any],
) -> CommStats:
    """Cost of ``action`` alone in a fresh cluster: rounds are the growth of the largest
    depth, so an op measured after others in the same cluster would share their rounds."""
    async with Cluster.start(names, provider=PROVIDER, seed=seed) as c:
        state = setup(c)
        keep: list[Any] = []  # results stay alive (not freed) until the cluster closes

        def run() -> Any:
            keep.append(action(c, state))
            return keep[-1]

        return await _delta(c, run)


async def measure_protocols(
    n: int, elements: int, mm: int, seed: int | None = None
) -> list[dict[str, Any]]:
    """Each protocol on ``elements`` values (matmul: ``mm x mm`` matrices), ``n`` parties,
    each in a cluster of its own."""
    names = PARTY_NAMES[:n]
    gen = torch.Generator().manual_seed(1234)
    shp = (elements,)
    vec = f"({elements},)"
    xs, ys = torch.rand(shp, generator=gen) * 4 - 2, torch.rand(shp, generator=gen) * 4 - 2
    am, bm = torch.rand(mm, mm, generator=gen) * 4 - 2, torch.rand(mm, mm, generator=gen) * 4 - 2
    d = FixedPoint(10, 3).scale  # the clusters' default encoding: divisor base ** precision

    def pair(c: Cluster) -> tuple[Any, Any]:
        return c.share(xs), c.share(ys)

    def mats(c: Cluster) -> tuple[Any, Any]:
        return c.share(am), c.share(bm)

    specs: list[tuple[str, str, int, str, str, Callable[[Cluster], Any], Callable[[Cluster, Any], Any], OpCost, str]] = [
        ("share", vec, elements, "element", "input", lambda c: None, lambda c, s: c.share(xs),
         OpCost(0, 8 * elements, 0), "8 B per element to each party (input phase)"),
        ("reveal", vec, elements, "element", "output", pair, lambda c, s: s[0].get(),
         OpCost(0, 8 * elements, 0), "8 B per element from each party (output phase)"),
        ("add", vec, elements, "element", "online", pair, lambda c, s: s[0] + s[1], ZERO, "local"),
        ("mul", vec, elements, "element", "online", pair, lambda c, s: s[0] * s[1],
         closed_form("mul", [shp, shp], n, {"d": d}), "beaver.py mul + truncate.py"),
        ("mul, no truncation (x * bit)", vec, elements, "element", "online", pair,
         lambda c, s: c.submit("mul", [s[0].tid, s[1].tid], 1, {"d": 1}, [shp, shp]),
         closed_form("mul", [shp, shp], n, {"d": 1}), "beaver.py mul"),
        ("square", vec, elements, "element", "online", pair, lambda c, s: s[0] ** 2,
         closed_form("square", [shp], n, {"d": d}), "beaver.py square + truncate.py"),
        ("matmul", f"({mm},{mm})@({mm},{mm})", mm * mm, "output element", "online", mats,
         lambda c, s: s[0] @ s[1], closed_form("matmul", [(mm, mm), (mm, mm)], n, {"d": d}),
         "beaver.py matmul + truncate.py"),
        ("truncate", vec, elements, "element", "online", pair,
         lambda c, s: c.submit("trunc", [s[0].tid], 1, {"d": d}, [shp]),
         closed_form("trunc", [shp], n, {"d": d}), "truncate.py"),
        ("drelu", vec, elements, "element", "online", pair, lambda c, s: s[0].drelu(),
         closed_form("drelu", [shp], n), "compare.py DRELU_ROUNDS, drelu_online/offline_bytes"),
        ("relu", vec, elements, "element", "online", pair, lambda c, s: s[0].relu(),
         closed_form("relu", [shp], n), "compare.py (with_relu=True)"),
    ]  # fmt: skip
    rows = []
    for name, shape, count, per, traffic, setup, action, closed, source in specs:
        dd = await _alone(names, seed, setup, action)
        rows.append(_row(name, names, shape, count, per, traffic, dd, closed, source))
    return rows


# -- the train_xor.py loop ----------------------------------------------------------------------
@dataclass(slots=True)
class TrainingRun:
    """What :func:`measure_training` saw: per-iteration meter deltas and the recorder."""

    parties: int
    names: list[str]
    log_path: Path
    setup: dict[str, Any]
    """Meter delta of sharing the data and the model (before the first iteration)."""
    iterations: list[dict[str, Any]]
    """Per iteration: loss, seconds, meter delta, command/request index ranges, wire bytes."""
    recorder: Recorder


async def measure_training(
    n: int, iterations: int, log_path: Path, lr: float = 0.1, seed: int | None = None
) -> TrainingRun:
    """Run train_xor.py's loop (its Net, data, init, loss, SGD and TrainingCoordinator
    with the defaults train_xor.py uses: ``measure_phases=True, phase_barriers=False``;
    predictions revealed on the last iteration as it does), logging structlog JSON lines
    to ``log_path``, with a :class:`Recorder` on the network."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    configure_logging(json_path=str(log_path))
    try:
        async with Cluster.start(PARTY_NAMES[:n], provider=PROVIDER, seed=seed) as c:
            rec = Recorder(c)
            before = c.stats()
            x, y = c.share(DATA), c.share(TARGET)
            model = c.share_module(make_net())
            coord = TrainingCoordinator(c, model, SGD(model.parameters(), lr=lr), mse_sum)
            await c.flush()
            setup = c.stats() - before
            iters: list[dict[str, Any]] = []
            for i in range(iterations):
                await c.flush()
                m0, w0, s0 = rec.mark(), rec.wire_snapshot(), c.stats()
                r = await coord.step(x, y, reveal_predictions=i == iterations - 1)
                d = c.stats() - s0
                m1, w1 = rec.mark(), rec.wire_snapshot()
                iters.append(
                    {
                        "iteration": r.iteration,
                        "loss": r.loss,
                        "seconds": r.seconds,
                        "stats": stats_json(d),
                        "commands": [m0[0], m1[0]],
                        "requests": [m0[1], m1[1]],
                        "online_wire_per_party": {p: w1[p] - w0[p] for p in w1},
                    }
                )
    finally:
        configure_logging(level="warning")
    return TrainingRun(n, PARTY_NAMES[:n], log_path, stats_json(setup), iters, rec)


# -- timing ---------------------------------------------------------------------------------
def train_xor_workload() -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    """scripts/train_xor.py's network (the seed's init), data, target and learning rate."""
    return make_net(), DATA, TARGET, 0.1


def mlp_workload(
    batch: int, width: int, in_features: int = 2, seed: int = 0
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, float]:
    """The sweep's MLP on ``batch`` random rows (deterministic for a seed)."""
    torch.manual_seed(seed)
    net = MLP(in_features, width)
    gen = torch.Generator().manual_seed(seed + 1)
    data = torch.rand(batch, in_features, generator=gen) * 2 - 1
    return net, data, (data.sum(1, keepdim=True) > 0).float(), 0.01


Workload = Callable[[], tuple[nn.Module, torch.Tensor, torch.Tensor, float]]


def _rounds_waited(rec: Recorder, c0: int, c1: int) -> dict[str, int]:
    """Rounds waited per barrier-separated segment of the commands ``c0:c1`` (one
    iteration), keyed by the phase of the segment's ops (see report_analysis.wall_rounds)."""
    ops = [int(c["op"]) for c in rec.commands[c0:c1] if c["k"] in INTERACTIVE]

    def rounds_of(op: int) -> int:
        return rec.ops[op].rounds if op in rec.ops else 0

    return wall_rounds(rec.commands, rounds_of, ops)


async def timed_runs(
    n: int,
    configs: Sequence[tuple[str, NetworkProfile | None, bool]],
    warmup: int,
    iterations: int,
    workload: Workload = train_xor_workload,
    seed: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Seconds per training iteration of ``workload`` for each ``(name, profile on every
    party-to-party link, phase_barriers)``: all clusters run at once and take turns, one
    iteration each, so that load from other processes hits every configuration alike
    (medians over ``iterations`` after ``warmup``). Measured alongside, per cluster: its
    rounds (depth growth), the online wire bytes (payload + headers) of the busiest party,
    and the rounds the parties wait for (:func:`report_analysis.wall_rounds` on the
    iteration's recorded commands: the depth growth between consecutive barriers, summed;
    more than the depth growth when ``phase_barriers=True`` serialises the phases)."""
    async with AsyncExitStack() as stack:
        runs = []
        for _, profile, phases in configs:
            c = await stack.enter_async_context(
                Cluster.start(PARTY_NAMES[:n], provider=PROVIDER, seed=seed, network=profile)
            )
            rec = Recorder(c)
            net, data, target, lr = workload()
            x, y = c.share(data), c.share(target)
            model = c.share_module(net)
            coord = TrainingCoordinator(
                c, model, SGD(model.parameters(), lr=lr), mse_sum, phase_barriers=phases
            )
            runs.append((coord, x, y, rec))
        samples: list[list[tuple[float, int, int, int, tuple[int, int]]]] = [[] for _ in configs]
        for i in range(warmup + iterations):
            for k, (coord, x, y, rec) in enumerate(runs):
                w0, m0 = rec.wire_snapshot(), rec.mark()[0]
                r = await coord.step(x, y)
                w1, m1 = rec.wire_snapshot(), rec.mark()[0]
                wire = max(w1[p] - w0[p] for p in w1)
                if i >= warmup:
                    samples[k].append((r.seconds, r.online_rounds, r.online_bytes, wire, (m0, m1)))
        waited = [
            [_rounds_waited(rec, *s[4]) for s in got]
            for (*_, rec), got in zip(runs, samples, strict=True)
        ]
    out = {}
    for (name, profile, phases), got, walls in zip(configs, samples, waited, strict=True):
        seconds = [s[0] for s in got]
        out[name] = {
            "latency": None if profile is None else profile.latency,
            "bandwidth": None if profile is None else profile.bandwidth,
            "phase_barriers": phases,
            "warmup": warmup,
            "seconds": seconds,
            "median_s": statistics.median(seconds),
            "rounds": sorted({s[1] for s in got}),
            "online_bytes": sorted({s[2] for s in got}),
            "wire_per_party": max(s[3] for s in got),
            "rounds_waited": sorted({sum(w.values()) for w in walls}),
            "rounds_waited_by_phase": walls[-1] if phases else None,
        }
    return out


# -- sweeps --------------------------------------------------------------------------------------
async def sweep_point(
    n: int, batch: int, width: int, in_features: int, iterations: int, seed: int = 0
) -> dict[str, Any]:
    """Cost of training iterations of MLP(in_features, width) on ``batch`` rows, measured,
    beside the closed form summed over the dealer requests of the iteration."""
    net, data, target, lr = mlp_workload(batch, width, in_features, seed)
    async with Cluster.start(PARTY_NAMES[:n], provider=PROVIDER, seed=seed) as c:
        rec = Recorder(c)
        x, y = c.share(data), c.share(target)
        model = c.share_module(net)
        coord = TrainingCoordinator(
            c, model, SGD(model.parameters(), lr=lr), mse_sum, measure_phases=False
        )
        await c.flush()
        samples = []
        for _ in range(iterations):
            m0, w0, s0 = rec.mark(), rec.wire_snapshot(), c.stats()
            r = await coord.step(x, y)
            d = c.stats() - s0
            m1, w1 = rec.mark(), rec.wire_snapshot()
            samples.append((m0, m1, r.seconds, d, {p: w1[p] - w0[p] for p in w1}))
    closed = request_costs(rec.requests, n)
    closed_dag = dag(rec.commands, lambda op: closed.get(op, ZERO).rounds)
    seconds = [s[2] for s in samples]
    m0, m1, _, d, wire = samples[-1]
    ops_before = {int(c["op"]) for c in rec.commands[: m0[0]] if "op" in c}
    ops_in = {int(c["op"]) for c in rec.commands[m0[0] : m1[0]] if "op" in c}

    def deepest(ops: set[int]) -> int:
        talking = [
            closed_dag.end[o] for o in ops if closed.get(o, ZERO).rounds and o in closed_dag.end
        ]
        return max(talking, default=0)

    costs = [closed.get(o, ZERO) for o in ops_in]
    return {
        "parties": n,
        "batch": batch,
        "width": width,
        "in_features": in_features,
        "measured": {
            "online_rounds": d.online_rounds,
            "online_bytes": d.online_bytes,
            "offline_bytes": d.offline_bytes,
            "output_bytes": d.output_bytes,
            "control_bytes": d.control_bytes,
            "header_bytes": d.header_bytes,
            "messages": d.messages,
            "wire_per_party": max(wire.values()),
            "seconds": min(seconds),
            "seconds_all": seconds,
        },
        "closed": {
            "online_rounds": max(deepest(ops_before | ops_in) - deepest(ops_before), 0),
            "online_bytes": n * sum(c.online_per_party for c in costs),
            "offline_bytes": sum(c.offline for c in costs),
        },
        "iterations": iterations,
    }
