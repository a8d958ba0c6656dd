"""Measurements for the communication report, all from a running cluster: the meter
(``cluster.stats()``) and the coordinator's op log (``track_op_costs`` /
``take_op_costs``), each op beside its suite's closed form (``OpRecord.cost``).

The op log has no operand ids, so :class:`TracedCluster` records the ``(inputs, outputs)``
of every op it issues in the same order; that gives the dependency graph for critical
paths, with each op's measured end depth from the meter.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from actors import CommStats, NetworkProfile, OpRecord, Phase
from protocols.params import Params
from protocols.suite import Suite, get_suite

from ..cluster import Cluster
from ..coordinator import IterationRecord, TrainingCoordinator
from ..optim import SGD
from ..precision import SMALLEST_MOVING_GRAD

PARTIES = ["alice", "bob", "carol", "dave"]
Shape = tuple[int, ...]
D = 1000  # truncation divisor of the default encoding (base 10, precision 3)


class TracedCluster(Cluster):
    """A cluster that also records each issued op's operand and result ids, in issue order
    (the op log's order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.edges: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
        self.taken: list[tuple[OpRecord, int, int, int]] = []
        self.track_op_costs()

    def take_op_costs(self) -> list[tuple[OpRecord, int, int, int]]:
        got = super().take_op_costs()  # the TrainingCoordinator takes them too: keep a copy
        self.taken.extend(got)
        return got

    def input(self, encoded: torch.Tensor) -> int:
        tid = super().input(encoded)
        self.edges.append(("input", (), (tid,)))
        return tid

    def submit(
        self,
        kind: str,
        inputs: Sequence[int],
        shapes: Sequence[Sequence[int]],
        out: Sequence[Sequence[int]],
        params: Params | None = None,
    ) -> list[int]:
        outs = super().submit(kind, inputs, shapes, out, params)
        self.edges.append((kind, tuple(inputs), tuple(outs)))
        return outs

    def take_ops(self) -> list[OpCosts]:
        """Every op issued since the last call, measured, with its operand ids."""
        self.take_op_costs()
        costs, edges, self.taken, self.edges = self.taken, self.edges, [], []
        if [c[0].kind for c in costs] != [e[0] for e in edges]:
            raise RuntimeError("op log and traced ops disagree (kinds or order)")
        return [
            OpCosts(c[0], c[1], c[2], c[3], e[1], e[2]) for c, e in zip(costs, edges, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class OpCosts:
    """One op-log entry with its measured online/offline bytes and largest depth."""

    rec: OpRecord
    online: int
    dealer: int
    depth: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def party_sent(d: CommStats, n: int) -> list[int]:
    return [d.sent_by(p, Phase.ONLINE) for p in PARTIES[:n]]


# -- (a) every op kind of every suite against its closed form ------------------------------------
# The ops measured for each kind are its registration's examples (protocols.opkind.register).


@dataclass(frozen=True, slots=True)
class OpRow:
    """One op measured alone (meter delta between two flushes) against its closed form."""

    suite: str
    parties: int
    kind: str
    note: str
    shapes: tuple[Shape, ...]
    elements: int
    """Result elements (the per-element figures divide by it)."""
    interactive: bool
    rounds: int
    online_per_party: list[int]
    dealer: int
    log_online: int
    log_dealer: int
    log_rounds: int
    closed_rounds: int
    closed_online: int
    closed_dealer: int

    @property
    def equal(self) -> bool:
        n = self.parties
        return (
            self.rounds == self.log_rounds == self.closed_rounds
            and all(b == self.closed_online for b in self.online_per_party)
            and self.log_online == n * self.closed_online
            and self.dealer == self.log_dealer == self.closed_dealer
        )


async def measure_ops(
    suite: str | Suite, n: int, sizes: Sequence[int], mats: Sequence[Shape]
) -> tuple[list[OpRow], list[str]]:
    """Every registered kind of ``suite`` for ``n`` parties, one op at a time in one cluster
    (each between two flushes, so it starts at the depth reached), on its registered
    examples; also the kinds registered without any."""
    rows: list[OpRow] = []
    gen = torch.Generator().manual_seed(11)
    s = get_suite(suite)
    async with TracedCluster.start(PARTIES[:n], protocols=s, seed=5) as c:
        missing = [k for k in s.names if not s.examples(k, 1, (1, 1, 1))]
        for size, mat in zip(sizes, mats, strict=True):
            for kind in s.names:
                for case in s.examples(kind, size, (mat[0], mat[1], mat[2])):
                    tids = [
                        c.input(torch.randint(-2000, 2000, s, generator=gen)) for s in case.shapes
                    ]
                    await c.flush()
                    c.take_ops()
                    before = c.stats()
                    c.submit(kind, tids, case.shapes, case.out, case.params)
                    await c.flush()
                    d = c.stats() - before
                    (op,) = c.take_ops()
                    cost = op.rec.cost
                    start = before.online_rounds
                    rows.append(
                        OpRow(
                            s.name, n, kind, case.note, case.shapes, prod(case.out[0]),
                            op.rec.interactive, d.online_rounds, party_sent(d, n),
                            d.offline_bytes, op.online, op.dealer,
                            max(op.depth - start, 0), cost.rounds, cost.online_bytes,
                            cost.dealer_bytes,
                        )
                    )  # fmt: skip
    return rows, missing


# -- (b) one training iteration from the op log -----------------------------------------------------
@dataclass(frozen=True, slots=True)
class Workload:
    """A model, its data, loss and learning rate (the CLI passes train_xor's)."""

    name: str
    model: Callable[[], nn.Module]
    data: torch.Tensor
    target: torch.Tensor
    loss: Callable[[Any, Any], Any]
    lr: float


class MLP(nn.Module):
    """Linear(in, width), relu, Linear(width, 1): the sweeps' network."""

    def __init__(self, inputs: int, width: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(inputs, width), nn.Linear(width, 1)

    def forward(self, x: Any) -> Any:
        return self.fc2(F.relu(self.fc1(x)))


def mse_sum(pred: Any, target: Any) -> Any:
    return ((pred - target) ** 2).sum()


LR_FLOOR = 0.5 / (D * SMALLEST_MOVING_GRAD)
"""5e-4: the smallest SGD rate at base 10 / precision 3 for which a step on a gradient of
1 does not round to 0 (below it the optimizer warns, :func:`check_learning_rate`)."""


def mlp_lr(batch: int, width: int) -> float:
    """The MLP's SGD rate: 0.01 x min(1, 8 / batch) x min(1, 64 / width), at least
    :data:`LR_FLOOR`.

    The loss is a *sum* over the batch and the output layer sums ``width`` ReLUs, so the
    curvature grows with both and a fixed rate diverges: 0.01 takes batch 256 x width 64
    from a loss of 200 to 3.3e6 in three steps, beyond the reveal bound (``get()`` then
    raises ``ValueOutOfRange``). This rule keeps the loss of every workload the report
    trains decreasing, from its first step (``tests/test_comm_report.py`` checks it in
    plain torch). Rounds and bytes do not depend on the rate."""
    return max(LR_FLOOR, 0.01 * min(1.0, 8 / batch) * min(1.0, 64 / width))


def mlp_workload(batch: int, width: int) -> Workload:
    gen = torch.Generator().manual_seed(batch * 1000 + width)
    data = torch.rand(batch, 2, generator=gen) * 2 - 1
    target = (data.sum(1, keepdim=True) > 0).float()

    def model() -> nn.Module:
        torch.manual_seed(0)
        return MLP(2, width)

    lr = mlp_lr(batch, width)
    return Workload(
        f"MLP(2,{width},1) batch {batch}, lr {lr:.3g}", model, data, target, mse_sum, lr
    )


@dataclass(frozen=True, slots=True)
class LabelRow:
    label: str
    kinds: dict[str, int]
    """Interactive ops by kind."""
    local_ops: int
    critical_rounds: int
    online: int
    dealer: int
    closed_online: int
    closed_dealer: int


@dataclass
class IterationCost:
    """One training iteration: the coordinator's record, the meter and the op log."""

    suite: str
    parties: int
    record: IterationRecord
    stats: CommStats
    labels: list[LabelRow]
    path: list[tuple[int, str, str, int]]
    """Critical path: (op id, kind, label, measured rounds) in order."""
    closed_rounds: int
    """Longest path with the closed-form rounds of each op."""
    op_mismatches: list[str]
    """Ops whose measured cost differs from their closed form (should be empty)."""
    busiest_party_online: int
    seconds: list[float] = field(default_factory=list)

    @property
    def checks(self) -> dict[str, bool]:
        r, s = self.record, self.stats
        return {
            "sum over labels of online bytes = iteration online bytes": sum(
                x.online for x in self.labels
            )
            == r.online_bytes,
            "sum over labels of dealer bytes = iteration dealer bytes": sum(
                x.dealer for x in self.labels
            )
            == r.offline_bytes,
            "critical path rounds = iteration rounds": sum(p[3] for p in self.path)
            == r.online_rounds,
            "closed-form longest path = iteration rounds": self.closed_rounds == r.online_rounds,
            "every op measured = closed form": not self.op_mismatches,
            "phase costs (coordinator) add up to the iteration": (
                sum(p.online_rounds for p in r.phases.values()) == r.online_rounds
                and sum(p.online_bytes for p in r.phases.values()) == r.online_bytes
                and sum(p.offline_bytes for p in r.phases.values()) == r.offline_bytes
            ),
            "meter = coordinator record": (s.online_rounds, s.online_bytes, s.offline_bytes)
            == (r.online_rounds, r.online_bytes, r.offline_bytes),
        }


def analyse(
    suite: str, n: int, ops: list[OpCosts], start: int, rec: IterationRecord, d: CommStats
) -> IterationCost:
    """Labels, critical path and checks of one iteration's ops (issued from depth ``start``)."""
    end: dict[int, int] = {}
    closed_end: dict[int, int] = {}
    producer: dict[int, int] = {}
    measured: list[int] = []
    mismatches: list[str] = []
    for i, o in enumerate(ops):
        begin = max([start, *(end.get(t, start) for t in o.inputs)])
        stop = max(begin, o.depth)
        measured.append(stop - begin)
        cstop = max([start, *(closed_end.get(t, start) for t in o.inputs)]) + o.rec.cost.rounds
        for t in o.outputs:
            end[t], closed_end[t], producer[t] = stop, cstop, i
        c = o.rec.cost
        if (stop - begin, o.online, o.dealer) != (c.rounds, n * c.online_bytes, c.dealer_bytes):
            mismatches.append(
                f"op {o.rec.op} {o.rec.kind} {o.rec.label}: measured "
                f"({stop - begin}, {o.online}, {o.dealer}) closed form "
                f"({c.rounds}, {n * c.online_bytes}, {c.dealer_bytes})"
            )
    # Walk back from the last op ending deepest, through the operand that ended last.
    path: list[int] = []
    top = max(end.values(), default=start)
    at: int | None = max(
        (k for k, o in enumerate(ops) if end.get(o.outputs[0], -1) == top and top > start),
        default=None,
    )
    while at is not None:
        if measured[at]:
            path.append(at)
        feeders = [(end[t], producer[t]) for t in ops[at].inputs if t in producer]
        at = max(feeders)[1] if feeders and max(feeders)[0] > start else None
    on_path: Counter[str] = Counter()
    for k in path:
        on_path[ops[k].rec.label or "-"] += measured[k]
    labels: dict[str, list[OpCosts]] = {}
    for o in ops:
        if o.rec.kind != "input":
            labels.setdefault(o.rec.label or "-", []).append(o)
    rows = [
        LabelRow(
            lab,
            dict(Counter(o.rec.kind for o in group if o.rec.interactive)),
            sum(not o.rec.interactive for o in group),
            on_path.get(lab, 0),
            sum(o.online for o in group),
            sum(o.dealer for o in group),
            sum(n * o.rec.cost.online_bytes for o in group),
            sum(o.rec.cost.dealer_bytes for o in group),
        )
        for lab, group in labels.items()
    ]
    return IterationCost(
        suite,
        n,
        rec,
        d,
        rows,
        [
            (ops[k].rec.op, ops[k].rec.kind, ops[k].rec.label or "-", measured[k])
            for k in reversed(path)
        ],
        max(closed_end.values(), default=start) - start,
        mismatches,
        max(party_sent(d, n)),
    )


async def measure_iterations(
    work: Workload,
    suite: str,
    n: int,
    iterations: int,
    network: NetworkProfile | None = None,
) -> list[IterationCost]:
    """Train ``iterations`` steps with the TrainingCoordinator's defaults; each analysed."""
    out = []
    # the named suite itself: ``"default"`` as documented (FSS up to 10^4 elements), not
    # re-tuned to this process's latency, so the figures project to the links reported
    s = get_suite(suite)
    async with TracedCluster.start(PARTIES[:n], protocols=s, seed=7, network=network) as c:
        x, y = c.share(work.data), c.share(work.target)
        model = c.share_module(work.model())
        coord = TrainingCoordinator(c, model, SGD(model.parameters(), lr=work.lr), work.loss)
        await c.flush()
        c.take_ops()
        for _ in range(iterations):
            before = c.stats()
            rec = await coord.step(x, y)
            d = c.stats() - before
            it = analyse(suite, n, c.take_ops(), before.online_rounds, rec, d)
            it.seconds.append(rec.seconds)
            out.append(it)
    return out
