"""Liveness under load (issue 22): training next to CPU hogs on this 2-core machine with a
tight bound gives no spurious ActorTimeout, and a party that really goes silent is still
named quickly. Before the second look (actors/mailbox.py), the first test failed within two
steps: a timer fired as a long computation released the loop, before the peers' heartbeats
(due as long) were sent."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import trio
from torch import nn

from protocols.errors import ActorTimeout
from training import SGD, Cluster, TrainingCoordinator
from training.testing import Tap, start_cluster

BOUND = 0.1  # seconds: far below one step's computations here, so the test has teeth
HOG = "import time\nend = time.time() + {s}\nwhile time.time() < end: pass\n"


@contextmanager
def cpu_hogs(n: int = 3, seconds: float = 60.0) -> Iterator[None]:
    """``n`` busy-looping processes (each ends by itself after ``seconds``)."""
    procs = [subprocess.Popen([sys.executable, "-c", HOG.format(s=seconds)]) for _ in range(n)]
    try:
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _model(c: Cluster) -> tuple[TrainingCoordinator, object, object]:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 1)
    )
    x, y = c.share(torch.randn(512, 64)), c.share(torch.randn(512, 1))
    model = c.share_module(net)
    opt = SGD(model.parameters(), lr=1e-3)
    return TrainingCoordinator(c, model, opt, lambda p, t: ((p - t) ** 2).mean()), x, y


@pytest.mark.slow
async def test_training_next_to_cpu_hogs_has_no_spurious_timeout() -> None:
    with cpu_hogs(), trio.fail_after(240):
        async with start_cluster(2, timeout=BOUND) as c:
            coord, x, y = _model(c)
            losses = [(await coord.step(x, y)).loss for _ in range(8)]
    assert all(torch.isfinite(torch.tensor(losses)))


async def test_a_silent_party_is_named_quickly_under_load() -> None:
    with cpu_hogs(seconds=30), trio.fail_after(60), pytest.raises(ActorTimeout) as info:
        async with start_cluster(2, timeout=BOUND) as c:
            x = c.share(torch.ones(4))
            await c.flush()
            Tap(c, drop=lambda env: env.sender == "bob")
            t0 = time.monotonic()
            try:
                await (x * x).get()
            finally:
                elapsed = time.monotonic() - t0
    assert info.value.awaited == "bob"
    assert elapsed < 2.0
