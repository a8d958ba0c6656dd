"""The testing kit (training.testing) and the fixtures conftest builds on it: the factory's
defaults, the measurement counting exactly the ops of its block, the reveal helpers, and
recorded views that see what a party saw."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
import torch

from actors import Phase
from actors.codec import encode_tensors
from actors.names import ConfigError
from protocols import FixedPoint
from protocols.suite import CARRY
from training import Cluster, SharedTensor
from training.testing import (
    PARTIES,
    PROVIDER,
    analyse,
    cost,
    measure,
    parties,
    recorded,
    reveal,
    reveal_raw,
    start_cluster,
    value_of,
)


async def test_start_defaults_and_options() -> None:
    async with start_cluster() as c:
        assert c.parties == ["alice", "bob"]
        assert PROVIDER in c.stats().per_actor
    async with start_cluster(3, seed=2, protocols="carry", timeout=5.0) as c:
        assert c.parties == PARTIES[3]
        assert c.suite is CARRY
    async with start_cluster(["ann", "ben"], provider="pat") as c:
        assert c.parties == ["ann", "ben"] and "pat" in c.stats().per_actor


def test_parties_are_fresh_lists_and_sizes_are_checked() -> None:
    p = parties(2)
    p.append("mallory")
    assert PARTIES[2] == ["alice", "bob"]
    with pytest.raises(ConfigError, match="2 or 3 parties"):
        parties(4)


async def test_fixtures(cluster: Cluster, cluster3: Cluster) -> None:
    assert cluster.parties == PARTIES[2] and cluster3.parties == PARTIES[3]
    x = cluster.share(torch.tensor([1.5]))
    assert torch.equal(await reveal(x), torch.tensor([1.5], dtype=torch.float64))


async def test_measure_counts_exactly_the_block(cluster: Cluster) -> None:
    x = cluster.share(torch.ones(4))
    _ = x * x  # issued before the block: finished by its first flush, not counted
    async with measure(cluster) as m:
        with pytest.raises(RuntimeError, match="not finished"):
            _ = m.stats
        y = x * x
    assert m.stats.online_rounds == 1 and m.stats.online_bytes > 0
    assert m.stats.input_bytes == 0
    async with measure(cluster) as idle:
        pass
    assert idle.stats.online_bytes == 0 and idle.stats.online_rounds == 0
    z, d = await cost(cluster, lambda: y * x)
    assert isinstance(z, SharedTensor)
    assert d.online_bytes == m.stats.online_bytes and d.online_rounds == 1


async def test_reveal_helpers(cluster: Cluster) -> None:
    x = cluster.share(torch.tensor([0.25, -2.0]))
    assert (await reveal(x)).dtype == torch.float64
    assert torch.equal(
        await reveal(torch.tensor([3], dtype=torch.int32)), torch.tensor([3.0]).double()
    )
    assert torch.equal(await reveal(2), torch.tensor(2.0, dtype=torch.float64))
    with pytest.raises(TypeError, match="str"):
        await reveal("x")
    assert (await value_of(x)).dtype == torch.float32
    assert await value_of(7) == 7
    raw = SharedTensor(cluster, cluster.input(torch.tensor([-(2**62), 5])), (2,), FixedPoint(10, 0))
    assert torch.equal(await reveal_raw(raw), torch.tensor([-(2**62), 5]))


async def _run(secret: float) -> Any:
    async with start_cluster(2) as c:
        x = c.share(torch.full((64,), secret))
        async with recorded(c) as rec:
            y = x * x
            await c.flush()
        after = len(rec.envs)
        assert torch.allclose(
            await reveal(y), torch.full((64,), secret * secret).double(), atol=0.01
        )
        assert len(rec.envs) == after, "the recording stopped at the end of its block"
        return rec


async def test_recorded_views_pass_and_catch_a_leak() -> None:
    a, b = await _run(1.0), await _run(-3.0)
    assert a.parties == PARTIES[2]
    assert a.metadata() == b.metadata()
    assert a.received("alice", [Phase.ONLINE]) and not a.received("alice", [Phase.INPUT])
    assert all(v.opened for v in a.views())
    report = analyse(a, b)
    assert len(report) > 0 and not report.rejected(1e-6), report.summary(1e-6)
    # the secret itself in bob's view (as if sent in the clear) is caught
    leak_a, leak_b = await _run(1.0), await _run(-3.0)
    for rec, secret in ((leak_a, 1.0), (leak_b, -3.0)):
        env = rec.received("bob", [Phase.ONLINE])[0]
        body, size = encode_tensors([torch.full_like(t, int(secret * 1000)) for t in env.tensors()])
        rec.envs[rec.envs.index(env)] = msgspec.structs.replace(env, body=body, payload_bytes=size)
    assert analyse(leak_a, leak_b).rejected(1e-6)
