"""Two-party FSS: the DCF (protocols.dcf), and the 1-round DReLU, ReLU and truncation.

* DCF: exhaustive over every (alpha, x) for small bit widths, random and edge alphas and
  inputs for n = 64 and 63, scalar and vector payloads;
* protocols through :func:`protocols.testing.run_protocol` with 2 parties, checked against
  plaintext torch: DReLU and ReLU exactly, truncation within its proven bound
  (``floor(x/d)`` exactly for powers of two, ``floor(x/d) + {0, 1}`` otherwise) on 10^6
  random elements and on edges, including masks ``r`` aimed at the wrap and residue
  boundaries with the harness's ``overrides``;
* costs: measured rounds, bytes per party and dealer bytes equal :func:`fss_cost`;
* keys: fresh per op, and one party's key bits are distributed alike for two alphas.
"""

from __future__ import annotations

import os
from typing import Any

import numba
import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import aesni, dcf, fss_kernel
from protocols.context import Share
from protocols.dcf import dcf_eval, dcf_key_words, dcf_keygen, dcf_seed_bytes
from protocols.fss import (
    MAX_DIVISOR,
    drelu_fss,
    drelu_fss_spec,
    fss_cost,
    relu_fss,
    trunc_fss_spec,
    truncate_fss,
)
from protocols.prg import FIXED_AES_KEY, Prg, fixed_key_aes
from protocols.testing import Board, LocalContext, reveal, run_protocol

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGES = [0, 1, -1, 2, -2, INT64_MIN, INT64_MAX, 2**62, -(2**62), 2**63 - 2, INT64_MIN + 1]


def wrap(v: int) -> int:
    return ((v + 2**63) % 2**64) - 2**63


def ring(n: int, seed: int, tag: str = "") -> torch.Tensor:
    """n uniform int64 values from the cryptographic PRG (deterministic for the test)."""
    return Prg.from_seed(seed, f"test-fss{tag}").ring((n,))


def ult(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Unsigned 64-bit ``a < b`` of int64 bit patterns."""
    return torch.from_numpy(a.numpy().view(np.uint64) < b.numpy().view(np.uint64))


def dcf_both(alpha: torch.Tensor, beta: torch.Tensor, x: torch.Tensor, n_bits: int) -> torch.Tensor:
    seed = os.urandom(dcf_seed_bytes(alpha.numel()))
    k0, k1 = dcf_keygen(alpha, beta, n_bits, seed)
    m = beta.shape[1]
    assert tuple(k0.shape) == (dcf_key_words(n_bits, m), alpha.numel()) == tuple(k1.shape)
    return dcf_eval(0, k0, x, n_bits, m) + dcf_eval(1, k1, x, n_bits, m)


# ------------------------------------------------------------------------------------ PRG


def test_fixed_key_aes_is_mmo_of_aes() -> None:
    blocks = ring(10, 1).numpy().view(np.uint64).reshape(5, 2)
    got = fixed_key_aes(blocks)
    enc = Cipher(algorithms.AES(FIXED_AES_KEY), modes.ECB()).encryptor()
    for blk, out in zip(blocks, got, strict=True):
        want = np.frombuffer(enc.update(blk.tobytes()), np.uint64) ^ blk
        assert (out == want).all()
    with pytest.raises(ValueError):
        fixed_key_aes(np.zeros((4, 3), np.uint64))


def test_aes_key_schedule_matches_fips_197() -> None:
    """FIPS-197 appendix A.1: the expansion of 2b7e1516 28aed2a6 abf71588 09cf4f3c."""
    rk = aesni.round_keys(bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c"))
    assert rk[0].tobytes().hex() == "2b7e151628aed2a6abf7158809cf4f3c"
    assert rk[1].tobytes().hex() == "a0fafe1788542cb123a339392a6c7605"
    assert rk[10].tobytes().hex() == "d014f9a8c9ee2589e13f0cc8b6630ca6"
    with pytest.raises(ValueError, match="16-byte key"):
        aesni.round_keys(bytes(32))


@pytest.mark.skipif(not aesni.available(), reason="this CPU has no AES instructions")
@pytest.mark.parametrize("blocks", [0, 1, 3, 4, 5, 67])
def test_in_kernel_aes_is_openssl_aes(blocks: int) -> None:
    """The kernels' AES-NI rounds give OpenSSL's AES-128-ECB under the fixed key, for block
    counts on both sides of the 4-block groups, also in place."""
    src = ring(2 * blocks, blocks, "aesni").numpy().reshape(blocks, 2)
    enc = Cipher(algorithms.AES(FIXED_AES_KEY), modes.ECB()).encryptor()
    want = np.frombuffer(enc.update(src.tobytes()), np.int64).reshape(blocks, 2)
    run = numba.njit(lambda rk, a, b: aesni.ecb(rk, a, b))
    dst = np.empty_like(src)
    run(aesni.FIXED_ROUND_KEYS, src, dst)
    assert np.array_equal(dst, want)
    run(aesni.FIXED_ROUND_KEYS, src, src)
    assert np.array_equal(src, want)


# ------------------------------------------------------------------------------------ DCF


@pytest.mark.parametrize("n_bits", [1, 2, 3, 5, 6])
@pytest.mark.parametrize("m", [1, 2, 3])
def test_dcf_exhaustive_small(n_bits: int, m: int) -> None:
    size = 2**n_bits
    alpha = torch.arange(size).repeat_interleave(size)
    x = torch.arange(size).repeat(size)
    beta = ring(alpha.numel() * m, n_bits * 10 + m).reshape(-1, m)
    got = dcf_both(alpha, beta, x, n_bits)
    want = (x < alpha).long()[:, None] * beta
    assert torch.equal(got, want)


@pytest.mark.parametrize("n_bits", [64, 63, 17])
@pytest.mark.parametrize("m", [1, 2])
def test_dcf_random_and_edges(n_bits: int, m: int) -> None:
    mask = -1 if n_bits == 64 else (1 << n_bits) - 1
    top = wrap(mask) if n_bits == 64 else mask  # the largest n-bit value (-1 for 64 bits)
    specials = [0, 1, 2, top, top - 1, wrap(1 << (n_bits - 1)), wrap((1 << (n_bits - 1)) - 1)]
    alist, xlist = [], []
    for a in specials:  # x at alpha, alpha -+ 1 (wrapping in n bits) and the domain's ends
        for v in (a, a - 1, a + 1, 0, 1, top, top - 1):
            alist.append(a)
            xlist.append(wrap(v & ((1 << n_bits) - 1)))
    rand = ring(1000, n_bits, "alpha") & mask
    alphas = torch.cat([torch.tensor(alist), rand, rand, rand])
    x = torch.cat([torch.tensor(xlist), rand, (rand - 1) & mask, ring(1000, n_bits, "x") & mask])
    beta = ring(alphas.numel() * m, n_bits + m, "beta").reshape(-1, m)
    got = dcf_both(alphas, beta, x, n_bits)
    want = ult(x, alphas).long()[:, None] * beta
    assert torch.equal(got, want)
    assert bool((ult(x, alphas)).any()) and not bool(ult(x, alphas).all())


def test_dcf_rejects_bad_arguments() -> None:
    one = torch.ones(1, dtype=torch.int64)
    seed = bytes(dcf_seed_bytes(1))
    with pytest.raises(ValueError):
        dcf_keygen(torch.tensor([8]), one[:, None], 3, seed)  # alpha beyond 3 bits
    with pytest.raises(ValueError):
        dcf_keygen(one, one[:, None], 65, seed)
    with pytest.raises(ValueError):
        dcf_keygen(one, one[:, None], 3, seed[:-1])
    k0, _ = dcf_keygen(one, one[:, None], 3, seed)
    with pytest.raises(ValueError):
        dcf_eval(0, k0, torch.ones(2, dtype=torch.int64), 3)
    with pytest.raises(ValueError):
        dcf_eval(2, k0, one, 3)


@pytest.mark.parametrize(
    ("n_bits", "m", "chunk"),
    [
        (1, 1, None),
        (5, 3, None),
        (31, 2, None),
        (32, 1, 16),
        (33, 2, None),
        (63, 1, None),
        (63, 2, 16),
        (63, 2, None),
        (64, 1, 40),
        (64, 3, None),
    ],
)
@pytest.mark.parametrize("aes", ["in-kernel", "openssl"])
def test_compiled_dcf_is_bit_identical_to_the_numpy_reference(
    n_bits: int, m: int, chunk: int | None, aes: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numba kernels (protocols.fss_kernel) give exactly the numpy reference's keys and
    shares: same seeds, same PRG, same layout; also across chunk boundaries (a chunk of 16
    or 40 over 97 elements leaves a partial last chunk); with the AES inside the kernels
    (one call per key generation or evaluation) and around them (OpenSSL, level by level)."""
    if aes == "in-kernel":
        if not aesni.available():
            pytest.skip("this CPU has no AES instructions")
        monkeypatch.setattr(fss_kernel, "IN_KERNEL_MAX", {"keygen": 1 << 20, "eval": 1 << 20})
    monkeypatch.setattr(fss_kernel, "IN_KERNEL_AES", aes == "in-kernel")
    if chunk is not None:
        monkeypatch.setattr(dcf, "CHUNK", chunk)
        monkeypatch.setattr(dcf, "KERNEL_CHUNK", chunk)
    n = 97
    mask = -1 if n_bits == 64 else (1 << n_bits) - 1
    alpha = ring(n, n_bits * 7 + m, "ref-alpha") & mask
    x = ring(n, n_bits * 7 + m, "ref-x") & mask
    x[:20] = alpha[:20]  # on the path down to alpha, to its last level
    x[20:30] = (alpha[20:30] - 1) & mask
    beta = ring(n * m, n_bits + 3 * m, "ref-beta").reshape(n, m)
    seed = Prg.from_seed(n_bits * 7 + m, "ref-seed").random_bytes(dcf_seed_bytes(n), (0, 0))
    keys = dcf_keygen(alpha, beta, n_bits, seed)
    ref = dcf_keygen(alpha, beta, n_bits, seed, impl="numpy")
    for rank in (0, 1):
        assert torch.equal(keys[rank], ref[rank])
        got = dcf_eval(rank, keys[rank], x, n_bits, m)
        assert torch.equal(got, dcf_eval(rank, keys[rank], x, n_bits, m, impl="numpy"))
    assert not torch.equal(keys[0], keys[1])


def test_dcf_rejects_an_unknown_implementation() -> None:
    one = torch.ones(1, dtype=torch.int64)
    seed = bytes(dcf_seed_bytes(1))
    with pytest.raises(ValueError, match="implementation"):
        dcf_keygen(one, one[:, None], 3, seed, impl="c")  # type: ignore[arg-type]
    k0, _ = dcf_keygen(one, one[:, None], 3, seed)
    with pytest.raises(ValueError, match="implementation"):
        dcf_eval(0, k0, one, 3, impl="c")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ protocols


def full_range_values(n: int, seed: int) -> torch.Tensor:
    return torch.cat([torch.tensor(EDGES), ring(n, seed, "full")])


async def check_sign(x: torch.Tensor, seed: int = 0, **kw: Any) -> None:
    want_bit = (x >= 0).long()
    (res, board) = await run_protocol(drelu_fss, x, n=2, seed=seed, **kw)
    assert torch.equal(reveal(res), want_bit)
    (res2, board2) = await run_protocol(relu_fss, x, n=2, seed=seed, **kw)
    assert torch.equal(reveal([r[0] for r in res2]), torch.clamp(x, min=0))
    assert torch.equal(reveal([r[1] for r in res2]), want_bit)
    assert (board.rounds, board2.rounds) == (1, 1)


async def test_drelu_relu_exact_on_edges_and_full_range() -> None:
    await check_sign(full_range_values(5000, 3), seed=3)


async def test_drelu_relu_exact_with_aimed_masks() -> None:
    """Masks that put x_hat = x + r at 0, -1, 2^63 - 1, 2^63 and at r's own msb boundary."""
    base = torch.tensor(EDGES * 8)
    targets = torch.tensor([0, -1, INT64_MAX, INT64_MIN, 1, 2**62, -(2**62), 2**63 - 2])
    r = targets.repeat_interleave(len(EDGES)) - base
    await check_sign(base, overrides={"r": r})
    # r with every msb / low-63-bit combination at the boundary of the 63-bit comparison
    r2 = torch.tensor([0, INT64_MIN, INT64_MAX, -1]).repeat_interleave(len(EDGES))
    await check_sign(torch.tensor(EDGES * 4), overrides={"r": r2})


@pytest.mark.parametrize("shape", [(), (1,), (3, 4), (2, 1, 3)])
async def test_sign_shapes(shape: tuple[int, ...]) -> None:
    x = ring(max(1, int(np.prod(shape))), 9, "shape").reshape(shape)
    (res, _) = await run_protocol(relu_fss, x, n=2)
    assert res[0][0].value.shape == x.shape
    assert torch.equal(reveal([r[0] for r in res]), torch.clamp(x, min=0))


def trunc_edges(d: int) -> torch.Tensor:
    """|x| near 0 and 2^62, near multiples of d, near multiples of d plus 2^64 mod d (the
    residue boundaries of the proof: x + B = x mod d and x + B - 2^64 mod d), and the
    bottom of the proven range, -B."""
    lim, m3 = 2**62 - 1, 2**64 % d
    vals = {0, 1, -1, lim, -lim, lim - 1, -lim + 1, 2**61, -(2**61)}
    for k in (0, 1, 2, 3, 7, 1000, lim // d - 1, lim // d):
        for e in (-1, 0, 1):
            for off in (0, m3):
                vals |= {k * d + off + e, -k * d + off + e}
    base = d * (2**63 // d)
    vals |= {-base, -base + 1, -base + d}
    return torch.tensor(sorted(v for v in vals if -base <= v <= INT64_MAX))


def check_trunc(got: torch.Tensor, x: torch.Tensor, d: int) -> None:
    err = got - torch.div(x, d, rounding_mode="floor")
    if d & (d - 1) == 0:
        assert int(err.abs().max()) == 0, "power-of-two truncation must be exact"
    else:
        assert int(err.min()) >= 0 and int(err.max()) <= 1, (err.min(), err.max())


def spread(n: int, seed: int) -> torch.Tensor:
    """n values with |x| < 2^62, magnitudes spread log-uniformly over 0 .. 62 bits."""
    raw = ring(n, seed, "spread")
    bits = (ring(n, seed, "bits").abs() % 63).clamp(min=0)
    return raw % (torch.ones_like(bits) << bits).clamp(min=1) * torch.where(raw < 0, -1, 1)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("d", "parts"), [pytest.param(1000, 4, marks=pytest.mark.full), (1000, 1), (2**16, 1)]
)
async def test_truncation_one_million(d: int, parts: int) -> None:
    """10^6 elements for the seed's divisor 1000 (``-m full``; by default a quarter of
    that, the first quarter of the same values), 2.5 * 10^5 for 2^16, which is exact by
    construction and checked over the whole int64 range elsewhere."""
    total = 0
    for part in range(parts):
        x = spread(250_000, 100 + part)
        assert int(x.abs().max()) < 2**62
        (res, _) = await run_protocol(truncate_fss, x, n=2, seed=part, divisor=d)
        check_trunc(reveal(res), x, d)
        total += x.numel()
    assert total == 250_000 * parts


@pytest.mark.parametrize("d", [1000, 2**16, 3, 2, 10**9 + 7, 2**40, MAX_DIVISOR])
async def test_truncation_edges(d: int) -> None:
    x = trunc_edges(d)
    (res, _) = await run_protocol(truncate_fss, x, n=2, divisor=d)
    check_trunc(reveal(res), x, d)


@pytest.mark.parametrize("d", [1000, 2**16, 7])
async def test_truncation_aimed_masks(d: int) -> None:
    """r chosen so that x_hat = x + B + r lands at both sides of the wrap (w = 0 and 1),
    at 0 and at the top of the ring; with the residue edges of ``trunc_edges`` this puts
    x_hat mod d next to r mod d for both values of w."""
    x = trunc_edges(d)
    base = d * (2**63 // d)
    xs, rs = [], []
    for v in x.tolist():
        xp = v + base
        # x_hat = t: t in {0, 1, 2} and t = x' - 1 wrap (w = 1); t near 2^64 and t = x'
        # do not (w = 0); r = t - x' mod 2^64
        for t in (0, 1, 2, xp - 1, xp, 2**64 - 1, 2**64 - 2, 2**64 - 1 - (2**64 - 1) % d):
            xs.append(v)
            rs.append(wrap(t - xp))
    xt = torch.tensor(xs)
    (res, _) = await run_protocol(
        truncate_fss, xt, n=2, divisor=d, overrides={"r": torch.tensor(rs)}
    )
    check_trunc(reveal(res), xt, d)


async def test_power_of_two_covers_all_of_int64() -> None:
    x = full_range_values(3000, 11)
    (res, _) = await run_protocol(truncate_fss, x, n=2, divisor=2**16)
    check_trunc(reveal(res), x, 2**16)


async def test_divisor_one_is_identity_and_free() -> None:
    x = torch.tensor(EDGES)
    (res, board) = await run_protocol(truncate_fss, x, n=2, divisor=1)
    assert torch.equal(reveal(res), x)
    assert (board.rounds, board.sent, board.dealer_bytes) == (0, [0, 0], 0)
    assert fss_cost("trunc", 11, 1) == (0, 0, 0)


async def test_three_parties_rejected() -> None:
    ctx = LocalContext(Board(3), 0)
    x = Share(torch.tensor([1, -1]))
    for call in (drelu_fss(ctx, x), relu_fss(ctx, x), truncate_fss(ctx, x, 1000)):
        with pytest.raises(ValueError, match="2-party"):
            await call
    with pytest.raises(ValueError, match="2-party"):
        drelu_fss_spec((2,)).keygen({"r": x.value, "rb": x.value}, 3, Prg.fresh(), (1, 0))  # type: ignore[misc]


async def test_bad_divisor_rejected() -> None:
    ctx = LocalContext(Board(2), 0)
    for d in (0, -5, MAX_DIVISOR + 1):
        with pytest.raises(ValueError, match="divisor"):
            await truncate_fss(ctx, Share(torch.tensor([1])), d)


# ---------------------------------------------------------------------------------- costs


@pytest.mark.parametrize("shape", [(1,), (3, 5), (17,)])
@pytest.mark.parametrize(
    "kind,kwargs",
    [("drelu", {}), ("relu", {}), ("trunc", {"divisor": 1000}), ("trunc", {"divisor": 2**16})],
)
async def test_costs_match_closed_form(
    shape: tuple[int, ...], kind: str, kwargs: dict[str, int]
) -> None:
    fn = {"drelu": drelu_fss, "relu": relu_fss, "trunc": truncate_fss}[kind]
    x = ring(int(np.prod(shape)), 4, "cost").reshape(shape) % 2**40
    (_, board) = await run_protocol(fn, x, n=2, **kwargs)
    rounds, per_party, dealer = fss_cost(kind, x.numel(), kwargs.get("divisor"))
    assert board.rounds == rounds == 1
    assert board.sent == [per_party, per_party]
    assert board.dealer_bytes == dealer


def test_cost_figures_per_element() -> None:
    """The per-element figures quoted in the module docstring."""
    assert fss_cost("drelu", 1) == (1, 8, 3112)
    assert fss_cost("relu", 1) == (1, 8, 4144)
    assert fss_cost("trunc", 1, 1000) == (1, 8, 3704)
    assert fss_cost("trunc", 1, 2**16) == (1, 8, 3992)
    assert fss_cost("drelu", 1000) == (1, 8000, 3112000)
    spec = trunc_fss_spec((4,), 1000)
    assert spec.dealer_bytes(2) == fss_cost("trunc", 4, 1000)[2]
    with pytest.raises(ValueError):
        fss_cost("gelu", 1)


# ------------------------------------------------------------------------------- property


@settings(max_examples=15, deadline=None)
@given(
    st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=24),
    st.sampled_from([1000, 2**16, 10, 2**20 + 1]),
    st.integers(0, 2**16),
)
async def test_property_all_three(values: list[int], d: int, seed: int) -> None:
    x = torch.tensor(values)
    await check_sign(x, seed=seed)
    small = x % (2**62)  # in [0, 2^62): inside the truncation's proven range
    small = torch.where(x < 0, -small, small)
    (res, _) = await run_protocol(truncate_fss, small, n=2, seed=seed, divisor=d)
    check_trunc(reveal(res), small, d)


# ------------------------------------------------------------------------------- security


async def test_keys_fresh_per_op() -> None:
    x = torch.tensor([5, -3, 0])
    keys = []
    for op in (5, 6):
        (_, board) = await run_protocol(drelu_fss, x, n=2, op_id=op)
        keys.append([dict((n, t) for _, n, t in board.views[rank].material) for rank in (0, 1)])
    for rank in (0, 1):
        assert not torch.equal(keys[0][rank]["k0"], keys[1][rank]["k0"])
    assert not torch.equal(keys[0][0]["k0"], keys[0][1]["k0"])


def _bit_freqs(key: torch.Tensor) -> np.ndarray:
    """Per (row, bit position): fraction of elements whose key has that bit set."""
    u = key.numpy().view(np.uint64)
    bits = (u[:, None, :] >> np.arange(64, dtype=np.uint64)[None, :, None]) & np.uint64(1)
    return bits.mean(axis=2)


def test_one_key_does_not_reveal_alpha() -> None:
    """Party b's key bits have the same distribution for alpha = 0 and alpha = 2^62 + 12345:
    every bit position's frequency over N keys agrees within 6 standard deviations, while
    the same statistic flags a key that leaks alpha's top bit."""
    N, n_bits = 4096, 63
    beta = torch.ones((N, 1), dtype=torch.int64)
    freqs = {}
    for alpha in (0, 2**62 + 12345):
        a = torch.full((N,), alpha, dtype=torch.int64)
        k0, k1 = dcf_keygen(a, beta, n_bits, os.urandom(dcf_seed_bytes(N)))
        freqs[alpha] = (_bit_freqs(k0), _bit_freqs(k1))
    bound = 6 * np.sqrt(2 * 0.25 / N)
    for rank in (0, 1):
        diff = np.abs(freqs[0][rank] - freqs[2**62 + 12345][rank])
        assert diff.max() < bound, diff.max()
    # the statistic is not blind: a "key" that carries alpha's bits is flagged
    leak = {a: _bit_freqs(torch.full((1, N), a, dtype=torch.int64)) for a in freqs}
    assert np.abs(leak[0] - leak[2**62 + 12345]).max() > bound


def test_specs_cached_and_keys_typed() -> None:
    assert drelu_fss_spec((3,)) is drelu_fss_spec((3,))
    (key,) = drelu_fss_spec((3,)).keys
    assert key.shape == (dcf_key_words(63, 1), 3)
