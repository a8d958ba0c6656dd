"""Fault injection inside the seed experiment's training steps (issue: reliability).

Delays and reordering must not change a single bit of the result; a crash at any message
must end the run with PartyFailure naming the crashed actor, quickly, with no task left.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import trio
import trio.testing

from actors import Chaos, configure_logging
from protocols.errors import PartyFailure
from training import SGD, TrainingCoordinator, reveal_module
from training.testing import start_cluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
from seed_net import DATA, TARGET, loss_fn, make_net

SEED = 11
STEPS = 1


async def _train(
    chaos: Chaos | None, steps: int = STEPS
) -> tuple[list[float], dict[str, torch.Tensor], dict[str, int]]:
    async with start_cluster(2, seed=SEED, chaos=chaos) as c:
        x, y = c.share(DATA), c.share(TARGET)
        model = c.share_module(make_net())
        coord = TrainingCoordinator(
            c, model, SGD(model.parameters(), lr=0.1), loss_fn, measure_phases=False
        )
        losses = [(await coord.step(x, y)).loss for _ in range(steps)]
        params = await reveal_module(model)
        await c.flush()
        sent = {name: a.messages_sent for name, a in c.stats().per_actor.items()}
        return losses, params, sent


@pytest.fixture(scope="module")
def baseline() -> Iterator[tuple[list[float], dict[str, torch.Tensor], dict[str, int]]]:
    configure_logging(level="critical")
    yield trio.run(_train, None)
    configure_logging()  # later modules' tests capture warnings (test_hardening's refusals)


def test_delays_and_reorders_change_nothing(baseline: tuple) -> None:
    losses, params, _ = baseline
    exact = 0
    for seed in range(40):
        got_losses, got_params, _ = trio.run(_train, Chaos(seed=seed, max_delay=0.002))
        assert got_losses == losses
        for name, value in params.items():
            assert torch.equal(got_params[name], value), name
        exact += 1
    print(f"\ndelay/reorder runs {exact}, bit-identical results {exact}")


def test_crash_at_random_messages_names_the_actor(baseline: tuple) -> None:
    _, _, sent = baseline
    rng = random.Random(2024)
    tried = named = 0
    worst = 0.0
    for _ in range(200):
        actor = rng.choice(["alice", "bob", "james"])
        k = rng.randint(1, sent[actor])

        async def one(actor: str = actor, k: int = k) -> float:
            living = trio.lowlevel.current_statistics().tasks_living
            t0 = trio.current_time()
            with trio.fail_after(2):  # no hang: the failure must surface within 2 s
                with pytest.raises(PartyFailure) as info:
                    await _train(Chaos(seed=k, crash=(actor, k)))
            assert info.value.actor == actor
            assert "chaos" in str(info.value)
            assert trio.lowlevel.current_statistics().tasks_living == living
            return trio.current_time() - t0

        # Trio's autojump clock: seconds are those the run waits (a timeout, a heartbeat,
        # a delay), not those a loaded CPU takes to compute, so the 2 s bound (against a
        # 30 s actor timeout) holds next to other processes.
        worst = max(worst, trio.run(one, clock=trio.testing.MockClock(autojump_threshold=0)))
        tried += 1
        named += 1
    print(
        f"\ncrash points tried {tried}, PartyFailure naming the actor {named}, hangs 0, worst {worst:.3f} s"
    )
    assert tried == named == 200
    assert worst < 2.0
