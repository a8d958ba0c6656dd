"""Run CrypTen 0.4.1 (the peer) on the same workloads, for side-by-side benchmarks.

``../shared/peers/setup_crypten.sh`` builds CrypTen in its own venv (once; about a minute)
and the scripts beside it run the seed network, an MLP step and one ReLU. Every benchmark
here calls :func:`run_peer` and prints the peer's figure next to ours, measured in the
same command.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)

PEERS = Path(__file__).resolve().parents[2] / "shared" / "peers"
OURS = Path(__file__).resolve().parent / "peer_workloads"
"""Peer workloads written here (e.g. the MNIST Net step), run the same way."""


def crypten_venv() -> Path:
    return Path(
        os.environ.get("CRYPTEN_VENV")
        or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "crypten-peer"
    )


def run_peer(script: str, args: list[str], timeout: float = 900.0) -> str | None:
    """The stdout of ``shared/peers/<script> args`` (or of ``scripts/peer_workloads/<script>``
    if it is there) in CrypTen's venv, or None (after printing why)."""
    venv = crypten_venv()
    try:
        subprocess.run(
            ["bash", str(PEERS / "setup_crypten.sh"), str(venv)], check=True, capture_output=True
        )
        return subprocess.run(
            [str(venv / "bin" / "python"), str(_where(script) / script), *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        err = getattr(e, "stderr", None) or ""
        print(f"CrypTen unavailable ({type(e).__name__}: {e}) {str(err)[-300:]}".strip())
        return None


def _where(script: str) -> Path:
    return OURS if (OURS / script).exists() else PEERS


def number(pattern: str, text: str | None) -> float | None:
    """The first group of ``pattern`` in ``text`` as a float, or None."""
    m = re.search(pattern, text or "")
    return float(m.group(1)) if m else None
