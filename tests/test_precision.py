"""PrecisionWarning (training/precision.py): values below the fixed-point resolution are
named when shared, and a learning rate whose steps round to zero when the optimizer is
built. Each case is checked against what really happens on the shares."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from training import SGD, Adam
from training.precision import PrecisionWarning
from training.testing import start_cluster


async def test_data_below_the_resolution_is_named_and_really_lost() -> None:
    data = torch.tensor([4e-4, -3e-4, 2e-4, 0.5, 0.0])
    async with start_cluster(2, seed=1) as c:
        with pytest.warns(PrecisionWarning, match=r"3 of its 4 nonzero values \(75%\)"):
            x = c.share(data)  # base 10, precision 3: resolution 0.001
        assert (await x.get()).tolist()[:3] == [0.0, 0.0, 0.0]  # what the warning says
        with warnings.catch_warnings():
            warnings.simplefilter("error", PrecisionWarning)
            c.share(data, precision=16, base=2)  # enough bits: no warning


async def test_parameters_are_named_in_the_warning() -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    with torch.no_grad():
        net.weight.mul_(1e-4)
    async with start_cluster(2, seed=2) as c:
        with pytest.warns(PrecisionWarning, match="parameter weight"):
            c.share_module(net)


async def test_a_learning_rate_whose_steps_vanish_is_named_and_really_does_nothing() -> None:
    async with start_cluster(2, seed=3) as c:
        w = c.share(torch.tensor([1.0, -2.0]), requires_grad=True)
        with pytest.warns(PrecisionWarning, match=r"lr 1e-07 moves a weight only where"):
            opt = SGD([w], lr=1e-7)
        w.grad = c.share(torch.tensor([3.0, -5.0]))
        opt.step()
        assert (await w.get()).tolist() == [1.0, -2.0]  # nothing moved, as warned
        with warnings.catch_warnings():
            warnings.simplefilter("error", PrecisionWarning)
            SGD([w], lr=0.1)
            p = c.share(torch.zeros(2), precision=16, base=2, requires_grad=True)
            Adam([p], lr=1e-3)
        with pytest.warns(PrecisionWarning, match=r"m / sqrt\(v\)"):
            Adam([p], lr=1e-6)
