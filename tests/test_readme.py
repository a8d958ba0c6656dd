"""The README's Python example runs as written and prints what it says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs() -> None:
    text = (ROOT / "README.md").read_text()
    (code,) = re.findall(r"```python\n(.*?)```", text, re.S)
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    losses = [float(x) for x in lines[:20]]
    assert losses[-1] < losses[0] / 5, losses  # it learns
    assert "online rounds" in out.stdout  # stats() prints a readable table
    assert out.stderr.strip() == "", out.stderr[-2000:]  # closing the cluster is quiet
