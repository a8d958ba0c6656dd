"""Stats a person reads (wall time, per-label rows, a legend, the same fields as JSON) and
progress on long runs (a bar on a terminal only, or a callback once per step)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import train_xor
import trio
from torch import nn

from actors import configure_logging
from actors.stats import LABEL_LEGEND, LEGEND, ROWS, UNLABELLED
from training import SGD, Cluster, TrainingCoordinator, export_module
from training.coordinator import predict
from training.progress import ProgressBar, ProgressEvent
from training.testing import start_cluster

DATA = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
TARGET = torch.tensor([[0.0], [1.0], [1.0], [0.0]])


@pytest.fixture
def quiet_logs() -> Iterator[None]:
    """The coordinator logs each step at ``info`` to stderr by default: keep stderr for
    what the progress display writes."""
    configure_logging(level="warning")
    yield
    configure_logging()


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))


def mse(p: Any, t: Any) -> Any:
    return ((p - t) ** 2).sum()


def coordinator(c: Cluster) -> TrainingCoordinator:
    model = c.share_module(net())
    return TrainingCoordinator(c, model, SGD(model.parameters(), lr=0.1), mse)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# -- the table ----------------------------------------------------------------------------
async def test_table_has_the_wall_time_and_a_legend_of_every_row() -> None:
    async with start_cluster(2, seed=1) as c:
        x = c.share(DATA)
        await (x * x).get()
        before = c.stats()
        await trio.sleep(0.2)
        after = c.stats()
        with pytest.raises(RuntimeError, match="track_op_costs"):
            c.stats(by_label=True)  # no op log: nothing to break down
    assert 0 < before.wall_seconds < after.wall_seconds
    interval = (after - before).wall_seconds
    assert 0.2 <= interval < after.wall_seconds
    lines = after.table().splitlines()
    (wall,) = [ln for ln in lines if ln.startswith("wall time")]
    assert float(wall.split()[-2].replace(",", "")) == pytest.approx(after.wall_seconds, abs=1e-3)
    legend = lines[lines.index("legend:") + 1 :]
    assert legend == [f"  {ROWS[k]}: {LEGEND[k]}" for k in ROWS]  # every row explained
    for name in ROWS.values():  # ... and every explained row is in the table
        assert any(ln.startswith(name) for ln in lines[: lines.index("legend:")]), name
    assert "dealer requests" in LEGEND["control_bytes"] and "barrier" in LEGEND["control_bytes"]
    assert "legend:" not in after.table(legend=False)


# -- per-label rows -----------------------------------------------------------------------
async def test_per_label_rows_add_up_to_the_totals() -> None:
    async with start_cluster(2, seed=2) as c:
        c.track_op_costs()
        x, y = c.share(DATA), c.share(TARGET)
        coord = coordinator(c)
        await c.flush()
        start = c.stats(by_label=True)
        (first,) = await coord.fit(x, y, 1)
        # an op of the caller's between two steps, measured alone by the meter
        await c.flush()
        alone = c.stats()
        with c.label("between"):
            z = (x * x).relu()
        await c.flush()
        alone = c.stats() - alone
        middle = c.stats(by_label=True)  # must not take the next step's figures
        (second,) = await coord.fit(x, y, 1)
        with c.label("after"):
            await (z * z).get()
        await c.flush()
        end = c.stats(by_label=True)
    d = end - start
    rows = d.by_label
    assert {"forward/0", "forward/1/relu", "loss", "backward/0", "update", "between"} <= set(rows)
    assert "after" in rows and UNLABELLED not in rows  # the shares were issued before start
    # rounds-independent fields add up exactly; the meter and the op log are apart
    assert sum(r.online_bytes for r in rows.values()) == d.online_bytes > 0
    assert sum(r.offline_bytes for r in rows.values()) == d.offline_bytes > 0
    # the caller's ops between the steps (the relu labels its own "between/relu"): their
    # rows are what the meter saw around them
    assert {k for k in rows if k.startswith("between")} == {"between", "between/relu"}
    between = (middle - start).group_labels(1).by_label["between"]
    assert (between.online_bytes, between.offline_bytes) == (
        alone.online_bytes,
        alone.offline_bytes,
    )
    assert between.interactive == between.ops == 2  # mul, relu
    top = d.group_labels(1).by_label
    assert list(top) == ["forward", "loss", "backward", "update", "between", "after"]
    assert sum(r.online_bytes for r in top.values()) == d.online_bytes
    # each step's own rows add up to the step's record (not the caller's op)
    for rec in (first, second):
        assert "between" not in rec.by_label
        assert sum(r.online_bytes for r in rec.by_label.values()) == rec.online_bytes
        assert sum(r.offline_bytes for r in rec.by_label.values()) == rec.offline_bytes
    assert second.by_label == first.by_label  # the same step, the same figures
    # the table shows the rows, their total and a legend of their columns
    text = d.table()
    row = next(ln for ln in text.splitlines() if ln.startswith("between "))
    assert row.split()[1:] == [f"{v:,}" for v in rows["between"].as_dict().values()]
    total = next(ln for ln in text.splitlines() if ln.startswith("total "))
    assert total.split()[3] == f"{d.online_bytes:,}"
    for k, v in LABEL_LEGEND.items():
        assert v in text, k
    assert "outside the rows" not in text  # everything in the interval has a row
    assert "outside the rows: 0 online" in end.table()  # the provider's setup keys


# -- the JSON log -------------------------------------------------------------------------
def test_json_log_has_the_tables_fields(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    try:
        assert train_xor.main(["--iterations", "2", "--quiet", "--log-json", str(path)]) == 0
    finally:
        configure_logging()
    events = [json.loads(line) for line in path.read_text().splitlines()]
    steps = [e for e in events if e["event"] == "train_iteration"]
    assert [e["iteration"] for e in steps] == [0, 1]
    for e in steps:
        assert set(ROWS) | {"online_messages", "seconds", "phases", "by_label"} <= set(e)
        assert sum(r["online_bytes"] for r in e["by_label"].values()) == e["online_bytes"]
        assert sum(r["offline_bytes"] for r in e["by_label"].values()) == e["offline_bytes"]
        assert e["control_bytes"] > 0 and e["wall_seconds"] >= e["seconds"] > 0
    assert steps[1]["wall_seconds"] > steps[0]["wall_seconds"]  # since the cluster started
    (final,) = [e for e in events if e["event"] == "comm_stats"]
    assert set(ROWS) <= set(final)
    assert final["online_bytes"] >= sum(e["online_bytes"] for e in steps)
    labelled = sum(r["online_bytes"] for r in final["by_label"].values())
    assert labelled == final["online_bytes"]  # the coordinator tracked from the start


# -- progress -----------------------------------------------------------------------------
def test_bar_only_on_a_terminal() -> None:
    pipe, tty, forced = io.StringIO(), Terminal(), io.StringIO()
    for file, option in ((pipe, None), (tty, None), (forced, True)):
        with ProgressBar(3, "demo", option, file=file) as bar:
            for _ in range(3):
                bar.advance(1, {"loss": 0.5})
    assert pipe.getvalue() == ""
    assert "demo: " in tty.getvalue() and "0/3" in tty.getvalue()
    assert "demo: " in forced.getvalue()
    with pytest.raises(TypeError, match="progress must be"):
        ProgressBar(3, "demo", "yes")  # type: ignore[arg-type]


async def test_fit_progress_quiet_off_a_terminal_and_a_callback_per_step(
    quiet_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    events: list[ProgressEvent] = []
    async with start_cluster(2, seed=3) as c:
        x, y = c.share(DATA), c.share(TARGET)
        coord = coordinator(c)
        quiet = await coord.fit(x, y, 2)  # progress=None, and pytest's stderr is no tty
        captured = capsys.readouterr()
        assert (captured.out, captured.err) == ("", "")
        recs = await coord.fit(x, y, epochs=2, batch_size=3, progress=events.append)
        with pytest.raises(ValueError, match="either iterations"):
            await coord.fit(x, y, 2, epochs=2)
        with pytest.raises(ValueError, match="batch_size"):
            await coord.fit(x, y, epochs=1, batch_size=0)
    assert len(quiet) == 2
    assert len(recs) == len(events) == 4  # 2 epochs of batches of 3 and 1 rows
    assert [e.done for e in events] == [1, 2, 3, 4] and {e.total for e in events} == {4}
    assert [e.info["epoch"] for e in events] == [0, 0, 1, 1]
    assert [e.info["loss"] for e in events] == [r.loss for r in recs]
    assert [e.info["iteration"] for e in events] == [2, 3, 4, 5]
    assert capsys.readouterr().err == ""


async def test_fit_mini_batches_are_the_steps_a_loop_would_take(quiet_logs: None) -> None:
    async def run(use_fit: bool) -> list[float]:
        async with start_cluster(2, seed=4) as c:
            x, y = c.share(DATA), c.share(TARGET)
            coord = coordinator(c)
            order = [torch.tensor([3, 0]), torch.tensor([1, 2])]
            if use_fit:
                recs = await coord.fit(x, y, epochs=1, batches=lambda e: order)
                return [r.loss for r in recs]
            return [(await coord.step(x[i], y[i])).loss for i in order]

    by_fit, by_loop = await run(True), await run(False)
    assert by_fit == by_loop  # same seed, same ops: the very same revealed losses
    # and both are the plaintext model's losses on those rows, within fixed point
    plain = net()
    opt = torch.optim.SGD(plain.parameters(), lr=0.1)
    for i, got in zip([torch.tensor([3, 0]), torch.tensor([1, 2])], by_fit, strict=True):
        opt.zero_grad()
        loss = mse(plain(DATA[i]), TARGET[i])
        loss.backward()
        opt.step()
        assert abs(got - float(loss)) < 0.01


async def test_export_and_predict_report_each_tensor_and_batch(
    quiet_logs: None, capsys: pytest.CaptureFixture[str]
) -> None:
    exported: list[ProgressEvent] = []
    batches: list[ProgressEvent] = []
    x_plain = torch.rand(10, 2, generator=torch.Generator().manual_seed(5))
    async with start_cluster(2, seed=5) as c:
        model = c.share_module(net())
        plain = await export_module(model, progress=exported.append)
        x = c.share(x_plain)
        out = await predict(model, x, batch_size=4, progress=batches.append)
        await export_module(model)  # default: no terminal, no output
    assert [e.info["name"] for e in exported] == [n for n, _ in net().named_parameters()]
    assert [e.done for e in exported] == [1, 2, 3, 4] and exported[0].total == 4
    assert [e.info["rows"] for e in batches] == [4, 8, 10] and batches[0].total == 3
    with torch.no_grad():
        assert torch.allclose(out, plain(x_plain), atol=0.01)
        assert torch.allclose(plain(x_plain), net()(x_plain), atol=2e-3)
    assert capsys.readouterr().err == ""
