"""Benchmark: the smooth functions at scale, ours beside CrypTen 0.4.1's in one command.

For each function (exp, sigmoid, tanh, reciprocal, sqrt, rsqrt, log, division by a shared
tensor, softmax, log_softmax) on 10^5 elements (``--quick``: 2,000) it prints our ms,
CrypTen's ms, the ratio, online MB (ours: bytes both parties sent; CrypTen: its
communicator's bytes, both parties), dealer bytes per element (ours: what the provider
sent the parties; CrypTen: what its TTP sent party 0, the only party it sends to) and the
max error against float64 torch for both (relative where the result exceeds 1 in
magnitude, absolute below).

Timing covers ``y = f(x); y.get()`` on an input shared (and flushed) beforehand, dealer
material included for both (ours: the in-process provider; CrypTen: its TTP process).
The machine is shared: the repetitions interleave (ours, then CrypTen's, ``--reps`` times)
and the figures are medians.

    python scripts/bench_smooth.py              # 10^5 elements, 3 repetitions
    python scripts/bench_smooth.py --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # use this checkout's packages, not another installed copy
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import trio  # noqa: E402
from peers import PEERS, crypten_venv  # noqa: E402

from protocols.errors import ValueOutOfRange  # noqa: E402
from training import Cluster  # noqa: E402

PARTIES = ["alice", "bob"]


def inputs(n: int) -> dict[str, torch.Tensor]:
    """The inputs, by name of the domain (the same on both sides)."""
    g = torch.Generator().manual_seed(0)
    rows = max(1, n // 10)
    return {
        "any": torch.rand(n, generator=g, dtype=torch.float64) * 16 - 8,  # [-8, 8]
        "exp": torch.rand(n, generator=g, dtype=torch.float64) * 12 - 6,  # [-6, 6]
        "pos": torch.rand(n, generator=g, dtype=torch.float64) * 199.95 + 0.05,  # [0.05, 200]
        "logits": torch.rand(rows, 10, generator=g, dtype=torch.float64) * 12 - 6,
    }


# name -> (input, our op on shares, torch's op; CrypTen's op is in PEER below)
FUNCTIONS: dict[str, tuple[str, Callable[[Any], Any], Callable[[torch.Tensor], torch.Tensor]]] = {
    "exp": ("exp", lambda s: s.exp(), torch.exp),
    "sigmoid": ("any", lambda s: s.sigmoid(), torch.sigmoid),
    "tanh": ("any", lambda s: s.tanh(), torch.tanh),
    "reciprocal": ("pos", lambda s: s.reciprocal(), torch.reciprocal),
    "sqrt": ("pos", lambda s: s.sqrt(), torch.sqrt),
    "rsqrt": ("pos", lambda s: s.rsqrt(), torch.rsqrt),
    "log": ("pos", lambda s: s.log(), torch.log),
    "div": ("pos", lambda s: s.flip(0) / s, lambda t: t.flip(0) / t),
    "softmax": ("logits", lambda s: F.softmax(s, 1), lambda t: t.softmax(1)),
    "log_softmax": ("logits", lambda s: F.log_softmax(s, 1), lambda t: t.log_softmax(1)),
}


def max_error(got: torch.Tensor, want: torch.Tensor) -> float:
    e = (got.double() - want) / want.abs().clamp(min=1.0)
    return float(e.abs().max())


@dataclass
class Figures:
    ms: list[float] = field(default_factory=list)
    online_mb: float = 0.0
    dealer_per_element: float = 0.0
    error: float = 0.0
    failures: list[str] = field(default_factory=list)


async def ours(n: int, names: list[str], results: dict[str, Figures]) -> None:
    xs = inputs(n)
    async with Cluster.start(PARTIES, provider="james", seed=3) as c:
        shared = {k: c.share(v.float(), precision=16, base=2) for k, v in xs.items()}
        small = c.share(torch.linspace(0.5, 4, 20).reshape(2, 10), precision=16, base=2)
        for name in names:  # one-time costs (first use of each code path)
            await FUNCTIONS[name][1](small).get()
        await c.flush()
        for name in names:
            domain, op, ref = FUNCTIONS[name]
            x = shared[domain]
            await c.flush()
            before = c.stats()
            t0 = time.perf_counter()
            f = results.setdefault(name, Figures())
            try:
                got = await op(x).get()
            except ValueOutOfRange as e:  # garbage caught at the reveal: say so, carry on
                f.failures.append(str(e)[:160])
                continue
            dt = time.perf_counter() - t0
            d = c.stats() - before
            f.ms.append(1000 * dt)
            f.online_mb = d.online_bytes / 1e6
            f.dealer_per_element = d.offline_bytes / xs[domain].numel()
            f.error = max_error(got, ref(xs[domain]))


PEER = r"""
import sys, time
import torch
import crypten
import crypten.mpc as mpc
from crypten.config import cfg
from crypten.mpc.provider import ttp_provider

cfg.mpc.provider = "TTP"
cfg.communicator.verbose = True  # CrypTen counts bytes only when verbose
N = int(sys.argv[1])
TTP_BYTES = [0]
_request = ttp_provider.TTPClient._TTPClient__TTPClient.ttp_request


def counted(self, *a, **k):
    out = _request(self, *a, **k)
    TTP_BYTES[0] += out.numel() * out.element_size()
    return out


ttp_provider.TTPClient._TTPClient__TTPClient.ttp_request = counted
OPS = {
    "exp": lambda s, d: s.exp(),
    "sigmoid": lambda s, d: s.sigmoid(),
    "tanh": lambda s, d: s.tanh(),
    "reciprocal": lambda s, d: s.reciprocal(),
    "sqrt": lambda s, d: s.sqrt(),
    "rsqrt": lambda s, d: s.inv_sqrt(),
    "log": lambda s, d: s.log(),
    "div": lambda s, d: d / s,
    "softmax": lambda s, d: s.softmax(1),
    "log_softmax": lambda s, d: s.log_softmax(1),
}


@mpc.run_multiprocess(world_size=2)
def run():
    comm = crypten.communicator.get()
    xs = torch.load(sys.argv[2])
    shared = {k: crypten.cryptensor(v.float(), src=0) for k, v in xs.items()}
    flipped = crypten.cryptensor(xs["pos"].flip(0).float(), src=0)
    domains = dict(l.split("=") for l in sys.argv[3].split(","))
    small = crypten.cryptensor(torch.linspace(0.5, 4, 20).reshape(2, 10), src=0)
    for name in domains:
        OPS[name](small, small).get_plain_text()
    out = {}
    for name in domains:
        op, x = OPS[name], shared[domains[name]]
        comm.reset_communication_stats()
        TTP_BYTES[0] = 0
        t0 = time.perf_counter()
        got = op(x, flipped).get_plain_text()
        dt = time.perf_counter() - t0
        out[name] = (dt, comm.comm_bytes, TTP_BYTES[0], got)
    # tensors do not pass through run_multiprocess's queue: each party writes a file
    torch.save(out, sys.argv[4] + "." + str(comm.get_rank()))


if __name__ == "__main__":
    run()
    res = [torch.load(sys.argv[4] + "." + str(r)) for r in range(2)]
    both = {k: (res[0][k][0], res[0][k][1] + res[1][k][1], res[0][k][2] + res[1][k][2], res[0][k][3])
            for k in res[0]}
    torch.save(both, sys.argv[4])
"""


def crypten_run(n: int, names: list[str], workdir: Path, results: dict[str, Figures]) -> bool:
    """One CrypTen run of every function; False (after saying why) if it is unavailable."""
    venv = crypten_venv()
    xs = inputs(n)
    torch.save(xs, workdir / "inputs.pt")
    (workdir / "peer.py").write_text(PEER)
    domains = ",".join(f"{k}={FUNCTIONS[k][0]}" for k in names)
    try:
        subprocess.run(
            ["bash", str(PEERS / "setup_crypten.sh"), str(venv)], check=True, capture_output=True
        )
        subprocess.run(
            [
                str(venv / "bin" / "python"),
                str(workdir / "peer.py"),
                str(n),
                str(workdir / "inputs.pt"),
                domains,
                str(workdir / "out.pt"),
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", None) or ""
        print(f"CrypTen unavailable ({type(e).__name__}: {e}) {str(err)[-300:]}".strip())
        return False
    out = torch.load(workdir / "out.pt")
    for name in names:
        domain, _, ref = FUNCTIONS[name]
        dt, comm_bytes, ttp_bytes, got = out[name]
        f = results.setdefault(name, Figures())
        f.ms.append(1000 * dt)
        f.online_mb = comm_bytes / 1e6
        f.dealer_per_element = ttp_bytes / xs[domain].numel()
        f.error = max_error(got, ref(xs[domain]))
    return True


def render(n: int, a: dict[str, Figures], b: dict[str, Figures]) -> str:
    out = [
        f"| function ({n} elements) | ours ms | CrypTen ms | CrypTen/ours | online MB ours / "
        "CrypTen | dealer B/element ours / CrypTen TTP | max error ours / CrypTen |",
        "|---|---|---|---|---|---|---|",
    ]
    notes = []
    for name, f in a.items():
        notes += [f"{name}: run failed: {m}" for m in f.failures]
        if not f.ms:
            out.append(f"| {name} | failed | - | - | - | - | - |")
            continue
        mine = statistics.median(f.ms)
        g = b.get(name)
        if g is None:
            out.append(
                f"| {name} | {mine:.0f} | - | - | {f.online_mb:.1f} / - | "
                f"{f.dealer_per_element:.0f} / - | {f.error:.1e} / - |"
            )
            continue
        theirs = statistics.median(g.ms)
        out.append(
            f"| {name} | {mine:.0f} | {theirs:.0f} | {theirs / mine:.2f}x | {f.online_mb:.1f} / "
            f"{g.online_mb:.1f} | {f.dealer_per_element:.0f} / {g.dealer_per_element:.0f} | "
            f"{f.error:.1e} / {g.error:.1e} |"
        )
    return "\n".join(out + notes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2,000 elements, 1 repetition")
    ap.add_argument("--size", type=int, default=100_000, help="elements per function")
    ap.add_argument("--reps", type=int, default=3, help="interleaved repetitions (medians)")
    ap.add_argument("--only", default="", help="comma-separated functions (default: all)")
    ap.add_argument("--no-crypten", action="store_true", help="skip the CrypTen runs")
    args = ap.parse_args(argv)
    n, reps = (2000, 1) if args.quick else (args.size, args.reps)
    names = args.only.split(",") if args.only else list(FUNCTIONS)
    unknown = [k for k in names if k not in FUNCTIONS]
    if unknown:
        ap.error(f"unknown functions {unknown}; known: {', '.join(FUNCTIONS)}")
    torch.set_num_threads(1)
    mine: dict[str, Figures] = {}
    theirs: dict[str, Figures] = {}
    crypten = not args.no_crypten
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(reps):
            trio.run(ours, n, names, mine)
            if crypten:
                crypten = crypten_run(n, names, Path(tmp), theirs)
    print(render(n, mine, theirs))


if __name__ == "__main__":
    main()
