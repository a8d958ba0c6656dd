"""Benchmark: one ReLU through the real cluster (2 parties + dealer), against CrypTen's.

Times ``y = x.relu(); await y.get()`` on a shared fixed-point tensor (input already
shared and flushed), so the figure covers the dealer's material, the parties' protocol,
the metered in-process network and the reveal, like the CrypTen peer script (which times
``x.relu()`` and ``get_plain_text()``). Prints the median of ``--runs`` runs in ms and ns
per element.

Memory: *peak RSS growth* of an op is the process's ``resource.getrusage(RUSAGE_SELF)
.ru_maxrss`` after the op minus its current RSS (``/proc/self/statm``) just before it.
Everything (dealer, both parties, network buffers, coordinator) lives in this one process,
so this counts all of them. The *cold* figure (the first ReLU of this size, after a
64-element ReLU has paid the one-time initialisation) is the honest one: it includes memory
the allocator keeps after freeing. The *warm* figure (second
ReLU) is what CrypTen's peer script measures (after its warm-up, for one party process);
it is small because the warm run reuses what the cold one left in the allocator.

Then, unless ``--no-crypten``, it builds CrypTen 0.4.1 with ``../shared/peers/
setup_crypten.sh`` (once; its own venv) and runs ``crypten_relu.py N`` on the same number
of elements, and prints the time ratio. If that fails, it says so and carries on.

Usage: ``python scripts/bench_relu.py --size 2^18`` (or ``--size 8192x512``, ``10^4``,
``10^5``, ``10^6``).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from math import prod
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # use this checkout's packages, not another installed copy
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import trio  # noqa: E402
from peers import number, run_peer  # noqa: E402

from training import Cluster  # noqa: E402

SIZES: dict[str, tuple[int, ...]] = {
    "2^18": (2**18,),
    "8192x512": (8192, 512),
    "10^4": (10**4,),
    "10^5": (10**5,),
    "10^6": (10**6,),
}


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def bench(shape: tuple[int, ...], runs: int, timeout: float) -> tuple[list[float], int, int]:
    """Milliseconds of each of ``runs`` ReLUs, and the peak RSS growth in bytes of the cold
    run and of the first warm run."""
    g = torch.Generator().manual_seed(0)
    plain = torch.randn(shape, generator=g)
    want = torch.relu(plain)
    times, growth, warm = [], 0, 0
    async with Cluster.start(["alice", "bob"], provider="james", timeout=timeout) as c:
        # one-time costs (first use of every code path, caches) are not per element: a
        # 64-element ReLU pays them before the measured ones
        await c.share(torch.ones(64)).relu().get()
        x = c.share(plain)
        await c.flush()
        for i in range(runs + 1):
            before = rss_bytes()
            t0 = time.perf_counter()
            y = x.relu()
            got = await y.get()
            dt = time.perf_counter() - t0
            grown = max_rss_bytes() - before
            if not torch.allclose(got.double(), want.double(), atol=2e-3):
                raise AssertionError("ReLU result is wrong")
            del y, got
            if i == 0:  # the cold run: memory only
                growth = grown
                continue
            if i == 1:
                warm = grown
            times.append(1000 * dt)
    return times, growth, warm


def crypten_ms(numel: int, timeout: float) -> float | None:
    """CrypTen's ReLU time on ``numel`` elements in ms, or None (after saying why)."""
    out = run_peer("crypten_relu.py", [str(numel)], timeout)
    line = next((s for s in (out or "").splitlines() if s.startswith("crypten ")), "")
    if out is not None:
        print(line or out.strip())
    return number(r"relu (\d+(?:\.\d+)?) ms", line)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="2^18")
    ap.add_argument("--runs", type=int, default=5, help="timed runs after the cold one")
    ap.add_argument("--timeout", type=float, default=600.0, help="cluster message timeout, s")
    ap.add_argument("--no-crypten", action="store_true", help="skip the CrypTen comparison")
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: the pool only adds contention on a shared "
        "2-core machine; the parties and the dealer run one after another in one thread)",
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = SIZES[args.size]
    numel = prod(shape)
    times, growth, warm = trio.run(bench, shape, args.runs, args.timeout)
    med = statistics.median(times)
    runs = ", ".join(f"{t:.0f}" for t in times)
    print(
        f"smpc N={numel} ({args.size}) relu {med:.0f} ms (median of {len(times)}: {runs}), "
        f"{med / numel * 1e6:.0f} ns/elem, peak rss growth {growth / numel:.0f} B/elem cold, "
        f"{warm / numel:.0f} B/elem warm (ru_maxrss after - rss before the op; dealer, 2 "
        f"parties and network in one process; torch threads {args.threads})"
    )
    if args.no_crypten:
        return
    theirs = crypten_ms(numel, timeout=max(600.0, args.timeout))
    if theirs is not None:
        print(f"CrypTen / smpc time ratio: {theirs / med:.1f}x")


if __name__ == "__main__":
    main()
