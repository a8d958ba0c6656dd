"""Time DCF key generation and evaluation for the FSS protocols (protocols.dcf).

Usage: ``python scripts/bench_fss.py [log2 numel ...] [--reps R] [--no-reference]``
(default sizes 3, 14 and 18: 8, 16384 and 262144 elements). For each size and each of
DReLU (63-bit DCF, payload 1), ReLU (63-bit, payload 2) and truncation by 1000 (64-bit +
10-bit DCFs) prints the median milliseconds of key generation (both parties' keys) and of
one party's evaluation, for the compiled kernels (protocols.fss_kernel) with the AES inside
the kernels (protocols.aesni: one call per key generation or evaluation), the same kernels
around OpenSSL's AES (a Python loop over the levels, the fallback without AES-NI) and,
unless ``--no-reference``, the numpy reference, interleaved in the same loop, with ratios
(the library picks between the first two by size: ``fss_kernel.IN_KERNEL_MAX``),
after one untimed run of each (a fresh process's first touch of the ~0.8 GB of 2^18 keys
was measured at ~2.4 s on this machine, whichever code touches it).
First prints the compiled kernels' first-call time in this process (their compile time
when the on-disk cache is cold, their cache load otherwise).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import numpy as np
import torch

from protocols import fss_kernel
from protocols.dcf import Impl, dcf_eval, dcf_key_words, dcf_keygen, dcf_seed_bytes

PROTOCOLS: list[tuple[str, list[tuple[int, int]]]] = [
    ("drelu", [(63, 1)]),
    ("relu", [(63, 2)]),
    ("trunc d=1000", [(64, 1), (10, 1)]),
]


def _random_ring(n: int) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(os.urandom(8 * n), dtype=np.int64).copy())


def first_call_ms() -> float:
    """Milliseconds of the first keygen + eval of every payload width used here."""
    t0 = time.perf_counter()
    for _, dcfs in PROTOCOLS:
        for n_bits, m in dcfs:
            one = torch.ones(1, dtype=torch.int64)
            k0, _ = dcf_keygen(one, one.repeat(1, m), n_bits, bytes(dcf_seed_bytes(1)))
            dcf_eval(0, k0, one, n_bits, m)
    return 1e3 * (time.perf_counter() - t0)


VARIANTS: dict[str, tuple[Impl, bool]] = {
    "in-kernel": ("compiled", True),
    "openssl": ("compiled", False),
    "numpy": ("numpy", False),
}
"""Label: (dcf impl, AES inside the kernels)."""


def run(dcfs: list[tuple[int, int]], inputs: list[tuple], variant: str) -> tuple[float, float]:
    """(keygen ms, eval ms) of one run of the protocol's DCFs."""
    impl, in_kernel = VARIANTS[variant]
    saved = fss_kernel.IN_KERNEL_AES, fss_kernel.IN_KERNEL_MAX
    fss_kernel.IN_KERNEL_AES = in_kernel  # forced either way, whatever the size
    fss_kernel.IN_KERNEL_MAX = {"keygen": 1 << 62, "eval": 1 << 62}
    gen_ms = eval_ms = 0.0
    try:
        for (n_bits, m), (alpha, beta, x, seed) in zip(dcfs, inputs, strict=True):
            t0 = time.perf_counter()
            k0, _ = dcf_keygen(alpha, beta, n_bits, seed, impl=impl)
            t1 = time.perf_counter()
            dcf_eval(0, k0, x, n_bits, m, impl=impl)
            t2 = time.perf_counter()
            gen_ms += 1e3 * (t1 - t0)
            eval_ms += 1e3 * (t2 - t1)
    finally:
        fss_kernel.IN_KERNEL_AES, fss_kernel.IN_KERNEL_MAX = saved
    return gen_ms, eval_ms


def bench(name: str, dcfs: list[tuple[int, int]], numel: int, reps: int, reference: bool) -> None:
    inputs = []
    for n_bits, m in dcfs:
        mask = (1 << n_bits) - 1 if n_bits < 64 else -1
        alpha, x = _random_ring(numel) & mask, _random_ring(numel) & mask
        beta = _random_ring(numel * m).reshape(numel, m)
        inputs.append((alpha, beta, x, os.urandom(dcf_seed_bytes(numel))))
    names = ["in-kernel", "openssl"] if fss_kernel.aesni.available() else ["openssl"]
    names += ["numpy"] if reference else []
    times: dict[str, list[tuple[float, float]]] = {i: [] for i in names}
    for v in names:  # untimed: the process's first touch of this much memory is slow
        run(dcfs, inputs, v)
    for _ in range(reps):  # interleaved: a change in the machine's load hits both alike
        for v in names:
            times[v].append(run(dcfs, inputs, v))
    med = {v: tuple(statistics.median(t[k] for t in times[v]) for k in (0, 1)) for v in names}
    words = sum(dcf_key_words(n, m) for n, m in dcfs)
    g0, e0 = med[names[0]]
    line = f"{name:>12} 2^{numel.bit_length() - 1:<2}:"
    for v in names:
        g, e = med[v]
        line += f" | {v} keygen {g:8.2f} eval {e:7.2f} ms"
        if v != names[0]:
            line += f" ({g / g0:4.1f}x / {e / e0:4.1f}x)"
    print(f"{line}   ({8 * words} key bytes/element/party)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("log_sizes", nargs="*", type=int, default=[3, 14, 18])
    ap.add_argument("--reps", type=int, default=None, help="default: 20 / 5 / 1 by size")
    ap.add_argument("--no-reference", action="store_true", help="skip the numpy reference")
    args = ap.parse_args(argv)
    print(f"compiled kernels' first call in this process: {first_call_ms():.0f} ms")
    for log_n in args.log_sizes:
        reps = args.reps or (20 if log_n <= 8 else 5 if log_n <= 15 else 1)
        for name, dcfs in PROTOCOLS:
            bench(name, dcfs, 1 << log_n, reps, not args.no_reference)


if __name__ == "__main__":
    main()
