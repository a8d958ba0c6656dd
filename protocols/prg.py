"""A cryptographic pseudo-random generator: AES-256 in counter mode.

torch's generator is not cryptographic, so every share and every piece of dealer material
comes from here. A :class:`Prg` is a 256-bit key; each draw names a *label* (an operation
id and a stream number), which becomes the high 96 bits of the initial counter block, so
two holders of the same key derive the same stream for the same label without talking,
and different labels give independent streams (disjoint counter ranges). AES-256-CTR
replaced ChaCha20 (the earlier PRG, same key size and labels): with AES-NI/VAES it writes
keystream ~1.5x as fast here (5.9-7.0 against 4.1-4.6 GB/s into fresh arrays of 1-8 MiB,
``update_into``), and PRG draws were ~12-14% of a Network A step. :meth:`Prg.fresh` draws the key from the OS; :meth:`Prg.from_seed`
derives it from an integer and is deterministic, which is for tests and reproducible runs
only and is **insecure**.

Two paths, the same bytes (tests/test_prg_kernel.py). When the CPU has the AES
instructions and numba compiles for the host (:data:`IN_KERNEL_AES`, which is
``aesni.available()``), every draw is one call of the compiled kernel of
:mod:`protocols.aesctr` (the key schedule computed once per key, in constant time; VAES on
zmm here); otherwise ``cryptography``'s (OpenSSL's) AES-256-CTR. The kernel was faster at
every size measured (16 B to 16 MiB, interleaved medians, 2026-12-03, machine lightly
loaded), so it takes every size: 1.6-2.8 against 5.8-9.0 us per draw of 16 B to 4 KiB
(3.1-3.6x: OpenSSL pays ~5 us of cipher set-up per draw and a training step makes dozens
of small ones), 2.0-2.7x from 64 KiB to 16 MiB (~14 against ~7 GB/s: OpenSSL's figure is
that of one block per ``aesenc``, the kernel's ``vaesenc`` on zmm does four).
"""

from __future__ import annotations

import hashlib
import os
import struct
from functools import lru_cache
from math import prod
from typing import Any

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import aesctr

KEY_BYTES = 32
MAX_BYTES_PER_LABEL = 16 * 2**32
"""One label's counter range: 2^32 AES blocks (the low 32 bits of the counter block), so
the counter never carries into the label bits."""

IN_KERNEL_AES = aesctr.available()
"""Whether :meth:`Prg.random_array` uses the compiled kernel (:mod:`protocols.aesctr`);
otherwise ``cryptography``'s AES-256-CTR (the same bytes)."""

FIXED_AES_KEY = hashlib.sha256(b"smpc fixed-key AES (public)").digest()[:16]
"""The public AES-128 key of :func:`fixed_key_aes` (a constant, not a secret)."""


class Prg:
    """AES-256-CTR keystream generator addressed by ``(op_id, stream)`` labels."""

    __slots__ = ("_counter", "_key", "_round_keys")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"a PRG key is {KEY_BYTES} bytes, got {key!r:.40}")
        self._key = bytes(key)
        self._counter = 0
        self._round_keys: np.ndarray | None = None  # the kernel's schedule, on first use

    @classmethod
    def fresh(cls) -> Prg:
        """A key from the operating system's CSPRNG."""
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_seed(cls, seed: int, purpose: str) -> Prg:
        """Deterministic and INSECURE: anyone who knows ``seed`` knows every draw."""
        return cls(hashlib.sha256(f"smpc-seed:{seed}:{purpose}".encode()).digest())

    @property
    def key(self) -> bytes:
        return self._key

    def random_array(self, n: int, label: tuple[int, int]) -> np.ndarray:
        """``n`` keystream bytes for ``label = (op id, stream)`` as a fresh, writable uint8
        array (every draw goes through here). The op id must fit 64 bits and the stream 32
        (they form the counter block's high 96 bits: nothing is masked away, so two labels
        never alias), and one label yields at most 2**32 blocks of 16 bytes (the 32-bit
        block counter never carries into the label). The keystream is written straight into
        the array: by the compiled kernel (:mod:`protocols.aesctr`, whole blocks, the
        array's tail past ``n`` cut off) when :data:`IN_KERNEL_AES`, else by
        ``update_into`` over a shared zero source (``update(bytes(n))`` and a copy into a
        tensor took 3x as long: 1.0 against 3.2 GB/s measured)."""
        op_id, stream = label
        if not (isinstance(op_id, int) and 0 <= op_id < 2**64):
            raise ValueError(f"PRG label op id {op_id!r} is not an unsigned 64-bit integer")
        if not (isinstance(stream, int) and 0 <= stream < 2**32):
            raise ValueError(f"PRG label stream {stream!r} is not an unsigned 32-bit integer")
        if not 0 <= n <= MAX_BYTES_PER_LABEL:
            raise ValueError(f"{n} bytes from one PRG label exceed the 32-bit block counter")
        # CTR increments the whole 16-byte block as a big-endian integer: label on top,
        # the block counter in the low 4 bytes, from 0.
        block = struct.pack(">QII", op_id, stream, 0)
        if IN_KERNEL_AES:
            rk = self._round_keys
            if rk is None:
                rk = self._round_keys = aesctr.round_keys(self._key)
            arr = np.empty((n + 15) & ~15, np.uint8)
            lo, hi = _WORDS.unpack(block)
            # the buffer is built here whole-block and contiguous, the schedule by
            # round_keys: the kernel itself, without keystream()'s checks (~1 us a draw)
            aesctr.KERNELS[aesctr.best()](rk, arr.view(np.int64), lo, hi, 0)
            return arr[:n]
        enc = Cipher(algorithms.AES(self._key), modes.CTR(block)).encryptor()
        out = np.empty(n + 16, np.uint8)  # update_into wants room for a block's slack
        done = enc.update_into(_zeros(n), out.data) if n else 0
        if done != n:  # pragma: no cover - a stream cipher returns every byte at once
            raise AssertionError("AES-CTR returned a partial keystream")
        return out[:n]

    def random_bytes(self, n: int, label: tuple[int, int]) -> bytes:
        """The same keystream as :meth:`random_array`, as bytes."""
        return self.random_array(n, label).tobytes()

    def next_label(self) -> tuple[int, int]:
        """A label never used before by this generator, for fresh (uncorrelated) draws."""
        self._counter += 1
        return (self._counter, 0xFFFFFFFF)

    def ring(self, shape: tuple[int, ...], label: tuple[int, int] | None = None) -> torch.Tensor:
        """Uniform elements of Z_2^64 as int64."""
        n = prod(shape)
        raw = self.random_array(8 * n, label or self.next_label())
        return torch.from_numpy(raw.view(np.int64)).reshape(shape)

    def bits(self, shape: tuple[int, ...], label: tuple[int, int] | None = None) -> torch.Tensor:
        """Uniform bits as a bool tensor."""
        n = prod(shape)
        raw = self.random_array((n + 7) // 8, label or self.next_label())
        return torch.from_numpy(np.unpackbits(raw)[:n].astype(np.bool_)).reshape(shape)


_WORDS = struct.Struct("<qq")  # a counter block as the kernel's two little-endian words
_ZEROS = np.zeros(0, np.uint8)


def _zeros(n: int) -> memoryview:
    """A read-only source of ``n`` zero bytes for the cipher, grown (never shrunk) on demand."""
    global _ZEROS
    if _ZEROS.size < n:
        _ZEROS = np.zeros(max(n, 2 * _ZEROS.size), np.uint8)
        _ZEROS.flags.writeable = False
    return _ZEROS[:n].data


@lru_cache(maxsize=1)
def _fixed_encryptor() -> Any:
    """One ECB encryptor for the public key, reused: ECB has no state between whole
    blocks, so every update is independent (set-up cost paid once per process)."""
    return Cipher(algorithms.AES(FIXED_AES_KEY), modes.ECB()).encryptor()


def fixed_key_aes(blocks: np.ndarray) -> np.ndarray:
    """Matyas-Meyer-Oseas over fixed-key AES: ``pi(x) XOR x`` for every 128-bit block.

    ``blocks`` is a uint64 array whose last axis has length 2 (one 128-bit block as two
    words); the result has the same shape. ``pi`` is AES-128 under the public constant
    :data:`FIXED_AES_KEY`, applied to the whole batch in ONE ECB call (AES-NI through
    OpenSSL). In the random-permutation model for ``pi``, ``x -> pi(x) XOR x`` is a
    correlation-robust hash, the usual PRG of fixed-key-AES FSS implementations; callers
    give distinct blocks distinct tweaks (XORed into the input) to expand one seed into
    several blocks.
    """
    data = np.ascontiguousarray(blocks, dtype=np.uint64)
    if data.shape[-1:] != (2,):
        raise ValueError(f"blocks must end in an axis of 2 words, got shape {data.shape}")
    nbytes = data.nbytes
    out = np.empty(nbytes + 16, dtype=np.uint8)
    enc = _fixed_encryptor()
    done = enc.update_into(data.reshape(-1).view(np.uint8).data, out.data) if nbytes else 0
    if done != nbytes:  # pragma: no cover - ECB on whole blocks returns everything at once
        raise AssertionError("fixed-key AES returned a partial batch")
    result = out[:nbytes].view(np.uint64).reshape(data.shape)
    result ^= data
    return result
