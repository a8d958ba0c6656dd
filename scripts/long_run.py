"""Long run: many training iterations of the seed network, watching memory and speed.

Prints resident memory (from /proc/self/statm) and milliseconds per iteration over a
window at the start (after warm-up) and at the end, and their ratios. PySyft's users saw
memory grow and every epoch slow down; a flat line here is the claim.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import trio
from seed_net import DATA, TARGET, loss_fn, make_net

from actors import configure_logging
from training import SGD, Cluster, TrainingCoordinator


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


async def run(iterations: int, window: int, warmup: int) -> None:
    async with Cluster.start(["alice", "bob"], provider="james") as cluster:
        x, y = cluster.share(DATA), cluster.share(TARGET)
        model = cluster.share_module(make_net())
        coord = TrainingCoordinator(
            cluster, model, SGD(model.parameters(), lr=0.1), loss_fn, measure_phases=False
        )
        times: list[float] = []
        marks: dict[int, float] = {}
        losses: list[float] = []
        for i in range(iterations):
            t0 = time.perf_counter()
            rec = await coord.step(x, y)
            times.append(1000 * (time.perf_counter() - t0))
            losses.append(rec.loss)
            if i in (warmup, iterations - 1) or (i + 1) % max(iterations // 10, 1) == 0:
                marks[i] = rss_mib()
                print(
                    f"iteration {i + 1:>6}: rss {marks[i]:7.1f} MiB, ms/iter (last {window}) "
                    f"{statistics.median(times[-window:]):6.2f}, loss {rec.loss:.4f}",
                    flush=True,
                )
        start_ms = statistics.median(times[warmup : warmup + window])
        end_ms = statistics.median(times[-window:])
        start_rss, end_rss = marks[warmup], marks[iterations - 1]
        print()
        print(f"iterations        {iterations}")
        print(f"rss after warm-up {start_rss:.1f} MiB (iteration {warmup + 1})")
        print(f"rss at the end    {end_rss:.1f} MiB ({end_rss - start_rss:+.1f} MiB)")
        print(
            f"ms/iter start     {start_ms:.2f} (median of iterations {warmup + 1}..{warmup + window})"
        )
        print(
            f"ms/iter end       {end_ms:.2f} (median of the last {window}); ratio {end_ms / start_ms:.3f}"
        )
        print(f"final loss        {losses[-1]:.4f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10_000)
    ap.add_argument("--window", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()
    if args.iterations < args.warmup + args.window:
        ap.error("--iterations must be at least --warmup + --window")
    configure_logging(level="warning")
    trio.run(run, args.iterations, args.window, args.warmup)


if __name__ == "__main__":
    main()
