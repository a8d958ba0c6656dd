"""Optimisers on shares against torch.optim: SGD with Nesterov momentum, parameter groups,
learning-rate schedulers from torch.optim.lr_scheduler, frozen parameters, Adam and AdamW.

The model is a linear regression ``y = x W^T + b`` with the MSE loss on base 2 / 16
fractional bits (u = 2**-16). Its gradients are matmuls of encoded values: each entry is
off by well under 1e-4 here (k = 32 products of |x| <= 2 and residuals <= 4, each off by
~u, plus truncations), so after T steps of SGD with learning rate lr and momentum mu a
parameter is off by at most ``sum_t lr (1 + mu + ... ) 1e-4 <= T lr 1e-4 / (1 - mu)``
plus T truncations (T u); the bounds below use that.

Adam divides by sqrt(v_hat): its update is ``m_hat / sqrt(v_hat)``, within a relative
``eps_g / |g|`` of torch's for a gradient off by eps_g, plus rsqrt's relative error
(< 2e-4, tests/test_functional.py). The premise |g| >= 0.01 (asserted) bounds that by 1%
per step, so T steps move a parameter by at most T lr 0.012 away from torch's.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protocols.params import Params
from training import SGD, Adam, AdamW, reveal_module
from training.optim import NOISE_FLOOR
from training.testing import start_cluster
from training.updates import minus_scaled

U = 2.0**-16
GRAD_ERR = 1e-4
STEPS = 4


def data() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    g = torch.Generator().manual_seed(21)
    x = torch.rand(32, 3, generator=g) * 4 - 2
    y = x @ torch.tensor([[1.0, -2.0, 0.5]]).T + 0.3
    torch.manual_seed(5)
    return x, y, nn.Linear(3, 1)


async def run(
    make_ours: Any, make_ref: Any, sched: Any = None, freeze: str | None = None
) -> tuple[dict[str, torch.Tensor], nn.Module, list[torch.Tensor]]:
    x, y, net = data()
    if freeze:
        getattr(net, freeze).requires_grad_(False)
    ref = copy.deepcopy(net)
    ropt = make_ref(ref)
    rs = sched(ropt) if sched else None
    grads: list[torch.Tensor] = []
    async with start_cluster(2, seed=4) as c:
        model = c.share_module(net, precision=16, base=2)
        opt = make_ours(model)
        s = sched(opt) if sched else None
        xs = c.share(x, precision=16, base=2)
        for _ in range(STEPS):
            opt.zero_grad()
            F.mse_loss(model(xs), y).backward()
            opt.step()
            ropt.zero_grad()
            F.mse_loss(ref(x), y).backward()
            grads.append(
                torch.cat([p.grad.reshape(-1) for p in ref.parameters() if p.grad is not None])
            )
            ropt.step()
            if s is not None:
                s.step()
                assert rs is not None
                rs.step()
                assert opt.param_groups[0]["lr"] == ropt.param_groups[0]["lr"]
        got = await reveal_module(model)
    return got, ref, grads


def max_err(got: dict[str, torch.Tensor], ref: nn.Module) -> float:
    return max(float((got[k] - v.detach()).abs().max()) for k, v in ref.named_parameters())


@pytest.mark.parametrize(
    ("kw", "mu"),
    [
        (dict(lr=0.05), 0.0),
        (dict(lr=0.02, momentum=0.9, nesterov=True), 0.9),
        (dict(lr=0.02, momentum=0.5, dampening=0.2, weight_decay=0.1), 0.5),
    ],
    ids=["plain", "nesterov", "dampening_wd"],
)
async def test_sgd_variants_match_torch(kw: dict[str, Any], mu: float) -> None:
    got, ref, _ = await run(
        lambda m: SGD(m.parameters(), **kw), lambda m: torch.optim.SGD(m.parameters(), **kw)
    )
    bound = STEPS * kw["lr"] * GRAD_ERR * (1 + 2 * mu) / (1 - mu) + STEPS * 2 * U
    assert max_err(got, ref) <= bound


async def test_param_groups_and_scheduler() -> None:
    def ours(m: nn.Module) -> SGD:
        return SGD(
            [{"params": [m.weight], "lr": 0.05}, {"params": [m.bias]}], lr=0.01, momentum=0.5
        )

    def theirs(m: nn.Module) -> torch.optim.SGD:
        return torch.optim.SGD(
            [{"params": [m.weight], "lr": 0.05}, {"params": [m.bias]}], lr=0.01, momentum=0.5
        )

    got, ref, _ = await run(
        ours, theirs, sched=lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.5)
    )
    assert max_err(got, ref) <= STEPS * 0.05 * GRAD_ERR * 2 / 0.5 + STEPS * 2 * U
    got2, ref2, _ = await run(
        lambda m: SGD(m.parameters(), lr=0.05),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
        sched=lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    )
    assert max_err(got2, ref2) <= STEPS * 0.05 * GRAD_ERR + STEPS * 2 * U


async def test_frozen_parameters_stay_frozen() -> None:
    _, _, net = data()
    got, ref, _ = await run(
        lambda m: SGD(m.parameters(), lr=0.05),
        lambda m: torch.optim.SGD(m.parameters(), lr=0.05),
        freeze="bias",
    )
    assert float((got["bias"] - net.bias.detach()).abs().max()) <= U / 2  # its encoding only
    assert max_err(got, ref) <= STEPS * 0.05 * GRAD_ERR + STEPS * 2 * U


@pytest.mark.parametrize("cls", [Adam, AdamW], ids=["adam", "adamw"])
async def test_adam_matches_torch(cls: Any) -> None:
    lr = 0.05
    tcls = torch.optim.Adam if cls is Adam else torch.optim.AdamW
    got, ref, grads = await run(
        lambda m: cls(m.parameters(), lr=lr), lambda m: tcls(m.parameters(), lr=lr)
    )
    assert min(float(g.abs().min()) for g in grads) >= 0.01  # the premise (module doc)
    assert max_err(got, ref) <= STEPS * lr * 0.012


def test_optimizer_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="lr"):
        SGD([{"params": []}], lr=0)
    with pytest.raises(TypeError, match="SharedTensor"):
        SGD([torch.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="Nesterov"):
        Adam  # noqa: B018 - imported for the other tests
        SGD([{"params": []}], lr=0.1, nesterov=True)


async def test_adam_small_gradients_match_torch_per_step() -> None:
    """Gradients of 1.5e-4 to 4.5e-3 (10 to 300 units of the 16-bit encoding; Adam's
    normalised step is still a full lr): each step's update within 1% of lr of torch's
    on the same (encodable) gradients. Keeping v as ``v_hat`` at 16 bits (the squares of 8 g
    truncated to 2**-16) shrank these updates by up to a third."""
    mag = 10 ** (torch.rand(256, generator=torch.Generator().manual_seed(3)) - 3.5)
    worst = await _worst_step_against_torch(mag, seed=6, noise_floor=0)
    assert worst <= 0.01, worst


async def test_adam_follows_torch_with_the_eps_it_names_per_step() -> None:
    """With the default noise floor Adam is ``torch.optim.Adam(eps=effective_eps)``, the
    call its PrecisionWarning names: gradients from 0.1 to 30 times eps (1e-4 to 3e-2),
    each step within 1% of lr of torch's. The denominator ``rsqrt(v_hat + eps**2)``
    alone gave steps up to sqrt(2) times torch's where sqrt(v_hat) is near eps."""
    mag = 10 ** (torch.rand(256, generator=torch.Generator().manual_seed(5)) * 2.5 - 4)
    worst = await _worst_step_against_torch(mag, seed=9)
    assert worst <= 0.01, worst


async def _worst_step_against_torch(mag: torch.Tensor, *, seed: int, **adam: Any) -> float:
    """The largest difference, in units of lr, between one step of our Adam and one of
    ``torch.optim.Adam(eps=effective_eps)`` over 6 steps on the same encodable gradients of
    magnitudes ``mag`` (random signs, times 0.5-1.5)."""
    lr, n = 0.01, mag.numel()
    gen = torch.Generator().manual_seed(seed)
    sign = torch.randint(0, 2, (n,), generator=gen) * 2 - 1
    async with start_cluster(2, seed=seed) as c:
        p = c.share(torch.zeros(n), precision=16, base=2, requires_grad=True)
        opt = Adam([p], lr=lr, **adam)
        ref = torch.zeros(n, dtype=torch.float64, requires_grad=True)
        ropt = torch.optim.Adam([ref], lr=lr, eps=opt.param_groups[0]["effective_eps"])
        before = torch.zeros(n, dtype=torch.float64)
        worst = 0.0
        for _ in range(6):
            g = sign * mag * (0.5 + torch.rand(n, generator=gen))
            g = torch.round(g * 2**16) / 2**16  # exactly encodable: torch sees our gradient
            p.grad = c.share(g, precision=16, base=2)
            opt.step()
            ref.grad = g.to(torch.float64)
            r0 = ref.detach().clone()
            ropt.step()
            after = (await p.get()).to(torch.float64)
            ours, theirs = after - before, ref.detach() - r0
            worst = max(worst, float((ours - theirs).abs().max()) / lr)
            before = after
    return worst


async def test_adam_noise_floor_keeps_rounding_noise_from_moving_weights() -> None:
    """A weight whose true gradient is 0 gets about one unit of rounding noise in fixed
    point. With torch's eps (noise_floor=0) Adam normalises that noise into steps of ~lr;
    the default floor (64 units: eps 1e-3 at 16 bits) keeps them under 5% of lr."""
    lr, n, steps = 0.01, 512, 8
    gen = torch.Generator().manual_seed(4)
    noise = [
        (torch.randint(-1, 2, (n,), generator=gen) / 2**16).to(torch.float64) for _ in range(steps)
    ]
    moved = {}
    async with start_cluster(2, seed=7) as c:
        for floor in (0, NOISE_FLOOR):
            p = c.share(torch.zeros(n), precision=16, base=2, requires_grad=True)
            opt = Adam([p], lr=lr, noise_floor=floor)
            for g in noise:
                p.grad = c.share(g, precision=16, base=2)
                opt.step()
            moved[floor] = float((await p.get()).abs().mean()) / lr
    assert moved[0] > 0.5, moved  # the amplification the floor is for
    assert moved[NOISE_FLOOR] < 0.05 * steps / 8, moved


async def test_adam_says_which_eps_it_uses(monkeypatch: pytest.MonkeyPatch) -> None:
    from training import precision

    monkeypatch.setattr(precision, "_ADAM_NOTED", False)
    async with start_cluster(2, seed=8) as c:
        p = c.share(torch.zeros(3), precision=16, base=2, requires_grad=True)
        with pytest.warns(precision.PrecisionWarning, match=r"torch\.optim\.Adam\(eps=0\.000977\)"):
            opt = Adam([p], lr=0.01)
        assert opt.param_groups[0]["effective_eps"] == NOISE_FLOOR * 2.0**-16
        assert Adam([p], lr=0.01, noise_floor=0).param_groups[0]["effective_eps"] == 1e-8


@pytest.mark.parametrize("parties", [2, 3])
async def test_fused_update_equals_scale_then_sub(parties: int) -> None:
    """SGD's ``p - lr g`` for every parameter is one grouped ``sub_scaled`` op; it reveals
    exactly (in the ring) what ``scale`` then ``sub`` give for each with 2 parties (local
    truncation), and within the pair's unit of rounding with 3 (one dealer pair over the
    group against one per parameter: other randomness); a public gradient, an integer
    factor or recorded autograd fall back to the two ops."""
    g0 = torch.Generator().manual_seed(3)
    shapes = [(4, 3), (3,), ()]
    vals = [(torch.randn(s, generator=g0), torch.randn(s, generator=g0)) for s in shapes]
    got = []
    for fused in (True, False):
        async with start_cluster(parties, seed=9) as c:
            c.track_op_costs()
            ps = [c.share(p, precision=16, base=2) for p, _ in vals]
            gs = [c.share(g, precision=16, base=2) for _, g in vals]
            with torch.no_grad():
                if fused:
                    outs = minus_scaled(ps, gs, 0.05)
                else:
                    outs = [p - g * 0.05 for p, g in zip(ps, gs, strict=True)]
            got.append([await c.reveal(o._ref.tid, o.shape) for o in outs])
            await c.flush()
            kinds = [r.kind for r, *_ in c.take_op_costs()]
            assert kinds.count("sub_scaled") == (1 if fused else 0), kinds
    for a, b in zip(*got, strict=True):
        if parties == 2:
            assert torch.equal(a, b)
        else:  # another pair's randomness: the truncation's floor or one more, either way
            assert int((a - b).abs().max()) <= 1, a - b
    async with start_cluster(2, seed=9) as c:
        c.track_op_costs()
        p_val, g_val = vals[0]
        p, g = c.share(p_val, precision=16, base=2), c.share(g_val, precision=16, base=2)
        q = c.share(vals[1][0], precision=16, base=2)
        with torch.no_grad():
            a, a2 = minus_scaled([p, q], [g_val, c.share(vals[1][1], 16, 2)], 0.05)
            (b,) = minus_scaled([p], [g], 2.0)  # an integer factor: no truncation to fuse
        (c_,) = minus_scaled([p], [g], 0.05)  # grad mode: recorded as two ops
        assert torch.allclose(await a.get(), p_val - 0.05 * g_val, atol=1e-4)
        assert torch.allclose(await a2.get(), vals[1][0] - 0.05 * vals[1][1], atol=1e-4)
        assert torch.allclose(await b.get(), p_val - 2 * g_val, atol=1e-4)
        assert torch.allclose(await c_.get(), p_val - 0.05 * g_val, atol=1e-4)
        await c.flush()
        kinds = [r.kind for r, *_ in c.take_op_costs()]
        assert kinds.count("sub_scaled") == 1, kinds  # a2 alone: a's gradient is public


async def test_grouped_kind_refuses_a_wrong_count() -> None:
    """A grouped kind takes whole groups: 3 operands of ``sub_scaled`` (pairs) are refused
    by name before anything is queued."""
    async with start_cluster(2, seed=9) as c:
        x = c.share(torch.ones(2), precision=16, base=2)
        t = x._ref.tid
        with pytest.raises(ValueError, match="groups of 2 inputs"):
            c.submit("sub_scaled", [t, t, t], [(2,)] * 3, [(2,)], Params(d=2))
        with pytest.raises(ValueError, match="groups of 2 inputs"):
            c.submit("sub_scaled", [t, t], [(2,)] * 2, [(2,), (2,)], Params(d=2))


async def test_a_party_refuses_a_grouped_command_of_the_wrong_arity() -> None:
    """Defence in depth: a ``sub_scaled`` command naming 3 operands (not whole pairs) that
    reached the parties is refused there by name, before it runs."""
    from actors.messages import Command
    from protocols.errors import PartyFailure

    with pytest.raises(PartyFailure, match=r"'(alice|bob)' failed: .*groups of 2 inputs.*got 3"):
        async with start_cluster(2, seed=9) as c:
            x = c.share(torch.ones(2), precision=16, base=2)
            await c.flush()
            t = x._ref.tid
            c._command(Command("sub_scaled", c._op_id(), (t, t, t), (c.new_tid(),), Params(d=2)))
            await c.flush()
