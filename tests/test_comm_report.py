"""scripts/comm_report.py: one tiny run (a subprocess, as a user runs it), then its figures.

The expected costs are written out here from the protocols' docstrings (beaver.py,
truncate.py) and compare.py's closed-form functions, independently of the report's own
closed-form code, and compared with what the report says it measured.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from report_analysis import (
    LoggedOp,
    chain_by_depth,
    chain_by_tensors,
    dag,
    dag_path,
    iterations_from_log,
    phases_from_log,
    read_log,
)
from report_costs import fit
from report_training import training_section

from protocols.compare import DRELU_ROUNDS, drelu_offline_bytes, drelu_online_bytes

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "comm_report.py"
ELEMENTS, MM = 64, 4
TINY = [
    "--quick",
    "--parties", "2,3",
    "--elements", str(ELEMENTS),
    "--matmul", str(MM),
    "--iterations", "3",
    "--batches", "8,16,32,64",
    "--widths", "2,8,32",
    "--timing-iterations", "3",
    "--timing-warmup", "1",
    "--seed", "7",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("report")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out), *TINY],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "report.json").read_text())


def test_help() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for flag in ("--out", "--log", "--batches", "--widths", "--sweep-step", "--quick"):
        assert flag in proc.stdout


def test_tiny_run_writes_markdown_json_and_png(tiny: tuple[Path, dict[str, Any]]) -> None:
    out, report = tiny
    md = (out / "report.md").read_text()
    for heading in (
        "## 1. Protocols",
        "## 2. One training iteration",
        "## 3. How cost grows",
        "## 4. Projected",
    ):
        assert heading in md
    pngs = sorted(out.glob("*.png"))
    assert {p.name for p in pngs} >= {
        "protocols.png",
        "breakdown.png",
        "sweep_batch.png",
        "projection.png",
    }
    for p in pngs:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"({p.name})" in md
    assert (out / "train_xor.jsonl").stat().st_size > 0
    assert report["meta"]["runtime_s"] > 0


def expected(protocol: str, n: int) -> tuple[int, int, int]:
    """(rounds, bytes per party of the protocol's traffic, dealer bytes) for one op."""
    N = ELEMENTS
    trunc_rounds = 0 if n == 2 else 1
    trunc_bytes = 0 if n == 2 else 8 * N * (n - 1)
    trunc_dealer = 0 if n == 2 else 8 * N
    if protocol in ("share", "reveal"):
        return 0, 8 * N, 0
    if protocol == "add":
        return 0, 0, 0
    if protocol == "mul":
        return 1 + trunc_rounds, 16 * N * (n - 1) + trunc_bytes, 8 * N + trunc_dealer
    if protocol.startswith("mul, no truncation"):
        return 1, 16 * N * (n - 1), 8 * N
    if protocol == "square":
        return 1 + trunc_rounds, 8 * N * (n - 1) + trunc_bytes, 8 * N + trunc_dealer
    if protocol == "matmul":
        out = MM * MM
        t = 0 if n == 2 else 8 * out * (n - 1)
        return 1 + trunc_rounds, 8 * (2 * MM * MM) * (n - 1) + t, 8 * out * (1 if n == 2 else 2)
    if protocol == "truncate":
        return trunc_rounds, trunc_bytes, trunc_dealer
    if protocol in ("drelu", "relu"):
        r = protocol == "relu"
        return (
            DRELU_ROUNDS,
            drelu_online_bytes(N, n, with_relu=r),
            drelu_offline_bytes(N, with_relu=r),
        )
    raise AssertionError(protocol)


def test_every_protocol_measured_equals_closed_form(tiny: tuple[Path, dict[str, Any]]) -> None:
    _, report = tiny
    rows = report["protocols"]["rows"]
    names = {"share", "reveal", "add", "mul", "matmul", "truncate", "drelu", "relu"}
    for n in (2, 3):
        assert names <= {r["protocol"] for r in rows if r["parties"] == n}
    for r in rows:
        m = r["measured"]
        want = expected(r["protocol"], r["parties"])
        got = (m["rounds"], m["bytes_per_party"], m["offline"])
        assert got == want, (r["protocol"], r["parties"], got, want)
        assert m["bytes_per_party_min"] == m["bytes_per_party"], r["protocol"]
        assert r["match"], r["protocol"]
    assert report["protocols"]["all_match"]
    twos = {r["protocol"]: r for r in rows if r["parties"] == 2}
    assert twos["truncate"]["measured"]["rounds"] == 0
    assert twos["truncate"]["measured"]["online_total"] == 0
    threes = {r["protocol"]: r for r in rows if r["parties"] == 3}
    assert threes["truncate"]["measured"]["rounds"] == 1


def test_projection_for_20ms_is_within_15_percent(tiny: tuple[Path, dict[str, Any]]) -> None:
    _, report = tiny
    checks = [
        c
        for c in report["projection"]["checks"]
        if c["latency"] == pytest.approx(0.02)
        and c["bandwidth"] is None
        and not c["phase_barriers"]
    ]
    assert len(checks) == 1
    c = checks[0]
    rounds = report["training"]["rounds"]
    assert c["rounds_measured"] == [rounds]
    assert c["measured_s"] >= 0.9 * rounds * 0.02  # the latency really delayed the run
    assert abs(c["rel_error"]) <= 0.15, c


def test_phase_barriers_are_an_optional_mode_that_waits_longer(
    tiny: tuple[Path, dict[str, Any]],
) -> None:
    _, report = tiny
    rounds = report["training"]["rounds"]
    by_mode = {c["phase_barriers"]: c for c in report["projection"]["checks"] if c["latency"]}
    # train_xor.py's default: no barriers, so the parties wait for the depth growth only.
    assert by_mode[False]["rounds_waited"] == rounds
    # The optional mode serialises the phases: same depth growth, more rounds waited.
    barriers = by_mode[True]
    assert barriers["rounds_measured"] == [rounds]
    assert barriers["rounds_waited"] > rounds
    opt = report["training"]["optional_phase_barriers"]
    assert opt["rounds_waited"] == barriers["rounds_waited"] == sum(opt["by_phase"].values())
    md = (tiny[0] / "report.md").read_text()
    for stale in ("(as train_xor.py runs", "separated by barriers", "waited with barriers"):
        assert stale not in md


def test_growth_exponents_agree_with_closed_forms(tiny: tuple[Path, dict[str, Any]]) -> None:
    _, report = tiny
    sw = report["sweeps"]
    for axis in ("batch", "width"):
        assert sw[axis]["all_match"], axis  # measured = closed form at every point
        fits = {(f["parties"], f["quantity"]): f for f in sw[axis]["fits"]}
        assert abs(fits[(2, "online_rounds")]["full"]["exponent"]) < 0.05
    fits = {(f["parties"], f["quantity"]): f for f in sw["batch"]["fits"]}
    for q in ("online_bytes", "offline_bytes"):
        up = fits[(2, q)]["upper"]
        assert 0.85 <= up["exponent"] <= 1.15, (q, up)
        assert up["exponent"] == pytest.approx(fits[(2, q)]["closed_upper"]["exponent"])


def test_training_breakdown_adds_up(tiny: tuple[Path, dict[str, Any]]) -> None:
    _, report = tiny
    t = report["training"]
    assert all(t["checks"].values()), t["checks"]
    assert sum(p["rounds"] for p in t["critical_path"]) == t["rounds"]
    labels = {g["label"] for g in t["by_label"]}
    assert {
        "forward/fc1",
        "forward/relu",
        "forward/fc2",
        "loss",
        "backward/fc1",
        "backward/relu",
        "backward/fc2",
        "update",
    } <= labels
    assert not labels & {"forward", "backward", "(unlabelled)"}
    kinds = {g["label"]: g["kinds"] for g in t["by_label"]}
    assert kinds["forward/relu"] == {"relu": 1} and kinds["backward/relu"] == {"mul": 1}
    assert sum(g["online_bytes"] for g in t["by_label"]) == t["online_bytes"]
    assert sum(g["offline_bytes"] for g in t["by_label"]) == t["offline_bytes"]
    assert sum(v["rounds"] for v in t["phases"].values()) == t["rounds"]
    # Phases overlap without barriers: the backward pass starts before the loss ends.
    spans = t["phases_from_log"]
    assert spans["backward"]["first_start"] < spans["loss"]["last_end"]
    traffic = t["traffic"]
    assert traffic["setup"]["input_bytes"] > 0 and traffic["iteration"]["input_bytes"] == 0
    assert traffic["iteration"]["output_bytes"] == 8 * t["parties"]  # the revealed loss


def test_log_alone_gives_the_same_breakdown(tiny: tuple[Path, dict[str, Any]]) -> None:
    out, report = tiny
    events = read_log(out / "train_xor.jsonl")
    iters = iterations_from_log(events)
    sec = training_section(iters, events, None, "log")
    t = report["training"]
    assert (sec["rounds"], sec["online_bytes"], sec["offline_bytes"]) == (
        t["rounds"],
        t["online_bytes"],
        t["offline_bytes"],
    )
    assert sum(p["rounds"] for p in sec["critical_path"]) == t["rounds"]
    by_log = {g["label"]: (g["online_bytes"], g["offline_bytes"]) for g in sec["by_label"]}
    by_run = {
        g["label"]: (g["online_bytes"], g["offline_bytes"]) for g in t["by_label"] if g["ops"]
    }
    assert by_log == by_run  # dealer bytes per label too, from the log's dealer_bytes
    # Every op of an iteration carries its iteration index.
    assert all(it.by_field for it in iters)
    assert all(o.iteration == it.event["iteration"] for it in iters for o in it.ops)
    # The log's path (tensor ids, depths across local ops) is the command graph's.
    assert [p["op"] for p in sec["critical_path"]] == [p["op"] for p in t["critical_path"]]
    assert sec["path_from_log_links"]["tensor id"] >= 1
    assert sec["actor_totals"]  # whole-run totals from the actor_summary events


def test_fit_exponents() -> None:
    xs = [1, 2, 4, 8, 16]
    assert fit(xs, [3 * x for x in xs]).exponent == pytest.approx(1.0)
    assert fit(xs, [7 for _ in xs]).exponent == pytest.approx(0.0)
    f = fit(xs, [100 * x + 50 for x in xs], 4)
    assert (f.slope, f.intercept, f.points) == (pytest.approx(100), pytest.approx(50), 3)
    assert 0.85 < f.exponent < 1
    assert math.isnan(fit(xs, [0 for _ in xs]).exponent)


def test_critical_path_from_depths_and_from_the_graph() -> None:
    # a -> relu (3 rounds) -> b; c independent (1 round); b and c joined by a product.
    cmds = [
        {"k": "input", "op": 0, "in": [], "out": [1]},
        {"k": "matmul", "op": 1, "in": [1, 1], "out": [2]},
        {"k": "relu", "op": 2, "in": [2], "out": [3, 4]},
        {"k": "add", "op": 3, "in": [3, 1], "out": [5]},
        {"k": "mul", "op": 4, "in": [1, 1], "out": [6]},
        {"k": "mul", "op": 5, "in": [5, 6], "out": [7]},
    ]
    rounds = {1: 1, 2: 3, 4: 1, 5: 1}
    res = dag(cmds, lambda op: rounds.get(op, 0))
    assert res.end[5] == 5 and res.parent[5] == 2 and res.parent[3] == 2
    path = dag_path(res, [1, 2, 4, 5], 0, lambda op: ("k", None))
    assert [p.op for p in path] == [1, 2, 5] and sum(p.rounds for p in path) == 5
    logged = [
        LoggedOp(1, "matmul", None, [], 1, 1),
        LoggedOp(2, "relu", None, [], 3, 4),
        LoggedOp(4, "mul", None, [], 1, 1),
        LoggedOp(5, "mul", None, [], 1, 5),
    ]
    assert [o.op for o in chain_by_depth(logged, 0)] == [1, 2, 5]


def test_log_path_follows_tensor_ids_and_falls_back_to_depths() -> None:
    # Ops 2 and 3 both end at depth 2; op 4 consumes op 2's output directly, so its
    # predecessor is op 2 (by depth alone: the most recent one, op 3). Op 2's input came
    # through a local op (tensor 11, not logged): linked by depth, the only op at depth 1.
    def op(i: int, d: int, r: int, ins: list[int], outs: list[int]) -> LoggedOp:
        return LoggedOp(i, "mul", None, [], r, d, inputs=ins, outputs=outs)

    logged = [
        op(1, 1, 1, [1], [10]),
        op(2, 2, 1, [11], [20]),
        op(3, 2, 2, [1], [30]),
        op(4, 3, 1, [20, 5], [40]),
    ]
    chain = chain_by_tensors(logged, 0)
    assert [o.op for o, _ in chain] == [1, 2, 4]
    assert [link.split(":")[0] for _, link in chain] == ["", "depth", "tensor id"]
    assert [o.op for o in chain_by_depth(logged, 0)] == [3, 4]


def test_log_iterations_and_phases_from_fields() -> None:
    def run(op: int, it: int, label: str, depth: int, actor: str) -> dict[str, Any]:
        return {"event": "protocol_run", "actor": actor, "op_id": op, "kind": "mul",
                "label": label, "iteration": it, "inputs": [], "outputs": [op],
                "shapes": [[1]], "rounds": 1, "depth": depth, "bytes_sent": 16,
                "dealer_bytes": 8 if actor == "bob" else 0}  # fmt: skip

    events = [
        *(run(1, 0, "forward/fc", 1, a) for a in ("alice", "bob")),
        {"event": "train_iteration", "iteration": 0},
        *(run(2, 1, "forward/fc", 2, a) for a in ("alice", "bob")),
        *(run(3, 1, "backward/fc", 3, a) for a in ("alice", "bob")),
        *(run(4, 1, "loss", 3, a) for a in ("alice", "bob")),
        {"event": "train_iteration", "iteration": 1},
    ]
    iters = iterations_from_log(events)
    assert [[o.op for o in it.ops] for it in iters] == [[1], [2, 3, 4]]
    assert [it.start_depth for it in iters] == [0, 1]
    assert iters[1].ops[0].offline_bytes == 8 and iters[1].ops[0].online_bytes == 32
    ph = phases_from_log(iters[1].ops, iters[1].start_depth)
    assert [ph[p]["rounds"] for p in ("forward", "loss", "backward", "update")] == [1, 1, 0, 0]
    assert (ph["backward"]["first_start"], ph["backward"]["last_end"]) == (2, 3)
