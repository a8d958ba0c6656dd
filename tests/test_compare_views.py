"""What each actor sees during DReLU/ReLU is distributed independently of the secret.

Semi-honest security of the comparison means a party's view (everything it receives, plus
what it computes from its own shares) has the same distribution whatever ``x`` is. These
tests run the protocol on a secret tensor A and on a different secret tensor B in unseeded
clusters (fresh OS keys), record every message with the network's interceptor, build each
party's view with ``conftest.envelope_view`` (input shares, dealer messages, what it
receives and sends, hence what it opens: ``c = x + r``, the masked AND inputs, the masked
last step) and compare the views with the one shared analysis,
:func:`protocols.analysis.compare`: G-tests on marginal, joint, pair and per-element cross
features (families (a) to (d)), Bonferroni at ``FWER`` per analysis. The same analysis is
then shown to fail on deliberately leaky variants (which still compute the right answer).
The provider must receive only control messages carrying op ids, kinds, shapes and
divisors, identical for A and B.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import pytest
import torch
from scipy import stats

from actors import Phase
from actors.messages import Requests
from protocols import FixedPoint, Share
from protocols.analysis import g_test, marginal_features
from protocols.compare import DRELU_ROUNDS
from protocols.material import MaterialSpec
from protocols.ring import to_bits, to_planes
from protocols.suite import CARRY, OpKind, Suite
from protocols.testing import TamperContext
from training import SharedTensor
from training.testing import (
    PARTIES,
    Recording,
    analyse,
    envelope_view,
    recorded,
    reveal_raw,
    start_cluster,
)

NUMEL = 2000
FWER = 1e-6
RAW = FixedPoint(10, 0)


# ---------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------


async def record(
    value: int,
    n: int,
    *,
    check: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
    suite: Suite = CARRY,
) -> Recording:
    """Run drelu and relu on a tensor of NUMEL copies of the ring integer ``value``."""
    x = torch.full((NUMEL,), value, dtype=torch.int64)
    async with start_cluster(n, seed=None, protocols=suite) as c:
        xs = SharedTensor(c, c.input(x), x.shape, RAW)
        await c.flush()
        async with recorded(c) as rec:
            bit, y = xs.drelu(), xs.relu()
            await c.flush()
        check(x, await reveal_raw(bit), await reveal_raw(y))
        totals = c.stats()
    # who may receive what, over the cluster's whole life
    james = totals.per_actor["james"].received
    assert {p for p, v in james.items() if v} == {Phase.CONTROL}
    coordinator = totals.per_actor["coordinator"].received
    assert {p for p, v in coordinator.items() if v} <= {Phase.OUTPUT, Phase.CONTROL}
    return rec


def correct(x: torch.Tensor, bit: torch.Tensor, y: torch.Tensor) -> None:
    assert torch.equal(bit, (x >= 0).to(torch.int64))
    assert torch.equal(y, torch.where(x >= 0, x, torch.zeros_like(x)))


# ---------------------------------------------------------------------------------------
# Views and the shared analysis
# ---------------------------------------------------------------------------------------


def provider_requests(t: Recording) -> list[Any]:
    envs = [e for e in t.envs if e.receiver == "james"]
    assert envs, "the provider received no request"
    out = []
    for e in envs:
        assert e.phase == Phase.CONTROL and e.sender == "coordinator", e
        reqs = e.control(Requests).items
        for req in reqs:
            assert req.kind in {"drelu", "relu"}, req
            assert req.shapes == [(NUMEL,)] and req.out == (NUMEL,) and req.d == 1, req
        out.append(reqs)
    return out


# ---------------------------------------------------------------------------------------
# The real protocol
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("pair", [(5, -5), (0, -(2**62))], ids=["+5/-5", "0/-2^62"])
async def test_views_independent_of_secret(n: int, pair: tuple[int, int]) -> None:
    ta = await record(pair[0], n, check=correct)
    tb = await record(pair[1], n, check=correct)
    # same messages, tags, phases, depths, sizes and shapes
    assert ta.metadata() == tb.metadata()
    # every party gets one message per round from every peer, for each of the two ops
    for party in PARTIES[n]:
        got = ta.received(party, (Phase.ONLINE,))
        assert len(got) == 2 * DRELU_ROUNDS * (n - 1)
        assert {e.depth for e in got} == set(range(1, DRELU_ROUNDS + 1))
    report = analyse(ta, tb)
    assert len(report) > 1000
    bad = report.rejected(FWER)
    assert not bad, "views depend on the secret:\n" + report.summary(FWER, top=20)
    # the provider learns op ids, kinds and shapes only, the same for A and B
    assert provider_requests(ta) == provider_requests(tb)


async def test_opened_comparison_value_is_uniform() -> None:
    """One-sample sanity check: the opened ``c = x + r`` of bob's view is uniform."""
    t = await record(5, 2, check=correct)
    bob = envelope_view(t.envs, "bob", t.parties)
    opened = [v for k, _, v in bob.opened if k.endswith(" cmp[0]")]
    assert len(opened) == 2
    for v in opened:
        bits = to_bits(v).double().mean(0)
        assert float((bits - 0.5).abs().max()) < 6 * math.sqrt(0.25 / NUMEL)
        for k in range(4):
            s = ((v >> (16 * k)) & 0xFFFF).double() / 65536
            assert stats.kstest(s.numpy(), "uniform").pvalue > 1e-6


# ---------------------------------------------------------------------------------------
# Leaky variants: the same analysis must see the leak
# ---------------------------------------------------------------------------------------

Tamper = Callable[[int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


def small_mask(rank: int, m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The comparison mask r is the constant 7 instead of uniform over the ring (every
    item derived from r is made consistent: its bits, the level-0 products, r * alpha)."""
    k = torch.full_like(m["r"], 7 if rank == 0 else 0)
    bits = to_planes(k)
    pairs = ~(bits[1:62:2] | bits[0:62:2]) if rank == 0 else torch.zeros_like(m["rpairs"])
    out = {**m, "r": k, "rbits": bits, "rpairs": pairs}
    if "r_a" in m:
        out["r_a"] = 7 * m["m_a"]
    return out


def unmasked_final(rank: int, m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The last step's mask alpha is zero (and so r * alpha): it opens ``K``, the sign
    bit itself."""
    zero = ["fa", "m_a", *(["r_a"] if "r_a" in m else [])]
    return {**m, **{k: torch.zeros_like(m[k]) for k in zero}}


def unmasked_and(rank: int, m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first AND level's mask a is zero: it opens the propagate bits of c ^ ~r."""
    return {**m, **{k: torch.zeros_like(m[k]) for k in ("a0", "c0", "cc0")}}


def leaky(tamper: Tamper) -> Suite:
    """The default suite with drelu and relu running over a tampering context."""

    def wrap(kind: str) -> Any:
        def build(suite: Suite, n: int) -> OpKind:
            real = CARRY.kind(kind, n)
            assert real.run is not None
            inner = real.run

            def fix(rank: int, spec: MaterialSpec, m: dict) -> dict[str, torch.Tensor]:
                return tamper(rank, m)

            async def run(ctx: Any, xs: Sequence[Share], params: Any) -> list[Share]:
                return await inner(TamperContext(ctx, tamper=fix), xs, params)

            return dataclasses.replace(real, run=run)

        return build

    return CARRY.replace(f"leaky-{tamper.__name__}", drelu=wrap("drelu"), relu=wrap("relu"))


@pytest.mark.parametrize(
    ("tamper", "pair"),
    [(small_mask, (5, -5)), (unmasked_final, (5, -5)), (unmasked_and, (0, -5))],
    ids=["small-mask", "unmasked-final", "unmasked-and"],
)
@pytest.mark.parametrize("n", [2, 3])
async def test_analysis_detects_leaky_variants(
    n: int, tamper: Tamper, pair: tuple[int, int]
) -> None:
    suite = leaky(tamper)
    # the leaky variants still compute the right answer: only the views give them away
    ta = await record(pair[0], n, check=correct, suite=suite)
    tb = await record(pair[1], n, check=correct, suite=suite)
    assert ta.metadata() == tb.metadata()
    report = analyse(ta, tb)
    bad = report.rejected(FWER)
    assert bad, f"{tamper.__name__}: the analysis missed the leak"
    # every party opens the leaked values, so every party's view must give it away
    for rank in range(n):
        assert any(f.name.startswith(f"party {rank} ") and " open " in f.name for f in bad), rank
    print(f"\n{tamper.__name__}: {report.summary(FWER, top=1)}")


def test_the_g_tests_have_power_and_level() -> None:
    """The shared analysis's marginal G-tests on a small controlled example (no cluster)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-(2**63), 2**63 - 1, (NUMEL,), generator=g)
    b = torch.randint(-(2**63), 2**63 - 1, (NUMEL,), generator=g)
    alpha = FWER / 4

    def fails(x: torch.Tensor, y: torch.Tensor) -> list[str]:
        fx, fy = marginal_features(x), marginal_features(y)
        assert sorted(fx) == ["magnitude", "mod16", "parity", "top4"]
        return [k for k in fx if g_test(fx[k], fy[k])[2] < alpha]

    assert not fails(a, b)
    assert "top4" in fails(a, b | (1 << 62))  # one bit always set
    assert "mod16" in fails(a, (b & ~0xFF) + 17)  # low byte constant
    assert "magnitude" in fails(a, b >> 2)  # top bits biased
