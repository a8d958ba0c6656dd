"""The compiled carry-tree kernels (protocols.compare_kernel) change no message byte.

The torch implementation they replaced is kept here as the reference: the dealer's
derivation of the packed material (``_reference_derive``) and a party's whole sign test
(``_reference_sign``: ``to_planes``, ``_level0``, the AND levels with ``_and_share``, the
bit unpacking and the final arithmetic), verbatim but for names. Two layers are checked:

* each kernel against its torch counterpart on random words and ring elements of several
  sizes (1, 63, 64, 65, 1000, 4096 + 7, and 0 where a size-0 tensor can occur), with edge
  values (0, -1, 2^63 - 1, -2^63, small ones of both signs);
* whole runs on the in-memory harness with the runtime's dealer (``real_dealer``): the
  same keys and inputs through the library's drelu/relu and through the reference must
  give byte-identical views (every message sent and received, in order, with dtype and
  shape), identical dealer corrections, identical material and identical output shares,
  for 2 and 3 parties; and the same on hypothesis-drawn inputs.
"""

from __future__ import annotations

import dataclasses
from math import prod
from typing import Any

import pytest
import torch
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import Share
from protocols import compare_kernel as kernel
from protocols.compare import LEAF_PAIRS, LEVELS, _open_planes, drelu, drelu_spec, relu
from protocols.context import PartyContext
from protocols.material import MaterialSpec
from protocols.ring import RING_BITS, to_planes, unpack_words
from protocols.sharing import open_ring
from protocols.testing import Board, View, run_protocol

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
EDGES = [
    0,
    -1,
    1,
    2,
    -2,
    3,
    -3,
    INT64_MAX,
    INT64_MIN,
    INT64_MAX - 1,
    INT64_MIN + 1,
    2**62,
    -(2**62),
]
SIZES = [1, 63, 64, 65, 1000, 4096 + 7]


# ---------------------------------------------------------------------------------------
# The reference: the torch implementation the kernels replaced
# ---------------------------------------------------------------------------------------


def _reference_and_share(
    rank: int, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    z = c ^ (d & b) ^ (e & a)
    return z ^ (d & e) if rank == 0 else z


def _reference_derive(shape: tuple[int, ...], with_relu: bool) -> Any:
    numel = prod(shape)

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rbits = to_planes(s["r"])
        hi, lo = rbits[1 : 2 * LEAF_PAIRS : 2], rbits[0 : 2 * LEAF_PAIRS : 2]
        out = {"rbits": rbits, "rpairs": torch.bitwise_or(hi, lo).bitwise_not_()}
        for lvl, q in enumerate(LEVELS):
            out[f"c{lvl}"] = s[f"a{lvl}"] & s[f"b{lvl}"]
            if q > 1:
                out[f"cc{lvl}"] = s[f"a{lvl}"] & s[f"bb{lvl}"]
        alpha = unpack_words(s["fa"], numel).reshape(shape).to(torch.int64)
        out["m_a"] = alpha
        if with_relu:
            out["r_a"] = s["r"] * alpha
        return out

    return derive


def _reference_spec(shape: tuple[int, ...], with_relu: bool) -> MaterialSpec:
    spec = drelu_spec(shape, with_relu=with_relu)
    return dataclasses.replace(spec, derive=_reference_derive(shape, with_relu))


def _reference_level0(
    c: torch.Tensor, r: torch.Tensor, pairs: torch.Tensor, lead: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    n2 = 2 * LEAF_PAIRS
    ch, cl, rh, rl = c[1:n2:2], c[0:n2:2], r[1:n2:2], r[0:n2:2]
    chl = ch & cl
    g = (ch & rh) ^ (chl & rl) ^ (cl & pairs)
    p = (ch & rl) ^ (cl & rh) ^ pairs
    c0, c1, nc0 = c[0], c[1], ~c[0]
    g[0] = (c1 & rh[0]) ^ (c1 & nc0 & rl[0]) ^ (c0 & rh[0]) ^ (nc0 & pairs[0])
    last = n2
    g_last = c[last] & r[last]
    p_last = r[last]
    if lead:
        g[1:] ^= ch[1:] ^ chl[1:]
        g[0] ^= c0
        p ^= ch ^ cl ^ chl
        g_last = g_last ^ c[last]
        p_last = ~(p_last ^ c[last])
    return torch.cat([g, g_last[None]]), torch.cat([p, p_last[None]])


def _reference_finish(
    k: torch.Tensor, m: dict[str, torch.Tensor], lead: bool, opened_c: torch.Tensor, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    shape = tuple(m["m_a"].shape)
    s = unpack_words(k, prod(shape)).reshape(shape).to(torch.int64).neg_()
    bit = m["m_a"] ^ s
    bit -= s
    if lead:
        bit -= s
    y = opened_c * m["m_a"]
    y -= m["r_a"]
    y ^= s
    y -= s
    y += x & s
    return bit, y


async def _reference_sign(
    ctx: PartyContext, x: Share, with_relu: bool
) -> tuple[Share, Share | None]:
    shape = tuple(x.value.shape)
    m = await ctx.material(_reference_spec(shape, with_relu))
    lead = ctx.rank == 0
    (opened_c,), depth = await open_ring(ctx, "cmp", [x.value + m["r"]], x.depth)
    c = to_planes(opened_c)
    G, P = _reference_level0(c, m["rbits"], m["rpairs"], lead)
    for lvl, q in enumerate(LEVELS):
        g_lo, g_hi, p_lo, p_hi = G[0::2], G[1::2], P[0::2], P[1::2]
        a, b = m[f"a{lvl}"], m[f"b{lvl}"]
        masked = [p_hi ^ a, g_lo ^ b]
        if q > 1:
            masked.append(p_lo ^ m[f"bb{lvl}"])
        o, depth = await _open_planes(ctx, f"and{lvl}", masked, depth, shape)
        G = g_hi ^ _reference_and_share(ctx.rank, m[f"c{lvl}"], o[0], o[1], a, b)
        if q > 1:
            P = _reference_and_share(ctx.rank, m[f"cc{lvl}"], o[0], o[2], a, m[f"bb{lvl}"])
    big_k = m["rbits"][RING_BITS - 1] ^ G[0]
    if lead:
        big_k ^= c[RING_BITS - 1]
    (k,), depth = await _open_planes(ctx, "fin", [big_k ^ m["fa"]], depth, shape)
    if not with_relu:
        m = {**m, "r_a": torch.zeros_like(m["m_a"])}
    bit, y = _reference_finish(k, m, lead, opened_c, x.value)
    if not with_relu:
        return Share(bit, depth), None
    return Share(y, depth), Share(bit, depth)


async def _reference_relu(ctx: PartyContext, x: Share) -> tuple[Share, Share]:
    y, bit = await _reference_sign(ctx, x, with_relu=True)
    assert bit is not None
    return y, bit


async def _reference_drelu(ctx: PartyContext, x: Share) -> Share:
    bit, _ = await _reference_sign(ctx, x, with_relu=False)
    return bit


# ---------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------


def ring_values(n: int, seed: int) -> torch.Tensor:
    """``n`` uniform ring elements with the edge values spread over them."""
    g = torch.Generator().manual_seed(1000 * n + seed)
    x = torch.randint(INT64_MIN, INT64_MAX, (n,), dtype=torch.int64, generator=g)
    if n:
        pos = torch.randperm(n, generator=g)[: len(EDGES)]
        x[pos] = torch.tensor(EDGES[: len(pos)], dtype=torch.int64)
    return x


def words(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(INT64_MIN, INT64_MAX, shape, dtype=torch.int64, generator=g)


# ---------------------------------------------------------------------------------------
# Kernel against reference, one function at a time
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, *SIZES, 64 * 8 * 3 + 64 * 5])
def test_planes_and_pairs_match_torch(n: int) -> None:
    x = ring_values(n, 1)
    want = to_planes(x)
    assert torch.equal(kernel.planes(x), want)
    rbits, rpairs = kernel.planes_and_pairs(x.reshape(-1, 1) if n else x, LEAF_PAIRS)
    hi, lo = want[1 : 2 * LEAF_PAIRS : 2], want[0 : 2 * LEAF_PAIRS : 2]
    assert torch.equal(rbits, want)
    assert torch.equal(rpairs, torch.bitwise_or(hi, lo).bitwise_not_())
    # every all-zero / all-one word pattern (edge elements everywhere)
    for v in (0, -1, INT64_MIN, INT64_MAX):
        e = torch.full((n,), v, dtype=torch.int64)
        assert torch.equal(kernel.planes(e), to_planes(e))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("lead", [True, False])
def test_level0_matches_torch(n: int, lead: bool) -> None:
    c = ring_values(n, 2)
    w = -(-n // 64)
    r, pairs = words((64, w), 3), words((LEAF_PAIRS, w), 4)
    g, p, top = kernel.level0(c, r, pairs, lead)
    planes = to_planes(c)
    want_g, want_p = _reference_level0(planes, r, pairs, lead)
    assert torch.equal(g, want_g) and torch.equal(p, want_p)
    assert torch.equal(top, planes[RING_BITS - 1])


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("rank", [0, 1, 2])
def test_and_level_matches_torch(n: int, rank: int) -> None:
    w = -(-n // 64)
    G, P = words((32, w), 5), words((32, w), 6)
    for lvl, q in enumerate(LEVELS):
        m = {f"{k}{lvl}": words((q, w), 7 + i) for i, k in enumerate(("a", "b", "bb", "c", "cc"))}
        a, b = m[f"a{lvl}"], m[f"b{lvl}"]
        g_lo, g_hi, p_lo, p_hi = G[0::2], G[1::2], P[0::2], P[1::2]
        want_masked = [p_hi ^ a, g_lo ^ b] + ([p_lo ^ m[f"bb{lvl}"]] if q > 1 else [])
        masked = kernel.mask_level(G, P, a, b, m[f"bb{lvl}"] if q > 1 else None)
        assert masked.shape == (len(want_masked), q, w)
        assert all(torch.equal(x, y) for x, y in zip(masked, want_masked, strict=True))
        o = [words((q, w), 20 + i) for i in range(len(want_masked))]  # opened planes
        new_g, new_p = kernel.combine_level(G, o, m, lvl, rank == 0)
        want_g = g_hi ^ _reference_and_share(rank, m[f"c{lvl}"], o[0], o[1], a, b)
        assert torch.equal(new_g, want_g)
        if q > 1:
            want_p = _reference_and_share(rank, m[f"cc{lvl}"], o[0], o[2], a, m[f"bb{lvl}"])
            assert new_p is not None and torch.equal(new_p, want_p)
            P = new_p
        else:
            assert new_p is None
        G = new_g


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("lead", [True, False])
def test_finish_and_alpha_match_torch(n: int, lead: bool) -> None:
    shape = (n,) if n % 5 else (5, n // 5)
    w = -(-n // 64)
    fa, k = words((w,), 30), words((w,), 31)
    r = ring_values(n, 32).reshape(shape)
    want = _reference_derive(shape, True)({"r": r, "fa": fa, **_dummy_levels(w)})
    m_a, r_a = kernel.alpha_items(fa, r, True)
    assert torch.equal(m_a, want["m_a"]) and r_a is not None and torch.equal(r_a, want["r_a"])
    m_a2, none = kernel.alpha_items(fa, r, False)
    assert torch.equal(m_a2, want["m_a"]) and none is None
    m = {"m_a": m_a, "r_a": r_a}
    c, x = ring_values(n, 33).reshape(shape), ring_values(n, 34).reshape(shape)
    want_bit, want_y = _reference_finish(k, m, lead, c, x)
    bit, y = kernel.finish(k, m, lead, c, x, True)
    assert torch.equal(bit, want_bit) and y is not None and torch.equal(y, want_y)
    bit2, y2 = kernel.finish(k, {"m_a": m_a}, lead, c, x, False)
    assert torch.equal(bit2, want_bit) and y2 is None


def _dummy_levels(w: int) -> dict[str, torch.Tensor]:
    out = {}
    for lvl, q in enumerate(LEVELS):
        for name in ("a", "b", "bb"):
            out[f"{name}{lvl}"] = words((q, w), 40 + lvl)
    return out


# ---------------------------------------------------------------------------------------
# Whole runs: byte-identical views, dealer messages, material and outputs
# ---------------------------------------------------------------------------------------


def _tensors_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def _assert_same_view(new: View, ref: View) -> None:
    for field in ("sent", "received"):
        got, want = getattr(new, field), getattr(ref, field)
        assert [e[:3] for e in got] == [e[:3] for e in want], field
        for (*_, ts), (*_, us) in zip(got, want, strict=True):
            assert len(ts) == len(us)
            assert all(_tensors_equal(t, u) for t, u in zip(ts, us, strict=True)), field
    assert [e[:2] for e in new.material] == [e[:2] for e in ref.material]
    assert all(_tensors_equal(a[2], b[2]) for a, b in zip(new.material, ref.material, strict=True))
    assert all(_tensors_equal(a, b) for a, b in zip(new.inputs, ref.inputs, strict=True))


def _run_both(x: torch.Tensor, n: int, with_relu: bool, seed: int) -> None:
    fns = (relu, _reference_relu) if with_relu else (drelu, _reference_drelu)
    runs = []
    for fn in fns:
        board = Board(n, seed, real_dealer=True)
        results, used = trio.run(lambda fn=fn, board=board: run_protocol(fn, x, n=n, board=board))
        runs.append((results, used))
    (new, nb), (ref, rb) = runs
    for rank in range(n):
        _assert_same_view(nb.views[rank], rb.views[rank])
        outs = new[rank] if with_relu else (new[rank],)
        want = ref[rank] if with_relu else (ref[rank],)
        for s, t in zip(outs, want, strict=True):
            assert _tensors_equal(s.value, t.value) and s.depth == t.depth
    assert [(o, r) for o, r, _ in nb.dealer_sent] == [(o, r) for o, r, _ in rb.dealer_sent]
    for (_, _, ts), (_, _, us) in zip(nb.dealer_sent, rb.dealer_sent, strict=True):
        assert all(_tensors_equal(t, u) for t, u in zip(ts, us, strict=True))
    assert nb.sent == rb.sent and nb.dealer_bytes == rb.dealer_bytes
    assert nb.rounds == rb.rounds


@pytest.mark.parametrize("n_elems", SIZES)
@pytest.mark.parametrize("with_relu", [True, False])
def test_runs_are_byte_identical_to_the_reference(n_elems: int, with_relu: bool) -> None:
    _run_both(ring_values(n_elems, 50), 2, with_relu, seed=n_elems)


@pytest.mark.parametrize("n_elems", [65, 1000])
def test_three_party_runs_are_byte_identical(n_elems: int) -> None:
    _run_both(ring_values(n_elems, 51), 3, True, seed=7)
    _run_both(ring_values(n_elems, 52), 3, False, seed=8)


def test_shaped_input_is_byte_identical() -> None:
    _run_both(ring_values(24 * 40, 53).reshape(24, 40), 2, True, seed=9)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.integers(INT64_MIN, INT64_MAX), min_size=1, max_size=200),
    st.integers(0, 2**16),
    st.booleans(),
)
def test_hypothesis_runs_are_byte_identical(values: list[int], seed: int, with_relu: bool) -> None:
    _run_both(torch.tensor(values, dtype=torch.int64), 2, with_relu, seed)
