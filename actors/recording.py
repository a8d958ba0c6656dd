"""Recording the ops a span of code issues, and issuing them again (a training step's replay).

A training step issues the same ops every time: secret values cannot steer the
coordinator's Python, so the ops' kinds, shapes and public parameters follow from public
facts alone (shapes, hyper-parameters, the model's mode). :class:`Recording` keeps what
:meth:`actors.runtime.Runtime.submit` queued inside a span: the kind, the operand and
result tensor ids, the shapes, the public parameters as given and whether the dealer
deals for it. :meth:`Recording.replay` queues the same ops again with fresh op ids and
fresh result ids, without the frontend (modules, autograd) or the submit checks, which
the recorded ops passed with the same shapes and parameters.

Tensor ids are of two sorts in a recording: *internal* (created inside the span: the
ids the runtime handed out from :attr:`Recording.first_tid` on, mapped by an offset) and
*external* (created before: the data, the parameters). A replay is given the new value
of every external id (a parameter's current tensor); one it is not given is a
``KeyError`` naming the id, never a stale operand. A span that shares inputs, reveals,
saves or loads cannot be replayed (:attr:`Recording.blocker` says why): those are not
queued ops alone.

The parties see what they would have seen: the same commands with new op ids, so the
dealer deals fresh material for each op and every opening is masked afresh.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from protocols.params import Params

from .oplog import Shape

if TYPE_CHECKING:
    from .runtime import Runtime


@dataclass(slots=True)
class Entry:
    """One op as submitted (kept where a span is recorded)."""

    kind: str
    ins: tuple[int, ...]
    outs: tuple[int, ...]
    shapes: tuple[Shape, ...]
    out_shape: Shape
    params: Params | None
    """As the frontend gave them (before public constants become references)."""
    dealt: bool
    label: str | None = None
    """The label it was issued under (set where it is recorded)."""


@dataclass(slots=True)
class Recording:
    """The ops one span issued (see the module doc)."""

    first_tid: int
    """The first tensor id handed out inside the span."""
    entries: list[Entry] = field(default_factory=list)
    end_tid: int = 0
    """One past the last tensor id handed out inside the span (set by :meth:`close`)."""
    blocker: str | None = None
    """Why this span cannot be replayed (None: it can)."""

    def add(self, entry: Entry) -> None:
        self.entries.append(entry)

    def block(self, why: str) -> None:
        if self.blocker is None:
            self.blocker = why

    def close(self, next_tid: int) -> None:
        self.end_tid = next_tid + 1

    def internal(self, tid: int) -> bool:
        return self.first_tid <= tid < self.end_tid

    def externals(self) -> set[int]:
        """The ids of operands created before the span."""
        return {t for e in self.entries for t in e.ins if not self.internal(t)}

    def replay(self, runtime: Runtime, externals: dict[int, int]) -> tuple[int, list[int]]:
        """Queue every recorded op again: external operand ``t`` becomes ``externals[t]``,
        internal id ``t`` becomes ``t + offset``. Returns ``(offset, op ids)``, the op ids in
        the recorded order. Issued at the runtime's next checkpoint, as submitted ops are."""
        runtime._check_open()
        missing = self.externals() - externals.keys()
        if missing:
            raise KeyError(f"replay: no new value given for tensors {sorted(missing)}")
        count = self.end_tid - self.first_tid
        base = runtime._next_tid + 1
        runtime._next_tid += count
        offset = base - self.first_tid
        first, end = self.first_tid, self.end_tid
        ops = []
        for e in self.entries:
            op = runtime._op_id()
            ins = tuple(t + offset if first <= t < end else externals[t] for t in e.ins)
            outs = tuple(t + offset for t in e.outs)
            runtime._queue(e, op, ins, outs)
            ops.append(op)
        return offset, ops


@contextmanager
def recording(runtime: Runtime) -> Iterator[Recording]:
    """Record what ``runtime`` submits inside the block (one span at a time)."""
    if runtime.recording is not None:
        raise RuntimeError("this runtime is recording a span already")
    rec = Recording(runtime._next_tid + 1)
    runtime.recording = rec
    try:
        yield rec
    finally:
        runtime.recording = None
        rec.close(runtime._next_tid)
