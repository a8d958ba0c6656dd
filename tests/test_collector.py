"""The cyclic collector while a cluster serves (actors.cluster.collector_tuned): raised
young threshold and frozen set-up objects inside, the process's own settings restored
after the last cluster closes, also when the block raises, and nested clusters alike."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
import torch
import trio

from actors.cluster import YOUNG_THRESHOLD, _Collector
from actors.config import load_config, write_local_config
from actors.node import serve
from training import Cluster


async def test_collector_is_tuned_while_serving_and_restored_after() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    async with Cluster.start(["alice", "bob"], "james") as outer:
        assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
        assert gc.get_threshold()[1:] == before[1:]
        assert gc.get_freeze_count() > frozen
        async with Cluster.start(["carol", "dave"], "erin") as inner:
            x = inner.share(torch.tensor([1.0, 2.0]))
            assert (await (x * 2).get()).tolist() == [2.0, 4.0]
        # the outer cluster still serves: still tuned
        assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
        y = outer.share(torch.tensor([3.0]))
        assert (await (y + y).get()).tolist() == [6.0]
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == frozen


async def test_collector_is_restored_when_the_block_raises() -> None:
    before = gc.get_threshold()
    with pytest.raises(KeyError, match="boom"):
        async with Cluster.start(["alice", "bob"], "james"):
            raise KeyError("boom")
    assert gc.get_threshold() == before


async def test_a_process_freeze_is_left_alone() -> None:
    gc.freeze()  # the process's own (a pre-fork server, say)
    try:
        frozen = gc.get_freeze_count()
        async with Cluster.start(["alice", "bob"], "james"):
            assert gc.get_threshold()[0] >= YOUNG_THRESHOLD
        # neither undone nor added to (frozen objects that died leave the count)
        assert 0 < gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()


async def test_node_processes_tune_the_collector_while_they_serve(tmp_path: Path) -> None:
    """``python -m actors.node`` runs its actor inside ``collector_tuned`` too: the nodes of
    a TLS cluster, run here in this process (``actors.node.serve``, the function the node
    command runs), each count as a serving cluster while the session lasts, and the
    collector is restored once they and the coordinator have closed."""
    before = gc.get_threshold()
    config_path = write_local_config(tmp_path, ["alice", "bob"], idle_timeout=20.0)
    config = load_config(config_path)
    codes: dict[str, int] = {}

    async def node(name: str) -> None:
        codes[name] = await serve(config, name)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for name in ("alice", "bob", "james"):
                nursery.start_soon(node, name)
            async with Cluster.connect(config_path) as c:
                x = c.share(torch.tensor([1.0, 2.0]))
                assert (await (x * x).get()).tolist() == [1.0, 4.0]
                # the coordinator and the three nodes' sessions
                assert _Collector.serving == 4
                assert gc.get_threshold()[0] == max(before[0], YOUNG_THRESHOLD)
    assert codes == {"alice": 0, "bob": 0, "james": 0}
    assert _Collector.serving == 0
    assert gc.get_threshold() == before
