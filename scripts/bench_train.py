"""Benchmark: one training iteration, encrypted (per protocol suite) beside plaintext torch
and CrypTen 0.4.1, all measured in this command.

Workloads: ``seed`` (the seed's Net on its 4 points, loss revealed every iteration, as
``train_xor.py``), ``mnist-net`` (pytorch/examples' MNIST Net, unchanged: two convs,
max-pool, dropout, two linears, log-softmax, NLL; random 28x28 images, batch 32 unless
``--batch``; the peer runs the same layers with CrypTen's cross-entropy) and ``network-a``
(SecureML's Network A, 784-128-128-10, batch 128,
sum-of-squares loss, SGD, random data, as ``shared/peers/crypten_mlp.py``, but lr 1e-4
and base 2 / 16 bits: the peer's 0.01 diverges within two steps, which our reveal check
refuses, and at base 10 / 3 digits steps of 1e-4 round to zero; the ops, rounds and
bytes of a step depend on neither). For each suite:
median ms per iteration (p90; and the mean, as CrypTen's seed figure is its run's seconds
per iteration: CrypTen/mean for the seed only), and the measured online rounds, online, dealer and control
bytes per iteration, and the dealer's computation per iteration (key generation and PRG
draws, timed in the provider: the offline work; "online ms" is the rest of the step).
CrypTen runs in its own venv (``--no-crypten`` skips it); ours runs before and after it
and the row pools both runs' iterations: this machine's speed changes by up to 1.7x within
seconds (a pure-Python loop, timed in blocks, took 10 or 14-17 ms), so one block of ours
against CrypTen's longer run compares two different speeds. The coordinator's workloads
(seed, network-a) replay their steps by default (``TrainingCoordinator(replay=True)``,
training/replay.py: the step's ops recorded twice, then issued without the frontend);
``--replay off`` times the traced steps, ``--replay both`` prints a row for each.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # use this checkout's packages, not another installed copy
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import trio  # noqa: E402
from peers import number, run_peer  # noqa: E402
from seed_net import DATA, TARGET, loss_fn, make_net  # noqa: E402
from torch import nn  # noqa: E402

from actors import configure_logging  # noqa: E402
from protocols.suite import suite_arg  # noqa: E402
from training import SGD, Cluster, SharedTensor, TrainingCoordinator  # noqa: E402

NAMES = ["alice", "bob", "carol", "dave"]


@dataclass
class Workload:
    name: str
    model: Callable[[], nn.Module]
    data: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    lr: float
    crypten: tuple[str, list[str]]
    """The peer script and its arguments."""
    base: int = 10
    precision: int = 3
    """Fixed point of the shares (the costs do not depend on it)."""
    loss: Callable[[Any, Any], Any] = loss_fn


def network_a() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )


def network_a_data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(128, 784, generator=g), torch.rand(128, 10, generator=g)


class MnistNet(nn.Module):
    """pytorch/examples' mnist/main.py Net, as published."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: Any) -> Any:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.dropout2(x)
        return F.log_softmax(self.fc2(x), dim=1)


def mnist_net() -> nn.Module:
    torch.manual_seed(0)
    return MnistNet()


def mnist_data(batch: int) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    def data() -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(1)
        return torch.rand(batch, 1, 28, 28, generator=g), torch.randint(
            0, 10, (batch,), generator=g
        )

    return data


def mnist_workload(batch: int) -> Workload:
    return Workload(
        "mnist-net",
        mnist_net,
        mnist_data(batch),
        0.01,
        ("crypten_cnn.py", [str(batch), "1"]),  # one step: ~minutes at batch 32
        base=2,
        precision=16,
        loss=F.nll_loss,
    )


WORKLOADS = {
    "seed": Workload("seed", make_net, lambda: (DATA, TARGET), 0.1, ("crypten_xor.py", ["20"])),
    "network-a": Workload(
        "network-a",
        network_a,
        network_a_data,
        1e-4,  # the peer script's 0.01 diverges (loss 4e2, 1e7, 6e18, inf in plain torch)
        ("crypten_mlp.py", ["784,128,128,10", "128", "5", "TTP"]),
        base=2,
        precision=16,  # at base 10 / 3 digits, lr 1e-4 would move no weight
    ),
    "mnist-net": mnist_workload(32),
}


def plaintext_ms(w: Workload, iterations: int) -> float:
    model = w.model()
    x, y = w.data()
    opt = torch.optim.SGD(model.parameters(), lr=w.lr)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = w.loss(model(x), y)
        loss.backward()
        opt.step()
        float(loss.detach())
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


@dataclass
class Row:
    suite: str
    replay: str
    """``yes``: the coordinator's step replay ran every timed step; ``no``; ``-``: no
    coordinator (mnist-net's plain loop)."""
    ms: float
    p90: float
    rounds: int
    online: int
    dealer: int
    control: int
    dealer_ms: float
    """The provider's material computation per iteration (the offline work)."""
    times: tuple[float, ...] = ()
    """The timed iterations' ms (sorted); :func:`pooled` joins two runs' into one row."""
    parts: tuple[float, ...] = ()
    """The medians of the runs a pooled row joins (empty for one run)."""


def _p90(times: list[float]) -> float:
    return times[math.ceil(0.9 * (len(times) - 1))]


def pooled(a: Row, b: Row) -> Row:
    """One row of two runs of the same suite and replay (ours before and after CrypTen's
    run): the median and p90 of their iterations together, the dealer's mean. The bytes
    and rounds are the same in both."""
    times = sorted(a.times + b.times)
    return replace(
        a,
        ms=statistics.median(times),
        p90=_p90(times),
        dealer_ms=(a.dealer_ms + b.dealer_ms) / 2,
        times=tuple(times),
        parts=(a.ms, b.ms),
    )


def on_cluster(
    cluster: Cluster, w: Workload, replay: bool = False
) -> tuple[TrainingCoordinator, SharedTensor, SharedTensor]:
    """The workload shared on ``cluster``: its coordinator (SGD), data and targets."""
    x, y = w.data()
    model = cluster.share_module(w.model(), precision=w.precision, base=w.base)
    opt = SGD(model.parameters(), lr=w.lr)
    coord = TrainingCoordinator(cluster, model, opt, w.loss, measure_phases=False, replay=replay)
    xs = cluster.share(x, precision=w.precision, base=w.base)
    return coord, xs, cluster.share(y, precision=w.precision, base=w.base)


def stepper(
    cluster: Cluster, w: Workload, replay: bool = False
) -> tuple[Callable[[], Awaitable[object]], TrainingCoordinator | None]:
    """One training step of ``w`` on ``cluster`` and its coordinator: the coordinator's
    step (loss revealed; ``replay``: its step replay, training.replay), or for class
    labels (a public index into the shared log-probabilities, as torch's nll_loss takes
    them) the plain PyTorch loop, also revealing the loss (no coordinator)."""
    x, y = w.data()
    if torch.is_floating_point(y):
        coord, xs, ys = on_cluster(cluster, w, replay)
        return (lambda: coord.step(xs, ys)), coord
    model = cluster.share_module(w.model(), precision=w.precision, base=w.base)
    model.train()
    opt = SGD(model.parameters(), lr=w.lr)
    xs = cluster.share(x, precision=w.precision, base=w.base)

    async def step() -> object:
        opt.zero_grad()
        loss = w.loss(model(xs), y)
        loss.backward()
        opt.step()
        return await loss.get()

    return step, None


async def encrypted(
    w: Workload, suite: str, parties: int, iterations: int, warmup: int, replay: bool
) -> Row:
    async with Cluster.start(NAMES[:parties], provider="james", protocols=suite) as cluster:
        step, coord = stepper(cluster, w, replay)
        if coord is not None and replay:
            warmup = max(warmup, 2)  # the two steps whose recordings agree
        times = []
        for i in range(warmup + iterations):
            if i == warmup:
                await cluster.flush()
                before = cluster.stats()
                dealt = cluster.dealer.compute_seconds if cluster.dealer else 0.0
                replayed = 0 if coord is None or coord.replay is None else coord.replay.replayed
            t0 = time.perf_counter()
            await step()
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
        await cluster.flush()
        d = cluster.stats() - before
        dealer_s = (cluster.dealer.compute_seconds if cluster.dealer else 0.0) - dealt
    times.sort()
    rep = None if coord is None else coord.replay
    if rep is not None:  # every timed step is a replay but the replay's own checks
        checks = iterations // (rep.verify_every + 1) + 1
        if rep.replayed - replayed < iterations - checks:
            raise RuntimeError(
                f"{w.name}: {rep.replayed - replayed} of {iterations} timed steps replayed "
                f"(at most {checks} record to check the replay): {rep.why_not}"
            )
    return Row(
        suite,
        "-" if coord is None else "yes" if rep is not None else "no",
        statistics.median(times),
        _p90(times),
        d.online_rounds // iterations,
        d.online_bytes // iterations,
        d.offline_bytes // iterations,
        d.control_bytes // iterations,
        1000 * dealer_s / iterations,
        tuple(times),
    )


def crypten_ms(w: Workload) -> float | None:
    script, args = w.crypten
    out = run_peer(script, args)
    if out is None:
        return None
    if w.name == "seed":
        seconds = number(r"rank 1: total rounds=\d+ bytes=\d+ seconds=([\d.]+)", out)
        return None if seconds is None else 1000 * seconds / int(args[0])
    return number(r"rank 1: median step ([\d.]+) ms", out)


def bench_parser(description: str) -> argparse.ArgumentParser:
    """The flags the training benchmarks share (read back by :func:`bench_setup`)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--workload", choices=sorted(WORKLOADS), default="seed")
    ap.add_argument("--suites", default="default,carry", help="comma-separated suite names")
    ap.add_argument("--parties", type=int, default=2, choices=range(2, len(NAMES) + 1))
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    return ap


def bench_setup(ap: argparse.ArgumentParser, args: argparse.Namespace) -> list[str]:
    """Logging and threads set; the suite names, checked."""
    configure_logging(level="warning")
    if args.threads:
        torch.set_num_threads(args.threads)
    suites = [s.strip() for s in args.suites.split(",") if s.strip()]
    for s in suites:
        try:
            suite_arg(s)
        except argparse.ArgumentTypeError as e:
            ap.error(str(e))
    return suites


def _medians(
    runs: list[tuple[list[Row], float | None]],
) -> tuple[list[Row], float | None, list[float | None]]:
    """Per suite the row of median ms (its p90 and the dealer's ms median too; the bytes and
    rounds are the same in every run), CrypTen's median ms, and per suite the median of
    the runs' ratios (each run's ours against the CrypTen run between its two halves)."""
    peers = [p for _, p in runs if p is not None]
    peer = statistics.median(peers) if peers else None
    rows, ratios = [], []
    for i, first in enumerate(runs[0][0]):
        mine = [rs[i] for rs, _ in runs]
        rows.append(
            replace(
                first,
                ms=statistics.median(r.ms for r in mine),
                p90=statistics.median(r.p90 for r in mine),
                dealer_ms=statistics.median(r.dealer_ms for r in mine),
            )
        )
        paired = [p / rs[i].ms for rs, p in runs if p is not None]
        ratios.append(statistics.median(paired) if paired else None)
    return rows, peer, ratios


def main(argv: list[str] | None = None) -> None:
    ap = bench_parser(__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=None, help="default 200 (seed) / 5")
    ap.add_argument("--warmup", type=int, default=None, help="default 10 (seed) / 1")
    ap.add_argument("--no-crypten", action="store_true", help="skip the CrypTen comparison")
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="alternate ours and CrypTen's runs this many times; print each run and the "
        "medians (this machine's speed drifts within minutes: one pair can mislead)",
    )
    ap.add_argument("--batch", type=int, default=32, help="mnist-net's batch (default 32)")
    ap.add_argument(
        "--replay",
        choices=["on", "off", "both"],
        default="on",
        help="the coordinator's step replay (training.replay; seed and network-a): on "
        "(default), off, or both (a row each)",
    )
    ap.add_argument(
        "--encoding",
        metavar="BASE/PRECISION",
        help="fixed point of the shares, e.g. 10/3 (default: the workload's; the costs do not "
        "depend on it, smooth functions and losses need base 2)",
    )
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat takes a positive count, got {args.repeat}")
    suites = bench_setup(ap, args)
    w = mnist_workload(args.batch) if args.workload == "mnist-net" else WORKLOADS[args.workload]
    if args.encoding:
        try:
            base, precision = (int(v) for v in args.encoding.split("/"))
        except ValueError:
            ap.error(f"--encoding takes BASE/PRECISION, e.g. 10/3, got {args.encoding!r}")
        w = replace(w, base=base, precision=precision)
    iterations = args.iterations or (200 if w.name == "seed" else 5)
    warmup = args.warmup if args.warmup is not None else (10 if w.name == "seed" else 1)
    plain = plaintext_ms(w, iterations + warmup)
    runs: list[tuple[list[Row], float | None]] = []
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.replay]

    def ours() -> list[Row]:
        return [
            trio.run(encrypted, w, s, args.parties, iterations, warmup, r)
            for s in suites
            for r in modes
        ]

    for k in range(args.repeat):
        rows = ours()
        peer = None if args.no_crypten or args.parties != 2 else crypten_ms(w)
        if peer is not None:  # ours again after CrypTen's: both sides span the same minutes
            rows = [pooled(a, b) for a, b in zip(rows, ours(), strict=True)]
        runs.append((rows, peer))
        if args.repeat > 1:
            vs = "" if peer is None else f"CrypTen {peer:.1f} ms; "
            mine = ", ".join(
                f"{r.suite}{'' if r.replay != 'no' else ' (no replay)'} {r.ms:.2f} ms"
                + ("" if not r.parts else f" ({r.parts[0]:.2f} before, {r.parts[1]:.2f} after)")
                + ("" if peer is None else f" ({peer / r.ms:.1f}x)")
                for r in rows
            )
            print(f"run {k + 1} of {args.repeat}: {vs}{mine}", flush=True)
    rows, peer, ratios = _medians(runs)
    print(
        f"\n{w.name}, {args.parties} parties, {iterations} iterations (median ms per iteration, "
        f"torch threads {torch.get_num_threads()}, encoding {w.base}/{w.precision})"
    )
    print(f"plaintext torch   {plain:9.3f} ms")
    if peer is not None:
        print(f"CrypTen 0.4.1     {peer:9.1f} ms  (2 parties + TTP, same command)")
    print(
        f"{'suite':<10} {'replay':>6} {'ms':>9} {'p90':>9} {'x plain':>8} {'CrypTen/x':>9} {'rounds':>6} "
        f"{'online B':>11} {'dealer B':>12} {'control B':>9} {'dealer ms':>9} {'online ms':>9}"
    )
    if args.repeat > 1:
        print(
            f"(medians of {args.repeat} runs, ours before and after CrypTen's in each; CrypTen/x: the median of the runs' ratios)"
        )
    for r, ratio in zip(rows, ratios, strict=True):
        vs = f"{ratio:9.1f}" if ratio is not None else f"{'-':>9}"
        print(
            f"{r.suite:<10} {r.replay:>6} {r.ms:9.2f} {r.p90:9.2f} {r.ms / plain:8.1f} {vs} {r.rounds:>6} "
            f"{r.online:>11,} {r.dealer:>12,} {r.control:>9,} {r.dealer_ms:9.2f} "
            f"{r.ms - r.dealer_ms:9.2f}"
        )
    # the seed's CrypTen figure is its run's seconds per iteration, a mean: ours as a mean
    # beside it (the other peer scripts print their median step, so no ratio there)
    mean_peer = w.name == "seed"
    for i, r in enumerate(rows):
        means = [(statistics.fmean(rs[i].times), p) for rs, p in runs if rs[i].times]
        if not means:
            continue
        paired = [p / m for m, p in means if p is not None and mean_peer]
        vs = f", CrypTen/mean {statistics.median(paired):.1f}x" if paired else ""
        print(
            f"mean ms   {r.suite:<10} {r.replay:>3} {statistics.median(m for m, _ in means):9.2f}{vs}"
        )


if __name__ == "__main__":
    main()
