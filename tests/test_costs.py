"""Measured rounds and bytes against the documented costs, exactly, per party.

Costs (protocols/beaver.py, protocols/truncate.py, protocols/material.py), n parties,
N = numel, each party sends to each of its n-1 peers:

* online bytes per party: mul 8 (N_x + N_y) (n-1); square 8 N_x (n-1); matmul
  (m,k)x(k,n) 8 (mk + kn) (n-1). With n >= 3 the truncation opens x - r once more:
  + 8 N_out (n-1) per party and one more round.
* dealer bytes, all to the last party: 8 N_out for the product's correction c; with
  n >= 3 another 8 N_out for the truncation pair's correction floor(r/d).
* rounds: 1 with 2 parties (local truncation), 2 with 3 parties.
"""

from __future__ import annotations

from math import prod

import pytest
import torch
from conftest import PARTIES, PROVIDER, Tap

from actors import CommStats, Phase
from protocols.suite import DEFAULT
from training import Cluster

SHAPES = {
    "mul": [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((1,), (5, 1))],
    "square": [((3, 4),), ((7,),)],
    "matmul": [((3, 4), (4, 5)), ((1, 6), (6, 1)), ((5, 2), (2, 3))],
}


def out_shape(kind: str, shapes: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
    if kind == "matmul":
        return (shapes[0][0], shapes[1][1])
    return tuple(torch.broadcast_shapes(*shapes))


def expected(kind: str, shapes: tuple[tuple[int, ...], ...], n: int) -> tuple[int, int, int]:
    """(rounds, online bytes sent by each party, dealer bytes) for one op, from the suite's
    closed form (fixed-point inputs: one truncation by the scale 1000)."""
    cost = DEFAULT.cost(kind, shapes, out_shape(kind, shapes), 1000, n)
    return cost.rounds, cost.online_bytes, cost.dealer_bytes


def test_suite_closed_forms_match_the_papers_formulas() -> None:
    """The suite's costs against the formulas of the module doc, written out once here."""
    for n in (2, 3):
        for kind, cases in SHAPES.items():
            for shapes in cases:
                n_out = prod(out_shape(kind, shapes))
                online = 8 * sum(prod(s) for s in shapes) * (n - 1)
                offline, rounds = 8 * n_out, 1
                if n >= 3:
                    online += 8 * n_out * (n - 1)
                    offline += 8 * n_out
                    rounds += 1
                assert expected(kind, shapes, n) == (rounds, online, offline), (kind, shapes, n)


def run(kind: str, xs: list) -> object:
    if kind == "mul":
        return xs[0] * xs[1]
    if kind == "square":
        return xs[0] ** 2
    return xs[0] @ xs[1]


def assert_cost(d: CommStats, parties: list[str], rounds: int, online: int, offline: int) -> None:
    n = len(parties)
    assert d.online_rounds == rounds
    assert d.online_bytes == n * online
    assert d.offline_bytes == offline
    assert d.online_messages == rounds * n * (n - 1)
    assert d.input_bytes == 0
    assert d.output_bytes == 0
    for name in parties:
        a = d.per_actor[name]
        assert a.sent[Phase.ONLINE] == online, name
        assert a.received[Phase.ONLINE] == online, name
        assert a.sent[Phase.OFFLINE] == 0, name
        assert a.online_depth == rounds, name
        want = offline if name == parties[-1] else 0
        assert a.received[Phase.OFFLINE] == want, name
    dealer = d.per_actor[PROVIDER]
    assert dealer.sent[Phase.OFFLINE] == offline
    assert dealer.sent[Phase.ONLINE] == 0
    assert dealer.received[Phase.ONLINE] == 0
    # The provider only ever receives control metadata.
    assert sum(v for p, v in dealer.received.items() if p != Phase.CONTROL) == 0
    coordinator = d.per_actor["coordinator"]
    assert coordinator.sent[Phase.ONLINE] == coordinator.received[Phase.ONLINE] == 0


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize(
    ("kind", "shapes"), [(k, s) for k, ss in SHAPES.items() for s in ss], ids=str
)
async def test_single_op_cost(kind: str, shapes: tuple, n: int) -> None:
    parties = PARTIES[n]
    async with Cluster.start(parties, provider=PROVIDER, seed=11) as c:
        xs = [c.share(torch.rand(s) * 4 - 2) for s in shapes]
        await c.flush()
        tap = Tap(c)
        before = c.stats()
        z = run(kind, xs)
        await c.flush()
        d = c.stats() - before
        assert_cost(d, parties, *expected(kind, shapes, n))
        # The meter counts what the wire carried: 8 bytes per decoded ring element.
        carried = sum(
            8 * t.numel()
            for env in tap.envelopes
            if env.phase == Phase.ONLINE
            for t in env.tensors()
        )
        assert carried == d.online_bytes
        assert tuple(z.shape) == out_shape(kind, shapes)


@pytest.mark.parametrize("n", [2, 3])
async def test_square_is_half_of_mul_online(n: int) -> None:
    async with Cluster.start(PARTIES[n], provider=PROVIDER, seed=2) as c:
        x = c.share(torch.rand(6, 6))
        await c.flush()
        before = c.stats()
        x**2
        await c.flush()
        sq = c.stats() - before
    async with Cluster.start(PARTIES[n], provider=PROVIDER, seed=2) as c:
        x = c.share(torch.rand(6, 6))
        await c.flush()
        before = c.stats()
        x * x
        await c.flush()
        mul = c.stats() - before
    trunc = 8 * 36 * (n - 1) * n if n >= 3 else 0
    assert 2 * (sq.online_bytes - trunc) == mul.online_bytes - trunc
    assert sq.online_rounds == mul.online_rounds


@pytest.mark.parametrize("k", [1, 2, 5])
async def test_dependent_muls_cost_one_round_each(k: int) -> None:
    parties = PARTIES[2]
    async with Cluster.start(parties, provider=PROVIDER, seed=5) as c:
        x = c.share(torch.full((2, 3), 1.01))
        await c.flush()
        before = c.stats()
        z = x
        for _ in range(k):
            z = z * x
        await c.flush()
        d = c.stats() - before
        _, online, offline = expected("mul", ((2, 3), (2, 3)), 2)
        assert_cost(d, parties, k, k * online, k * offline)
        assert abs(float((await z.get())[0, 0]) - 1.01 ** (k + 1)) < 1e-2


@pytest.mark.parametrize("k", [2, 5])
async def test_independent_muls_share_one_round(k: int) -> None:
    parties = PARTIES[2]
    async with Cluster.start(parties, provider=PROVIDER, seed=6) as c:
        xs = [c.share(torch.rand(4) + i) for i in range(k)]
        ys = [c.share(torch.rand(4) - i) for i in range(k)]
        await c.flush()
        before = c.stats()
        zs = [x * y for x, y in zip(xs, ys, strict=True)]
        await c.flush()
        d = c.stats() - before
        _, online, offline = expected("mul", ((4,), (4,)), 2)
        assert d.online_rounds == 1
        assert d.online_bytes == 2 * k * online
        assert d.offline_bytes == k * offline
        assert d.online_messages == 2 * k
        for name in parties:
            assert d.per_actor[name].sent[Phase.ONLINE] == k * online
            assert d.per_actor[name].online_depth == 1
        assert len(zs) == k


async def test_independent_branches_then_join() -> None:
    """Depth is a max, not a sum: two independent chains of 2 muls, then one join."""
    async with Cluster.start(PARTIES[2], provider=PROVIDER, seed=7) as c:
        a = c.share(torch.rand(3))
        b = c.share(torch.rand(3))
        await c.flush()
        before = c.stats()
        left = (a * a) * a
        right = (b * b) * b
        left * right
        await c.flush()
        d = c.stats() - before
        assert d.online_rounds == 3
        assert d.online_bytes == 5 * 2 * 8 * 6


@pytest.mark.parametrize("n", [2, 3])
async def test_local_ops_cost_nothing_online(n: int) -> None:
    parties = PARTIES[n]
    async with Cluster.start(parties, provider=PROVIDER, seed=8) as c:
        x = c.share(torch.rand(3, 4))
        y = c.share(torch.rand(3, 4))
        await c.flush()
        before = c.stats()
        ((x + y) - y * 3 + 1.5).T.sum()
        neg = -x
        await c.flush()
        d = c.stats() - before
        assert d.online_rounds == 0
        assert d.online_bytes == d.offline_bytes == d.online_messages == 0
        assert d.input_bytes == d.output_bytes == 0
        assert neg.shape == x.shape


@pytest.mark.parametrize("n", [2, 3])
async def test_input_and_output_bytes(n: int) -> None:
    parties = PARTIES[n]
    async with Cluster.start(parties, provider=PROVIDER, seed=9) as c:
        before = c.stats()
        x = c.share(torch.rand(5, 2))
        await c.flush()
        d = c.stats() - before
        assert d.input_bytes == 8 * 10 * n
        for name in parties:
            assert d.per_actor[name].received[Phase.INPUT] == 80
        before = c.stats()
        await x.get()
        d = c.stats() - before
        assert d.output_bytes == 8 * 10 * n
        assert d.per_actor["coordinator"].received[Phase.OUTPUT] == 8 * 10 * n
        assert d.online_bytes == d.offline_bytes == 0
