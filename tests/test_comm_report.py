"""The communication report engine (training.report) on a quick subset, in process."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import trio
from comm_report import TRAIN_XOR, main

from protocols import FixedPoint
from protocols.opkind import Cost, OpKind, Suite
from protocols.suite import DEFAULT, KINDS, SUITES
from training.report import PNGS, WAN, Profile, Report, build, config, write
from training.report.engine import MLP_SIM
from training.report.measure import Workload, measure_ops, mlp_workload

CFG = replace(
    config(quick=True),
    sizes=(16,),
    mats=((4, 2, 2),),
    iterations=1,
    batches=(2, 8),
    widths=(2, 4),
    simulated=(("train_xor", "default", Profile("2 ms", 2e-3, 1e9)),),
    sim_iterations=2,
)
LABELS = {"forward/fc1", "forward/relu", "forward/fc2", "loss", "backward/fc1", "update"}


@pytest.fixture(scope="module")
def report() -> Report:
    return trio.run(build, CFG, TRAIN_XOR)


def test_every_op_kind_of_every_suite_equals_its_closed_form(report: Report) -> None:
    for name, suite in SUITES.items():
        for n in (2, 3):
            rows = [r for r in report.ops if r.suite == name and r.parties == n]
            assert {r.kind for r in rows} == set(suite.names), (name, n)
            for r in rows:
                assert r.equal, r
                assert len(set(r.online_per_party)) == 1, r
    assert not any(report.unmeasured.values())
    assert not report.mismatches
    # A few closed forms written out (16 elements): Beaver mul opens x-a and y-b once.
    by = {(r.suite, r.parties, r.kind, r.note): r for r in report.ops}
    assert by["carry", 2, "mul", ""].online_per_party == [2 * 8 * 16] * 2
    assert by["carry", 3, "mul", "x*bit, d=1"].online_per_party == [2 * 2 * 8 * 16] * 3
    assert (by["carry", 2, "relu", ""].rounds, by["default", 2, "relu", ""].rounds) == (7, 1)
    assert by["default", 2, "trunc", ""].rounds == by["default", 2, "trunc", ""].dealer == 0
    assert by["fss-exact", 2, "trunc", ""].rounds == 1


def test_train_xor_breakdown_sums_to_the_iteration(report: Report) -> None:
    assert set(report.training) == {(s, n) for s in SUITES for n in (2, 3)}
    for its in report.training.values():
        for it in its:
            rec = it.record
            assert all(it.checks.values()), it.checks
            assert sum(lab.online for lab in it.labels) == rec.online_bytes
            assert sum(lab.dealer for lab in it.labels) == rec.offline_bytes
            assert sum(lab.critical_rounds for lab in it.labels) == rec.online_rounds
            assert sum(p[3] for p in it.path) == rec.online_rounds == it.closed_rounds
            assert {lab.label for lab in it.labels} >= LABELS
    carry = report.last("carry", 2)
    assert carry.record.online_rounds == 12
    assert {lab.label: lab.critical_rounds for lab in carry.labels}["forward/relu"] == 7


def test_sweeps_and_projection(report: Report) -> None:
    assert {(p.axis, p.x) for p in report.sweeps} == {("batch", 2), ("batch", 8)} | {
        ("width", 2),
        ("width", 4),
    }
    for p in report.sweeps:
        assert (p.rounds, p.online, p.dealer) == (p.closed_rounds, p.closed_online, p.closed_dealer)
    (sim,) = report.simulated
    it = report.last("default", 2)
    assert (sim.rounds, sim.bytes_per_party) == (it.record.online_rounds, it.busiest_party_online)
    assert sim.measured > sim.rounds * 2e-3 and abs(sim.error) < 1


def test_markdown_json_and_plots_are_written_and_consistent(report: Report, tmp_path: Path) -> None:
    write(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    for heading in ("## 1. Every op kind", "## 2. One iteration", "## 3. Growth", "## 4. Proj"):
        assert heading in md
    for png in PNGS:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({png})" in md
    assert data["all_equal"] and "MISMATCH" not in md
    assert len(data["ops"]) == len(report.ops) and all(r["equal"] for r in data["ops"])
    default = next(t for t in data["training"] if (t["suite"], t["parties"]) == ("default", 2))
    last = default["iterations"][-1]
    assert last["online_bytes"] == sum(lab["online"] for lab in last["labels"])
    assert (
        f"suite `default`: {last['online_rounds']} rounds, {last['online_bytes']:,} online B" in md
    )
    for lab in last["labels"]:
        assert f"| {lab['label']} |" in md
    sim = data["simulated"][0]
    assert f"{100 * sim['error']:+.1f}%" in md


async def test_a_wrong_closed_form_is_flagged() -> None:
    def wrong_mul(suite: Suite, n: int) -> OpKind:
        return replace(KINDS["mul"].build(suite, n), cost=lambda s, out, d, n: Cost(1, 1))

    broken = DEFAULT.replace("broken", mul=wrong_mul)
    rows, _ = await measure_ops(broken, 2, (4,), ((2, 2, 2),))
    bad = [r for r in rows if not r.equal]
    assert {r.kind for r in bad} == {"mul"}
    rep = Report(CFG, "x", ops=rows)
    assert len(rep.mismatches) == len(bad) and "broken n=2 mul" in rep.mismatches[0]


def test_cli_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "--out" in capsys.readouterr().out


def test_network_d_iteration_equals_the_op_logs_closed_forms(
    report: Report, tmp_path: Path
) -> None:
    """Quick config: SecureNN/Falcon Network D at batch 8, suites default and carry."""
    assert [(c.network, c.suite, c.parties, c.batch) for c in report.networks] == [
        ("D", "default", 2, 8),
        ("D", "carry", 2, 8),
    ]
    for c in report.networks:
        assert all(c.checks.values()), c.checks
        assert (c.rounds, c.online, c.dealer) == (c.closed_rounds, c.closed_online, c.closed_dealer)
        assert c.ok and c.rounds > 0 and c.dealer > 0
        assert c.busiest_party_online * 2 >= c.online
        assert c.project(WAN) >= c.rounds * WAN.latency + c.seconds
    by = {c.suite: c for c in report.networks}
    assert by["carry"].rounds > by["default"].rounds  # FSS comparisons for the small ReLUs
    write(report, tmp_path)
    md = (tmp_path / "report.md").read_text()
    data = json.loads((tmp_path / "report.json").read_text())
    assert "SecureNN's and Falcon's networks A-D" in md
    assert "1,155-1,345 ms/step" in md and "paper (not found)" in md
    assert [(n["network"], n["suite"], n["online"]) for n in data["networks"]] == [
        (c.network, c.suite, c.online) for c in report.networks
    ]
    assert all(n["ok"] for n in data["networks"])


def _plain_losses(work: Workload, steps: int, lr: float | None = None) -> list[float]:
    net = work.model()
    opt = torch.optim.SGD(net.parameters(), lr=work.lr if lr is None else lr)
    out = []
    for _ in range(steps):
        opt.zero_grad()
        loss = work.loss(net(work.data), work.target)
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out


def test_every_mlp_the_full_report_trains_stays_within_the_reveal_bound() -> None:
    """Plain torch as the oracle, 10 steps (the report runs 2 per sweep point, 6 in the
    simulated run): every MLP of the full config, at its rate, never goes above its first
    loss, far below the reveal bound. The sum-of-squares loss grows with batch and width:
    a fixed lr 0.01 took the simulated batch-256 x width-64 MLP beyond the bound
    (ValueOutOfRange in ``comm_report.py --out reports/``)."""
    cfg = config()
    bound = FixedPoint(10, 3).headroom
    points = {(b, 2) for b in cfg.batches} | {(4, w) for w in cfg.widths} | {MLP_SIM}
    for batch, width in sorted(points):
        work = mlp_workload(batch, width)
        losses = _plain_losses(work, 10)
        assert max(losses) <= losses[0] * 1.001 < bound / 1000, (work.name, losses)
        assert losses[-1] < losses[0] or losses[0] < 1e-3, (work.name, losses)
    assert max(_plain_losses(mlp_workload(*MLP_SIM), 4, lr=0.01)) > bound  # what failed
