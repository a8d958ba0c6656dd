"""The ring Z_2^64 on ``torch.int64``, and bit-sliced (packed) views of its elements.

torch's int64 add, sub, mul and matmul wrap around modulo 2^64 (two's complement), which is
exactly ring arithmetic; these helpers name the few operations that need care.

Binary circuits (the comparison's carry tree) run *bit-sliced*: the elements are cut into
groups of 64 (the last group padded with zeros) and bit ``j`` of the 64 elements of group
``w`` is one int64 word, ``planes[j, w]``, whose bit ``i`` belongs to element ``64 w + i``.
A tensor of N elements is then 64 planes of ``ceil(N / 64)`` words (8 bytes per element,
like the elements themselves), and every ``&``/``^`` on planes processes 64 elements at once.
Conversions use a 64x64 bit-matrix transpose done with torch ops over all groups at once.

Threads. Importing this module (so the library) sets torch to ONE intra-op thread, unless
the environment names a count: ``SMPC_TORCH_THREADS=n`` (``0``: leave torch's own
default), or else the standard ``OMP_NUM_THREADS`` (then torch already follows it). Why:
the protocols run many medium-size int64 ops with Python between them, and torch's OpenMP
workers spin-wait at each parallel region; when other processes share the cores a worker
is often descheduled, every region then waits for it: a Network A step measured 4x slower
with 2 threads than with 1 (396-416 against 97-102 ms; before the int64 matmul, 0.25-4.8 s
against 0.23-0.26 s). ``OMP_WAIT_POLICY=PASSIVE`` (set before Python starts; it cannot be
set from here once torch is loaded) removes the spinning: 2 passive threads measured 102-130 ms
in the same runs, still no faster than 1 on this 2-core machine.
"""

from __future__ import annotations

import os
import sys
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from numba import njit

RING_BITS = 64
DTYPE = torch.int64

_BIT_POSITIONS = torch.arange(RING_BITS, dtype=torch.int64)

# (shift j, mask of the bit positions whose bit j is clear), for the six swap steps
_TRANSPOSE_STEPS = (
    (32, 0x00000000FFFFFFFF),
    (16, 0x0000FFFF0000FFFF),
    (8, 0x00FF00FF00FF00FF),
    (4, 0x0F0F0F0F0F0F0F0F),
    (2, 0x3333333333333333),
    (1, 0x5555555555555555),
)

THREADS_ENV = "SMPC_TORCH_THREADS"


def thread_policy(environ: dict[str, str] | os._Environ[str] = os.environ) -> int | None:
    """The intra-op thread count the library sets (see the module doc), or None to leave
    torch's: ``SMPC_TORCH_THREADS`` if set (0 means None), else None when
    ``OMP_NUM_THREADS`` is set, else 1. A value that is not a count raises ValueError."""
    raw = environ.get(THREADS_ENV)
    if raw is None:
        return None if environ.get("OMP_NUM_THREADS") else 1
    try:
        n = int(raw)
    except ValueError:
        n = -1
    if n < 0:
        raise ValueError(f"{THREADS_ENV} must be a thread count (0: torch's default), got {raw!r}")
    return n or None


def apply_thread_policy() -> None:
    """Set torch's intra-op threads by :func:`thread_policy` (done once at import)."""
    n = thread_policy()
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)


apply_thread_policy()
from . import allocator  # noqa: E402, F401  (its malloc thresholds, set at import)

if sys.byteorder != "little":  # pragma: no cover - the packed views below assume it
    raise ImportError("protocols.ring's bit packing assumes a little-endian machine")


def to_bits(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement bits of each element, least significant first: shape ``x.shape + (64,)``."""
    return ((x.unsqueeze(-1) >> _BIT_POSITIONS) & 1).bool()


def floor_div(x: torch.Tensor, d: int) -> torch.Tensor:
    """Signed floor division of ring elements (read as int64) by a positive public integer.

    A power of two ``d = 2^k`` is an arithmetic shift ``x >> k`` (the same floor, exact for
    every int64): base-2 encodings truncate by one, and torch's int64 floor division was
    measured ~18x slower than the shift (300 against 16 us of CPU on 10^5 elements). Other
    divisors: torch's floor division on small tensors, the compiled loop from
    :data:`_KERNEL_MIN` elements (458 against 280 us on 10^5). ``d = 1`` returns ``x``
    itself (no copy)."""
    if d == 1:
        return x
    if d > 0 and d & (d - 1) == 0:
        return x >> (d.bit_length() - 1)
    if x.numel() < _KERNEL_MIN:
        return torch.div(x, d, rounding_mode="floor")
    return _compiled(_floor_kernel, x, d)


def ceil_div(x: torch.Tensor, d: int) -> torch.Tensor:
    """Signed ceiling division by a positive public integer, without negating ``x`` (which
    would map -2^63 to itself): ``floor(x / d)`` plus one where ``d`` does not divide ``x``,
    in one compiled pass (a shift and a mask for ``d = 2^k``): 5 against 13 us on 8
    elements, 303 against 765 us on 10^5 (``d = 1000``), where the torch ops took four
    calls (floor, remainder, test, add)."""
    if d == 1:
        return x
    if d & (d - 1) == 0:
        return _compiled(_ceil_shift_kernel, x, d.bit_length() - 1)
    return _compiled(_ceil_kernel, x, d)


_KERNEL_MIN = 64
"""Elements from which :func:`floor_div` by a non-power of two runs compiled (below, the
call's wrapping costs more than torch's own division: 3.5 against 3.0 us on 8)."""


def _compiled(kernel: Any, x: torch.Tensor, d: int) -> torch.Tensor:
    src = x.contiguous()
    out = torch.empty(src.shape, dtype=torch.int64)
    kernel(src.numpy().reshape(-1), d, out.numpy().reshape(-1))
    return out


@njit(cache=True)
def _floor_kernel(x: np.ndarray, d: int, out: np.ndarray) -> None:
    for i in range(x.size):
        out[i] = x[i] // d  # numba's integer // floors, as Python's


@njit(cache=True)
def _ceil_kernel(x: np.ndarray, d: int, out: np.ndarray) -> None:
    for i in range(x.size):
        q = x[i] // d
        # q d may wrap (x = -2^63, d = 3), x - q d is still the remainder mod 2^64
        out[i] = q + (1 if x[i] - q * d != 0 else 0)


@njit(cache=True)
def _ceil_shift_kernel(x: np.ndarray, k: int, out: np.ndarray) -> None:
    mask = (1 << k) - 1
    for i in range(x.size):
        out[i] = (x[i] >> k) + (1 if x[i] & mask else 0)


def n_words(numel: int) -> int:
    """Words per bit plane for ``numel`` elements (64 elements per word)."""
    return -(-numel // RING_BITS)


_TRANSPOSE_CHUNK = 2048
"""Columns per pass of :func:`transpose64`: 64 x 2048 words (1 MiB) stay in cache across
the six steps, instead of streaming the whole tensor through memory six times."""


def transpose64(a: torch.Tensor) -> torch.Tensor:
    """Transpose the 64x64 bit matrices ``a[:, w]`` (rows: dim 0, columns: bit positions).

    Row ``k`` bit ``j`` of the input becomes row ``j`` bit ``k`` of the output, for every
    column ``w`` at once: the classic recursive block swap, six mask-and-shift steps of
    whole-tensor ops (block size 32, 16, ..., 1), over cache-sized chunks of columns.
    Returns a new ``(64, W)`` tensor; ``a`` is unchanged.
    """
    if a.dim() != 2 or a.shape[0] != RING_BITS or a.dtype != DTYPE:
        raise ValueError(f"transpose64 needs a (64, W) int64 tensor, got {a.dtype} {a.shape}")
    out = a.clone(memory_format=torch.contiguous_format)
    width = out.shape[1]
    for w0 in range(0, width, _TRANSPOSE_CHUNK):
        block = out[:, w0 : w0 + _TRANSPOSE_CHUNK]
        for j, mask in _TRANSPOSE_STEPS:
            v = block.unflatten(0, (RING_BITS // (2 * j), 2, j))
            lo, hi = v[:, 0], v[:, 1]
            # swap (row k, bit c) with (row k + j, bit c - j) for k, c - j with bit j
            # clear; the arithmetic shift's sign bits land outside ``mask``. In place.
            t = lo >> j
            t ^= hi
            t &= mask
            hi ^= t
            t <<= j
            lo ^= t
    return out


def to_planes(x: torch.Tensor) -> torch.Tensor:
    """Bit planes ``(64, ceil(N / 64))`` of the N elements of ``x`` (zero padded)."""
    flat = x.reshape(-1)
    w = n_words(flat.numel())
    if flat.numel() != RING_BITS * w:
        flat = torch.cat([flat, flat.new_zeros(RING_BITS * w - flat.numel())])
    return transpose64(flat.view(w, RING_BITS).t())


def from_planes(planes: torch.Tensor, numel: int) -> torch.Tensor:
    """The first ``numel`` elements whose bit planes are ``planes``; inverse of to_planes."""
    return transpose64(planes).t().reshape(-1)[:numel]


def unpack_words(words: torch.Tensor, numel: int) -> torch.Tensor:
    """Bits ``0 .. numel-1`` of each row of words (bit i of word w is bit 64 w + i), as
    bools of shape ``words.shape[:-1] + (numel,)``: inverse of :func:`pack_words`."""
    raw = words.contiguous().numpy().view(np.uint8)
    bits = np.unpackbits(raw, axis=-1, count=numel, bitorder="little")
    return torch.from_numpy(bits.view(np.bool_))


def pack_words(bits: torch.Tensor) -> torch.Tensor:
    """Bools along the last dim packed into words (zero padded): inverse of unpack_words."""
    lead, n = tuple(bits.shape[:-1]), bits.shape[-1]
    w = n_words(n)
    raw = np.zeros((*lead, 8 * w), np.uint8)
    raw[..., : (n + 7) // 8] = np.packbits(bits.numpy(), axis=-1, bitorder="little")
    return torch.from_numpy(raw.view(np.int64))


def words_to_bytes(words: torch.Tensor, numel: int) -> torch.Tensor:
    """The first ``ceil(numel / 8)`` bytes of each row of words, as uint8, with the bits past
    ``numel`` in the last byte cleared: bit planes on the wire with no padding bit sent."""
    nbytes = (numel + 7) // 8
    raw = words.contiguous().view(torch.uint8)[..., :nbytes].clone()
    if numel % 8:
        raw[..., -1] &= (1 << (numel % 8)) - 1
    return raw


def bytes_to_words(raw: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`words_to_bytes`: the bytes zero padded back into int64 words."""
    out = raw.new_zeros((*raw.shape[:-1], 8 * n_words(numel)))
    out[..., : raw.shape[-1]] = raw
    return out.view(torch.int64)


_F64_EXACT = 2**53
"""Integers up to this magnitude (and every partial sum below it) are exact in float64."""


def ring_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)`` modulo 2^64: torch's own int64 matmul, which wraps.

    torch 2.13's CPU int64 GEMM is a vectorised integer kernel (no float on the way, so
    products and sums wrap modulo 2^64 like every int64 op) and was measured 5-10x faster
    than :func:`ring_matmul_limbs` at every shape tried, 2-D and batched, inner dimension
    10 to 4096 (``scripts/bench_ring.py``); exactness on full-range operands, against an
    independent uint64 reference, is pinned by tests/test_kernels.py.
    """
    return torch.matmul(a, b)


@lru_cache(maxsize=64)
def _limb_plan(k: int) -> tuple[int, int] | None:
    """``(bits per limb L, limbs n)`` for an inner dimension ``k``: the fewest centered limbs
    (each in ``[-2^(L-1), 2^(L-1))``, the top one holding what is left of 64 bits) such that
    every sum of ``k`` limb products stays within 2^53; ``None`` if none does."""
    for n in range(2, 9):
        width = -(-RING_BITS // n)
        for bits in range(width, 33):
            low = 1 << (bits - 1)
            top = (1 << max(0, RING_BITS - 1 - (n - 1) * bits)) + 1
            if k * low * max(low, top) <= _F64_EXACT:
                return bits, n
    return None


def _limbs(x: torch.Tensor, bits: int, n: int) -> list[torch.Tensor]:
    """``x = sum_i limb_i 2^(bits i)`` modulo 2^64 with centered limbs, as float64."""
    half, mask = 1 << (bits - 1), (1 << bits) - 1
    out = []
    for _ in range(n - 1):
        low = ((x + half) & mask) - half
        out.append(low.to(torch.float64))
        x = (x - low) >> bits  # exact: x - low is a multiple of 2^bits (modulo 2^64)
    out.append(x.to(torch.float64))
    return out


def ring_matmul_limbs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.matmul(a, b)`` modulo 2^64 through float64 BLAS: the previous kernel, kept as
    an independent exact reference (tests) and as the measured alternative
    (``scripts/bench_ring.py``); slower than :func:`ring_matmul` everywhere measured.

    Each operand is split into ``n`` centered limbs of ``L`` bits held in float64
    (``_limb_plan``: 3 limbs of 22 bits while the inner dimension k <= 2048, so 6 limb
    products; 4 limbs of 16 bits, 10 products, up to k ~ 2^23); the products whose shift
    lands below 2^64 are exact in float64 (every partial sum stays within 2^53), are
    converted back to int64 and recombined with wrapping shifts.
    """
    plan = _limb_plan(a.shape[-1])
    if plan is None:
        return torch.matmul(a, b)
    bits, n = plan
    al, bl = _limbs(a, bits, n), _limbs(b, bits, n)
    out: torch.Tensor | None = None
    for s in range(n):
        for i in range(s + 1):
            term = torch.matmul(al[i], bl[s - i]).to(torch.int64)
            if s:
                term <<= bits * s  # wraps modulo 2^64
            out = term if out is None else out.add_(term)
    assert out is not None
    return out
