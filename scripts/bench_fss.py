"""Time DCF key generation and evaluation for the FSS protocols (protocols.fss).

Usage: ``python scripts/bench_fss.py [log2 numel]`` (default 18, i.e. 2^18 elements).
For each of DReLU (63-bit DCF, payload 1), ReLU (63-bit, payload 2) and truncation by
1000 (64-bit + 10-bit DCFs) prints the milliseconds of key generation (both parties' keys)
and of one party's evaluation, and the key bytes per element per party.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import torch

from protocols.fss import dcf_eval, dcf_key_words, dcf_keygen, dcf_seed_bytes


def _random_ring(n: int) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(os.urandom(8 * n), dtype=np.int64).copy())


def bench(name: str, dcfs: list[tuple[int, int]], numel: int) -> None:
    """``dcfs``: (input bits, payload words) of each DCF the protocol uses."""
    gen_ms = eval_ms = 0.0
    words = 0
    for n_bits, m in dcfs:
        mask = (1 << n_bits) - 1 if n_bits < 64 else -1
        alpha, x = _random_ring(numel) & mask, _random_ring(numel) & mask
        beta = _random_ring(numel * m).reshape(numel, m)
        seed = os.urandom(dcf_seed_bytes(numel))
        t0 = time.perf_counter()
        k0, _ = dcf_keygen(alpha, beta, n_bits, seed)
        t1 = time.perf_counter()
        dcf_eval(0, k0, x, n_bits, m)
        t2 = time.perf_counter()
        gen_ms += 1e3 * (t1 - t0)
        eval_ms += 1e3 * (t2 - t1)
        words += dcf_key_words(n_bits, m)
        del k0
    print(
        f"{name:>12}: keygen {gen_ms:8.0f} ms   eval (one party) {eval_ms:8.0f} ms   "
        f"key {8 * words} bytes/element/party   ({numel} elements)"
    )


def main() -> None:
    log_n = int(sys.argv[1]) if len(sys.argv) > 1 else 18
    numel = 1 << log_n
    bench("drelu", [(63, 1)], numel)
    bench("relu", [(63, 2)], numel)
    bench("trunc d=1000", [(64, 1), (10, 1)], numel)


if __name__ == "__main__":
    main()
