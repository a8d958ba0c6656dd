"""The two-party distributed comparison function (DCF) of BCG+21: keys and evaluation.

Construction
============

The DCF of Boyle, Chandran, Gilboa, Gupta, Ishai, Kumar,
Rathee, "Function secret sharing for mixed-mode and fixed-point secure computation"
(EUROCRYPT 2021, eprint 2020/1392; BCG+21): their improved DCF ``Gen``/``Eval`` for
``f^<_{alpha,beta}``, the one with a single value correction word per level.
It secret-shares ``f(x) = beta if x < alpha else 0`` for n-bit unsigned ``x`` and ``alpha``
(1 <= n <= 64, bits read most significant first) with a payload ``beta`` of ``m`` ring
elements of Z_2^64 (a small vector: ReLU takes two from one key). Two keys ``k_0, k_1``;
``Eval(0, k_0, x) + Eval(1, k_1, x) = f(x)`` in Z_2^64 for every x; each key alone is
pseudorandom (reveals nothing of ``alpha, beta``).

``Gen``: random seeds ``s_0, s_1`` (control bits ``t_0 = 0, t_1 = 1``), ``V_alpha = 0``.
For each level i (bit ``alpha_i``): expand both seeds to ``(s^L, t^L, v^L, s^R, t^R,
v^R)``; the side that ``alpha`` takes is *keep*, the other *lose*; the correction words are
``s_CW = s_0^lose ^ s_1^lose``, ``V_CW = (-1)^t_1 (v_1^lose - v_0^lose - V_alpha)`` (plus
``(-1)^t_1 beta`` when lose = L, i.e. ``alpha_i = 1``: every x that leaves the path here
to the left is below alpha), ``t_CW^L = t_0^L ^ t_1^L ^ alpha_i ^ 1``, ``t_CW^R = t_0^R ^
t_1^R ^ alpha_i``; then ``V_alpha += v_0^keep - v_1^keep + (-1)^t_1 V_CW`` and the new
seeds ``s_b = s_b^keep ^ t_b s_CW``, ``t_b = t_b^keep ^ t_b t_CW^keep``. Last,
``CW_{n+1} = (-1)^t_1 (Convert(s_1) - Convert(s_0) - V_alpha)``.
``Eval(b, k, x)``: follow x's bits, ``V += (-1)^b (v^{x_i} + t V_CW)`` with the corrected
child, and at the leaf ``V += (-1)^b (Convert(s) + t CW_{n+1})``.

PRG: Matyas-Meyer-Oseas over fixed-key AES (:func:`protocols.prg.fixed_key_aes`),
``G_j(s) = AES_K(s ^ j) ^ s ^ j`` with a public key K and a tweak j XORed into the low
word: per level, side L uses tweaks ``0 .. h`` and side R ``h+1 .. 2h+1`` (``h =
ceil(m/2)``; tweak ``side*(h+1)`` gives the 127-bit child seed, whose lowest bit is the
control bit and is then cleared, the other ``h`` give the 64-bit words of ``v``); the leaf
``Convert(s)`` uses tweaks ``2h+2 ..``. Key generation expands both children of both
parties (``2(h+1)`` blocks per party per level); evaluation only the child x takes
(``h+1`` blocks). One ECB call per level over all elements (of a chunk of :data:`CHUNK`),
no per-element Python. ChaCha20 was measured as the alternative: its seed is its key, so it
needs one cipher set-up per element and level (~0.1-0.4 ms each here), against ~6 ms for
one AES-ECB batch of 2^19 blocks; AES wins by orders of magnitude.

Implementation: the level arithmetic runs in compiled numba kernels
(:mod:`protocols.fss_kernel`: per level one AES call and one kernel, ~2 calls instead of
~40 numpy calls; for small batches the whole key generation or evaluation is ONE call, the
AES running inside the kernels on AES-NI, :mod:`protocols.aesni`), bit-identical to the vectorised numpy code kept here as the reference
(``impl="numpy"``; tests/test_fss.py compares keys and shares). The first DCF call of a
process loads the kernels from numba's on-disk cache (~0.4-0.6 s) or compiles them when the
cache is cold (~5-6 s); :func:`warm_up` pays that up front.

Key layout (one int64 tensor of shape ``(W, N)`` per party, N elements, word-major so each
field is a contiguous row):

=========================== =============================================================
rows                        content
=========================== =============================================================
``0, 1``                    the party's root seed (low, high word; bit 0 cleared)
``2 + 2i, 3 + 2i``          ``s_CW`` of level i (i = 0 .. n-1)
``2 + 2n + m i + j``        ``V_CW`` of level i, payload word j
``2 + (2+m) n + i // 32``   control-bit corrections: ``t_CW^L`` of level i at bit
                            ``2 (i % 32)``, ``t_CW^R`` at the next bit
last m rows                 ``CW_{n+1}``
=========================== =============================================================

Timings: ``scripts/bench_fss.py`` prints both implementations side by side (the numpy
reference was 5.0 s / 0.9 s for DReLU keygen / one evaluation at 2^18 elements; the
kernels' figures are in the README). The gates built on it are in :mod:`protocols.fss`.
"""

from __future__ import annotations

import time
from math import ceil
from typing import Literal

import numpy as np
import torch

from . import fss_kernel
from .prg import fixed_key_aes

CHUNK = 1 << 15
"""Elements processed together by the numpy keygen and eval (bounds the temporary memory)."""

KERNEL_CHUNK = 1 << 12
"""Elements per pass of the compiled kernels: their per-level working set (seeds, AES
blocks in and out, ~300 bytes per element) then stays in the L2 cache. Measured at 2^18
elements, same process, alternating: chunks of 2^12 took 1.1-1.3 s for key generation,
chunks of 2^15 1.5 s; 2^9 to 2^13 were alike within the machine's noise."""

Impl = Literal["compiled", "numpy"]
"""``"compiled"``: the numba level kernels of :mod:`protocols.fss_kernel` (the default);
``"numpy"``: the vectorised numpy code below, kept as the reference the kernels are tested
against bit for bit (tests/test_fss.py) and as the benchmark's baseline."""

_U1 = np.uint64(1)
_NOT1 = np.uint64(0xFFFFFFFFFFFFFFFE)


def dcf_key_words(n_bits: int, m: int = 1) -> int:
    """Words (int64) of one DCF key per element: ``2 + (2+m) n + ceil(2n/64) + m``."""
    return 2 + (2 + m) * n_bits + ceil(2 * n_bits / 64) + m


def dcf_seed_bytes(numel: int) -> int:
    """Random bytes :func:`dcf_keygen` consumes: two 128-bit root seeds per element."""
    return 32 * numel


def _check_dcf(n_bits: int, m: int) -> None:
    if not 1 <= n_bits <= 64:
        raise ValueError(f"DCF inputs have 1 to 64 bits, got {n_bits}")
    if m < 1:
        raise ValueError(f"a DCF payload has at least one ring element, got {m}")


def u64(t: torch.Tensor) -> np.ndarray:
    """The unsigned 64-bit reading of an int64 tensor (a numpy view when possible; a
    contiguous int64 tensor, the usual case, without the four conversions' ~5 us)."""
    if t.dtype is torch.int64 and not t.requires_grad and t.is_contiguous():
        return t.numpy().view(np.uint64)
    return t.detach().to(torch.int64).contiguous().numpy().view(np.uint64)


def i64(a: np.ndarray) -> torch.Tensor:
    """The int64 tensor of a uint64 array's bit patterns."""
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int64))


def _bit(v: np.ndarray, n_bits: int, level: int) -> np.ndarray:
    """Bit ``n_bits - 1 - level`` (levels go from the most significant bit) as 0/1 uint64."""
    return (v >> np.uint64(n_bits - 1 - level)) & _U1


def _split_child(out: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(s, t, v)`` of one child from its ``h+1`` expanded blocks ``(..., h+1, 2)``."""
    s = out[..., 0, :].copy()
    t = s[..., 0] & _U1
    s[..., 0] &= _NOT1
    v = out[..., 1:, :].reshape(*out.shape[:-2], -1)[..., :m]
    return s, t, v


def _tweaked(seeds: np.ndarray, tweaks: np.ndarray) -> np.ndarray:
    """Blocks ``seed ^ tweak`` (tweak into the low word): seeds ``(..., 2)``, tweaks
    ``(..., T)`` broadcast against the seeds' leading axes; result ``(..., T, 2)``."""
    blocks = np.repeat(seeds[..., None, :], tweaks.shape[-1], axis=-2)
    blocks[..., 0] ^= tweaks
    return blocks


def _convert(seeds: np.ndarray, m: int) -> np.ndarray:
    """``Convert(s)``: m pseudorandom ring words from a leaf seed ``(..., 2)``."""
    h = (m + 1) // 2
    tw = np.arange(2 * h + 2, 3 * h + 2, dtype=np.uint64)
    out = fixed_key_aes(_tweaked(seeds, tw))
    return out.reshape(*seeds.shape[:-1], -1)[..., :m]


def _keygen_chunk(
    alpha: np.ndarray, beta: np.ndarray, n_bits: int, roots: np.ndarray, keys: np.ndarray
) -> None:
    """Both parties' keys for one chunk, written into ``keys`` ``(2, W, N)`` (zeroed).
    ``roots``: ``(2, N, 2)`` random words."""
    N, m = beta.shape
    h = (m + 1) // 2
    words = dcf_key_words(n_bits, m)
    s = roots.copy()
    s[..., 0] &= _NOT1
    keys[:, 0:2, :] = s.transpose(0, 2, 1)
    t = np.zeros((2, N), dtype=np.uint64)
    t[1] = 1
    V = np.zeros((N, m), dtype=np.uint64)
    tw = np.arange(2 * h + 2, dtype=np.uint64)
    vrow, trow = 2 + 2 * n_bits, 2 + (2 + m) * n_bits
    for i in range(n_bits):
        a = _bit(alpha, n_bits, i)  # (N,) 0/1: alpha goes right (keep = R, lose = L)
        ones = np.uint64(0) - a  # all-ones where a = 1
        out = fixed_key_aes(_tweaked(s, tw))  # (2, N, 2h+2, 2)
        sL, tL, vL = _split_child(out[..., : h + 1, :], m)
        sR, tR, vR = _split_child(out[..., h + 1 :, :], m)
        flip_s = (sL ^ sR) & ones[None, :, None]
        s_keep, s_lose = sL ^ flip_s, sR ^ flip_s
        flip_v = (vL ^ vR) & ones[None, :, None]
        v_keep, v_lose = vL ^ flip_v, vR ^ flip_v
        t_keep = tL ^ ((tL ^ tR) & a)
        s_cw = s_lose[0] ^ s_lose[1]
        neg = np.uint64(0) - t[1]  # (-1)^t1 as a mask: v -> (v ^ neg) - neg
        v_cw = v_lose[1] - v_lose[0] - V + beta * a[:, None]
        v_cw = (v_cw ^ neg[:, None]) - neg[:, None]
        V = V - v_keep[1] + v_keep[0] + ((v_cw ^ neg[:, None]) - neg[:, None])
        t_cw_l = tL[0] ^ tL[1] ^ a ^ _U1
        t_cw_r = tR[0] ^ tR[1] ^ a
        t_cw_keep = t_cw_l ^ ((t_cw_l ^ t_cw_r) & a)
        s = s_keep ^ ((np.uint64(0) - t)[..., None] & s_cw[None])
        t = t_keep ^ (t & t_cw_keep[None])
        keys[:, 2 + 2 * i : 4 + 2 * i, :] = s_cw.T[None]
        keys[:, vrow + m * i : vrow + m * (i + 1), :] = v_cw.T[None]
        shift = np.uint64(2 * (i % 32))
        keys[:, trow + i // 32, :] |= (t_cw_l << shift) | (t_cw_r << (shift + _U1))
    conv = _convert(s, m)  # (2, N, m)
    neg = (np.uint64(0) - t[1])[:, None]
    last = ((conv[1] - conv[0] - V) ^ neg) - neg
    keys[:, words - m :, :] = last.T[None]


def _check_impl(impl: str) -> None:
    if impl not in ("compiled", "numpy"):
        raise ValueError(f"DCF implementation is 'compiled' or 'numpy', got {impl!r}")


def dcf_keygen(
    alpha: torch.Tensor, beta: torch.Tensor, n_bits: int, seed: bytes, impl: Impl = "compiled"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of ``f(x) = beta if x < alpha else 0`` for every element, vectorised.

    ``alpha``: int64 ``(N,)``, the unsigned bit pattern of an ``n_bits``-bit value.
    ``beta``: int64 ``(N, m)`` payloads in Z_2^64. ``seed``: :func:`dcf_seed_bytes` uniform
    bytes (the root seeds; draw them from the dealer's cryptographic PRG). Returns the two
    parties' keys, int64 ``(W, N)`` with the layout of the module doc. ``impl``: see
    :data:`Impl` (both give the same keys).
    """
    _check_impl(impl)
    if alpha.dim() != 1 or beta.dim() != 2 or beta.shape[0] != alpha.shape[0]:
        raise ValueError(f"alpha (N,) and beta (N, m), got {alpha.shape} and {beta.shape}")
    N, m = beta.shape
    _check_dcf(n_bits, m)
    if len(seed) != dcf_seed_bytes(N):
        raise ValueError(f"dcf_keygen needs {dcf_seed_bytes(N)} seed bytes, got {len(seed)}")
    a, b = u64(alpha), u64(beta)
    if n_bits < 64 and bool(np.any(a >> np.uint64(n_bits))):
        raise ValueError(f"alpha does not fit in {n_bits} bits")
    roots = np.frombuffer(seed, dtype=np.uint64).reshape(2, N, 2)
    if impl == "compiled":
        both = fss_kernel.keygen(
            a.view(np.int64), b.view(np.int64), n_bits, roots.view(np.int64), KERNEL_CHUNK
        )
        return torch.from_numpy(both[0]), torch.from_numpy(both[1])
    keys = np.zeros((2, dcf_key_words(n_bits, m), N), dtype=np.uint64)
    for lo in range(0, N, CHUNK):
        hi = min(N, lo + CHUNK)
        _keygen_chunk(a[lo:hi], b[lo:hi], n_bits, roots[:, lo:hi], keys[:, :, lo:hi])
    return torch.from_numpy(keys[0].view(np.int64)), torch.from_numpy(keys[1].view(np.int64))


def _eval_chunk(rank: int, key: np.ndarray, x: np.ndarray, n_bits: int, m: int) -> np.ndarray:
    N = x.shape[0]
    h = (m + 1) // 2
    words = dcf_key_words(n_bits, m)
    s = key[0:2].T.copy()
    t = np.full(N, rank, dtype=np.uint64)
    V = np.zeros((N, m), dtype=np.uint64)
    steps = np.arange(h + 1, dtype=np.uint64)
    vrow, trow = 2 + 2 * n_bits, 2 + (2 + m) * n_bits
    for i in range(n_bits):
        xb = _bit(x, n_bits, i)
        out = fixed_key_aes(_tweaked(s, xb[:, None] * np.uint64(h + 1) + steps))
        s_new, t_new, v = _split_child(out, m)
        shift = np.uint64(2 * (i % 32)) + xb  # t_CW^L, or t_CW^R one bit up
        t_cw = (key[trow + i // 32] >> shift) & _U1
        s_new ^= (np.uint64(0) - t)[:, None] & key[2 + 2 * i : 4 + 2 * i].T
        V += v + t[:, None] * key[vrow + m * i : vrow + m * (i + 1)].T
        t_new ^= t & t_cw
        s, t = s_new, t_new
    V += _convert(s, m) + t[:, None] * key[words - m :].T
    return np.uint64(0) - V if rank else V


def dcf_eval(
    rank: int, key: torch.Tensor, x: torch.Tensor, n_bits: int, m: int = 1, impl: Impl = "compiled"
) -> torch.Tensor:
    """Party ``rank``'s share of ``f(x)`` for every element: int64 ``(N, m)``.

    ``key``: this party's int64 ``(W, N)`` key; ``x``: int64 ``(N,)``, unsigned ``n_bits``-bit
    bit patterns (public to the evaluator). Vectorised over all elements, level by level.
    ``impl``: see :data:`Impl` (both give the same shares).
    """
    _check_impl(impl)
    _check_dcf(n_bits, m)
    if rank not in (0, 1):
        raise ValueError(f"DCF keys belong to party 0 or 1, got rank {rank}")
    N = x.shape[0]
    if x.dim() != 1 or tuple(key.shape) != (dcf_key_words(n_bits, m), N):
        raise ValueError(f"key {tuple(key.shape)} does not fit x {tuple(x.shape)}, n={n_bits}")
    k, xu = u64(key), u64(x)
    if n_bits < 64:
        xu = xu & np.uint64((1 << n_bits) - 1)
    out = np.empty((N, m), dtype=np.uint64)
    if impl == "compiled":
        as_int = np.int64
        fss_kernel.evaluate(
            rank,
            np.ascontiguousarray(k.view(as_int)),
            xu.view(as_int),
            n_bits,
            out.view(as_int),
            KERNEL_CHUNK,
        )
        return i64(out)
    for lo in range(0, N, CHUNK):
        hi = min(N, lo + CHUNK)
        out[lo:hi] = _eval_chunk(rank, k[:, lo:hi], xu[lo:hi], n_bits, m)
    return i64(out)


def warm_up() -> float:
    """Load (or, with a cold on-disk cache, compile) the DCF kernels now; seconds taken.

    The first DCF call of a process pays numba's start-up: ~0.4-0.6 s with the kernels
    cached on disk, ~5-6 s when they must be compiled (a fresh clone's first run: the level
    kernels and the one-call drivers of small batches, ~3 s each). A long-lived process can
    call this before its timed work so the first op does not."""
    t0 = time.perf_counter()
    one = torch.ones(1, dtype=torch.int64)
    saved = fss_kernel.IN_KERNEL_AES
    try:
        for in_kernel in {saved, False}:  # both paths a process may take
            fss_kernel.IN_KERNEL_AES = in_kernel
            k0, _ = dcf_keygen(one, one[:, None], 2, bytes(dcf_seed_bytes(1)))
            dcf_eval(0, k0, one, 2)
    finally:
        fss_kernel.IN_KERNEL_AES = saved
    return time.perf_counter() - t0
