"""Secure comparison: DReLU (the shared bit ``[x >= 0]``), ReLU and the comparison operators.

Three layers are exercised:

* the cluster (trio actors, metered network) through ``SharedTensor``, on fixed-point
  values and on raw ring elements shared with ``Cluster.input`` at precision 0;
* the protocol coroutines alone, over an in-process :class:`protocols.PartyContext` written
  here with its own independent dealer, which lets a test choose the comparison mask ``r``
  adversarially (so the opened value ``c = x + r`` hits the carry circuit's corner cases);
* the measured costs (rounds, bytes per party, dealer bytes) against the closed forms in
  :mod:`protocols.compare`, and against simulated latency.

Correctness is checked exactly: the revealed ring integer of the bit must be 0 or 1 and
equal ``int(x >= 0)`` for every element; ``relu`` must give exactly ``max(x, 0)`` on the
encoded integers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

import protocols
from actors import NetworkProfile, Phase
from protocols import FixedPoint, Share
from protocols.compare import DRELU_ROUNDS
from protocols.testing import Board, run_protocol
from training import Cluster, SharedTensor
from training.testing import PARTIES, reveal_raw, start_cluster
from training.testing import measure as measured

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
RAW = FixedPoint(10, 0)  # precision 0: decode is the identity on ring integers
ROUNDS = DRELU_ROUNDS  # measured rounds must equal the protocol's documented count


def wrap(v: int) -> int:
    """A Python integer reduced into the signed 64-bit ring."""
    return ((v + 2**63) % 2**64) - 2**63


def edge_values() -> list[int]:
    vals = {0, 1, -1, 2, -2, INT64_MIN, INT64_MAX, 2**62, -(2**62), 2**62 - 1, -(2**62) + 1}
    for k in range(64):  # every power of two, and its neighbours: long carry/borrow chains
        for d in (-1, 0, 1):
            vals.add(wrap(2**k + d))
            vals.add(wrap(-(2**k) - d))
    for d in range(-3, 4):
        vals |= {2**31 + d, -(2**31) + d, 2**32 + d, -(2**32) + d}
        vals |= {wrap(INT64_MIN + 3 + d), wrap(INT64_MAX - 3 + d)}
    # fixed-point encodings at the safe-range limit |e| < 2**31 (any base/precision)
    limit = 2**protocols.ENCODED_LIMIT_BITS - 1
    vals |= {limit, -limit, limit - 1, -limit + 1}
    for fp in (FixedPoint(10, 3), FixedPoint(2, 16), FixedPoint(10, 6)):
        enc = int(fp.encode(torch.tensor(fp.max_value, dtype=torch.float64)))
        vals |= {enc, -enc, fp.scale, -fp.scale}
    # alternating bit patterns
    vals |= {wrap(0x5555555555555555), wrap(0xAAAAAAAAAAAAAAAA), wrap(0x7FFFFFFF00000000)}
    vals |= {wrap(0x8000000000000001), wrap(0x00000000FFFFFFFF), wrap(0xFFFFFFFF00000000)}
    return sorted(vals)


EDGES = edge_values()
int64s = st.integers(INT64_MIN, INT64_MAX)


def ring_input(c: Cluster, values: torch.Tensor) -> SharedTensor:
    """Share raw ring integers (any int64, not only fixed-point encodable ones)."""
    assert values.dtype == torch.int64
    return SharedTensor(c, c.input(values), values.shape, RAW)


def assert_exact(got: torch.Tensor, want: torch.Tensor, what: str, x: torch.Tensor) -> None:
    assert got.dtype == torch.int64, what
    assert got.shape == want.shape, what
    bad = (got != want).nonzero()
    if len(bad):
        rows = [
            f"x={int(x[tuple(i)])}: got {int(got[tuple(i)])}, want {int(want[tuple(i)])}"
            for i in bad[:10].tolist()
        ]
        pytest.fail(f"{what}: {len(bad)} wrong of {want.numel()}:\n" + "\n".join(rows))


def sign_bits(x: torch.Tensor) -> torch.Tensor:
    return (x >= 0).to(torch.int64)


def relu_ring(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, torch.zeros_like(x))


# ---------------------------------------------------------------------------------------
# 1. Exact sign over the whole 64-bit ring, through the cluster
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("seed", [1, 2, None])
async def test_drelu_exact_on_edge_values(n: int, seed: int | None) -> None:
    # each edge value is repeated so it meets many different masks r
    x = torch.tensor(EDGES, dtype=torch.int64).repeat(40)
    async with start_cluster(n, protocols="carry", seed=seed) as c:
        xs = ring_input(c, x)
        bit = xs.drelu()
        assert bit.prec == 0
        assert_exact(await reveal_raw(bit), sign_bits(x), f"drelu n={n}", x)
        decoded = await bit.get()
        assert torch.equal(decoded, sign_bits(x).to(torch.float32))
        y = xs.relu()
        assert_exact(await reveal_raw(y), relu_ring(x), f"relu n={n}", x)
        assert y._bit is not None
        assert_exact(await reveal_raw(y._bit), sign_bits(x), f"relu bit n={n}", x)


@pytest.mark.parametrize("n", [2, 3])
async def test_drelu_exact_on_random_full_range(n: int) -> None:
    g = torch.Generator().manual_seed(1234 + n)
    x = torch.randint(INT64_MIN, INT64_MAX, (50_000,), dtype=torch.int64, generator=g)
    small = torch.randint(-(2**20), 2**20, (10_000,), dtype=torch.int64, generator=g)
    x = torch.cat([x, small, torch.tensor([INT64_MAX])])
    async with start_cluster(n, protocols="carry", seed=None) as c:
        xs = ring_input(c, x)
        assert_exact(await reveal_raw(xs.drelu()), sign_bits(x), f"drelu n={n}", x)
        assert_exact(await reveal_raw(xs.relu()), relu_ring(x), f"relu n={n}", x)


@settings(max_examples=30, deadline=None, database=None)
@given(
    values=st.lists(int64s, min_size=1, max_size=200),
    n=st.sampled_from([2, 3]),
    seed=st.none() | st.integers(0, 2**32),
)
async def test_drelu_exact_hypothesis(values: list[int], n: int, seed: int | None) -> None:
    x = torch.tensor(values, dtype=torch.int64)
    async with start_cluster(n, protocols="carry", seed=seed) as c:
        xs = ring_input(c, x)
        bit, y = xs.drelu(), xs.relu()
        assert_exact(await reveal_raw(bit), sign_bits(x), "drelu", x)
        assert_exact(await reveal_raw(y), relu_ring(x), "relu", x)


@pytest.mark.parametrize("shape", [(), (1,), (3, 4, 5), (2, 1, 7)])
async def test_drelu_shapes(shape: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(7)
    x = torch.randint(INT64_MIN, INT64_MAX, shape, dtype=torch.int64, generator=g)
    async with start_cluster(3, protocols="carry", seed=3) as c:
        xs = ring_input(c, x)
        bit, y = xs.drelu(), xs.relu()
        assert bit.shape == torch.Size(shape) and y.shape == torch.Size(shape)
        assert_exact(await reveal_raw(bit), sign_bits(x), f"drelu {shape}", x)
        assert_exact(await reveal_raw(y), relu_ring(x), f"relu {shape}", x)


# ---------------------------------------------------------------------------------------
# 1b. The protocol coroutines alone, with adversarially chosen masks
# ---------------------------------------------------------------------------------------


async def run_local(
    fn: Callable[[Any, Share], Awaitable[Any]],
    x: torch.Tensor,
    n: int,
    *,
    seed: int = 0,
    overrides: dict[str, torch.Tensor] | None = None,
) -> tuple[list[Any], Board]:
    return await run_protocol(fn, x, n=n, seed=seed, overrides=overrides)


async def check_local(x: torch.Tensor, r: torch.Tensor | None, n: int, seed: int = 0) -> None:
    overrides = None if r is None else {"r": r}
    bits, hub = await run_local(protocols.drelu, x, n, seed=seed, overrides=overrides)
    got = protocols.reconstruct([b.value for b in bits])
    assert_exact(got, sign_bits(x), f"local drelu n={n}", x)
    assert {b.depth for b in bits} == {ROUNDS}
    assert hub.rounds == ROUNDS
    assert hub.sent == [protocols.drelu_online_bytes(x.numel(), n)] * n

    pairs, hub = await run_local(protocols.relu, x, n, seed=seed + 1, overrides=overrides)
    y = protocols.reconstruct([p[0].value for p in pairs])
    bit = protocols.reconstruct([p[1].value for p in pairs])
    assert_exact(y, relu_ring(x), f"local relu n={n}", x)
    assert_exact(bit, sign_bits(x), f"local relu bit n={n}", x)
    assert {p[0].depth for p in pairs} == {ROUNDS}
    assert hub.sent == [protocols.drelu_online_bytes(x.numel(), n, with_relu=True)] * n


# opened values c = x + r that stress the carry circuit
C_TARGETS = [
    0,
    1,
    -1,
    2,
    INT64_MIN,
    INT64_MAX,
    2**62,
    -(2**62),
    2**63 - 2,
    INT64_MIN + 1,
    wrap(0x5555555555555555),
    wrap(0xAAAAAAAAAAAAAAAA),
    2**32 - 1,
    -(2**32),
]


@pytest.mark.parametrize("n", [2, 3, 4])
async def test_protocol_exact_for_adversarial_masks(n: int) -> None:
    xs, rs = [], []
    for v in EDGES:
        for target in C_TARGETS:  # choose r so that the opened c is a corner case
            xs.append(v)
            rs.append(wrap(target - v))
        for r in (0, -1, INT64_MIN, INT64_MAX, v, wrap(-2 * v)):  # masks that are corner cases
            xs.append(v)
            rs.append(wrap(r))
    x = torch.tensor(xs, dtype=torch.int64)
    r = torch.tensor(rs, dtype=torch.int64)
    await check_local(x, r, n)


@settings(max_examples=40, deadline=None, database=None)
@given(
    pairs=st.lists(st.tuples(int64s, int64s), min_size=1, max_size=64),
    n=st.sampled_from([2, 3, 4]),
)
async def test_protocol_exact_hypothesis_x_and_mask(pairs: list[tuple[int, int]], n: int) -> None:
    x = torch.tensor([p[0] for p in pairs], dtype=torch.int64)
    r = torch.tensor([p[1] for p in pairs], dtype=torch.int64)
    await check_local(x, r, n)


@pytest.mark.parametrize("n", [2, 5])
async def test_protocol_exact_random_masks(n: int) -> None:
    x = torch.tensor(EDGES, dtype=torch.int64).repeat(8).reshape(8, -1)
    await check_local(x, None, n, seed=n)


# ---------------------------------------------------------------------------------------
# 2. ReLU and comparison operators on fixed-point values
# ---------------------------------------------------------------------------------------


def fixed_point_values(fp: FixedPoint, count: int, seed: int) -> torch.Tensor:
    """Encoded integers (exactly representable as float64 ``e / scale``) incl. the limits."""
    limit = int(fp.encode(torch.tensor(fp.max_value, dtype=torch.float64)))
    g = torch.Generator().manual_seed(seed)
    rand = torch.randint(-limit, limit + 1, (count,), dtype=torch.int64, generator=g)
    small = torch.randint(-3 * fp.scale, 3 * fp.scale + 1, (count,), dtype=torch.int64, generator=g)
    fixed = torch.tensor(
        [0, 1, -1, 2, -2, fp.scale, -fp.scale, limit, -limit, limit - 1, -limit + 1]
    )
    return torch.cat([fixed, rand, small])


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("fp", [FixedPoint(10, 3), FixedPoint(2, 16)], ids=["b10p3", "b2p16"])
async def test_relu_fixed_point_exact(n: int, fp: FixedPoint) -> None:
    enc = fixed_point_values(fp, 2000, seed=n)
    plain = enc.to(torch.float64) / fp.scale
    assert torch.equal(fp.encode(plain), enc)  # the test values are exactly representable
    want = relu_ring(enc)
    async with start_cluster(n, protocols="carry", seed=n) as c:
        x = c.share(plain, precision=fp.precision, base=fp.base)
        outs = {"method": x.relu(), "torch.relu": torch.relu(x), "F.relu": F.relu(x)}
        for name, y in outs.items():
            assert isinstance(y, SharedTensor), name
            assert y.prec == fp.precision and y.shape == x.shape, name
            assert_exact(await reveal_raw(y), want, f"{name} n={n}", enc)
            assert torch.equal(await y.get(), fp.decode(want)), name
        assert_exact(await reveal_raw(x.drelu()), sign_bits(enc), f"drelu n={n}", enc)


@pytest.mark.parametrize("fp", [FixedPoint(10, 3), FixedPoint(2, 16)], ids=["b10p3", "b2p16"])
async def test_relu_at_range_limit_python_scalars(fp: FixedPoint) -> None:
    """``max_value`` is documented as the largest magnitude that encodes; sharing it (and
    other range-limit values) as plain Python floats must work and compare exactly."""
    limit = 2**protocols.ENCODED_LIMIT_BITS - 1
    values = [fp.max_value, -fp.max_value, (limit - 1) / fp.scale, -(limit - 1) / fp.scale]
    enc = torch.tensor([limit, -limit, limit - 1, -limit + 1], dtype=torch.int64)
    async with start_cluster(2, protocols="carry", seed=1) as c:
        x = c.share(values, precision=fp.precision, base=fp.base)
        assert_exact(await reveal_raw(x), enc, "shared encoding", enc)
        assert_exact(await reveal_raw(x.relu()), relu_ring(enc), "relu", enc)
        assert_exact(await reveal_raw(x < 0), (enc < 0).to(torch.int64), "x < 0", enc)
        top = c.share(fp.max_value, precision=fp.precision, base=fp.base)
        assert_exact(await reveal_raw(top.drelu()), torch.tensor(1), "drelu(max)", enc)


@pytest.mark.parametrize("n", [2, 3])
async def test_comparisons_match_torch(n: int) -> None:
    fp = FixedPoint(10, 3)
    a = fixed_point_values(fp, 1500, seed=10 + n)
    b = fixed_point_values(fp, 1500, seed=20 + n)
    g = torch.Generator().manual_seed(n)
    equal = torch.rand(a.shape, generator=g) < 0.3  # many equal pairs
    b = torch.where(equal, a, b)
    near = torch.rand(a.shape, generator=g) < 0.2  # and many one ulp apart
    limit = 2**protocols.ENCODED_LIMIT_BITS - 1
    one_ulp = (a + torch.randint(-1, 2, a.shape, generator=g)).clamp(-limit, limit)
    b = torch.where(near & ~equal, one_ulp, b)
    assert bool((a == b).any()) and bool((a < b).any()) and bool((a > b).any())
    pa, pb = a.to(torch.float64) / fp.scale, b.to(torch.float64) / fp.scale
    async with start_cluster(n, protocols="carry", seed=None) as c:
        x, y = c.share(pa), c.share(pb)
        cases = {
            "x < 0": (x < 0, a < 0),
            "x >= 0": (x >= 0, a >= 0),
            "x <= 0": (x <= 0, a <= 0),
            "x > 0": (x > 0, a > 0),
            "x > y": (x > y, a > b),
            "x >= y": (x >= y, a >= b),
            "x <= y": (x <= y, a <= b),
            "x < y": (x < y, a < b),
            "x >= 1.5": (x >= 1.5, a >= 1500),
            "x < -0.25": (x < -0.25, a < -250),
        }
        for name, (got, want) in cases.items():
            assert isinstance(got, SharedTensor), name
            assert got.prec == 0 and got.shape == x.shape, name
            assert_exact(await reveal_raw(got), want.to(torch.int64), f"{name} n={n}", a)
            assert torch.equal(await got.get(), want.to(torch.float32)), name


# ---------------------------------------------------------------------------------------
# 3. Measured costs against the closed forms
# ---------------------------------------------------------------------------------------


async def measure(
    n: int, numel: int, op: Callable[[SharedTensor], SharedTensor], **kw: Any
) -> tuple[Any, torch.Tensor, SharedTensor]:
    g = torch.Generator().manual_seed(numel)
    x = torch.randint(INT64_MIN, INT64_MAX, (numel,), dtype=torch.int64, generator=g)
    async with start_cluster(n, protocols="carry", seed=numel, **kw) as c:
        xs = ring_input(c, x)
        async with measured(c) as m:
            out = op(xs)
        delta = m.stats
        return delta, x, await reveal_raw(out)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("numel", [1, 7, 64, 1000])
@pytest.mark.parametrize("with_relu", [False, True], ids=["drelu", "relu"])
async def test_costs_match_closed_forms(n: int, numel: int, with_relu: bool) -> None:
    op = SharedTensor.relu if with_relu else SharedTensor.drelu
    delta, x, out = await measure(n, numel, op)
    assert_exact(out, relu_ring(x) if with_relu else sign_bits(x), "result", x)
    assert delta.online_rounds == ROUNDS
    per_party = protocols.drelu_online_bytes(numel, n, with_relu=with_relu)
    for name in PARTIES[n]:
        assert delta.per_actor[name].sent[Phase.ONLINE] == per_party, name
        assert delta.per_actor[name].received[Phase.ONLINE] == per_party, name
        assert delta.per_actor[name].online_depth == ROUNDS, name
    assert delta.online_bytes == n * per_party
    assert delta.offline_bytes == protocols.drelu_offline_bytes(numel, with_relu=with_relu)
    # the dealer's corrections go to the last party only; the others derive theirs locally
    last = PARTIES[n][-1]
    assert delta.per_actor[last].received[Phase.OFFLINE] == delta.offline_bytes
    assert delta.per_actor["james"].sent[Phase.OFFLINE] == delta.offline_bytes
    for name in PARTIES[n][:-1]:
        assert delta.per_actor[name].received[Phase.OFFLINE] == 0
    # online messages: one per round per ordered pair of parties
    assert delta.online_messages == ROUNDS * n * (n - 1)


def test_closed_forms_per_element() -> None:
    """The per-element figures the module doc states: online bytes for numel a multiple of
    8 (bit planes travel as ceil(numel * planes / 8) bytes), dealer bytes for numel a
    multiple of 64 (bit planes are dealt as words of 64 elements)."""
    assert DRELU_ROUNDS == 7  # "DReLU: 7 online rounds", "ReLU: 7 online rounds"
    for n in (2, 3, 4):
        for numel in (8, 64, 8 * 1001):
            assert protocols.drelu_online_bytes(numel, n) == numel * 19.625 * (n - 1)
            relu_bytes = protocols.drelu_online_bytes(numel, n, with_relu=True)
            assert relu_bytes == numel * 19.625 * (n - 1)  # ReLU reuses the opened c
    for numel in (64, 64 * 1001):
        assert protocols.drelu_offline_bytes(numel) == numel * 27.5
        assert protocols.drelu_offline_bytes(numel, with_relu=True) == numel * 35.5
    # a partial group of 64 is dealt as whole words: 156 planes of one word each
    assert protocols.drelu_offline_bytes(1) == 8 * 156 + 8
    assert protocols.drelu_offline_bytes(65, with_relu=True) == 2 * 8 * 156 + 16 * 65
    # costs below CrypTen's A2B ReLU (9 rounds, 232 bytes per party, 2 parties)
    assert ROUNDS < 9 and protocols.drelu_online_bytes(1000, 2, with_relu=True) / 1000 < 232


@pytest.mark.parametrize("n", [2, 3])
async def test_report_measured_costs_per_element(n: int) -> None:
    """Prints measured per-element costs (run with -s)."""
    numel = 1000
    lines = []
    for name, op in (("drelu", SharedTensor.drelu), ("relu", SharedTensor.relu)):
        delta, _, _ = await measure(n, numel, op)
        sent = delta.per_actor["alice"].sent[Phase.ONLINE]
        lines.append(
            f"{name} n={n}: rounds={delta.online_rounds} "
            f"online/party={sent / numel:.3f} B/elt ({sent / numel / (n - 1):.3f} per peer) "
            f"offline={delta.offline_bytes / numel:.3f} B/elt"
        )
        assert delta.online_rounds == ROUNDS
    print("\n" + "\n".join(lines))


@pytest.mark.parametrize("n", [2, 3])
async def test_comparison_operators_cost_one_drelu(n: int) -> None:
    numel = 64
    async with start_cluster(n, protocols="carry", seed=4) as c:
        x, y = c.share(torch.randn(numel)), c.share(torch.randn(numel))
        async with measured(c) as m:
            _ = x > y
        delta = m.stats
    assert delta.online_rounds == ROUNDS
    assert delta.per_actor["alice"].sent[Phase.ONLINE] == protocols.drelu_online_bytes(numel, n)
    assert delta.offline_bytes == protocols.drelu_offline_bytes(numel)


# ---------------------------------------------------------------------------------------
# 4. Independent ops share rounds; dependent ops add them
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
async def test_independent_relus_share_rounds(n: int) -> None:
    k, numel = 5, 16
    g = torch.Generator().manual_seed(n)
    xs = [torch.randint(-(10**6), 10**6, (numel,), generator=g) for _ in range(k)]
    async with start_cluster(n, protocols="carry", seed=n) as c:
        shared = [ring_input(c, x) for x in xs]
        async with measured(c) as m:
            outs = [s.relu() for s in shared]
        delta = m.stats
        for x, out in zip(xs, outs, strict=True):
            assert_exact(await reveal_raw(out), relu_ring(x), "relu", x)
    assert delta.online_rounds == ROUNDS
    per_party = k * protocols.drelu_online_bytes(numel, n, with_relu=True)
    assert delta.per_actor["alice"].sent[Phase.ONLINE] == per_party
    assert delta.offline_bytes == k * protocols.drelu_offline_bytes(numel, with_relu=True)


@pytest.mark.parametrize("n", [2, 3])
async def test_dependent_relus_add_rounds(n: int) -> None:
    x = torch.tensor([-3, -1, 0, 1, 5, INT64_MIN, INT64_MAX], dtype=torch.int64)
    async with start_cluster(n, protocols="carry", seed=n) as c:
        xs = ring_input(c, x)
        async with measured(c) as m:
            y = (xs.relu() - 2).relu()  # the second depends on the first
        delta = m.stats
        assert_exact(await reveal_raw(y), relu_ring(relu_ring(x) - 2), "relu(relu(x)-2)", x)
    assert delta.online_rounds == 2 * ROUNDS
    per_party = 2 * protocols.drelu_online_bytes(x.numel(), n, with_relu=True)
    assert delta.per_actor["bob"].sent[Phase.ONLINE] == per_party


@pytest.mark.parametrize("n", [2, 3])
async def test_mixed_independent_comparisons_share_rounds(n: int) -> None:
    async with start_cluster(n, protocols="carry", seed=9) as c:
        x, y = c.share(torch.randn(10)), c.share(torch.randn(10))
        async with measured(c) as m:
            _ = [x.relu(), y.drelu(), x > y, torch.relu(y), x <= 0.5]
        assert m.stats.online_rounds == ROUNDS


LATENCY = 0.01


async def _timed(n: int, build: Callable[[list[SharedTensor]], object], k: int) -> float:
    profile = NetworkProfile(latency=LATENCY)
    async with start_cluster(n, protocols="carry", seed=1, network=profile) as c:
        shared = [c.share(torch.randn(8)) for _ in range(k)]
        await c.flush()
        t0 = trio.current_time()
        build(shared)
        await c.flush()
        return trio.current_time() - t0


@pytest.mark.parametrize("n", [2, 3])
async def test_wall_time_matches_rounds(n: int, autojump_clock: Any) -> None:
    """Cross-check of the round meter: with per-message latency L, time = rounds x L."""
    assert await _timed(n, lambda s: s[0].drelu(), 1) == pytest.approx(ROUNDS * LATENCY)
    assert await _timed(n, lambda s: s[0].relu(), 1) == pytest.approx(ROUNDS * LATENCY)
    five = await _timed(n, lambda s: [t.relu() for t in s], 5)
    assert five == pytest.approx(ROUNDS * LATENCY)
    two = await _timed(n, lambda s: s[0].relu().relu(), 1)
    assert two == pytest.approx(2 * ROUNDS * LATENCY)
