"""Imported first by every script: puts this checkout's root first on ``sys.path``, so a
script run from a worktree or a second clone imports that checkout's ``actors``,
``protocols`` and ``training``, not the copy installed in the environment (an editable
install points at one checkout only; comparing two commits ran one library twice)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if not sys.path or sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
