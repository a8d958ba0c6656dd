"""structlog events: one protocol_run per interactive op per party, an actor summary per
actor when the cluster closes, JSON lines on request."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import torch

from actors import configure_logging
from protocols import drelu_online_bytes
from training.testing import start_cluster


@pytest.fixture
def debug_logs() -> Iterator[None]:
    configure_logging(level="debug")
    yield
    configure_logging()


async def test_protocol_runs_and_actor_summaries(debug_logs: None) -> None:
    with structlog.testing.capture_logs() as events:
        async with start_cluster(2, seed=3, protocols="carry") as c:
            x, y = c.share(torch.ones(2, 3)), c.share(torch.ones(3, 4))
            with c.label("demo"):
                z = (x @ y).relu()
            await z.get()
    runs = [e for e in events if e["event"] == "protocol_run"]
    assert sorted((e["actor"], e["kind"]) for e in runs) == [
        ("alice", "matmul"),
        ("alice", "relu"),
        ("bob", "matmul"),
        ("bob", "relu"),
    ]
    for e in runs:
        assert {"op_id", "shapes", "rounds", "depth", "bytes_sent", "dealer_bytes"} <= set(e)
    # the coordinator logs every op it issues, with its label and the suite's closed form
    issued = {e["op_id"]: e for e in events if e["event"] == "op_issued"}
    assert [e["kind"] for e in issued.values()] == ["input", "input", "matmul", "relu"]
    labels = {e["kind"]: e["label"] for e in issued.values()}
    assert labels["matmul"] == "demo" and labels["relu"] == "demo/relu"
    for e in runs:
        op = issued[e["op_id"]]
        assert e["rounds"] == op["rounds"] and e["bytes_sent"] == op["online_bytes"], (e, op)
    mm = next(e for e in runs if e["kind"] == "matmul" and e["actor"] == "alice")
    assert mm["shapes"] == [[2, 3], [3, 4]]
    assert mm["rounds"] == 1 and mm["bytes_sent"] == 8 * (6 + 12)
    relu = next(e for e in runs if e["kind"] == "relu" and e["actor"] == "bob")
    assert relu["rounds"] == 7
    assert relu["bytes_sent"] == drelu_online_bytes(8, 2, with_relu=True)
    assert relu["dealer_bytes"] > 0  # bob is the last party: it receives the corrections
    summaries = {e["summary_of"]: e for e in events if e["event"] == "actor_summary"}
    assert set(summaries) == {"alice", "bob", "james", "coordinator"}
    assert summaries["james"]["sent"]["offline"] > 0
    assert summaries["alice"]["sent"]["online"] == summaries["bob"]["received"]["online"]


async def test_json_lines_on_request(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    configure_logging(json_path=str(path))
    try:
        async with start_cluster(2) as c:
            x = c.share(torch.tensor([1.0, -2.0]))
            assert torch.equal(await (x * x).get(), torch.tensor([1.0, 4.0]))
    finally:
        configure_logging()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = {(e["event"], e.get("kind")) for e in lines}
    assert ("protocol_run", "mul") in kinds
    assert any(e["event"] == "actor_summary" for e in lines)
    assert all("timestamp" in e and "level" in e for e in lines)
