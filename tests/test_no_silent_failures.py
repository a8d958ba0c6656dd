"""No silent failures: a plaintext module trained on shares, base 2 without a precision,
trio inside asyncio, the synchronous Session; revealed values outside the ring's headroom
(ValueOutOfRange) and check mode's plaintext shadows (ShadowMismatch)."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protocols import FixedPoint, Share
from protocols.errors import ShadowMismatch, UnsupportedOperation, ValueOutOfRange
from protocols.reference import Tolerance
from protocols.suite import DEFAULT, Suite
from training import SGD, Adam, PublicOperandWarning
from training.check import UncheckedOpWarning
from training.cluster import default_precision
from training.sync import Session
from training.testing import PARTIES, PROVIDER, start_cluster


async def test_plaintext_module_on_shares_refuses_to_train() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.randn(4, 3), base=2)
        with pytest.raises(UnsupportedOperation, match="share_module"):
            net(x)
        # inference of a plaintext (public) model on shared inputs stays possible
        with torch.no_grad(), pytest.warns(PublicOperandWarning):
            got = await net(x).get()
        want = net((await x.get()).float()).detach()
        assert float((got - want).abs().max()) <= 1e-3


async def test_base_two_defaults_to_sixteen_bits() -> None:
    assert default_precision(10) == 3 and default_precision(2) == 16
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.tensor([1.0 / 3]), base=2)
        assert x.fp.precision == 16
        assert c.share(torch.tensor([1.0 / 3])).fp.precision == 3
        m = c.share_module(nn.Linear(2, 2), base=2)
        assert all(p.fp.precision == 16 for p in m.parameters())
        assert abs(float(await x.get()) - 1 / 3) <= 2**-16
        # a smooth function works at the default of base 2
        y = await c.share(torch.tensor([0.5]), base=2).sigmoid().get()
        assert abs(float(y) - float(torch.sigmoid(torch.tensor(0.5)))) <= 3e-3


def test_cluster_inside_asyncio_says_what_to_do() -> None:
    async def main() -> None:
        async with start_cluster(2):
            pass

    with pytest.raises(RuntimeError, match=r"training\.sync\.Session"):
        asyncio.run(main())


def _step(model: Any, opt: Any, x: Any, target: Any) -> Any:
    """One cross-entropy training step (shared or plaintext alike); returns the loss."""
    opt.zero_grad()
    loss = F.cross_entropy(model(x), target)
    loss.backward()
    opt.step()
    return loss


def test_sync_session_trains_like_torch_and_works_inside_asyncio() -> None:
    torch.manual_seed(0)
    net = nn.Linear(4, 3)
    ref = nn.Linear(4, 3)
    ref.load_state_dict(net.state_dict())
    x = torch.randn(8, 4)
    y = torch.randint(0, 3, (8,))

    def train() -> list[float]:
        with Session(PARTIES[2], PROVIDER, seed=2) as s:
            xs = s.share(x, base=2)
            model = s.share_module(net, base=2)
            opt = s.run(lambda: SGD(model.parameters(), lr=0.5))

            def step() -> object:
                opt.zero_grad()
                loss = F.cross_entropy(model(xs), y)
                loss.backward()
                opt.step()
                return loss

            return [float(s.get(s.run(step))) for _ in range(3)]

    ropt = torch.optim.SGD(ref.parameters(), lr=0.5)
    want = [float(_step(ref, ropt, x, y).detach()) for _ in range(3)]
    got = train()
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 0.01
    assert want[-1] < want[0]  # it learned something: the comparison is not vacuous

    async def in_a_notebook() -> list[float]:
        return train()  # synchronous calls from inside a running asyncio loop

    got2 = asyncio.run(in_a_notebook())
    assert got2 == got  # seeded: the same run


def test_session_ops_from_the_wrong_thread_say_what_to_do() -> None:
    """Ops on a Session's shares issued from the caller's thread (not through run) used to
    fail deep inside trio, or not at all, depending on timing: now always a clear error,
    before anything is queued; the same op through run() works."""
    torch.manual_seed(0)
    with Session(PARTIES[2], PROVIDER, seed=4) as s:
        xs = s.share(torch.randn(4, 3), base=2)
        model = s.share_module(nn.Linear(3, 2), base=2)
        for attempt in (lambda: model(xs), lambda: xs * xs, lambda: xs + 1.0):
            with pytest.raises(RuntimeError, match=r"session\.run\(fn\)"):
                attempt()
        out = s.get(s.run(lambda: model(xs)))
        assert tuple(out.shape) == (4, 2)


def test_session_reports_a_failed_start() -> None:
    with pytest.raises(ValueError, match="at least 2 parties"):
        Session(["alice"])


# -- revealed values outside the ring's headroom ---------------------------------------------

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from seed_net import DATA, TARGET, loss_fn, make_net  # noqa: E402


def test_headroom_is_where_a_square_still_fits_the_ring() -> None:
    # |v| < 2**((63 - 2f)/2), f = log2(scale): 2**31.5 / scale
    assert FixedPoint(10, 3).headroom == pytest.approx(3_037_000.4999, abs=1e-3)
    assert FixedPoint(2, 16).headroom == pytest.approx(46_340.950, abs=1e-3)
    for fp in (FixedPoint(10, 3), FixedPoint(2, 16)):
        assert (fp.headroom * fp.scale) ** 2 == pytest.approx(2.0**63)
        assert fp.max_value < fp.headroom  # every input reveals
        assert 2**64 / fp.scale**2 > 2 * fp.headroom  # a failed truncation lands outside


async def test_x_to_the_fourth_at_2000_names_the_op_and_label() -> None:
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.tensor([2000.0, 1.0]))
        with c.label("x4"):
            y = x**4
        with pytest.raises(ValueOutOfRange, match=r"op \d+ \(square, label 'x4'\)") as info:
            await y.get()
        assert info.value.kind == "square" and info.value.label == "x4"
        assert info.value.op == y.origin.op  # type: ignore[union-attr]
        assert info.value.bound == pytest.approx(3_037_000.5, abs=0.01)
        assert "3037000.5" in str(info.value) and "check=True" in str(info.value)
        assert abs(info.value.worst) > 1e12  # the wrapped value (-2.4e12 in the issue)
        assert float((await x.get())[0]) == 2000.0  # the inputs are fine


async def test_value_bound_is_configurable_and_validated() -> None:
    with pytest.raises(ValueError, match="value_bound"):
        async with start_cluster(2, value_bound=-1.0):
            pass
    with pytest.raises(TypeError, match="value_bound"):
        async with start_cluster(2, value_bound="big"):
            pass
    async with start_cluster(2, seed=1, value_bound=10.0) as c:
        x = c.share(torch.tensor([3.0, -4.0]))
        assert (await (x * 2).get()).tolist() == [6.0, -8.0]
        with pytest.raises(ValueOutOfRange, match="value_bound") as info:
            await (x * 3).get()
        assert info.value.worst == -12.0 and info.value.kind == "mul_pub"
    async with start_cluster(2, seed=1, value_bound=None) as c:
        x = c.share(torch.tensor([2000.0]))
        assert abs(float(await (x**4).get())) > 1e12  # off: the garbage comes back


class _EdgeMask:
    """A sharing mask at the edge of the ring: party 0's share is -2**63 + 1000, so the
    two shares of a small positive value wrap as signed integers and SecureML's local
    truncation fails (probability |x| / 2**64 with a uniform mask)."""

    def ring(self, shape: tuple[int, ...], label: Any = None) -> torch.Tensor:
        return torch.full(shape, -(2**63) + 1000, dtype=torch.int64)


async def _truncate_with_edge_shares(**start: Any) -> torch.Tensor:
    async with start_cluster(2, seed=1, **start) as c:
        c._prg = _EdgeMask()  # type: ignore[assignment]
        x = c.share(torch.tensor([5.0]))
        with c.label("shrink"):
            y = x / 1000  # a truncation by 1000 (local with 2 parties)
        return await y.get()


async def test_forced_truncation_failure_is_caught_at_reveal() -> None:
    garbage = await _truncate_with_edge_shares(value_bound=None)
    assert float(garbage) == pytest.approx(-(2**64) / 1000**2, rel=1e-6)  # -1.8e13
    with pytest.raises(ValueOutOfRange, match=r"\(trunc, label 'shrink'\)") as info:
        await _truncate_with_edge_shares()
    assert info.value.kind == "trunc" and info.value.worst == pytest.approx(float(garbage))
    with pytest.raises(ShadowMismatch, match="truncation failure") as mismatch:
        await _truncate_with_edge_shares(check=True)
    assert mismatch.value.kind == "trunc" and mismatch.value.label == "shrink"


# -- check mode ---------------------------------------------------------------------------------


async def _train_seed(lr: float, iterations: int, **start: Any) -> list[float]:
    losses = []
    async with start_cluster(2, seed=3, **start) as c:
        x, y = c.share(DATA), c.share(TARGET)
        model = c.share_module(make_net())
        opt = SGD(model.parameters(), lr=lr)
        for i in range(iterations):
            with c.iteration(i):
                opt.zero_grad()
                with c.label("forward"):
                    pred = model(x)
                with c.label("loss"):
                    loss = loss_fn(pred, y)
                loss.backward()
                opt.step()
                losses.append(float(await loss.get()))
    return losses


async def test_check_mode_passes_a_clean_seed_run() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncheckedOpWarning)
        checked = await _train_seed(0.1, 5, check=True)
    plain = await _train_seed(0.1, 5)
    assert max(abs(a - b) for a, b in zip(checked, plain, strict=True)) <= 0.005
    assert checked[-1] < checked[0]


async def test_check_mode_names_the_first_op_that_wraps() -> None:
    # lr = 1 diverges; without a bound the loss ends up negative. The range check stops
    # at the first too-large loss; check mode (bound off) names the first op that went
    # wrong: the loss's square, which wraps, or (as with this seed) whose truncation
    # fails first (a product of 3e14 fails with probability 2%).
    with pytest.raises(ValueOutOfRange, match="label 'loss'"):
        await _train_seed(1.0, 20)
    with pytest.raises(ShadowMismatch, match=r"wrapped around|truncation failure") as info:
        await _train_seed(1.0, 20, check=True, value_bound=None)
    assert info.value.kind == "square" and info.value.label == "loss"
    assert info.value.error > 1e12 and info.value.tolerance < 1e5


async def test_check_mode_covers_an_mlp_with_cross_entropy_dropout_and_adam() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.25), nn.Linear(6, 3))
    data, target = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UncheckedOpWarning)
        async with start_cluster(2, seed=4, check=True) as c:
            x = c.share(data, base=2)
            model = c.share_module(net, base=2)
            opt = Adam(model.parameters(), lr=0.05)
            losses = [float(await _step(model, opt, x, target).get()) for _ in range(2)]
    assert 0.5 < losses[0] < 2.5


def _off_by(units: int) -> Suite:
    """The default suite whose ``mul`` adds ``units`` to its result (party 0's share)."""

    def build(suite: Suite, n: int) -> Any:
        real = DEFAULT.kind("mul", n)

        async def run(ctx: Any, x: Any, p: Any) -> Any:
            (z,) = await real.run(ctx, x, p)  # type: ignore[misc]
            return [Share(z.value + units, z.depth)] if ctx.rank == 0 else [z]

        return dataclasses.replace(real, run=run)

    return DEFAULT.replace(f"mul-off-by-{units}", mul=build)


async def test_check_mode_names_a_wrong_protocol() -> None:
    async def run(**start: Any) -> float:
        async with start_cluster(2, seed=1, **start) as c:
            a, b = c.share(torch.tensor([1.5, 2.0])), c.share(torch.tensor([2.0, -1.0]))
            s = a + b
            with c.label("product"):
                p = s * a
            return float((await (p - 1).get(dtype=torch.float64)).sum())

    assert await run(protocols=_off_by(50)) == pytest.approx(5.25 + 0.1, abs=1e-9)  # silent
    with pytest.raises(ShadowMismatch, match=r"\(mul, label 'product'\).*wrong result") as info:
        await run(protocols=_off_by(50), check=True)
    assert info.value.kind == "mul" and info.value.error == pytest.approx(0.05)
    assert info.value.tolerance == pytest.approx(0.002, rel=1e-3)
    # a looser tolerance lets it through; one unit off is within the default
    await run(protocols=_off_by(50), check=Tolerance(units=60))
    await run(protocols=_off_by(1), check=True)


async def test_check_mode_says_what_it_cannot_check() -> None:
    data = {"alice": {"f": torch.tensor([1.0, 2.0])}}
    async with start_cluster(2, data=data, check=True) as c:
        x = c.share_from("alice", "f")
        with pytest.warns(UncheckedOpWarning, match="never saw"):
            y = x * 2
        await c.flush()
        assert y.origin is not None and y.origin.kind == "mul_pub"
    with pytest.raises(TypeError, match="check"):
        async with start_cluster(2, check="yes"):  # type: ignore[arg-type]
            pass


def test_train_xor_reports_an_out_of_range_loss_without_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import train_xor

    assert train_xor.main(["--lr", "1", "--quiet", "--insecure-seed", "3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("train_xor.py: ValueOutOfRange:") and "label 'loss'" in err
    assert train_xor.main(["--lr", "1", "--quiet", "--insecure-seed", "3", "--check"]) == 1
    err = capsys.readouterr().err
    assert "Check mode found the op's result correct" in err
    assert "to name the first op" not in err  # check mode is on: no such advice
    assert train_xor.main(["--quiet", "--insecure-seed", "3", "--check", "--iterations", "2"]) == 0
    assert re.search(
        r"check mode +\d+ ops \(\d+ elements\) within 2 units", capsys.readouterr().out
    )
    with pytest.raises(SystemExit):
        train_xor.parse_args(["--value-bound", "-3"])
    assert train_xor.parse_args(["--value-bound", "none"]).value_bound is None
    assert train_xor.parse_args(["--value-bound", "1e4"]).value_bound == 1e4


def test_scripts_take_the_bases_default_precision_and_refuse_bad_encodings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--base 2` alone meant 3 fractional *bits* in the scripts (the loss gap reached 0.28
    on train_xor); it now means the library's default, 16 bits. Bad values are usage
    errors, not tracebacks later."""
    import train_digits
    import train_xor

    assert train_xor.parse_args(["--base", "2"]).precision == 16
    assert train_xor.parse_args([]).precision == 3
    assert train_digits.parse_args([]).precision == 16
    for bad in (["--base", "1"], ["--precision", "-1"], ["--lr", "-0.1"], ["--lr", "nan"]):
        with pytest.raises(SystemExit):
            train_xor.parse_args(bad)
        assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize("sign", [1.0, -1.0])
async def test_a_one_element_reveal_beyond_the_headroom_raises(sign: float) -> None:
    """A loss-sized (1-element) reveal takes the scalar decode; beyond the ring's headroom
    it still raises ValueOutOfRange naming the op, and just inside it decodes exactly."""
    async with start_cluster(2, seed=4) as c:
        x = c.share(torch.tensor([2000.0 * sign]))
        inside = c.share(torch.tensor([1700.0]))
        assert float(await (inside * inside).sum().get(dtype=torch.float64)) == 2_890_000.0
        with pytest.raises(ValueOutOfRange, match=r"revealed value -?4e\+06 of .*sum"):
            await (x * x * sign).sum().get()
