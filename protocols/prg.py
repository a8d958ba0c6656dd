"""A cryptographic pseudo-random generator: ChaCha20 from the ``cryptography`` package.

torch's generator is not cryptographic, so every share and every piece of dealer material
comes from here. A :class:`Prg` is a 256-bit key; each draw names a *label* (an operation
id and a stream number), which becomes the ChaCha20 nonce, so two holders of the same key
derive the same stream for the same label without talking, and different labels give
independent streams. :meth:`Prg.fresh` draws the key from the OS; :meth:`Prg.from_seed`
derives it from an integer and is deterministic, which is for tests and reproducible runs
only and is **insecure**.
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

KEY_BYTES = 32
MAX_BYTES_PER_LABEL = 64 * 2**32

FIXED_AES_KEY = hashlib.sha256(b"smpc fixed-key AES (public)").digest()[:16]
"""The public AES-128 key of :func:`fixed_key_aes` (a constant, not a secret)."""


class Prg:
    """ChaCha20 keystream generator addressed by ``(op_id, stream)`` labels."""

    __slots__ = ("_counter", "_key")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
            raise ValueError(f"a PRG key is {KEY_BYTES} bytes, got {key!r:.40}")
        self._key = bytes(key)
        self._counter = 0

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

    def random_bytes(self, n: int, label: tuple[int, int]) -> bytes:
        """``n`` keystream bytes for ``label = (op id, stream)``. The op id must fit 64 bits
        and the stream 32 (they form the 96-bit nonce: nothing is masked away, so two labels
        never alias), and one label yields at most 2**32 blocks of 64 bytes (the 32-bit
        block counter never wraps)."""
        return bytes(self.keystream(n, label))

    def keystream(self, n: int, label: tuple[int, int]) -> bytearray:
        """:meth:`random_bytes` in a fresh writable buffer (what tensors are built on).

        The same bytes: ChaCha20 run in place over ``n`` zero bytes is its keystream. In
        place, because ``update(bytes(n))`` allocates the zeros and the output apart and
        was measured ~4x slower on 800 kB draws (Network A's weights)."""
        op_id, stream = label
        if not (isinstance(op_id, int) and 0 <= op_id < 2**64):
            raise ValueError(f"PRG label op id {op_id!r} is not an unsigned 64-bit integer")
        if not (isinstance(stream, int) and 0 <= stream < 2**32):
            raise ValueError(f"PRG label stream {stream!r} is not an unsigned 32-bit integer")
        if not 0 <= n <= MAX_BYTES_PER_LABEL:
            raise ValueError(f"{n} bytes from one PRG label exceed the 32-bit block counter")
        # ChaCha20 in `cryptography` takes a 16-byte nonce: 4-byte block counter, 12-byte nonce.
        nonce = struct.pack("<IQI", 0, op_id, stream)
        buf = bytearray(n)
        if n:
            enc = Cipher(algorithms.ChaCha20(self._key, nonce), mode=None).encryptor()
            if enc.update_into(buf, buf) != n:  # pragma: no cover - a stream cipher returns all
                raise AssertionError("ChaCha20 returned a partial keystream")
        return buf

    def next_label(self) -> tuple[int, int]:
        """A label never used before by this generator, for fresh (uncorrelated) draws."""
        self._counter += 1
        return (self._counter, 0xFFFFFFFF)

    def ring(self, shape: tuple[int, ...], label: tuple[int, int] | None = None) -> torch.Tensor:
        """Uniform elements of Z_2^64 as int64."""
        n = prod(shape)
        if n == 0:
            return torch.empty(shape, dtype=torch.int64)
        raw = self.keystream(8 * n, label or self.next_label())
        return torch.frombuffer(raw, dtype=torch.int64).view(shape)

    def bits(self, shape: tuple[int, ...], label: tuple[int, int] | None = None) -> torch.Tensor:
        """Uniform bits as a bool tensor."""
        n = prod(shape)
        raw = np.frombuffer(self.random_bytes((n + 7) // 8, label or self.next_label()), np.uint8)
        return torch.from_numpy(np.unpackbits(raw)[:n].astype(np.bool_)).reshape(shape)


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
