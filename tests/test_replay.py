"""Step replay (training/replay.py): a replayed step issues the recorded ops again, so a
seeded run's losses and parameters are bit-identical to the same run without replay;
a change of a public fact records again; what cannot be replayed never is, and says why;
a replayed step frees its intermediates; every replayed op has a fresh op id."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from actors.holdings import OpReused
from protocols.errors import PartyFailure
from training import SGD, Adam, TrainingCoordinator, reveal_module
from training.replay import StepReplay
from training.testing import start_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from seed_net import DATA, TARGET, loss_fn, make_net


async def _run(
    n: int,
    replay: bool,
    steps: int,
    *,
    make_opt: Any = lambda ps: SGD(ps, lr=0.1),
    between: Any = None,
    model: nn.Module | None = None,
    data: tuple[torch.Tensor, torch.Tensor] = (DATA, TARGET),
    base2: bool = False,
) -> tuple[list[float], list[torch.Tensor], StepReplay | None]:
    """A seeded run of ``steps`` coordinator steps: losses, final parameters, the replay."""
    async with start_cluster(n, seed=11) as c:
        enc: dict[str, int] = {"precision": 16, "base": 2} if base2 else {}
        m = c.share_module(model or make_net(False, 0), **enc)
        opt = make_opt(m.parameters())
        coord = TrainingCoordinator(c, m, opt, loss_fn, measure_phases=False, replay=replay)
        x, y = c.share(data[0], **enc), c.share(data[1], **enc)
        losses = []
        for i in range(steps):
            if between is not None:
                between(i, m, opt)
            losses.append((await coord.step(x, y)).loss)
        params = list((await reveal_module(m)).values())
        return losses, params, coord.replay


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize(
    "opt",
    [
        {},
        {"momentum": 0.9},
        {"momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        {"momentum": 0.5, "dampening": 0.1},
    ],
)
async def test_replayed_steps_equal_traced_steps(n: int, opt: dict[str, Any]) -> None:
    """Same seed, same ops in the same order: every loss and the final parameters agree
    to the bit with and without replay, and all but the first steps were replayed."""
    make = lambda ps: SGD(ps, lr=0.05, **opt)  # noqa: E731
    plain, p_plain, _ = await _run(n, False, 8, make_opt=make)
    fast, p_fast, rep = await _run(n, True, 8, make_opt=make)
    assert fast == plain
    for a, b in zip(p_fast, p_plain, strict=True):
        assert torch.equal(a, b)
    assert rep is not None
    first = 3 if opt.get("momentum") else 2  # momentum's first step differs (b = g)
    assert (rep.recorded, rep.replayed) == (first, 8 - first)
    assert rep.why_not is None


async def test_dropout_is_replayed_with_fresh_masks() -> None:
    """Dropout's masks are the dealer's (keyed by op id), not the coordinator's: a model
    with dropout is replayed and equals the traced run (whose masks are drawn afresh per op),
    and the masks act: the run differs from the same model without dropout."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 1))
    plain, p_plain, _ = await _run(2, False, 8, model=net)
    fast, p_fast, rep = await _run(2, True, 8, model=net)
    assert fast == plain and all(torch.equal(a, b) for a, b in zip(p_fast, p_plain, strict=True))
    assert rep is not None and rep.replayed == 6
    torch.manual_seed(1)
    still = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Linear(6, 1))
    assert fast != (await _run(2, True, 8, model=still))[0]  # the masks did something


async def test_a_changed_public_fact_records_again() -> None:
    """A learning-rate change (what a scheduler does) and eval/train switches: the steps
    after the change are recorded again, and the run equals the unreplayed one."""

    def between(i: int, m: nn.Module, opt: SGD) -> None:
        if i == 4:
            for g in opt.param_groups:
                g["lr"] = 0.02
        m.train(i != 6)

    plain, p_plain, _ = await _run(2, False, 10, between=between)
    fast, p_fast, rep = await _run(2, True, 10, between=between)
    assert fast == plain and all(torch.equal(a, b) for a, b in zip(p_fast, p_plain, strict=True))
    assert rep is not None
    # steps 0,1 recorded; 2,3 replayed; lr change: 4,5 recorded; eval at 6: recorded;
    # train again at 7: the facts of 4 and 5, whose recording is kept: replayed (7, 8, 9)
    assert (rep.recorded, rep.replayed) == (5, 5)


async def test_the_data_as_its_own_target_is_a_fact_of_its_own() -> None:
    """An autoencoder-style step whose data is its target, then steps with a separate
    target of the same shape: the recording of one is not replayed for the other (each
    recorded operand is mapped by its role), and the run equals the traced one."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
    data = DATA * 0.5

    async def run(replay: bool) -> list[float]:
        async with start_cluster(2, seed=7) as c:
            m = c.share_module(net)
            coord = TrainingCoordinator(
                c, m, SGD(m.parameters(), lr=0.1), loss_fn, measure_phases=False, replay=replay
            )
            x, other = c.share(data), c.share(data.flip(1))
            losses = [(await coord.step(x, x)).loss for _ in range(4)]
            losses += [(await coord.step(x, other)).loss for _ in range(4)]
            if replay:
                assert coord.replay is not None
                assert (coord.replay.recorded, coord.replay.replayed) == (4, 4)
            return losses

    assert await run(True) == await run(False)


@pytest.mark.filterwarnings("ignore::training.precision.PrecisionWarning")
async def test_what_cannot_be_replayed_is_not() -> None:
    """Adam's step depends on its count; a model reading a module buffer the step
    rewrites (batch norm's running statistics) is not a replay's operand: neither is
    replayed, both train as without replay, and ``why_not`` names the reason."""
    adam = lambda ps: Adam(ps, lr=0.01)  # noqa: E731
    plain, _, _ = await _run(2, False, 4, make_opt=adam, base2=True)
    fast, _, rep = await _run(2, True, 4, make_opt=adam, base2=True)
    assert fast == plain
    assert rep is not None and rep.replayed == 0 and "Adam" in (rep.why_not or "")

    torch.manual_seed(0)
    bn = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 1))
    fast, _, rep = await _run(2, True, 4, model=bn, base2=True)
    assert rep is not None and rep.replayed == 0 and "made before it" in (rep.why_not or "")


async def test_replay_refuses_what_it_would_not_measure() -> None:
    async with start_cluster(2) as c:
        m = c.share_module(make_net(False, 0))
        opt = SGD(m.parameters(), lr=0.1)
        with pytest.raises(ValueError, match="measure_phases=False"):
            TrainingCoordinator(c, m, opt, loss_fn, measure_phases=True, replay=True)
        with pytest.raises(ValueError, match="no phase_barriers"):
            TrainingCoordinator(c, m, opt, loss_fn, phase_barriers=True, replay=True)
        coord = TrainingCoordinator(c, m, opt, loss_fn, replay=True)  # measures per step
        assert not coord.measure_phases and coord.replay is not None


async def test_replayed_steps_free_their_intermediates() -> None:
    """The tensors the parties hold do not grow with the number of replayed steps; and
    the check can fail: a replay that frees nothing leaves every step's intermediates."""

    async def unfreed(steps: int, leak: bool) -> int:
        async with start_cluster(2, seed=3) as c:
            freed: set[int] = set()
            release = c.release

            def counting(tid: int) -> None:
                freed.add(tid)
                release(tid)

            c.release = counting  # type: ignore[method-assign]
            m = c.share_module(make_net(False, 0))
            coord = TrainingCoordinator(
                c, m, SGD(m.parameters(), lr=0.1), loss_fn, measure_phases=False, replay=True
            )
            x, y = c.share(DATA), c.share(TARGET)
            for _ in range(steps):
                if leak and coord.replay is not None:
                    for t in coord.replay._ready.values():
                        object.__setattr__(t, "dead", ())
                await coord.step(x, y)
            await c.flush()
            return c._next_tid - len(freed)

    assert await unfreed(5, False) == await unfreed(25, False)
    assert await unfreed(25, True) > await unfreed(5, True) + 100


async def test_every_replayed_op_is_new_to_the_parties() -> None:
    """A replay takes fresh op ids (the dealer keys its material by them); a replay that
    reused ids this session has used would reuse masks and material, and the dealer and
    the parties refuse it (OpReused, not new in this session)."""
    with pytest.raises((OpReused, PartyFailure), match="not new in this session"):
        async with start_cluster(2) as c:
            m = c.share_module(make_net(False, 0))
            coord = TrainingCoordinator(
                c, m, SGD(m.parameters(), lr=0.1), loss_fn, measure_phases=False, replay=True
            )
            x, y = c.share(DATA), c.share(TARGET)
            for _ in range(3):
                await coord.step(x, y)
            assert coord.replay is not None and coord.replay.replayed == 1
            reused = iter(range(c.last_op - 40, c.last_op))  # ids this session used
            c._op_id = lambda: next(reused)  # type: ignore[method-assign]
            await coord.step(x, y)


async def test_predictions_and_fit_with_replay() -> None:
    """``fit`` over mini-batches with a smaller last batch (its shape records apart) and a
    last step that reveals the predictions: the same as without replay."""

    async def run(replay: bool) -> tuple[list[float], torch.Tensor]:
        async with start_cluster(2, seed=5) as c:
            m = c.share_module(make_net(False, 0))
            coord = TrainingCoordinator(
                c, m, SGD(m.parameters(), lr=0.1), loss_fn, measure_phases=False, replay=replay
            )
            x = c.share(torch.cat([DATA, DATA[:3]]))
            y = c.share(torch.cat([TARGET, TARGET[:3]]))
            recs = await coord.fit(x, y, epochs=4, batch_size=4, progress=False)
            last = await coord.step(x, y, reveal_predictions=True)
            assert last.predictions is not None
            return [r.loss for r in recs] + [last.loss], last.predictions

    (a, pa), (b, pb) = await run(False), await run(True)
    assert a == b and torch.equal(pa, pb)
