"""Whom a bounded wait blames, from the peers' heartbeat states (actors/endpoint.py).

CI once failed with a spurious ActorTimeout next to CPU hogs (tests/test_load.py): the
coordinator, waiting for alice's output, followed only the first (alphabetical) actor each
peer waited on and saw "alice -> bob -> alice", a cycle; bob was also waiting on the
provider, which was busy dealing, and in a multi-round exchange the parties wait on each
other in every snapshot. A verdict now needs *every* wait of a peer to be stuck, and a
cycle only counts once its waits have lasted a whole bound.
"""

from __future__ import annotations

import pytest
import trio

from actors.endpoint import Endpoint
from actors.messages import Heartbeat

BOUND = 0.1


def _endpoint(states: dict[str, Heartbeat]) -> Endpoint:
    ep = Endpoint("coordinator", network=None, timeout=BOUND)  # type: ignore[arg-type]
    now = trio.current_time()
    for peer, hb in states.items():
        ep._heard[peer] = now
        ep._states[peer] = hb
        ep._state_at[peer] = now
    return ep


def _hb(waits: dict[str, float], busy: int = 1, stray: list[str] | None = None) -> Heartbeat:
    names = sorted(waits)
    return Heartbeat(busy, names, stray or [], [waits[n] for n in names])


async def test_a_peer_also_waiting_on_a_busy_actor_is_not_blamed() -> None:
    """The CI failure's states: bob waits on alice *and* on the busy provider."""
    ep = _endpoint(
        {
            "alice": _hb({"bob": 0.5}),
            "bob": _hb({"alice": 0.5, "provider": 0.5}),
            "provider": _hb({}, busy=1),
        }
    )
    assert ep._judge("alice", 0.2) is None


async def test_a_young_cycle_is_an_exchange_in_flight() -> None:
    ep = _endpoint({"alice": _hb({"bob": 0.02}), "bob": _hb({"alice": 0.01})})
    assert ep._judge("alice", 0.2) is None


@pytest.mark.parametrize("age", [BOUND, 0.5])
async def test_an_old_cycle_is_blamed(age: float) -> None:
    ep = _endpoint({"alice": _hb({"bob": age}), "bob": _hb({"alice": age})})
    assert ep._judge("alice", 0.2) == ("coordinator", "alice", "bob")


async def test_a_cycle_with_a_stray_message_names_its_sender() -> None:
    """bob's awaited message went elsewhere: alice holds something unasked from bob."""
    ep = _endpoint({"alice": _hb({"bob": 0.5}, stray=["bob"]), "bob": _hb({"alice": 0.5})})
    assert ep._judge("alice", 0.2) == ("coordinator", "alice", "bob")


async def test_every_wait_stuck_blames_the_first_dead_end() -> None:
    """bob waits on alice (an old cycle) and on carol, who is idle: bob cannot progress."""
    ep = _endpoint(
        {
            "alice": _hb({"bob": 0.5}),
            "bob": _hb({"alice": 0.5, "carol": 0.5}),
            "carol": _hb({}, busy=0),
        }
    )
    assert ep._judge("alice", 0.2) == ("coordinator", "alice", "bob")


async def test_a_silent_peer_behind_a_waiting_one_is_named() -> None:
    ep = _endpoint({"alice": _hb({"bob": 0.05})})
    ep._heard["bob"] = trio.current_time() - 2 * BOUND
    assert ep._judge("alice", 0.2) == ("coordinator", "alice", "bob")


async def test_states_from_before_the_wait_give_time() -> None:
    ep = _endpoint({"alice": _hb({"bob": 0.5}), "bob": _hb({"alice": 0.5})})
    ep._state_at["bob"] = trio.current_time() - 1.0
    assert ep._judge("alice", 0.2) is None
