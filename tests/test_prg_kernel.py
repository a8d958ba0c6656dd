"""The PRG's compiled AES-256-CTR (protocols.aesctr) against FIPS-197 and OpenSSL.

* the constant-time key schedule (``aeskeygenassist``) on FIPS-197 appendix A.3, and one
  block of encryption on appendix C.3 (through the CTR kernel: the keystream of a counter
  block is its encryption);
* every kernel this host can run, and ``Prg.random_array`` on both of its paths (the
  kernel, and ``cryptography`` forced by turning the kernel off), byte-identical to
  ``cryptography``'s AES-256-CTR computed here directly, for lengths around the block and
  the 8/16/32-block groups and for the extreme labels; a hypothesis property over random
  keys, lengths and labels;
* the returned array's properties (fresh, writable, uint8, length n) and the argument
  checks on both paths.
"""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import aesctr, aesni, prg
from protocols.prg import Prg

needs_aes = pytest.mark.skipif(not aesctr.available(), reason="this CPU has no AES instructions")

LENGTHS = [0, 1, 15, 16, 17, 31, 127, 128, 129, 255, 4095, 4096, 65537, 1_000_003]
LABELS = [(0, 0), (2**64 - 1, 2**32 - 1), (0, 2**32 - 1), (2**64 - 1, 0), (0x0123456789ABCDEF, 7)]
KEYS = [bytes(range(32)), bytes(32), *(os.urandom(32) for _ in range(2))]


def openssl_ctr(key: bytes, label: tuple[int, int], n: int) -> bytes:
    block = struct.pack(">QII", *label, 0)
    return Cipher(algorithms.AES(key), modes.CTR(block)).encryptor().update(bytes(n))


def runnable_kernels() -> list[str]:
    """The kernels whose instructions this host has (``best`` picks among these)."""
    if not aesctr.available():
        return []
    names = ["aesni"]
    if aesctr.vaes_available():
        names.append("vaes256")
        if aesctr._host_target("avx512f"):
            names.append("vaes512")
    return names


def kernel_ctr(name: str, key: bytes, label: tuple[int, int], n: int) -> bytes:
    out = np.empty((n + 15) & ~15, np.uint8)
    lo, hi = struct.unpack("<qq", struct.pack(">QII", *label, 0))
    aesctr.KERNELS[name](aesctr.round_keys(key), out.view(np.int64), lo, hi, 0)
    return out[:n].tobytes()


@needs_aes
def test_aes256_key_schedule_matches_fips_197_a3() -> None:
    """FIPS-197 appendix A.3: the expansion of 603deb10 ... 0914dff4 (w0-w3, w4-w7, w56-w59)."""
    rk = aesctr.round_keys(
        bytes.fromhex("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4")
    )
    assert rk.shape == (15, 2) and rk.dtype == np.int64
    assert rk[0].tobytes().hex() == "603deb1015ca71be2b73aef0857d7781"
    assert rk[1].tobytes().hex() == "1f352c073b6108d72d9810a30914dff4"
    assert rk[2].tobytes().hex() == "9ba354118e6925afa51a8b5f2067fcde"
    assert rk[14].tobytes().hex() == "fe4890d1e6188d0b046df344706c631e"
    with pytest.raises(ValueError, match="32-byte key"):
        aesctr.round_keys(bytes(16))


@pytest.mark.parametrize("name", runnable_kernels())
def test_aes256_encryption_matches_fips_197_c3(name: str) -> None:
    """FIPS-197 appendix C.3: key 000102..1f encrypts 00112233..ff to 8ea2b7ca..4b496089,
    through each kernel. In CTR a keystream block is its counter block's encryption, so the
    plaintext is the label (op id 0x0011223344556677, stream 0x8899aabb) at block index
    0xccddeeff; the kernel is started so that this block falls in each position of its
    32/16/8-block groups and its one-block tail (the others checked against OpenSSL's
    AES-256-ECB of their counter blocks)."""
    key = bytes(range(32))
    rk = aesctr.round_keys(key)
    plain = bytes.fromhex("00112233445566778899aabbccddeeff")
    lo, hi = struct.unpack("<qq", plain[:12] + bytes(4))
    ecb = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    blocks = 45  # one group of 32, one of 8, 5 alone (16 + 16 + 8 + 5 on ymm)
    for pos in range(blocks):
        first = 0xCCDDEEFF - pos
        out = np.zeros(2 * blocks, np.int64)
        aesctr.KERNELS[name](rk, out, lo, hi, first)
        got = out.tobytes()
        assert got[16 * pos : 16 * pos + 16].hex() == "8ea2b7ca516745bfeafc49904b496089"
        if pos in (0, blocks - 1):
            counters = (plain[:12] + struct.pack(">I", first + j) for j in range(blocks))
            assert got == ecb.update(b"".join(counters))


@pytest.mark.parametrize("name", runnable_kernels())
@pytest.mark.parametrize("key", KEYS, ids=["0..31", "zero", "random1", "random2"])
def test_kernels_are_openssl_ctr(name: str, key: bytes) -> None:
    """Each kernel's keystream is ``cryptography``'s AES-256-CTR byte for byte, over the
    lengths and labels (the extremes of the op id and stream) of the module docstring."""
    for n in LENGTHS:
        for label in LABELS:
            assert kernel_ctr(name, key, label, n) == openssl_ctr(key, label, n), (n, label)


@pytest.mark.parametrize("name", runnable_kernels())
def test_the_block_counter_runs_to_its_end(name: str) -> None:
    """The block index is the low 32 bits, big-endian: blocks 2^32 - 45 .. 2^32 - 1 (the
    last ones a label may draw) are OpenSSL's."""
    key, rk = KEYS[2], aesctr.round_keys(KEYS[2])
    label = (2**64 - 1, 2**32 - 2)
    lo, hi = struct.unpack("<qq", struct.pack(">QII", *label, 0))
    out = np.zeros(90, np.int64)
    aesctr.KERNELS[name](rk, out, lo, hi, 2**32 - 45)
    block = struct.pack(">QII", *label, 2**32 - 45)
    want = Cipher(algorithms.AES(key), modes.CTR(block)).encryptor().update(bytes(720))
    assert out.tobytes() == want


@pytest.fixture(params=["kernel", "cryptography"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both paths of ``Prg.random_array``: the compiled kernel, and ``cryptography`` forced."""
    if request.param == "kernel" and not aesctr.available():
        pytest.skip("this CPU has no AES instructions")
    monkeypatch.setattr(prg, "IN_KERNEL_AES", request.param == "kernel")
    return str(request.param)


def test_random_array_is_openssl_ctr_on_both_paths(path: str) -> None:
    """``random_array`` gives ``cryptography``'s AES-256-CTR whichever path it takes, as a
    fresh, writable uint8 array of length n; ``random_bytes``, ``ring`` and ``bits`` are
    that keystream."""
    for key in KEYS:
        g = Prg(key)
        for n in LENGTHS:
            for label in LABELS:
                got = g.random_array(n, label)
                assert got.dtype == np.uint8 and got.shape == (n,) and got.flags.writeable
                assert got.tobytes() == openssl_ctr(key, label, n), (path, n, label)
        a, b = g.random_array(64, (1, 2)), g.random_array(64, (1, 2))
        assert not np.shares_memory(a, b)
        a[:] = 0
        assert g.random_bytes(64, (1, 2)) == openssl_ctr(key, (1, 2), 64) == b.tobytes()
        ring = g.ring((3, 5), (9, 9)).numpy()
        assert ring.tobytes() == openssl_ctr(key, (9, 9), 120)
        bits = g.bits((3, 7), (9, 8)).numpy().reshape(-1)
        raw = np.frombuffer(openssl_ctr(key, (9, 8), 3), np.uint8)
        assert np.array_equal(bits, np.unpackbits(raw)[:21].astype(bool))


def test_the_two_paths_agree_and_check_their_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    g = Prg.from_seed(3, "two paths")
    draws = {}
    for on in (True, False) if aesctr.available() else (False,):
        monkeypatch.setattr(prg, "IN_KERNEL_AES", on)
        draws[on] = [g.random_array(n, (n, 2 * n)).tobytes() for n in (0, 5, 300, 70_001)]
        for label in [(-1, 0), (2**64, 0), (0, -1), (0, 2**32), (1.0, 0)]:
            with pytest.raises(ValueError, match="label"):
                g.random_array(16, label)  # type: ignore[arg-type]
        for n in (-1, prg.MAX_BYTES_PER_LABEL + 1):
            with pytest.raises(ValueError, match="block counter"):
                g.random_array(n, (0, 0))
    assert draws.get(True, draws[False]) == draws[False]
    monkeypatch.undo()  # and the kernel is what the library uses wherever it can run:
    assert prg.IN_KERNEL_AES is aesni.available() is aesctr.available()


@settings(max_examples=60, deadline=None)
@given(
    key=st.binary(min_size=32, max_size=32),
    n=st.integers(0, 3000),
    op_id=st.integers(0, 2**64 - 1),
    stream=st.integers(0, 2**32 - 1),
)
def test_random_array_property(key: bytes, n: int, op_id: int, stream: int) -> None:
    """Any key, length and label: ``random_array`` is OpenSSL's AES-256-CTR."""
    assert Prg(key).random_array(n, (op_id, stream)).tobytes() == openssl_ctr(
        key, (op_id, stream), n
    )


@needs_aes
def test_keystream_refuses_what_its_kernels_would_overrun() -> None:
    """The kernels write whole blocks unchecked: an odd word count, a strided or
    non-int64 buffer, a wrong schedule or a block index that would carry into the label
    are refused before any kernel runs."""
    rk = aesctr.round_keys(bytes(32))
    good = np.zeros(8, np.int64)
    aesctr.keystream(rk, good, 0, 0)
    for bad in (np.zeros(7, np.int64), np.zeros(16, np.int64)[::2], np.zeros(8, np.int32)):
        with pytest.raises(ValueError, match="whole blocks"):
            aesctr.keystream(rk, bad, 0, 0)
    with pytest.raises(ValueError, match="schedule"):
        aesctr.keystream(rk[:14], good, 0, 0)
    with pytest.raises(ValueError, match="carry into the label"):
        aesctr.keystream(rk, good, 0, 0, first=2**32 - 3)
    aesctr.keystream(rk, good, 0, 0, first=2**32 - 4)  # the label's last four blocks
