"""AES-256-CTR keystream in a numba kernel on the CPU's AES instructions (the PRG's path).

:class:`protocols.prg.Prg` draws every share and every piece of dealer material as AES-256
in counter mode. Through ``cryptography`` (OpenSSL) each draw pays ~10 us of cipher set-up
and Python before its first byte, and a training step makes dozens of small draws; here
the key schedule is computed once per key (:func:`round_keys`) and a draw is one compiled
call (:func:`keystream`) writing the blocks straight into the output array.

Constant time, the key being SECRET: the schedule's S-box is the ``aeskeygenassist``
instruction (SubWord only, immediate 0; the rotation and the public round constants are
scalar code), the rounds are ``aesenc`` / ``aesenclast``; no table is ever indexed by a
key or state byte. Output is byte-identical to ``cryptography``'s AES-256-CTR for the
counter block ``op_id`` (big-endian, 8 bytes) ``|| stream`` (4) ``|| block index`` (4)
(tests/test_prg_kernel.py).

The rounds run on many independent blocks at once, enough to fill the AES units' pipeline
(~4 cycles of latency, 2 instructions per cycle on Zen 4): :data:`KERNELS` has one kernel
per instruction set, 8 blocks in flight on xmm (``aesenc``, AES-NI), 16 as 8 ymm (VAES,
2 blocks per instruction), 32 as 8 zmm (VAES with AVX-512, 4 per instruction), and
:func:`best` picks the widest the host has. Measured here (Zen 4, fresh arrays, medians):
7.2-7.7 GB/s on xmm, 11.8-13.2 on ymm, 12.9-14.8 on zmm from 64 KiB to 8 MiB (OpenSSL's
CTR 5.5-6.2), so VAES is kept, zmm over ymm by ~10%.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numba
import numpy as np
from llvmlite import binding, ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

ROUNDS = 14
"""AES-256: 14 rounds, 15 round keys."""

_I8, _I32, _I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
_V2 = ir.VectorType(_I64, 2)


def _host_target(feature: str) -> bool:
    """Whether numba compiles for the host and the host has ``feature`` (as LLVM names it):
    a portable target (``NUMBA_CPU_NAME=generic``, or explicit ``NUMBA_CPU_FEATURES``
    without ``+feature``) cannot select the instructions."""
    name = getattr(numba.config, "CPU_NAME", None)
    features = getattr(numba.config, "CPU_FEATURES", None)
    if name not in (None, "host") or (features is not None and f"+{feature}" not in features):
        return False
    return bool(binding.get_host_cpu_features().get(feature, False))


@lru_cache(maxsize=1)
def available() -> bool:
    """Whether this CPU has the AES instructions (as LLVM sees the host) and numba compiles
    for the host (see :func:`_host_target`)."""
    return _host_target("aes")


@lru_cache(maxsize=1)
def vaes_available() -> bool:
    """Whether the 256-bit ``vaesenc`` can be emitted too (host features ``vaes`` and
    ``avx2``, numba targeting the host)."""
    return available() and _host_target("vaes") and _host_target("avx2")


def _subword_impl(typingctx: Any, w: Any) -> Any:
    """FIPS-197 SubWord of the 32-bit word ``w`` (little-endian byte order, in an int64)
    by ``aeskeygenassist`` with immediate 0: the word goes into dword 1, whose S-box image
    the instruction returns in dword 0 (no rotation, no round constant)."""
    sig = types.int64(types.int64)

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        lo = builder.shl(builder.and_(args[0], _I64(0xFFFFFFFF)), _I64(32))
        v = builder.insert_element(ir.Constant(_V2, [0, 0]), lo, _I32(0))
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(_V2, [_V2, _I8]), "llvm.x86.aesni.aeskeygenassist"
        )
        r = builder.extract_element(builder.call(fn, [v, _I8(0)]), _I32(0))
        return builder.and_(r, _I64(0xFFFFFFFF))

    return sig, codegen


_subword: Any = intrinsic(_subword_impl)


@njit(cache=True)
def _expand(words: np.ndarray) -> None:
    """FIPS-197 5.2 for Nk = 8: ``words`` (int64, 60) holds the key's eight 32-bit words
    (little-endian) in its first 8 entries and receives the other 52. Branches depend on
    the word index only; the round constants (0x01 .. 0x40) are public."""
    rcon = 1
    for i in range(8, 60):
        t = words[i - 1]
        if i % 8 == 0:
            t = _subword(((t >> 8) | (t << 24)) & 0xFFFFFFFF) ^ rcon  # SubWord(RotWord)
            rcon <<= 1
        elif i % 8 == 4:
            t = _subword(t)
        words[i] = words[i - 8] ^ t


def round_keys(key: bytes) -> np.ndarray:
    """The AES-256 key schedule of a SECRET ``key`` (constant time) as int64 ``(15, 2)``:
    round key ``r`` is ``rk[r]``, its 16 bytes read as two little-endian words. Needs
    :func:`available`."""
    if len(key) != 32:
        raise ValueError(f"AES-256 takes a 32-byte key, got {len(key)} bytes")
    words = np.zeros(4 * (ROUNDS + 1), np.int64)
    words[:8] = np.frombuffer(key, "<u4")
    _expand(words)
    return words.astype("<u4").view(np.int64).reshape(ROUNDS + 1, 2).copy()


def _ctr_group(blocks: int, lanes: int) -> Any:
    """An intrinsic ``group(rk, out, b, first, lo, hi)`` writing the keystream blocks of
    index ``first + b`` .. ``first + b + blocks - 1`` (< 2^32) into ``out``'s blocks ``b`` ..
    ``b + blocks - 1`` (int64, two words a block; not bounds-checked) under the schedule
    ``rk`` (:func:`round_keys`); ``lo`` and ``hi`` are the label's counter block as two
    little-endian words, its block index (big-endian, bytes 12-15) 0.
    ``lanes`` blocks share one instruction: 1 is ``aesenc`` on xmm, 2 and 4 are VAES on ymm
    and zmm. The
    rounds are unrolled straight-line IR on vectors (nothing goes back through scalars)."""
    suffix = {1: "", 2: ".256", 4: ".512"}[lanes]
    vec = ir.VectorType(_I64, 2 * lanes)
    fnty = ir.FunctionType(vec, [vec, vec])
    groups = blocks // lanes

    @intrinsic
    def group(typingctx: Any, rk: Any, out: Any, b: Any, first: Any, lo: Any, hi: Any) -> Any:
        sig = types.void(rk, out, types.int64, types.int64, types.int64, types.int64)

        def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
            rk_arr = context.make_array(signature.args[0])(context, builder, args[0])
            out_arr = context.make_array(signature.args[1])(context, builder, args[1])
            b, first, lo, hi = args[2], args[3], args[4], args[5]
            kptr = builder.bitcast(rk_arr.data, _V2.as_pointer())
            mask = ir.Constant(ir.VectorType(_I32, 2 * lanes), [i % 2 for i in range(2 * lanes)])
            keys = []
            for r in range(ROUNDS + 1):
                k = builder.load(builder.gep(kptr, [_I32(r)]), align=8)
                keys.append(k if lanes == 1 else builder.shuffle_vector(k, k, mask))
            # The block index, big-endian in bytes 12-15: bswap64 of a 64-bit word whose
            # value is the index (< 2^32) puts its bswap32 in the high half. One vector add,
            # byte shuffle and OR per group, the same for every lane count.
            width = 2 * lanes
            bswap = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vec, [vec]), f"llvm.bswap.v{width}i64"
            )
            zero = ir.Constant(vec, [0] * width)
            odd = builder.insert_element(zero, builder.add(b, first), _I32(1))
            odd = builder.shuffle_vector(
                odd, zero, ir.Constant(ir.VectorType(_I32, width), [i % 2 for i in range(width)])
            )
            base = builder.insert_element(ir.Constant(vec, ir.Undefined), lo, _I32(0))
            base = builder.insert_element(base, hi, _I32(1))
            base = builder.shuffle_vector(base, base, mask)
            enc = cgutils.get_or_insert_function(
                builder.module, fnty, f"llvm.x86.aesni.aesenc{suffix}"
            )
            last = cgutils.get_or_insert_function(
                builder.module, fnty, f"llvm.x86.aesni.aesenclast{suffix}"
            )
            state = []
            for g in range(groups):
                step = ir.Constant(
                    vec, [(g * lanes + i // 2) if i % 2 else 0 for i in range(width)]
                )
                ctr = builder.call(bswap, [builder.add(odd, step)])
                state.append(builder.xor(builder.or_(base, ctr), keys[0]))
            for r in range(1, ROUNDS):
                state = [builder.call(enc, [s, keys[r]]) for s in state]
            state = [builder.call(last, [s, keys[ROUNDS]]) for s in state]
            optr = builder.bitcast(
                builder.gep(out_arr.data, [builder.shl(b, _I64(1))]), vec.as_pointer()
            )
            for g, s in enumerate(state):
                builder.store(s, builder.gep(optr, [_I32(g)]), align=8)
            return context.get_dummy_value()

        return sig, codegen

    return group


_one = _ctr_group(1, 1)
_eight = _ctr_group(8, 1)
_eight_ymm = _ctr_group(8, 2)
_sixteen_ymm = _ctr_group(16, 2)
_thirty_two_zmm = _ctr_group(32, 4)


@njit(cache=True)
def _keystream_aesni(rk: np.ndarray, out: np.ndarray, lo: int, hi: int, first: int) -> None:
    nblocks, b = out.size // 2, 0
    while b + 8 <= nblocks:
        _eight(rk, out, b, first, lo, hi)
        b += 8
    while b < nblocks:
        _one(rk, out, b, first, lo, hi)
        b += 1


@njit(cache=True)
def _keystream_vaes256(rk: np.ndarray, out: np.ndarray, lo: int, hi: int, first: int) -> None:
    nblocks, b = out.size // 2, 0
    while b + 16 <= nblocks:
        _sixteen_ymm(rk, out, b, first, lo, hi)
        b += 16
    while b + 8 <= nblocks:
        _eight_ymm(rk, out, b, first, lo, hi)
        b += 8
    while b < nblocks:
        _one(rk, out, b, first, lo, hi)
        b += 1


@njit(cache=True)
def _keystream_vaes512(rk: np.ndarray, out: np.ndarray, lo: int, hi: int, first: int) -> None:
    nblocks, b = out.size // 2, 0
    while b + 32 <= nblocks:
        _thirty_two_zmm(rk, out, b, first, lo, hi)
        b += 32
    while b + 8 <= nblocks:
        _eight_ymm(rk, out, b, first, lo, hi)
        b += 8
    while b < nblocks:
        _one(rk, out, b, first, lo, hi)
        b += 1


KERNELS = {"aesni": _keystream_aesni, "vaes256": _keystream_vaes256, "vaes512": _keystream_vaes512}
"""The CTR kernels by instruction set: 8 blocks in flight on xmm (``aesenc``); 16 blocks
as 8 ymm (2 blocks per ``vaesenc``, then 8 as 4 ymm); 32 blocks as 8 zmm (4 per
instruction, then 8 as 4 ymm). The remainder goes one block at a time."""


@lru_cache(maxsize=1)
def best() -> str:
    """The fastest kernel this host can run (see :data:`KERNELS`; needs :func:`available`)."""
    if vaes_available() and _host_target("avx512f"):
        return "vaes512"
    return "vaes256" if vaes_available() else "aesni"


def keystream(rk: np.ndarray, out: np.ndarray, lo: int, hi: int, first: int = 0) -> None:
    """Fill ``out`` (int64, C-contiguous, an even length: two words a block) with the
    AES-256-CTR keystream under ``rk`` for the label's counter block ``lo, hi`` (its two
    little-endian words as signed int64, the low 32 bits of the block 0) from block index
    ``first`` on (``first`` plus the block count at most 2^32: the index never carries into
    the label), with the :func:`best` kernel. The kernels write whole blocks without bounds
    checks, so anything else is refused here (ValueError), before they run."""
    if out.dtype != np.int64 or out.ndim != 1 or out.size % 2 or not out.flags.c_contiguous:
        raise ValueError("keystream writes whole blocks into a contiguous 1-d int64 array")
    if rk.shape != (ROUNDS + 1, 2) or rk.dtype != np.int64 or not rk.flags.c_contiguous:
        raise ValueError(f"an AES-256 schedule is C-contiguous int64 ({ROUNDS + 1}, 2)")
    if not 0 <= first <= 2**32 - out.size // 2:
        raise ValueError("the block index would carry into the label (2^32 blocks a label)")
    KERNELS[best()](rk, out, lo, hi, first)
