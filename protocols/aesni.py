"""Fixed-key AES-128 inside numba kernels, on the CPU's AES instructions (AES-NI).

The DCF's level loop (:mod:`protocols.fss_kernel`) needs one AES pass per level over the
level's blocks, and the next level's blocks depend on this level's output. With the AES
in OpenSSL (through ``cryptography``) that is a Python loop of 2 calls per level: 63 levels
times ~2.5 us, ~0.16 ms per key generation or evaluation however few the elements, the
bulk of a small ReLU. Here :func:`ecb` is a compiled function that the level kernels call
directly, so a whole key generation or evaluation is one call.

Constant time: the rounds are the ``aesenc`` / ``aesenclast`` instructions (LLVM's
``llvm.x86.aesni.*`` intrinsics, emitted through :func:`numba.extending.intrinsic`); no
table is ever indexed by a block. The key schedule is computed in Python from the PUBLIC
key :data:`protocols.prg.FIXED_AES_KEY` only (its S-box lookups touch no secret).
:func:`available` (shared with :mod:`protocols.aesctr`, the PRG's AES-256-CTR kernel)
says whether this CPU has the instructions; without them the kernels fall
back to OpenSSL's AES, level by level, with bit-identical output (tests/test_fss.py checks
both against ``cryptography``'s AES-ECB and the numpy reference).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .aesctr import available as available
from .prg import FIXED_AES_KEY

_V2 = ir.VectorType(ir.IntType(64), 2)
_I32 = ir.IntType(32)


def _round(name: str) -> Any:
    """One AES instruction as a numba intrinsic on a block given as two int64 words
    (little-endian halves, as ``np.frombuffer(block, np.int64)`` reads 16 bytes)."""

    @intrinsic
    def step(typingctx: Any, a0: Any, a1: Any, k0: Any, k1: Any) -> Any:
        sig = types.UniTuple(types.int64, 2)(types.int64, types.int64, types.int64, types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            def vec(lo: Any, hi: Any) -> Any:
                v = builder.insert_element(ir.Constant(_V2, ir.Undefined), lo, _I32(0))
                return builder.insert_element(v, hi, _I32(1))

            fn = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(_V2, [_V2, _V2]), name
            )
            r = builder.call(fn, [vec(args[0], args[1]), vec(args[2], args[3])])
            lo, hi = builder.extract_element(r, _I32(0)), builder.extract_element(r, _I32(1))
            return context.make_tuple(builder, signature.return_type, (lo, hi))

        return sig, codegen

    return step


_aesenc = _round("llvm.x86.aesni.aesenc")
_aesenclast = _round("llvm.x86.aesni.aesenclast")


@njit(cache=True)
def ecb(rk: np.ndarray, src: np.ndarray, dst: np.ndarray) -> None:
    """AES-128-ECB of the blocks ``src`` (int64 ``(B, 2)``) into ``dst`` (same shape; may
    be ``src``) under the expanded key ``rk`` (int64 ``(11, 2)``, :func:`round_keys`).

    Four blocks go through the rounds together: one block's rounds depend on each other
    (~4 cycles of latency each), four independent ones fill the AES unit's pipeline as
    OpenSSL's own ECB does (measured ~2x faster than one block at a time)."""
    n = src.shape[0]
    quads = n - n % 4
    for b in range(0, quads, 4):
        a0, a1 = src[b, 0] ^ rk[0, 0], src[b, 1] ^ rk[0, 1]
        b0, b1 = src[b + 1, 0] ^ rk[0, 0], src[b + 1, 1] ^ rk[0, 1]
        c0, c1 = src[b + 2, 0] ^ rk[0, 0], src[b + 2, 1] ^ rk[0, 1]
        d0, d1 = src[b + 3, 0] ^ rk[0, 0], src[b + 3, 1] ^ rk[0, 1]
        for r in range(1, 10):
            k0, k1 = rk[r, 0], rk[r, 1]
            a0, a1 = _aesenc(a0, a1, k0, k1)
            b0, b1 = _aesenc(b0, b1, k0, k1)
            c0, c1 = _aesenc(c0, c1, k0, k1)
            d0, d1 = _aesenc(d0, d1, k0, k1)
        k0, k1 = rk[10, 0], rk[10, 1]
        dst[b, 0], dst[b, 1] = _aesenclast(a0, a1, k0, k1)
        dst[b + 1, 0], dst[b + 1, 1] = _aesenclast(b0, b1, k0, k1)
        dst[b + 2, 0], dst[b + 2, 1] = _aesenclast(c0, c1, k0, k1)
        dst[b + 3, 0], dst[b + 3, 1] = _aesenclast(d0, d1, k0, k1)
    for b in range(quads, n):
        a0, a1 = src[b, 0] ^ rk[0, 0], src[b, 1] ^ rk[0, 1]
        for r in range(1, 10):
            a0, a1 = _aesenc(a0, a1, rk[r, 0], rk[r, 1])
        dst[b, 0], dst[b, 1] = _aesenclast(a0, a1, rk[10, 0], rk[10, 1])


def _sbox() -> list[int]:
    """The AES S-box: the inverse in GF(2^8) followed by the affine map (FIPS-197 5.1.1)."""
    box = [0x63] * 256
    p = q = 1
    while True:
        p ^= ((p << 1) ^ (0x1B if p & 0x80 else 0)) & 0xFF  # p *= 3
        q ^= q << 1  # q /= 3
        q ^= q << 2
        q ^= q << 4
        q &= 0xFF
        if q & 0x80:
            q ^= 0x09
        rot = q
        for s in (1, 2, 3, 4):
            rot ^= ((q << s) | (q >> (8 - s))) & 0xFF
        box[p] = rot ^ 0x63
        if p == 1:
            return box


def round_keys(key: bytes) -> np.ndarray:
    """The AES-128 key schedule of a PUBLIC ``key`` (FIPS-197 5.2) as int64 ``(11, 2)``."""
    if len(key) != 16:
        raise ValueError(f"AES-128 takes a 16-byte key, got {len(key)} bytes")
    box, rcon = _sbox(), 1
    words = [list(key[4 * i : 4 * i + 4]) for i in range(4)]
    for i in range(4, 44):
        t = list(words[i - 1])
        if i % 4 == 0:
            t = [box[b] for b in t[1:] + t[:1]]
            t[0] ^= rcon
            rcon = ((rcon << 1) ^ (0x1B if rcon & 0x80 else 0)) & 0xFF
        words.append([a ^ b for a, b in zip(words[i - 4], t, strict=True)])
    return np.frombuffer(bytes(b for w in words for b in w), np.int64).reshape(11, 2).copy()


FIXED_ROUND_KEYS = round_keys(FIXED_AES_KEY)
"""The schedule of the public fixed key the DCF's hash uses."""
