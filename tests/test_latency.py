"""Cross-check of the round count with wall time: a sequential computation over links with
a simulated per-message latency L takes about rounds x L (DESIGN: metering)."""

from __future__ import annotations

import threading

import pytest
import torch
import trio

from actors import NetworkProfile
from training import Cluster
from training.testing import start_cluster

L = 0.02
K = 5


async def timed_chain(c: Cluster, k: int) -> tuple[float, int]:
    """Wall time and measured rounds of k dependent multiplications (shares in place)."""
    x = c.share(torch.full((8,), 1.001))
    await c.flush()
    before = c.stats()
    start = trio.current_time()
    z = x
    for _ in range(k):
        z = z * x
    await c.flush()
    elapsed = trio.current_time() - start
    return elapsed, (c.stats() - before).online_rounds


async def warm_up() -> None:
    """torch's first int64 kernels take seconds to load; pay that outside the timing."""
    async with start_cluster(2, seed=0) as c:
        await timed_chain(c, 1)


async def test_dependent_chain_takes_rounds_times_latency() -> None:
    await warm_up()
    async with start_cluster(2, seed=1, network=NetworkProfile(latency=L)) as c:
        elapsed, rounds = await timed_chain(c, K)
    assert rounds == K
    # Each round waits for one message delivery; provider and coordinator links are
    # instantaneous, so the chain cannot be faster than K x L, and local work is small.
    assert 4.5 * L <= elapsed < K * L + 0.15, elapsed


async def test_independent_muls_take_one_latency() -> None:
    await warm_up()
    async with start_cluster(2, seed=1, network=NetworkProfile(latency=L)) as c:
        xs = [c.share(torch.rand(4)) for _ in range(K)]
        await c.flush()
        start = trio.current_time()
        for x in xs:
            x * x
        await c.flush()
        elapsed = trio.current_time() - start
    assert 0.9 * L <= elapsed < L + 0.1, elapsed


async def test_no_latency_is_fast() -> None:
    await warm_up()
    async with start_cluster(2, seed=1) as c:
        elapsed, rounds = await timed_chain(c, K)
    assert rounds == K
    assert elapsed < 0.05, elapsed


async def test_sub_millisecond_latency_is_simulated_as_given() -> None:
    """A 0.2 ms delivery waits 0.2 ms, not the event loop's millisecond tick (a plain trio
    sleep of 0.2 ms lasts ~1.2 ms here): the median of 20 waits is within 0.2-0.9 ms."""
    from actors.network import sleep_until_precisely

    waits = []
    for _ in range(20):
        start = trio.current_time()
        await sleep_until_precisely(start + 2e-4)
        waits.append(trio.current_time() - start)
    waits.sort()
    assert waits[0] >= 2e-4
    assert waits[10] < 9e-4, waits


def test_precise_sleep_under_an_autojump_clock_is_a_plain_sleep() -> None:
    """Under a MockClock that jumps when every task sleeps, spinning would keep the clock
    still forever: the precise sleep must sleep plainly there (this test would hang)."""
    from actors.network import sleep_until_precisely

    async def main() -> float:
        start = trio.current_time()
        await sleep_until_precisely(start + 5.0)
        return trio.current_time() - start

    got: list[float] = []  # in a daemon thread: a regression fails here instead of hanging
    t = threading.Thread(
        target=lambda: got.append(
            trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        ),
        daemon=True,
    )
    t.start()
    t.join(timeout=20)
    assert got == [pytest.approx(5.0)], "the precise sleep never returned under a MockClock"
