"""One registration per op kind and one binding per torch function.

A kind's protocol, reference, report examples and truncation flag are declared together
(:func:`protocols.opkind.register`); every suite, check mode and the communication report
read them from there. The frontend binds each torch function once
(:mod:`training.registry`). ``abs`` is the worked example: its kind is one ``register``
call in :mod:`protocols.kinds`, its torch binding one ``@implements`` line.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch

from protocols.context import PartyContext, Share
from protocols.errors import ShadowMismatch
from protocols.opkind import KINDS, OpKind, Suite, register
from protocols.params import Params
from protocols.suite import DEFAULT, SUITES
from training import Cluster, SharedTensor, public, registry
from training.activations import abs_

PARTIES = ["alice", "bob"]


def test_every_kind_of_every_suite_declares_its_meaning() -> None:
    for suite in SUITES.values():
        assert set(suite.names) == set(KINDS), suite.name
        for name in suite.names:
            assert suite.reference(name) is not None, (suite.name, name)
            assert suite.examples(name, 4, (2, 3, 2)), (suite.name, name)
    assert DEFAULT.truncating("mul") and not DEFAULT.truncating("abs")


def test_a_kind_registered_twice_is_refused() -> None:
    before = dict(KINDS)
    with pytest.raises(ValueError, match="'mul' is registered twice"):
        register("mul", KINDS["mul"].build, reference=lambda *a: [], examples=lambda v, m: [])
    assert before == KINDS


def test_a_torch_function_or_method_bound_twice_is_refused() -> None:
    def other(x: SharedTensor) -> SharedTensor:
        return x

    with pytest.raises(
        ValueError,
        match=r"^torch\.abs is bound twice: to training\.activations\.abs_ and to .*other$",
    ):
        registry.bind({torch.abs: other})
    with pytest.raises(ValueError, match=r"SharedTensor\.abs is bound twice"):
        registry.implements(methods=("abs",))(other)
    assert registry.TORCH[torch.abs] is abs_ and registry.METHODS["abs"] is abs_
    assert SharedTensor.abs is abs_ and SharedTensor.__abs__ is abs_

    class Defines:
        def abs(self) -> None: ...

    with pytest.raises(ValueError, match=r"SharedTensor\.abs is defined by the class"):
        registry.install_methods(Defines)


@pytest.mark.parametrize("protocols", ["default", "carry", "fss-exact"])
async def test_abs_is_one_op_with_the_comparisons_cost(protocols: str) -> None:
    x = torch.tensor([-1.5, 0.0, 2.25, -3.0, 7.125, -0.001])
    w = torch.arange(1.0, 7.0)
    async with Cluster.start(PARTIES, protocols=protocols, seed=3) as c:
        s = c.share(x, requires_grad=True)
        await c.flush()
        before = c.stats()
        y = abs(s)
        await c.flush()
        d = c.stats() - before
        expected = DEFAULT if protocols == "default" else SUITES[protocols]
        cost = expected.cost("abs", [(6,)], (6,), 1, 2)
        relu = expected.cost("relu", [(6,)], (6,), 1, 2)
        assert (d.online_rounds, d.online_bytes // 2, d.offline_bytes) == (
            cost.rounds,
            cost.online_bytes,
            cost.dealer_bytes,
        ) and cost == relu
        (y * public(w)).sum().backward()
        got, grad = await y.get(), await s.grad.get()
    assert torch.allclose(got, x.abs(), atol=1e-3)
    # torch's gradient of |x| at 0 is 0; ours is +1 there (the comparison's bit is 1 at 0)
    assert torch.equal(grad, w * torch.where(x >= 0, 1.0, -1.0))


async def test_a_swapped_protocol_is_checked_against_the_kinds_meaning() -> None:
    """Suite.replace with a bare builder keeps abs's reference: a protocol that forgets the
    ``- x`` (a realistic slip: it returns 2 relu(x)) is caught by check mode."""

    def forgetful(suite: Suite, n: int) -> OpKind:
        relu = suite.kind("relu", n)
        assert relu.run is not None
        run_relu = relu.run

        async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
            y, bit = await run_relu(ctx, x, p)
            return [Share(2 * y.value, y.depth), bit]

        return OpKind("abs", run=run, specs=relu.specs, cost=relu.cost, n_out=2)

    broken = DEFAULT.replace("broken-abs", abs=forgetful)
    assert broken.reference("abs") is DEFAULT.reference("abs")
    async with Cluster.start(PARTIES, protocols=broken, seed=3, check=True) as c:
        y = abs(c.share(torch.tensor([-2.0, 1.0])))
        with pytest.raises(ShadowMismatch, match="abs"):
            await y.get()
    async with Cluster.start(PARTIES, protocols=DEFAULT, seed=3, check=True) as c:
        assert torch.equal(
            await abs(c.share(torch.tensor([-2.0, 1.0]))).get(), torch.tensor([2.0, 1.0])
        )


def test_each_plain_function_is_bound_where_it_is_written() -> None:
    """torch.f, SharedTensor.f and the implementation are one object for the functions
    bound with @implements (no second table, no method stub in the class)."""
    import torch.nn.functional as F

    from training import activations, range_reduction

    for mod, names in (
        (range_reduction, ("exp", "log", "sin", "cos", "reciprocal", "sqrt", "rsqrt")),
        (activations, ("sigmoid", "tanh", "clamp")),
    ):
        for name in names:
            fn = getattr(mod, name)
            assert registry.TORCH[getattr(torch, name)] is fn, name
            assert registry.METHODS[name] is fn and getattr(SharedTensor, name) is fn, name
    assert registry.TORCH[F.sigmoid] is activations.sigmoid
    assert SharedTensor.clip is activations.clamp
