"""The DCF's key generation and evaluation as compiled (numba) level kernels.

Same construction, PRG, tweaks and key layout as the numpy reference in
:mod:`protocols.dcf` (whose module doc states them), bit for bit. What changes is the
shape of the work: the numpy code spends ~40 array calls per level, which for a handful of
elements is pure call overhead (~10 ms per 8-element ReLU over 63 levels). Here each level
is ONE batched AES-ECB call (OpenSSL through ``cryptography``, AES-NI, constant time) and
ONE compiled kernel that applies the Matyas-Meyer-Oseas XOR, does the level's arithmetic
for every element, writes the correction words and already builds the next level's AES
input blocks. The level loop stays in Python around the AES call, except for small batches
(:data:`IN_KERNEL_MAX`), where the AES runs inside the kernels (:mod:`protocols.aesni`) and
the whole loop is one compiled call: there the ~2.5 us of calls per level were most of the
cost.

Constant time. The AES is OpenSSL's; the kernels select with masks (``-bit & word``), not
branches on secret bits (alpha's bits at the dealer; the control bits at a party), like the
numpy reference. They never look anything up by a secret index.

Everything runs on the int64 reading of the words (two's complement: ``+ - * ^ & |``
and ``<<`` give the same bits as on uint64, and ``(w >> k) & 1`` is bit k either way), so
no uint64/int64 promotion to float can creep in. Kernels are compiled on first use and
cached on disk (``cache=True``, in ``__pycache__`` beside this file).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numba import njit

from . import aesni
from .prg import FIXED_AES_KEY

IN_KERNEL_AES = aesni.available()
"""Whether small key generations and evaluations run as ONE compiled call each, with the AES
inside the kernels (:mod:`protocols.aesni`); otherwise (no AES instructions on this CPU, a
large batch, or a test's choice) the level loop runs in Python around OpenSSL's AES. Same
output either way."""
IN_KERNEL_MAX = {"keygen": 1024, "eval": 1024}
"""Most elements for which the in-kernel AES is used. Per level the Python loop costs ~2.5 us
of calls, which the in-kernel AES saves; beyond ~2^9 elements the two are alike per block
(OpenSSL's own AES pipelines more blocks than the kernels' 4 at a time). ``python
scripts/bench_fss.py 3 7 8 9 10 12 --no-reference`` measured (ReLU, in-kernel / OpenSSL):
key generation 0.07 / 0.18 ms at 8 elements, 0.53 / 0.66 at 128, 2.57 / 2.60 at 512, 16.2 /
18.5 at 4096; evaluation 0.04 / 0.13, 0.24 / 0.34, 0.88 / 0.91 and 5.2 / 5.8 ms."""


@lru_cache(maxsize=1)
def _encryptor() -> Any:
    """One ECB encryptor under the public fixed key (ECB keeps no state between blocks)."""
    return Cipher(algorithms.AES(FIXED_AES_KEY), modes.ECB()).encryptor()


class _Aes:
    """AES-ECB from ``blocks`` (int64, any shape, 16 bytes per block) into ``out`` (the same
    shape), reusing one output buffer: ``update_into`` wants 15 spare bytes."""

    def __init__(self, blocks: np.ndarray) -> None:
        self.src = blocks.reshape(-1).view(np.uint8).data
        self.buf = np.empty(blocks.nbytes + 16, np.uint8)
        self.out = self.buf[: blocks.nbytes].view(np.int64).reshape(blocks.shape)
        self.nbytes = blocks.nbytes

    def __call__(self) -> np.ndarray:
        if self.nbytes and _encryptor().update_into(self.src, self.buf) != self.nbytes:
            raise AssertionError("fixed-key AES returned a partial batch")  # pragma: no cover
        return self.out


# -- key generation ------------------------------------------------------------------------
#
# Working state, one row per element (one memory stream, not one per field): party 0's seed
# (2 words), party 1's seed, t_0, t_1, then V (m words). ``enc`` is the AES output of the
# level's blocks; the MMO input is recomputed from the state's seeds and the tweaks, so the
# block buffer is write-only here.

_S = 6
"""Words of an element's gen state before V."""


@njit(cache=True)
def _gen_init(
    roots: np.ndarray, lo: int, st: np.ndarray, keys: np.ndarray, blocks: np.ndarray
) -> None:
    """Root seeds (bit 0 cleared) into the state and the keys' rows 0, 1; ``t = (0, 1)``,
    V = 0; level 0's blocks (tweaks ``0 .. 2h+1``)."""
    for e in range(st.shape[0]):
        for p in range(2):
            s0 = roots[p, lo + e, 0] & -2
            s1 = roots[p, lo + e, 1]
            st[e, 2 * p] = s0
            st[e, 2 * p + 1] = s1
            keys[p, 0, lo + e] = s0
            keys[p, 1, lo + e] = s1
            for k in range(blocks.shape[2]):
                blocks[p, e, k, 0] = s0 ^ k
                blocks[p, e, k, 1] = s1
        st[e, 4] = 0
        st[e, 5] = 1
        for j in range(_S, st.shape[1]):
            st[e, j] = 0


@njit(cache=True)
def _gen_level(
    i: int,
    n_bits: int,
    lo: int,
    alpha: np.ndarray,
    beta: np.ndarray,
    blocks: np.ndarray,
    enc: np.ndarray,
    st: np.ndarray,
    keys: np.ndarray,
    tweak0: int,
    count: int,
) -> None:
    """Level ``i`` of Gen for every element, from the AES output ``enc`` of the level's
    blocks; writes the level's correction words and refills ``blocks`` from the new seeds
    with tweaks ``tweak0 .. tweak0 + count - 1`` (the next level's, or Convert's)."""
    m = st.shape[1] - _S
    h = (m + 1) // 2
    vrow = 2 + 2 * n_bits + m * i
    trow = 2 + (2 + m) * n_bits + i // 32
    shift = 2 * (i % 32)
    for e in range(st.shape[0]):
        a = (alpha[lo + e] >> (n_bits - 1 - i)) & 1
        ma = -a  # all ones where alpha goes right: keep = R, lose = L
        p00, p01, p10, p11 = st[e, 0], st[e, 1], st[e, 2], st[e, 3]
        t0, t1 = st[e, 4], st[e, 5]
        # children seeds and control bits of both parties (MMO: AES(x) ^ x)
        l00 = enc[0, e, 0, 0] ^ p00
        l01 = enc[0, e, 0, 1] ^ p01
        l10 = enc[1, e, 0, 0] ^ p10
        l11 = enc[1, e, 0, 1] ^ p11
        r00 = enc[0, e, h + 1, 0] ^ p00 ^ (h + 1)
        r01 = enc[0, e, h + 1, 1] ^ p01
        r10 = enc[1, e, h + 1, 0] ^ p10 ^ (h + 1)
        r11 = enc[1, e, h + 1, 1] ^ p11
        tl0, tl1, tr0, tr1 = l00 & 1, l10 & 1, r00 & 1, r10 & 1
        l00 &= -2
        l10 &= -2
        r00 &= -2
        r10 &= -2
        f = (l00 ^ r00) & ma
        keep00, lose00 = l00 ^ f, r00 ^ f
        f = (l01 ^ r01) & ma
        keep01, lose01 = l01 ^ f, r01 ^ f
        f = (l10 ^ r10) & ma
        keep10, lose10 = l10 ^ f, r10 ^ f
        f = (l11 ^ r11) & ma
        keep11, lose11 = l11 ^ f, r11 ^ f
        scw0 = lose00 ^ lose10
        scw1 = lose01 ^ lose11
        neg = -t1  # (-1)^t1 as a mask: v -> (v ^ neg) - neg
        for j in range(m):
            w = 1 + (j >> 1)
            q = j & 1
            # the tweak is in the low word (q = 0) only
            tl = w * (1 - q)
            tr = (h + 1 + w) * (1 - q)
            pq0 = st[e, q]
            pq1 = st[e, 2 + q]
            vl0 = enc[0, e, w, q] ^ pq0 ^ tl
            vl1 = enc[1, e, w, q] ^ pq1 ^ tl
            vr0 = enc[0, e, h + 1 + w, q] ^ pq0 ^ tr
            vr1 = enc[1, e, h + 1 + w, q] ^ pq1 ^ tr
            f = (vl0 ^ vr0) & ma
            vkeep0, vlose0 = vl0 ^ f, vr0 ^ f
            f = (vl1 ^ vr1) & ma
            vkeep1, vlose1 = vl1 ^ f, vr1 ^ f
            v = st[e, _S + j]
            vcw = vlose1 - vlose0 - v + beta[lo + e, j] * a
            vcw = (vcw ^ neg) - neg
            st[e, _S + j] = v - vkeep1 + vkeep0 + ((vcw ^ neg) - neg)
            keys[0, vrow + j, lo + e] = vcw
            keys[1, vrow + j, lo + e] = vcw
        tcwl = tl0 ^ tl1 ^ a ^ 1
        tcwr = tr0 ^ tr1 ^ a
        tcwkeep = tcwl ^ ((tcwl ^ tcwr) & a)
        tkeep0 = tl0 ^ ((tl0 ^ tr0) & a)
        tkeep1 = tl1 ^ ((tl1 ^ tr1) & a)
        s00 = keep00 ^ (-t0 & scw0)
        s01 = keep01 ^ (-t0 & scw1)
        s10 = keep10 ^ (-t1 & scw0)
        s11 = keep11 ^ (-t1 & scw1)
        st[e, 0], st[e, 1], st[e, 2], st[e, 3] = s00, s01, s10, s11
        st[e, 4] = tkeep0 ^ (t0 & tcwkeep)
        st[e, 5] = tkeep1 ^ (t1 & tcwkeep)
        bits = (tcwl << shift) | (tcwr << (shift + 1))
        for p in range(2):
            keys[p, 2 + 2 * i, lo + e] = scw0
            keys[p, 3 + 2 * i, lo + e] = scw1
            keys[p, trow, lo + e] |= bits
        for k in range(count):
            blocks[0, e, k, 0] = s00 ^ (tweak0 + k)
            blocks[0, e, k, 1] = s01
            blocks[1, e, k, 0] = s10 ^ (tweak0 + k)
            blocks[1, e, k, 1] = s11


@njit(cache=True)
def _gen_leaf(lo: int, enc: np.ndarray, st: np.ndarray, keys: np.ndarray, tweak0: int) -> None:
    """``CW_{n+1} = (-1)^t1 (Convert(s_1) - Convert(s_0) - V)`` into the last m rows;
    ``enc``: AES of the Convert blocks (tweaks from ``tweak0``)."""
    m = st.shape[1] - _S
    first = keys.shape[1] - m
    for e in range(st.shape[0]):
        neg = -st[e, 5]
        for j in range(m):
            w = j >> 1
            q = j & 1
            tw = (tweak0 + w) * (1 - q)
            c0 = enc[0, e, w, q] ^ st[e, q] ^ tw
            c1 = enc[1, e, w, q] ^ st[e, 2 + q] ^ tw
            last = ((c1 - c0 - st[e, _S + j]) ^ neg) - neg
            keys[0, first + j, lo + e] = last
            keys[1, first + j, lo + e] = last


@njit(cache=True)
def _keygen_compiled(
    alpha: np.ndarray,
    beta: np.ndarray,
    n_bits: int,
    roots: np.ndarray,
    keys: np.ndarray,
    chunk: int,
    rk: np.ndarray,
) -> None:
    """:func:`keygen`'s chunk and level loops with the AES in the kernel (one call)."""
    N, m = beta.shape
    h = (m + 1) // 2
    for lo in range(0, N, chunk):
        n = min(chunk, N - lo)
        st = np.empty((n, _S + m), np.int64)
        blocks = np.empty((2, n, 2 * h + 2, 2), np.int64)
        enc = np.empty_like(blocks)
        flat_in, flat_out = blocks.reshape(-1, 2), enc.reshape(-1, 2)
        _gen_init(roots, lo, st, keys, blocks)
        for i in range(n_bits):
            tweak0, count = (2 * h + 2, h) if i == n_bits - 1 else (0, 2 * h + 2)
            aesni.ecb(rk, flat_in, flat_out)
            _gen_level(i, n_bits, lo, alpha, beta, blocks, enc, st, keys, tweak0, count)
        aesni.ecb(rk, flat_in, flat_out)
        _gen_leaf(lo, enc, st, keys, 2 * h + 2)


def keygen(
    alpha: np.ndarray, beta: np.ndarray, n_bits: int, roots: np.ndarray, chunk: int
) -> np.ndarray:
    """Both parties' keys, int64 ``(2, W, N)``, from ``alpha`` (int64 ``(N,)``), ``beta``
    (int64 ``(N, m)``) and the root words ``roots`` (int64 ``(2, N, 2)``), ``chunk``
    elements at a time (bounds the AES buffers)."""
    N, m = beta.shape
    h = (m + 1) // 2
    words = 2 + (2 + m) * n_bits + -(-2 * n_bits // 64) + m
    keys = np.zeros((2, words, N), np.int64)  # zeroed: the control-bit words are OR-ed in
    if IN_KERNEL_AES and IN_KERNEL_MAX["keygen"] >= N:
        _keygen_compiled(alpha, beta, n_bits, roots, keys, chunk, aesni.FIXED_ROUND_KEYS)
        return keys
    for lo in range(0, N, chunk):
        n = min(chunk, N - lo)
        st = np.empty((n, _S + m), np.int64)
        blocks = np.empty((2, n, 2 * h + 2, 2), np.int64)
        aes = _Aes(blocks)
        _gen_init(roots, lo, st, keys, blocks)
        for i in range(n_bits):
            tweak0, count = (2 * h + 2, h) if i == n_bits - 1 else (0, 2 * h + 2)
            _gen_level(i, n_bits, lo, alpha, beta, blocks, aes(), st, keys, tweak0, count)
        _gen_leaf(lo, aes(), st, keys, 2 * h + 2)
    return keys


# -- evaluation ----------------------------------------------------------------------------
#
# State per element: the seed (2 words), t, then V (m words).


@njit(cache=True)
def _eval_init(
    rank: int,
    n_bits: int,
    lo: int,
    key: np.ndarray,
    x: np.ndarray,
    st: np.ndarray,
    blocks: np.ndarray,
) -> None:
    """The root seed, ``t = rank``, V = 0 and level 0's blocks (the child x's first bit
    takes: tweaks ``x_0 (h+1) .. x_0 (h+1) + h``)."""
    h = blocks.shape[1] - 1
    for e in range(st.shape[0]):
        s0 = key[0, lo + e]
        s1 = key[1, lo + e]
        st[e, 0] = s0
        st[e, 1] = s1
        st[e, 2] = rank
        for j in range(3, st.shape[1]):
            st[e, j] = 0
        base = ((x[lo + e] >> (n_bits - 1)) & 1) * (h + 1)
        for k in range(h + 1):
            blocks[e, k, 0] = s0 ^ (base + k)
            blocks[e, k, 1] = s1


@njit(cache=True)
def _eval_level(
    i: int,
    n_bits: int,
    lo: int,
    key: np.ndarray,
    x: np.ndarray,
    blocks: np.ndarray,
    enc: np.ndarray,
    st: np.ndarray,
) -> None:
    """Level ``i`` of Eval for every element; refills ``blocks`` for level ``i + 1`` (or,
    after the last level, with Convert's tweaks ``2h+2 .. 3h+1``)."""
    m = st.shape[1] - 3
    h = (m + 1) // 2
    vrow = 2 + 2 * n_bits + m * i
    trow = 2 + (2 + m) * n_bits + i // 32
    last = i == n_bits - 1
    for e in range(st.shape[0]):
        xv = x[lo + e]
        xb = (xv >> (n_bits - 1 - i)) & 1
        base = xb * (h + 1)
        p0, p1, tt = st[e, 0], st[e, 1], st[e, 2]
        s0 = enc[e, 0, 0] ^ p0 ^ base
        s1 = enc[e, 0, 1] ^ p1
        tn = s0 & 1
        s0 &= -2
        mt = -tt
        s0 ^= mt & key[2 + 2 * i, lo + e]
        s1 ^= mt & key[3 + 2 * i, lo + e]
        for j in range(m):
            w = 1 + (j >> 1)
            q = j & 1
            v = enc[e, w, q] ^ st[e, q] ^ ((base + w) * (1 - q))
            st[e, 3 + j] += v + tt * key[vrow + j, lo + e]
        tcw = (key[trow, lo + e] >> (2 * (i % 32) + xb)) & 1
        tn ^= tt & tcw
        st[e, 0] = s0
        st[e, 1] = s1
        st[e, 2] = tn
        if last:
            nb, count = 2 * h + 2, h
        else:
            nb, count = ((xv >> (n_bits - 2 - i)) & 1) * (h + 1), h + 1
        for k in range(count):
            blocks[e, k, 0] = s0 ^ (nb + k)
            blocks[e, k, 1] = s1


@njit(cache=True)
def _eval_leaf(
    rank: int, lo: int, key: np.ndarray, enc: np.ndarray, st: np.ndarray, out: np.ndarray
) -> None:
    """``out = (-1)^rank (V + Convert(s) + t CW_{n+1})``."""
    m = st.shape[1] - 3
    h = (m + 1) // 2
    first = key.shape[0] - m
    neg = -rank
    for e in range(st.shape[0]):
        for j in range(m):
            w = j >> 1
            q = j & 1
            c = enc[e, w, q] ^ st[e, q] ^ ((2 * h + 2 + w) * (1 - q))
            y = st[e, 3 + j] + c + st[e, 2] * key[first + j, lo + e]
            out[lo + e, j] = (y ^ neg) - neg


@njit(cache=True)
def _evaluate_compiled(
    rank: int,
    key: np.ndarray,
    x: np.ndarray,
    n_bits: int,
    out: np.ndarray,
    chunk: int,
    rk: np.ndarray,
) -> None:
    """:func:`evaluate`'s chunk and level loops with the AES in the kernel (one call)."""
    N, m = out.shape
    h = (m + 1) // 2
    for lo in range(0, N, chunk):
        n = min(chunk, N - lo)
        st = np.empty((n, 3 + m), np.int64)
        blocks = np.empty((n, h + 1, 2), np.int64)
        enc = np.empty_like(blocks)
        flat_in, flat_out = blocks.reshape(-1, 2), enc.reshape(-1, 2)
        _eval_init(rank, n_bits, lo, key, x, st, blocks)
        for i in range(n_bits):
            aesni.ecb(rk, flat_in, flat_out)
            _eval_level(i, n_bits, lo, key, x, blocks, enc, st)
        aesni.ecb(rk, flat_in, flat_out)
        _eval_leaf(rank, lo, key, enc, st, out)


def evaluate(
    rank: int, key: np.ndarray, x: np.ndarray, n_bits: int, out: np.ndarray, chunk: int
) -> None:
    """Party ``rank``'s shares into ``out`` (int64 ``(N, m)``) from its key (int64
    ``(W, N)``) and the public inputs ``x`` (int64 ``(N,)``)."""
    N, m = out.shape
    if IN_KERNEL_AES and IN_KERNEL_MAX["eval"] >= N:
        _evaluate_compiled(rank, key, x, n_bits, out, chunk, aesni.FIXED_ROUND_KEYS)
        return
    h = (m + 1) // 2
    for lo in range(0, N, chunk):
        n = min(chunk, N - lo)
        st = np.empty((n, 3 + m), np.int64)
        blocks = np.empty((n, h + 1, 2), np.int64)
        aes = _Aes(blocks)
        _eval_init(rank, n_bits, lo, key, x, st, blocks)
        for i in range(n_bits):
            _eval_level(i, n_bits, lo, key, x, blocks, aes(), st)
        _eval_leaf(rank, lo, key, aes(), st, out)
