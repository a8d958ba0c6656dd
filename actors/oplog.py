"""The coordinator's op log: one record per op it issues, with the label and iteration
the caller set (``cluster.label("forward/fc1")``, ``cluster.iteration(i)``) and the suite's
closed-form cost. Reports and per-label statistics are built from it."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from protocols.params import Params
from protocols.suite import Cost

Shape = tuple[int, ...]

label_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("smpc_label", default=None)
iteration_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "smpc_iter", default=None
)


@contextmanager
def scoped(var: contextvars.ContextVar[Any], value: Any) -> Iterator[None]:
    token = var.set(value)
    try:
        yield
    finally:
        var.reset(token)


@dataclass(frozen=True, slots=True)
class OpRecord:
    """One op the coordinator issued (the op log)."""

    op: int
    kind: str
    label: str | None
    iteration: int | None
    shapes: tuple[Shape, ...]
    out: tuple[Shape, ...]
    params: Params
    """The op's public parameters as issued (divisor, dropout's keep units, operands...)."""
    interactive: bool
    cost: Cost
    """The suite's closed form for this op (rounds, online bytes per party, dealer bytes)."""
