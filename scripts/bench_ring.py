"""Micro-benchmark: the ring's int64 kernels against their float64-limb alternatives.

For the matmul shapes of a Network A step (forward and backward), batched and long-inner
shapes, prints the median ms of ``ring_matmul`` (torch's int64 matmul) and of
``ring_matmul_limbs`` (float64 BLAS on 22- or 16-bit limbs) and their ratio; for the
MNIST-Net and LeNet convolutions, torch's int64 ``conv2d`` against the same limb split
over float64 ``conv2d``; and the PRG's keystream (``Prg.random_array``, AES-256-CTR, into a
fresh array as every draw is) on its two paths, the compiled kernel (protocols.aesctr)
against ``cryptography``, from 64 B to 8 MiB (median us per draw), then ``cryptography``'s
AES-CTR against ChaCha20, the PRG before it, at 1 and 8 MiB.
Configurations are interleaved (one call of each per round) so that a change in the
machine's load hits both alike. Ratios above 1: the first column is faster.

Usage: ``PYTHONPATH=. python scripts/bench_ring.py [--rounds 15] [--threads 1] [--prg-only]``
(threads: torch intra-op threads; default: the library's policy, see protocols.ring).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import numpy as np
import torch
import torch.nn.functional as F
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from protocols import aesctr
from protocols import prg as prg_module
from protocols.prg import Prg, _zeros
from protocols.ring import _limb_plan, _limbs, ring_matmul, ring_matmul_limbs

Kernel = Callable[[], object]

MATMULS = [
    ("A fwd 128x784 @ 784x128", (128, 784), (784, 128)),
    ("A fwd 128x128 @ 128x128", (128, 128), (128, 128)),
    ("A fwd 128x128 @ 128x10", (128, 128), (128, 10)),
    ("A dx 128x10 @ 10x128", (128, 10), (10, 128)),
    ("A dw 784x128 @ 128x128", (784, 128), (128, 128)),
    ("batched 32x64x64 @ 32x64x64", (32, 64, 64), (32, 64, 64)),
    ("inner 4096: 256x4096 @ 4096x64", (256, 4096), (4096, 64)),
]

CONVS = [
    ("MNIST conv1 32x1x28x28 * 32x1x3x3", (32, 1, 28, 28), (32, 1, 3, 3)),
    ("MNIST conv2 32x32x26x26 * 64x32x3x3", (32, 32, 26, 26), (64, 32, 3, 3)),
    ("LeNet conv2 128x6x14x14 * 16x6x5x5", (128, 6, 14, 14), (16, 6, 5, 5)),
]


def full_range(*shape: int) -> torch.Tensor:
    return torch.randint(-(2**63), 2**63 - 1, shape, dtype=torch.int64)


def conv_limbs(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """int64 ``conv2d`` through float64 limbs (the matmul's limb split, applied to conv)."""
    plan = _limb_plan(w[0].numel())
    if plan is None:
        raise ValueError("inner dimension too large for float64 limbs")
    bits, n = plan
    xl, wl = _limbs(x, bits, n), _limbs(w, bits, n)
    out = torch.zeros(0, dtype=torch.int64)
    for s in range(n):
        for i in range(s + 1):
            term = F.conv2d(xl[i], wl[s - i]).to(torch.int64)
            term <<= bits * s
            out = term if out.numel() == 0 else out.add_(term)
    return out


def interleaved(kernels: dict[str, Kernel], rounds: int, reps: int = 1) -> dict[str, float]:
    """Median ms per call of each kernel; ``reps`` calls of each per round (one call's
    time is too fine to read for a small draw), after one warm-up call."""
    for k in kernels.values():
        k()
    times: dict[str, list[float]] = {name: [] for name in kernels}
    for _ in range(rounds):
        for name, k in kernels.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                k()
            times[name].append(1e3 * (time.perf_counter() - t0) / reps)
    return {name: statistics.median(ts) for name, ts in times.items()}


def chacha20_array(key: bytes, n: int) -> np.ndarray:
    """``n`` bytes of ChaCha20 keystream written as ``Prg.random_array`` writes its own."""
    enc = Cipher(algorithms.ChaCha20(key, bytes(16)), mode=None).encryptor()
    out = np.empty(n + 16, np.uint8)
    enc.update_into(_zeros(n), out.data)
    return out[:n]


def draw(prg: Prg, kernel: bool, n: int) -> np.ndarray:
    """``prg.random_array(n, (1, 0))`` on the kernel path or on ``cryptography``'s."""
    prg_module.IN_KERNEL_AES = kernel
    return prg.random_array(n, (1, 0))


PRG_SIZES = [
    ("64 B", 64),
    ("1 KiB", 1 << 10),
    ("64 KiB", 1 << 16),
    ("1 MiB", 1 << 20),
    ("8 MiB", 8 << 20),
]


def prg_section(rounds: int) -> None:
    prg = Prg.from_seed(0, "bench_ring")
    kernel = prg_module.IN_KERNEL_AES
    if kernel:
        print(f"{'PRG draw (median us)':<38} {'kernel':>9} {'cryptogr.':>9} {'ratio':>8}")
        for label, n in PRG_SIZES:
            if draw(prg, True, n).tobytes() != draw(prg, False, n).tobytes():
                raise SystemExit(f"PRG {label}: the two paths disagree")
            ms = interleaved(
                {"kernel": partial(draw, prg, True, n), "openssl": partial(draw, prg, False, n)},
                rounds,
                reps=max(1, (256 << 10) // n),
            )
            row(f"{label} ({aesctr.best()})", 1e3 * ms["kernel"], 1e3 * ms["openssl"])
        prg_module.IN_KERNEL_AES = kernel
    else:
        print("PRG: no AES instructions (or a portable numba target): cryptography only")
    print(f"{'PRG keystream (median ms)':<38} {'AES-CTR':>9} {'ChaCha20':>9} {'ratio':>8}")
    for mib in (1, 8):
        n = mib << 20
        ms = interleaved(
            {
                "aes": partial(draw, prg, False, n),
                "chacha": partial(chacha20_array, prg.key, n),
            },
            rounds,
        )
        row(f"{mib} MiB into a fresh array (cryptography)", ms["aes"], ms["chacha"])
    prg_module.IN_KERNEL_AES = kernel


def row(label: str, fast: float, slow: float) -> None:
    print(f"{label:<38} {fast:9.3f} {slow:9.3f} {slow / fast:7.1f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--prg-only", action="store_true", help="only the PRG section")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} intra-op thread(s)")
    if args.prg_only:
        prg_section(args.rounds)
        return
    print(f"{'matmul (median ms)':<38} {'int64':>9} {'limbs':>9} {'limbs/int64':>8}")
    for label, ash, bsh in MATMULS:
        a, b = full_range(*ash), full_range(*bsh)
        if not torch.equal(ring_matmul(a, b), ring_matmul_limbs(a, b)):
            raise SystemExit(f"{label}: the two kernels disagree")
        ms = interleaved(
            {
                "int64": partial(ring_matmul, a, b),
                "limbs": partial(ring_matmul_limbs, a, b),
            },
            args.rounds,
        )
        row(label, ms["int64"], ms["limbs"])
    print(f"{'conv2d (median ms)':<38} {'int64':>9} {'limbs':>9} {'limbs/int64':>8}")
    for label, xs, ws in CONVS:
        x, w = full_range(*xs), full_range(*ws)
        if not torch.equal(F.conv2d(x, w), conv_limbs(x, w)):
            raise SystemExit(f"{label}: the two kernels disagree")
        ms = interleaved(
            {"int64": partial(F.conv2d, x, w), "limbs": partial(conv_limbs, x, w)},
            max(3, args.rounds // 3),
        )
        row(label, ms["int64"], ms["limbs"])
    prg_section(args.rounds)


if __name__ == "__main__":
    main()
