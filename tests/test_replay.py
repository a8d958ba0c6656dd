"""Step replay (training/replay.py): a replayed step issues the recorded ops again, so a
seeded run's losses and parameters are bit-identical to the same run without replay;
a change of a public fact records again; what cannot be replayed never is, and says why;
a replayed step frees its intermediates; every replayed op has a fresh op id."""

from __future__ import annotations

import gc
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from actors.holdings import OpReused
from actors.recording import recording
from protocols.errors import PartyFailure
from training import SGD, Adam, TrainingCoordinator, reveal_module
from training.replay import ReplayWarning, StepReplay
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


def _seed_coordinator(c: Any, replay: bool) -> TrainingCoordinator:
    """The seed's Net shared on ``c``, trained by SGD at lr 0.1 (with ``replay`` or not)."""
    m = c.share_module(make_net(False, 0))
    opt = SGD(m.parameters(), lr=0.1)
    return TrainingCoordinator(c, m, opt, loss_fn, measure_phases=False, replay=replay)


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


async def test_a_tensor_the_loss_closes_over_is_not_taken_for_new_data() -> None:
    """The loss closes over ``xa``, the data of the recorded steps: a later step on other
    data of the same shape is not a replay of them (``xa`` would become the new data);
    it is recorded, reads ``xa`` as a tensor without a role, and runs as traced."""
    xs = [DATA, DATA.flip(0) * 0.5]

    async def run(replay: bool) -> tuple[list[float], StepReplay | None]:
        async with start_cluster(2, seed=9) as c:
            m = c.share_module(make_net(False, 0))
            xa, xb = c.share(xs[0]), c.share(xs[1])
            y = c.share(TARGET)
            loss = lambda p, t: loss_fn(p, t) + ((xa - 0.5) ** 2).sum() * 0.0  # noqa: E731
            coord = TrainingCoordinator(c, m, SGD(m.parameters(), lr=0.1), loss, replay=replay)
            out = [(await coord.step(x, y)).loss for x in (xa, xa, xa, xb, xb, xb)]
            return out, coord.replay

    (plain, _), (fast, rep) = await run(False), await run(True)
    assert fast == plain
    assert rep is not None and (rep.recorded, rep.replayed) == (5, 1)
    assert "closes over" in (rep.why_not or "")


async def test_what_the_coordinator_runs_is_read_every_step() -> None:
    """Reassigning the coordinator's loss or optimiser, or a module's setting (Dropout's
    p, in its extra_repr), is a new set of facts: recorded again, equal to traced."""

    async def run(replay: bool) -> list[float]:
        async with start_cluster(2, seed=13) as c:
            torch.manual_seed(1)
            net = nn.Sequential(nn.Linear(2, 6), nn.ReLU(), nn.Dropout(0.5), nn.Linear(6, 1))
            m = c.share_module(net)
            coord = TrainingCoordinator(c, m, SGD(m.parameters(), lr=0.1), loss_fn, replay=replay)
            x, y = c.share(DATA), c.share(TARGET)
            out = []
            for i in range(12):
                if i == 4:
                    coord.loss_fn = lambda p, t: loss_fn(p, t) * 0.5
                if i == 7:
                    coord.optimizer = SGD(m.parameters(), lr=0.02)
                if i == 9:
                    m[2].p = 0.1
                out.append((await coord.step(x, y)).loss)
            if replay:
                assert coord.replay is not None
                assert (coord.replay.recorded, coord.replay.replayed) == (8, 4)
            return out

    assert await run(True) == await run(False)


async def test_an_sgd_subclass_declares_replayable_itself() -> None:
    class Warmup(SGD):
        """Triples lr every 4th step inside step(): not a param_groups fact."""

        calls = 0

        def step(self, closure: Any = None) -> None:  # type: ignore[override]
            self.calls += 1
            scale = 3.0 if self.calls % 4 == 0 else 1.0
            for g in self.param_groups:
                g["lr"] *= scale
            super().step()
            for g in self.param_groups:
                g["lr"] /= scale

    class Declared(SGD):
        replayable = True

    for cls, replayed in ((Warmup, 0), (Declared, 6)):
        make = lambda ps, cls=cls: cls(ps, lr=0.05)  # noqa: E731
        plain, _, _ = await _run(2, False, 8, make_opt=make)
        fast, _, rep = await _run(2, True, 8, make_opt=make)
        assert fast == plain and rep is not None and rep.replayed == replayed
        if not replayed:
            assert "Warmup does not declare replayable = True" in (rep.why_not or "")


async def test_a_broken_promise_is_caught_by_the_periodic_check() -> None:
    """A model whose ops change by its own Python state (a flag the loop sets, not in any
    fact): every ``verify_every + 1``th step is recorded again and compared; the first
    check after the change warns (ReplayWarning) and the replay stops for those facts."""
    async with start_cluster(2, seed=3) as c:
        coord = _seed_coordinator(c, True)
        m = coord.model
        rep = coord.replay
        assert rep is not None
        rep.verify_every = 3
        doubled = [False]
        base = m.forward
        m.forward = lambda x: base(x) * 2 if doubled[0] else base(x)  # type: ignore[method-assign]
        x, y = c.share(DATA), c.share(TARGET)
        # recorded 0, 1; replayed 2-4; checked 5 (agrees); replayed 6-8; checked 9: differs
        for i in range(9):
            doubled[0] = i >= 7
            await coord.step(x, y)
        assert (rep.recorded, rep.replayed) == (3, 6)
        with pytest.warns(ReplayWarning, match="issued other ops than it"):
            await coord.step(x, y)
        for _ in range(3):
            await coord.step(x, y)
        assert (rep.recorded, rep.replayed) == (7, 6)
        assert "replays stopped" in (rep.why_not or "")


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
    assert rep is not None and rep.replayed == 0 and "module buffer" in (rep.why_not or "")


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
            coord = _seed_coordinator(c, True)
            x, y = c.share(DATA), c.share(TARGET)
            for _ in range(steps):
                if leak and coord.replay is not None:
                    for t in coord.replay._ready.values():
                        object.__setattr__(t, "dead", ())
                await coord.step(x, y)
            gc.collect()  # the recorded steps' autograd graphs are cycles: free them now
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
            coord = _seed_coordinator(c, True)
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
            coord = _seed_coordinator(c, replay)
            x = c.share(torch.cat([DATA, DATA[:3]]))
            y = c.share(torch.cat([TARGET, TARGET[:3]]))
            recs = await coord.fit(x, y, epochs=4, batch_size=4, progress=False)
            last = await coord.step(x, y, reveal_predictions=True)
            assert last.predictions is not None
            return [r.loss for r in recs] + [last.loss], last.predictions

    (a, pa), (b, pb) = await run(False), await run(True)
    assert a == b and torch.equal(pa, pb)


async def test_a_recording_names_what_blocks_it_and_what_a_replay_lacks(tmp_path: Path) -> None:
    """Shares, reveals, saves and loads are not queued ops alone: a span with one cannot be
    replayed (``blocker``); a replay not given every operand made before the span raises
    KeyError naming it, before it queues anything; a good one computes the same."""
    async with start_cluster(2) as c:
        x = c.share(DATA)
        for what, act in [
            ("it shares an input", lambda: c.share(DATA)),
            ("it saves shares", lambda: c.save_shares([x.tid], tmp_path)),
            ("it loads shares", lambda: c.load_shares(tmp_path, 1)),
        ]:
            with recording(c) as rec:
                act()
            assert rec.blocker == what
            await c.flush()  # (the save is written before the load reads it)
        await c.flush()
        with recording(c) as rec:
            y = x * 2 + x
        assert rec.blocker is None and rec.externals() == {x.tid}
        before = c._next_tid, c.last_op
        with pytest.raises(KeyError, match=f"tensors \\[{x.tid}\\]"):
            rec.replay(c, {})
        assert (c._next_tid, c.last_op) == before
        z = c.share(DATA * 3)
        offset, _ = rec.replay(c, {x.tid: z.tid})
        raw = await c.reveal(y.tid + offset, y.shape)
        assert torch.equal(y.fp.decode(raw).float(), DATA * 9)
