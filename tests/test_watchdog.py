"""Bounded waits: served by the mailbox's one watchdog while it runs, timed by each wait
otherwise; either way a wait on a silent peer fails naming it, and messages still arrive."""

from __future__ import annotations

import pytest
import torch
import trio
import trio.testing

from actors.envelope import Phase
from actors.network import Network
from protocols.errors import ActorTimeout


def _net() -> Network:
    return Network(["alice", "bob"], timeout=1.0, heartbeats=False)


@pytest.mark.parametrize("watched", [True, False])
def test_a_wait_on_a_silent_peer_names_it(watched: bool) -> None:
    async def main() -> float:
        net = _net()
        box = net.endpoints["bob"].mailbox
        async with trio.open_nursery() as nursery:
            if watched:
                nursery.start_soon(box.watch)
                await trio.testing.wait_all_tasks_blocked()
            t0 = trio.current_time()
            with pytest.raises(ActorTimeout) as info:
                await box.recv("alice", "1/x", timeout=0.5)
            assert "alice" in str(info.value) and "'1/x'" in str(info.value)
            assert not box.waits()[0]
            nursery.cancel_scope.cancel()
        return trio.current_time() - t0

    # nothing heard from alice: silent once the wait reaches the endpoint timeout (1 s),
    # blamed after the quarter-bound second look
    waited = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert waited == pytest.approx(1.125)


def test_the_watchdog_serves_waits_of_different_bounds_and_deliveries() -> None:
    async def main() -> None:
        net = _net()
        box = net.endpoints["bob"].mailbox
        got: list[str] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(box.watch)
            await trio.testing.wait_all_tasks_blocked()

            async def long_wait() -> None:
                env = await box.recv("alice", "2/y", timeout=10.0)
                got.append(env.tag)

            nursery.start_soon(long_wait)
            await trio.testing.wait_all_tasks_blocked()
            t0 = trio.current_time()
            with pytest.raises(ActorTimeout):  # a shorter bound than the wait before it
                await box.recv("alice", "1/x", timeout=0.2)
            assert trio.current_time() - t0 == pytest.approx(1.05)
            t = torch.arange(3, dtype=torch.int64)
            net.endpoints["alice"].send_nowait("bob", "2/y", Phase.ONLINE, tensors=[t])
            await trio.testing.wait_all_tasks_blocked()
            assert got == ["2/y"]
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_a_wait_outlives_its_watchdog() -> None:
    async def main() -> None:
        net = _net()
        box = net.endpoints["bob"].mailbox
        async with trio.open_nursery() as nursery:
            dog = trio.CancelScope()

            async def watch() -> None:
                with dog:
                    await box.watch()

            nursery.start_soon(watch)
            await trio.testing.wait_all_tasks_blocked()

            async def stop() -> None:
                await trio.sleep(0.1)
                dog.cancel()

            nursery.start_soon(stop)
            with pytest.raises(ActorTimeout):  # timed by the wait itself once the dog ends
                await box.recv("alice", "1/x", timeout=0.5)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
