"""The round meter is honest across synchronisations (issue: rounds after a reveal).

An op issued after the coordinator awaited a result (a reveal or a flush) cannot start
before that point: its depth starts at the depth reached then, so the ``CommStats``
difference over any interval is what a network would spend in it. Each scenario is
asserted exactly against the suite's closed form, and cross-checked with wall time on
trio's mock clock, where simulated latency is the only thing that advances time: the time
of an interval is ``rounds x L`` exactly (within 10% is the requirement).
"""

from __future__ import annotations

import pytest
import torch
import trio
from seed_net import DATA, TARGET, loss_fn, make_net

from actors import NetworkProfile
from protocols.suite import get_suite
from training import SGD, Cluster, TrainingCoordinator
from training.testing import start_cluster

L = 0.01
CASES = [(2, "default"), (2, "carry"), (2, "fss-exact"), (3, "default")]


def rounds_of(suite: str, kind: str, n: int, shape: tuple[int, ...] = (4,)) -> int:
    return get_suite(suite).cost(kind, [shape] * (2 if kind == "mul" else 1), shape, 1000, n).rounds


async def interval(c: Cluster, body) -> tuple[int, float]:  # type: ignore[no-untyped-def]
    """(rounds, mock-clock seconds) of ``body``, which ends with a synchronisation."""
    before, t0 = c.stats(), trio.current_time()
    await body()
    return (c.stats() - before).online_rounds, trio.current_time() - t0


@pytest.mark.parametrize(("n", "suite"), CASES)
async def test_rounds_after_a_reveal(n: int, suite: str, autojump_clock: trio.abc.Clock) -> None:
    mul, relu = rounds_of(suite, "mul", n), rounds_of(suite, "relu", n)
    async with start_cluster(n, seed=1, protocols=suite, network=NetworkProfile(latency=L)) as c:
        v = c.share(torch.tensor([1.001, -0.5, 0.25, 2.0]))
        w = (v * v).relu()  # something deeper than v is in flight before the reveal
        await v.get()

        async def chain() -> None:
            z = v
            for _ in range(5):
                z = z * v
            await z.get()

        async def independent_products() -> None:
            zs = [v * v for _ in range(5)]
            for z in zs:
                await z.get()

        async def independent_relus() -> None:
            ys = [(v + float(i)).relu() for i in range(4)]
            for y in ys:
                await y.get()

        for body, want in (
            (chain, 5 * mul),
            (independent_products, mul),
            (independent_relus, relu),
        ):
            rounds, seconds = await interval(c, body)
            assert rounds == want, body.__name__
            assert abs(seconds - rounds * L) <= 0.1 * rounds * L, (body.__name__, seconds)
        await w.get()


@pytest.mark.parametrize(
    ("n", "suite", "per_iteration"), [(2, "default", 6), (2, "carry", 12), (3, "default", 17)]
)
async def test_training_rounds_with_the_loss_revealed_each_iteration(
    n: int, suite: str, per_iteration: int, autojump_clock: trio.abc.Clock
) -> None:
    async with start_cluster(n, seed=2, protocols=suite, network=NetworkProfile(latency=L)) as c:
        x, y = c.share(DATA), c.share(TARGET)
        model = c.share_module(make_net())
        coord = TrainingCoordinator(c, model, SGD(model.parameters(), lr=0.1), loss_fn)
        await c.flush()
        start, t0 = c.stats(), trio.current_time()
        records = [await coord.step(x, y) for _ in range(4)]
        total = c.stats() - start
        elapsed = trio.current_time() - t0
    assert [r.online_rounds for r in records] == [per_iteration] * 4
    assert total.online_rounds == 4 * per_iteration
    assert abs(elapsed - total.online_rounds * L) <= 0.1 * total.online_rounds * L, elapsed
