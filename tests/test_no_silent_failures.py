"""No silent failures: a plaintext module trained on shares, base 2 without a precision,
trio inside asyncio; and the synchronous Session."""

from __future__ import annotations

import asyncio

import pytest
import torch
import torch.nn.functional as F
from conftest import PARTIES, PROVIDER
from torch import nn

from protocols.errors import UnsupportedOperation
from training import SGD, Cluster, PublicOperandWarning
from training.cluster import default_precision
from training.sync import Session


async def test_plaintext_module_on_shares_refuses_to_train() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    async with Cluster.start(PARTIES[2], provider=PROVIDER, seed=1) as c:
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
    async with Cluster.start(PARTIES[2], provider=PROVIDER, seed=1) as c:
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
        async with Cluster.start(PARTIES[2], provider=PROVIDER):
            pass

    with pytest.raises(RuntimeError, match=r"training\.sync\.Session"):
        asyncio.run(main())


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
    want = []
    for _ in range(3):
        ropt.zero_grad()
        loss = F.cross_entropy(ref(x), y)
        loss.backward()
        ropt.step()
        want.append(float(loss.detach()))
    got = train()
    assert max(abs(a - b) for a, b in zip(got, want, strict=True)) <= 0.01
    assert want[-1] < want[0]  # it learned something: the comparison is not vacuous

    async def in_a_notebook() -> list[float]:
        return train()  # synchronous calls from inside a running asyncio loop

    got2 = asyncio.run(in_a_notebook())
    assert got2 == got  # seeded: the same run


def test_session_reports_a_failed_start() -> None:
    with pytest.raises(ValueError, match="at least 2 parties"):
        Session(["alice"])
