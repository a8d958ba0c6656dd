"""Benchmark: how much of a training step is the protocols' own work, and how much the runtime.

Runs one warm training iteration of a workload on the real cluster (as ``bench_train.py``)
with the op log on, then replays every *interactive* op of that iteration, with the same
kind, shapes and parameters, through the protocol harness of ``protocols.testing``: the
parties' coroutines and the runtime's dealer code path (``Board(real_dealer=True)``: PRG
draws, corrections, FSS key generation), exchanging tensors on an in-memory board, with no
actors, frames, commands, heartbeats or meters. Local ops are left out. The sum is a lower
bound on what any runtime built on these protocols (and this torch/numpy code) spends per
iteration on this machine; printed beside the full runtime's time per iteration measured
in the same command, and, given CrypTen's time (``--crypten-ms``, from ``bench_train.py``)
the best ratio a zero-overhead runtime could reach.

Usage: ``python scripts/bench_floor.py --workload seed --suites default,carry``.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import torch
import trio
from bench_train import NAMES, WORKLOADS, Workload, bench_parser, bench_setup, on_cluster

from protocols import Share
from protocols.opkind import Suite
from protocols.params import Params
from protocols.suite import SUITES
from protocols.testing import Board, LocalContext, run_parties
from training import Cluster

Shape = tuple[int, ...]


async def op_log(w: Workload, suite: str, parties: int) -> tuple[list[tuple], float]:
    """The interactive ops ``(kind, shapes, out, params)`` of one warm iteration and the
    runtime's median ms per iteration over 20 iterations."""
    async with Cluster.start(NAMES[:parties], provider="james", protocols=suite) as cluster:
        coord, xs, ys = on_cluster(cluster, w)
        await coord.step(xs, ys)
        await cluster.flush()
        cluster.take_op_costs()
        await coord.step(xs, ys)
        await cluster.flush()
        ops = [
            (r.kind, r.shapes, r.out[0], r.params)
            for r, *_ in cluster.take_op_costs()
            if r.interactive
        ]
        times = []
        for _ in range(20 if w.name == "seed" else 3):
            t0 = time.perf_counter()
            await coord.step(xs, ys)
            times.append(1000 * (time.perf_counter() - t0))
    return ops, statistics.median(times)


async def replay(suite: Suite, ops: Sequence[tuple], parties: int, seed: int) -> float:
    """Seconds to run ``ops`` one after another through the harness."""
    gen = torch.Generator().manual_seed(seed)
    board = Board(parties, seed, real_dealer=True)
    inputs = []
    for _, shapes, _, _ in ops:  # operands drawn before the clock starts
        inputs.append(
            [
                [Share(torch.randint(-(2**20), 2**20, s, generator=gen)) for s in shapes]
                for _ in range(parties)
            ]
        )
    t0 = time.perf_counter()
    for op_id, ((kind, _, _, params), shares) in enumerate(zip(ops, inputs, strict=True)):
        await run_parties(parties, _runner(suite, kind, shares, params, op_id), board=board)
    return time.perf_counter() - t0


def _runner(
    suite: Suite, kind: str, shares: list[list[Share]], p: Params, op_id: int
) -> Callable[[int, Callable[[int], LocalContext]], Awaitable[object]]:
    run = suite.kind(kind, len(shares)).run
    assert run is not None, f"{kind} is not interactive"

    async def body(rank: int, ctx_for: Callable[[int], LocalContext]) -> object:
        return await run(ctx_for(op_id), shares[rank], p)

    return body


def main(argv: list[str] | None = None) -> None:
    ap = bench_parser(__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=None, help="replays (default 20 / 3)")
    ap.add_argument("--crypten-ms", type=float, default=None, help="CrypTen's ms per step")
    args = ap.parse_args(argv)
    suites = bench_setup(ap, args)
    w = WORKLOADS[args.workload]
    repeats = args.repeats or (20 if w.name == "seed" else 3)
    print(
        f"{w.name}, {args.parties} parties, torch threads {torch.get_num_threads()}: "
        "interactive ops of one iteration replayed"
    )
    for name in suites:
        ops, runtime_ms = trio.run(op_log, w, name, args.parties)
        kinds = Counter(k for k, *_ in ops)
        floor = statistics.median(
            1000 * trio.run(replay, SUITES[name], ops, args.parties, i) for i in range(repeats)
        )
        mix = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
        print(f"  {name:<9} ops: {mix}")
        print(
            f"  {name:<9} protocols alone {floor:8.2f} ms   full runtime {runtime_ms:8.2f} ms"
            f"   runtime share {1 - floor / runtime_ms:5.1%}"
        )
        if args.crypten_ms:
            print(
                f"  {name:<9} CrypTen {args.crypten_ms:.1f} ms: at most "
                f"{args.crypten_ms / floor:.0f}x with a zero-overhead runtime "
                f"(now {args.crypten_ms / runtime_ms:.1f}x)"
            )


if __name__ == "__main__":
    main()
