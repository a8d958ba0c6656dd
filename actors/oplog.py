"""The coordinator's op log: one record per op it issues, with the label and iteration
the caller set (``cluster.label("forward/fc1")``, ``cluster.iteration(i)``) and the suite's
closed-form cost. Reports and per-label statistics are built from it."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from typing import Any

from protocols.params import Params
from protocols.suite import Cost, OpKind, Suite

from .log import debug_enabled

Shape = tuple[int, ...]

label_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("smpc_label", default=None)
iteration_var: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "smpc_iter", default=None
)


class scoped:  # noqa: N801 - used as a function: ``with scoped(var, value)``
    """``var`` set to ``value`` inside the block (a class: one per label the frontend
    enters, cheaper than a generator-based manager)."""

    __slots__ = ("_token", "_value", "_var")

    def __init__(self, var: contextvars.ContextVar[Any], value: Any) -> None:
        self._var, self._value = var, value

    def __enter__(self) -> None:
        self._token = self._var.set(self._value)

    def __exit__(self, *exc: object) -> None:
        self._var.reset(self._token)


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

    def event(self) -> dict[str, Any]:
        """The ``op_issued`` log event's fields."""
        return {
            "op_id": self.op,
            "kind": self.kind,
            "label": self.label,
            "iteration": self.iteration,
            "shapes": [list(s) for s in self.shapes],
            "out": [list(s) for s in self.out],
            "divisor": self.params.d,
            "keep": self.params.keep,
            "interactive": self.interactive,
            "rounds": self.cost.rounds,
            "online_bytes": self.cost.online_bytes,
            "dealer_bytes": self.cost.dealer_bytes,
        }


class OpFacts:
    """What the coordinator derives from an op's public facts ``(kind, shapes, out,
    param)``: whether it needs dealer material, and its closed-form cost. Both are pure
    functions of those facts and the suite, so each distinct op is worked out once (a
    training step issues the same few ops again and again); bounded in count."""

    MAX = 4096

    def __init__(self, suite: Suite, n_parties: int) -> None:
        self.suite, self.n = suite, n_parties
        self._seen: dict[tuple[str, tuple[Shape, ...], Shape, int], tuple[bool, Cost | None]] = {}

    def of(
        self,
        kind: str,
        impl: OpKind,
        shapes: tuple[Shape, ...],
        out: Shape,
        param: int,
        costed: bool,
    ) -> tuple[bool, Cost | None]:
        """``(needs dealer material, cost if costed else maybe None)``."""
        key = (kind, shapes, out, param)
        facts = self._seen.get(key)
        if facts is None or (costed and facts[1] is None):
            dealt = bool(impl.specs(shapes, out, param, self.n))
            cost = self.suite.cost(kind, shapes, out, param, self.n) if costed else None
            facts = (dealt, cost)
            if len(self._seen) < self.MAX:
                self._seen[key] = facts
        return facts


def log_op(
    op_log: list[OpRecord] | None,
    log: Any,
    op: int,
    kind: str,
    shapes: tuple[Shape, ...],
    out: tuple[Shape, ...],
    params: Params,
    interactive: bool,
    cost: Cost,
) -> None:
    """Append one issued op to ``op_log`` (if kept) and log it at debug level (if on)."""
    rec = OpRecord(
        op, kind, label_var.get(), iteration_var.get(), shapes, out, params, interactive, cost
    )
    if op_log is not None:
        op_log.append(rec)
    if debug_enabled():  # the event's fields cost more than the op's bookkeeping
        log.debug("op_issued", **rec.event())
