"""Benchmark: milliseconds per training iteration of the seed network, encrypted vs plain.

Both are measured in this process, in the same run: plaintext PyTorch SGD on the same Net
and data, and encrypted SGD with 2 (or --parties) parties. The encrypted loop reveals the
loss every iteration (as train_xor.py does) but skips the per-phase barriers that
train_xor.py uses to attribute rounds. Prints the medians and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import trio
from seed_net import DATA, TARGET, loss_fn, make_net

from actors import configure_logging
from training import SGD, Cluster, TrainingCoordinator

NAMES = ["alice", "bob", "carol", "dave"]


def plaintext_ms(iterations: int) -> list[float]:
    model = make_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    times = []
    for _ in range(iterations):
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = loss_fn(model(DATA), TARGET)
        loss.backward()
        opt.step()
        float(loss.detach())
        times.append(1000 * (time.perf_counter() - t0))
    return times


async def encrypted_ms(iterations: int, parties: int, warmup: int) -> list[float]:
    async with Cluster.start(NAMES[:parties], provider="james") as cluster:
        x, y = cluster.share(DATA), cluster.share(TARGET)
        model = cluster.share_module(make_net())
        coord = TrainingCoordinator(
            cluster, model, SGD(model.parameters(), lr=0.1), loss_fn, measure_phases=False
        )
        times = []
        for i in range(warmup + iterations):
            t0 = time.perf_counter()
            await coord.step(x, y)
            if i >= warmup:
                times.append(1000 * (time.perf_counter() - t0))
        return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=200)
    ap.add_argument("--parties", type=int, default=2, choices=range(2, len(NAMES) + 1))
    ap.add_argument("--warmup", type=int, default=10)
    args = ap.parse_args()
    configure_logging(level="warning")
    plain = plaintext_ms(args.iterations + args.warmup)[args.warmup :]
    enc = trio.run(encrypted_ms, args.iterations, args.parties, args.warmup)
    p, e = statistics.median(plain), statistics.median(enc)
    print(f"seed network, {args.parties} parties, {args.iterations} iterations (median)")
    print(f"plaintext torch  {p:8.3f} ms/iteration")
    print(f"encrypted        {e:8.3f} ms/iteration  (p90 {sorted(enc)[int(0.9 * len(enc))]:.3f})")
    print(f"ratio            {e / p:8.1f} x")


if __name__ == "__main__":
    main()
