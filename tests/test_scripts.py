"""Every script the README, docs/ and reports/ name runs, at a quick size, and prints its key lines.

Two run as subprocesses exactly as the README writes them: ``python scripts/train_xor.py``
(what ``./run.sh`` runs; its output against the README's sample) and ``python
scripts/comm_report.py --out DIR`` (with ``--quick``: the full report takes ~2 minutes
here; ``reports/`` is its full output). The others run in process through their
``main(argv)``, the CrypTen comparisons with ``--no-crypten``. Last, every module of the
repository imports, so that a dead import fails here rather than when someone runs it
(mypy no longer ignores a missing first-party module either).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
import torch

from actors.config import write_local_config
from training.report import PNGS

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TESTED = {
    "adam_noise.py",
    "bench_floor.py",
    "bench_fss.py",
    "bench_ops.py",
    "bench_relu.py",
    "bench_ring.py",
    "bench_smooth.py",
    "bench_train.py",
    "comm_report.py",
    "op_table.py",  # bench_ops.py --all prints its table (test_bench_ops_all)
    "train_digits.py",
    "train_xor.py",
}
"""The scripts with a smoke test below."""


def test_every_script_the_readme_docs_and_reports_name_has_a_smoke_test() -> None:
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "reports").glob("*.md")]
    named = {s for p in pages for s in re.findall(r"scripts/(\w+\.py)", p.read_text())}
    assert named <= SMOKE_TESTED, f"named but not smoke-tested: {named - SMOKE_TESTED}"
    assert all((ROOT / "scripts" / s).is_file() for s in named)


def _run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python argv...`` from the repository root, on this checkout's packages."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p
        ),
    }
    return subprocess.run(
        [sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def in_process() -> Iterator[None]:
    """A script's ``main`` reconfigures logging and may set torch's threads: restore both."""
    saved, threads = structlog.get_config(), torch.get_num_threads()
    try:
        yield
    finally:
        structlog.configure(**saved)
        torch.set_num_threads(threads)


def test_run_sh_command_train_xor_prints_the_readmes_table() -> None:
    """``./run.sh`` runs ``python scripts/train_xor.py``: the README's sample output, line
    for line where it does not depend on the shares' randomness or the clock."""
    (sample,) = re.findall(r"```\n(iter  encrypted.*?)```", (ROOT / "README.md").read_text(), re.S)
    readme = sample.splitlines()
    out = _run("scripts/train_xor.py")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == readme[0]  # the table header
    rows = [r.split() for r in lines[1:21]]
    assert [int(r[0]) for r in rows] == list(range(20))
    assert all(r[4:7] == ["6", "992", "33456"] for r in rows), rows
    shown = {int(r.split()[0]): r.split() for r in readme[1:] if re.match(r"\s+\d+ ", r)}
    for i, want in shown.items():  # plaintext torch is deterministic; the gap is small
        assert rows[i][2] == want[2], (i, rows[i], want)
        assert abs(float(rows[i][1]) - float(rows[i][2])) < 0.02, rows[i]
    assert float(rows[-1][1]) < float(rows[0][1]) / 20  # it learns
    for prefix in ("parties ", "per iteration ", "totals "):  # the counts are deterministic
        (want,) = [r for r in readme if r.startswith(prefix)]
        assert want in lines, (want, out.stdout)
    assert re.search(r"^final loss\s+0\.0\d\d\d \(plaintext 0\.0041\)$", out.stdout, re.M)
    # the first step also loads the kernels: the summary's time is the later steps' median
    time_line = r"^time\s+[\d.]+ ms per iteration \(the median after iteration 0, which took "
    assert re.search(time_line + r"[\d.]+ ms; [\d.]+ s in all\)$", out.stdout, re.M), out.stdout
    assert re.search(r"^predictions\s+\[.*\] for targets \[0.0, 0.0, 1.0, 1.0\]$", out.stdout, re.M)


def test_train_xor_replay(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """``--replay``: all but the recorded steps are replayed, with the same rounds and
    bytes per step as the measured run; the phases are not measured."""
    import train_xor

    assert train_xor.main(["--replay", "--iterations", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert (
        "per iteration     6 online rounds (phases not measured with --replay), 992 online "
        "bytes, 33456 offline bytes" in out
    ), out
    # steps 0 and 1 recorded, 2-7 replayed (the last reveals the predictions too)
    assert re.search(r"^replay\s+6 of 8 steps replayed, 2 recorded$", out, re.M), out
    assert re.search(r"^predictions\s+\[.*\] for targets \[0.0, 0.0, 1.0, 1.0\]$", out, re.M)


def test_train_xor_refuses_a_log_file_in_a_missing_folder(
    in_process: None, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A usage error naming the folder, before any actor starts (was a FileNotFoundError
    traceback)."""
    import train_xor

    with pytest.raises(SystemExit) as exc:
        train_xor.main(["--log-json", str(tmp_path / "missing" / "x.json"), "--quiet"])
    assert exc.value.code == 2
    assert f"the folder {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_train_xor_says_what_a_two_party_suite_runs_as_with_three(
    in_process: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--protocols fss-exact --parties 3`` runs the carry tree and the dealer's pair (FSS
    keys are 2-party objects), with carry's rounds and bytes: the summary says so instead of
    naming fss-exact alone (a user trial's report)."""
    import train_xor

    lines = {}
    for suite in ("fss-exact", "carry"):
        assert (
            train_xor.main(["--parties", "3", "--protocols", suite, "--iterations", "2", "--quiet"])
            == 0
        )
        out = capsys.readouterr().out
        lines[suite] = re.search(r"^per iteration .*$", out, re.M).group(0)  # type: ignore[union-attr]
        if suite == "fss-exact":
            assert "protocols fss-exact (with 3 parties as carry: FSS is 2-party" in out, out
    assert lines["fss-exact"] == lines["carry"]


def test_comm_report_command_writes_the_report(tmp_path: Path) -> None:
    """The README's ``python scripts/comm_report.py --out reports/``, into a temporary
    folder and ``--quick``: it asserts every measured figure against its closed form."""
    out = _run("scripts/comm_report.py", "--out", str(tmp_path), "--quick")
    assert out.returncode == 0, (out.stdout[-1000:], out.stderr[-2000:])
    assert re.fullmatch(
        rf"wrote {re.escape(str(tmp_path))}/report\.md, report\.json and plots in [\d.]+ s\n",
        out.stdout,
    ), out.stdout
    assert "MISMATCH" not in out.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["meta"]["mode"] == "quick" and data["all_equal"] and not data["mismatches"]
    assert all(r["equal"] for r in data["ops"]) and all(n["ok"] for n in data["networks"])
    md = (tmp_path / "report.md").read_text()
    assert md.startswith("# ") and "Measured = closed form everywhere: yes" in md
    for png in PNGS:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png


@pytest.mark.parametrize(("model", "optimizer"), [("mlp", "sgd"), ("cnn", "adam")])
def test_train_digits(
    in_process: None, capsys: pytest.CaptureFixture[str], model: str, optimizer: str
) -> None:
    import train_digits

    argv = ["--model", model, "--optimizer", optimizer, "--limit", "64", "--batch-size", "32"]
    assert train_digits.main([*argv, "--epochs", "1", "--max-batches", "1"]) == 0
    out = capsys.readouterr().out
    assert re.search(
        r"^epoch 1: loss encrypted \d+\.\d{4} plaintext \d+\.\d{4}; test accuracy encrypted "
        r"[01]\.\d{4} plaintext [01]\.\d{4}",
        out,
        re.M,
    ), out
    assert re.search(
        rf"^{model} \({optimizer}, 1 epochs, batch 32, 2 parties, default\): test accuracy  "
        r"encrypted [01]\.\d{4}  plaintext [01]\.\d{4}  \(gap [+-]\d+\.\d\d points\); revealed "
        r"model [01]\.\d{4}; plaintext-trained model on encrypted test data [01]\.\d{4}",
        out,
        re.M,
    ), out


def test_bench_train_pools_the_runs_around_crypten() -> None:
    """Ours runs before and after CrypTen's run; the row is the median and p90 of both runs'
    iterations together, not of either run (a slow half pulls it only by its share)."""
    import bench_train

    def row(times: list[float], dealer: float) -> bench_train.Row:
        t = sorted(times)
        return bench_train.Row(
            "default", "yes", t[len(t) // 2], t[-1], 6, 992, 1, 2, dealer, tuple(t)
        )

    fast, slow = row([3.0, 3.1, 3.2], 0.4), row([5.0, 5.5, 6.0, 6.5], 0.6)
    both = bench_train.pooled(fast, slow)
    assert both.times == (3.0, 3.1, 3.2, 5.0, 5.5, 6.0, 6.5)
    assert both.ms == 5.0 and both.p90 == 6.5 and both.parts == (3.1, 6.0)
    assert abs(both.dealer_ms - 0.5) < 1e-12
    assert (both.rounds, both.online, both.dealer, both.control) == (6, 992, 1, 2)


def test_bench_train_pairs_each_run_around_the_peer(
    in_process: None, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a peer figure (here a stand-in for CrypTen's run), each run times ours before and
    after it, prints both halves, and the ratios against the pooled median and the mean."""
    import bench_train

    monkeypatch.setattr(bench_train, "crypten_ms", lambda w: 400.0)
    argv = ["--suites", "default", "--iterations", "3", "--warmup", "1", "--repeat", "2"]
    bench_train.main(argv)
    out = capsys.readouterr().out
    run = r"^run 1 of 2: CrypTen 400\.0 ms; default ([\d.]+) ms \(([\d.]+) before, ([\d.]+) after\)"
    m = re.search(run + r" \(([\d.]+)x\)$", out, re.M)
    assert m, out
    pooled, before, after, ratio = (float(v) for v in m.groups())
    assert min(before, after) <= pooled <= max(before, after), out
    assert abs(ratio - 400.0 / pooled) < 0.01 * ratio + 0.05, out
    assert re.search(r"^mean ms   default\s+yes\s+[\d.]+, CrypTen/mean [\d.]+x$", out, re.M), out


def test_bench_train_seed_without_crypten(
    in_process: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench_train

    argv = ["--suites", "default,carry", "--iterations", "3", "--warmup", "1", "--no-crypten"]
    bench_train.main([*argv, "--repeat", "2", "--replay", "both"])
    out = capsys.readouterr().out
    run = r"^run 1 of 2: default [\d.]+ ms, default \(no replay\) [\d.]+ ms, carry [\d.]+ ms, "
    assert re.search(run + r"carry \(no replay\) [\d.]+ ms$", out, re.M), out
    assert re.search(r"^run 2 of 2: default", out, re.M) and "(medians of 2 runs" in out
    assert "seed, 2 parties, 3 iterations (median ms per iteration" in out
    assert re.search(r"^plaintext torch\s+\d+\.\d{3} ms$", out, re.M)
    assert "CrypTen 0.4.1" not in out  # no peer figure without the peer
    header = r"^suite\s+replay\s+ms\s+p90\s+x plain\s+CrypTen/x\s+rounds\s+online B"
    assert re.search(header, out, re.M), out
    rows = {
        m[:2]: m[2:]
        for m in re.findall(
            r"^(default|carry)\s+(yes|no)\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+(-)\s+(\d+)\s+([\d,]+)",
            out,
            re.M,
        )
    }
    assert len(rows) == 4, out  # a replayed and a traced row per suite, the same costs
    # the mean beside the median (CrypTen's figure is a mean); no ratio without the peer
    means = re.findall(r"^mean ms   (default|carry)\s+(yes|no)\s+(\d+\.\d\d)$", out, re.M)
    assert len(means) == 4 and all(float(m[2]) > 0 for m in means), out
    for replay in ("yes", "no"):
        assert rows[("default", replay)] == ("-", "6", "992"), out  # README: 0.99 KB online
        assert rows[("carry", replay)][:2] == ("-", "12"), out
    with pytest.raises(SystemExit):
        bench_train.main([*argv, "--repeat", "0"])
    assert "--repeat takes a positive count, got 0" in capsys.readouterr().err


def test_bench_train_network_a_without_crypten(
    in_process: None, capsys: pytest.CaptureFixture[str]
) -> None:
    import bench_train

    argv = ["--workload", "network-a", "--suites", "default", "--iterations", "1"]
    bench_train.main([*argv, "--warmup", "0", "--no-crypten"])
    out = capsys.readouterr().out
    assert "network-a, 2 parties, 1 iterations" in out and "CrypTen 0.4.1" not in out
    assert re.search(r"^default\s+yes\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+-\s+22\s", out, re.M), out


def test_bench_train_mnist_net_without_crypten(
    in_process: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """pytorch/examples' MNIST Net, one step at batch 32 after one warm-up step: control bytes
    stay under 1% of the online bytes (issue 19's target). They were 50-560 MB per run
    before public constants went by reference, and 184 MB per step at batch 32 while the
    constants' cache (64 MB then) was smaller than the step's ~92 MB of gathers per party,
    which batch 2 does not show. The dealer's share of the step is reported."""
    import bench_train

    argv = ["--workload", "mnist-net", "--batch", "32", "--suites", "default"]
    bench_train.main([*argv, "--iterations", "1", "--warmup", "1", "--no-crypten"])
    out = capsys.readouterr().out
    assert "mnist-net, 2 parties, 1 iterations" in out, out
    assert re.search(r"^suite .* control B\s+dealer ms\s+online ms$", out, re.M), out
    row = re.search(
        r"^default\s+-\s+[\d.]+\s+[\d.]+\s+[\d.]+\s+-\s+(\d+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)"
        r"\s+([\d.]+)\s+([\d.]+)$",
        out,
        re.M,
    )
    assert row, out
    online, dealer, control = (int(row[i].replace(",", "")) for i in (2, 3, 4))
    assert online > 10**6 and dealer > 10**6 and 0 < control < online / 100, out
    assert float(row[5]) > 0, out


def test_bench_relu_without_crypten(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    import bench_relu

    bench_relu.main(["--size", "2^18", "--runs", "1", "--no-crypten"])
    out = capsys.readouterr().out
    assert re.search(
        r"^smpc N=262144 \(2\^18\) relu \d+ ms \(median of 1: \d+\), \d+ ns/elem, peak rss "
        r"growth -?\d+ B/elem cold, -?\d+ B/elem warm",
        out,
        re.M,
    ), out
    assert "CrypTen" not in out


def test_bench_ring(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """``python scripts/bench_ring.py``: both kernels agree on every shape (it exits
    otherwise) and a ratio is printed for each."""
    import bench_ring

    bench_ring.main(["--rounds", "1"])
    out = capsys.readouterr().out
    rows = re.findall(r"^(\S.*?)\s+\d+\.\d{3}\s+\d+\.\d{3}\s+\d+\.\dx$", out, re.M)
    assert len(rows) >= 4, out
    assert "intra-op thread" in out


def test_bench_fss(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """``python scripts/bench_fss.py 3 14`` at 2^3 only, beside the numpy reference."""
    import bench_fss

    bench_fss.main(["3", "--reps", "1"])
    out = capsys.readouterr().out
    assert re.search(r"^compiled kernels' first call in this process: \d+ ms", out, re.M), out
    assert len(re.findall(r"\| numpy keygen .* eval .* ms \(.*x / .*x\)", out)) >= 2, out


def test_bench_floor(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    import bench_floor

    bench_floor.main(["--suites", "default", "--repeats", "1", "--crypten-ms", "602"])
    out = capsys.readouterr().out
    assert "seed, 2 parties, torch threads" in out
    assert re.search(r"^  default   ops: .*\brelu\b", out, re.M), out
    assert re.search(
        r"^  default   protocols alone\s+[\d.]+ ms   full runtime\s+[\d.]+ ms   runtime share",
        out,
        re.M,
    ), out
    assert re.search(r"^  default   CrypTen 602\.0 ms: at most \d+x", out, re.M), out


def test_bench_ops_all(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """``python scripts/bench_ops.py --all`` (``--quick``: half the elements, the same
    protocols): every op of docs/ops.md; the four targets against CrypTen are met, with the
    rounds and bytes docs/ops.md's targets table states."""
    import bench_ops
    import op_table

    bench_ops.main(["--all", "--quick"])
    out, issue20 = capsys.readouterr().out.split("\n\n")
    table = [line.split(" | ") for line in out.splitlines() if line.startswith("| ")]
    assert table[0][:4] == ["| op", "rounds", "online B/element", "max error"]
    rows = {r[0][2:]: r[1:] for r in table[1:]}
    assert len(rows) == 4 + 22
    ops20 = [line.split(" | ") for line in issue20.splitlines() if line.startswith("| ")]
    assert ops20[0][:3] == ["| issue-20 op", "max error", "rounds 10^2 / 10^3"]
    assert len(ops20) == 1 + len(op_table.OPS)
    for r in ops20[1:]:
        assert float(r[1]) <= 0.01, r  # every op within 0.01 of float64 torch
    for name in ("sigmoid 5000 in [-8,8]", "exp [-6,6] (rel.)", "cross_entropy 200x10"):
        assert name in rows, list(rows)
    docs = (ROOT / "docs" / "ops.md").read_text().split("## Targets against CrypTen 0.4.1")[1]
    stated = [r.split(" | ") for r in docs.splitlines() if re.match(r"\| [a-z].* \| \d+ \|", r)]
    targets = list(rows.items())[:4]
    for (name, (rounds, per_element, error, target)), doc in zip(targets, stated[:4], strict=True):
        assert doc[0][2:6] == name[:4], (name, doc)  # sigmoid, tanh, softmax, cross-entropy
        assert (int(rounds), round(float(per_element))) == (int(doc[1]), int(doc[2])), (name, doc)
        (max_rounds,) = re.findall(r"<= (\d+) r", target)
        max_bytes = re.findall(r"(\d+) B", target)
        max_error = float(target.split(", ")[-1].rstrip(" |"))
        assert int(rounds) <= int(max_rounds) and float(error) <= max_error, (name, target)
        assert all(float(per_element) <= int(b) for b in max_bytes), (name, target)


def test_bench_smooth_quick(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    """``python scripts/bench_smooth.py --quick`` without CrypTen: a row per smooth function
    with our time, online MB, dealer bytes per element and a small error."""
    import bench_smooth

    bench_smooth.main(["--quick", "--no-crypten"])
    out = capsys.readouterr().out
    rows = [r.split(" | ") for r in out.splitlines() if r.startswith("| ") and "---" not in r]
    assert rows[0][0] == "| function (2000 elements)"
    body = {r[0][2:]: r for r in rows[1:]}
    assert list(body) == list(bench_smooth.FUNCTIONS)
    for name, r in body.items():
        assert float(r[1]) > 0 and r[2] == "-", (name, r)
        ours_err = float(r[6].split(" / ")[0])
        assert ours_err < 1e-2, (name, r)  # relative above 1 (division: ~3e-3)


def test_adam_noise(in_process: None, capsys: pytest.CaptureFixture[str]) -> None:
    import adam_noise

    argv = ["--model", "mlp", "--seeds", "1", "--draws", "1", "--epochs", "1"]
    adam_noise.main([*argv, "--eps", "1e-8,1e-3"])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "mlp, Adam lr 0.02, 1 epochs, 16 bits"
    assert re.fullmatch(r"exact torch \(eps 1e-8\) accuracy: [01]\.\d{4}", out[1])
    for line, eps in zip(out[2:], ("1e-08", "0.001"), strict=True):
        assert re.fullmatch(
            rf"perturbed, eps {eps}: median gap \(points\) per seed [+-]\d+\.\d\d   median [+-]\d+\.\d\d",
            line,
        ), line


def _modules() -> list[str]:
    names = []
    for pkg in ("actors", "protocols", "training"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names + sorted(p.stem for p in (ROOT / "scripts").glob("*.py"))


@pytest.mark.parametrize("name", _modules())
def test_every_module_imports(name: str) -> None:
    """Each .py file of actors/, protocols/, training/ and scripts/ imports (scripts by
    name: pytest puts scripts/ on the path), from this checkout."""
    module = importlib.import_module(name)
    assert module.__file__ is not None
    assert Path(module.__file__).resolve().is_relative_to(ROOT), module.__file__


def test_readme_module_commands_certs_and_node_help(tmp_path: Path) -> None:
    """The README's ``python -m actors.certs certs alice bob james coordinator --host ...``
    and ``python -m actors.node --help`` as written (the node itself runs in the tls tests);
    a malformed --allow-reveal is a usage error that names the expected form."""
    hosts = ["--host", "alice=10.0.0.1", "--host", "bob=10.0.0.2", "--host", "james=10.0.0.3"]
    names = ["alice", "bob", "james", "coordinator"]
    certs = _run("-m", "actors.certs", str(tmp_path / "certs"), *names, *hosts, timeout=120)
    assert certs.returncode == 0, certs.stderr
    for name in ("ca", "alice", "bob", "james", "coordinator"):
        assert (tmp_path / "certs" / f"{name}.pem").is_file(), name
    assert stat.S_IMODE((tmp_path / "certs" / "alice.key").stat().st_mode) == 0o600
    node = _run("-m", "actors.node", "--help", timeout=120)
    assert node.returncode == 0, node.stderr
    for flag in (
        "--allow-reveal",
        "--allow-insecure-seed",
        "--checkpoints",
        "[actors.alice.reveal]",
    ):
        assert flag in node.stdout, flag
    config = write_local_config(tmp_path / "cluster", ["alice", "bob"])
    bad = _run(
        "-m", "actors.node", "--config", str(config), "--name", "alice",
        "--allow-reveal", "coordinator:x", timeout=120,
    )  # fmt: skip
    assert bad.returncode == 2, bad.stderr  # argparse's usage error, before any socket
    assert "--allow-reveal 'coordinator:x': limits must be integers" in bad.stderr, bad.stderr


def test_every_script_runs_its_own_checkouts_library(tmp_path: Path) -> None:
    """A script run from a second checkout (a worktree) imports that checkout's packages,
    not the installed (editable) one: each script imports ``_checkout`` first (or puts
    its root on sys.path itself), and ``_checkout`` wins over the install. A copy whose
    ``training`` says who it is shows it."""
    for path in sorted((ROOT / "scripts").glob("*.py")):
        if path.name.startswith("_"):
            continue
        text = path.read_text()
        assert "import _checkout" in text or "sys.path.insert(0, str(ROOT))" in text, path.name
    other = tmp_path / "other"
    (other / "scripts").mkdir(parents=True)
    (other / "training").mkdir()
    (other / "training" / "__init__.py").write_text("WHO = 'the other checkout'\n")
    (other / "scripts" / "_checkout.py").write_text((ROOT / "scripts" / "_checkout.py").read_text())
    (other / "scripts" / "probe.py").write_text(
        "import _checkout  # noqa: F401\nimport training\nprint(training.WHO)\n"
    )
    out = subprocess.run(
        [sys.executable, str(other / "scripts" / "probe.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert out.stdout.strip() == "the other checkout"
