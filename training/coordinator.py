"""The training coordinator: runs encrypted SGD and measures every step.

It reveals only the loss (and, on request, the predictions) to itself, the owner, and
logs one structlog ``train_iteration`` event per step with the measured online rounds,
online bytes, offline bytes and seconds, plus where the rounds and bytes went (forward,
loss, backward, update). The phases are attributed from the ops' labels and the depths
the meter saw, without stopping the pipeline: phases overlap as the dependencies allow
(the backward pass does not wait for the loss's square). ``phase_barriers=True`` instead
lets each phase settle before the next starts, which costs extra waiting.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actors import CommStats, OpRecord, get_logger

from .optim import SGD
from .tensor import SharedTensor

PHASES = ("forward", "loss", "backward", "update")


@dataclass(frozen=True, slots=True)
class PhaseCost:
    """Measured cost of one phase of one iteration."""

    online_rounds: int
    online_bytes: int
    offline_bytes: int


@dataclass(frozen=True, slots=True)
class IterationRecord:
    """What one training iteration cost and produced."""

    iteration: int
    loss: float
    """The revealed loss."""
    online_rounds: int
    online_bytes: int
    offline_bytes: int
    seconds: float
    phases: dict[str, PhaseCost] = field(default_factory=dict)
    """Per phase (rounds: growth of the largest depth by the end of the phase's ops)."""
    predictions: torch.Tensor | None = None
    """Revealed predictions, only when requested."""


def _phases_from_ops(
    costs: list[tuple[OpRecord, int, int, int]], start_depth: int
) -> dict[str, PhaseCost]:
    """Rounds, online and offline bytes per phase from per-op costs and depths."""
    out: dict[str, PhaseCost] = {}
    reached = start_depth
    for phase in PHASES:
        ops = [c for c in costs if (c[0].label or "").split("/")[0] == phase]
        top = max([reached, *(c[3] for c in ops)])
        out[phase] = PhaseCost(top - reached, sum(c[1] for c in ops), sum(c[2] for c in ops))
        reached = top
    return out


def _cost(delta: CommStats) -> PhaseCost:
    return PhaseCost(delta.online_rounds, delta.online_bytes, delta.offline_bytes)


@contextmanager
def _layer_labels(cluster: Any, model: nn.Module) -> Iterator[None]:
    """Label each leaf module's ops ``forward/<name>`` while the model runs."""
    handles = []
    tokens: list[Any] = []

    def pre(name: str) -> Callable[..., None]:
        def hook(mod: nn.Module, args: Any) -> None:
            cm = cluster.label(f"forward/{name}")
            cm.__enter__()
            tokens.append(cm)

        return hook

    def post(mod: nn.Module, args: Any, out: Any) -> None:
        tokens.pop().__exit__(None, None, None)

    for name, mod in model.named_modules():
        if name and not any(True for _ in mod.children()):
            handles.append(mod.register_forward_pre_hook(pre(name)))
            handles.append(mod.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class TrainingCoordinator:
    """Drives ``zero_grad / forward / loss / backward / step`` on shares."""

    def __init__(
        self,
        cluster: Any,
        model: nn.Module,
        optimizer: SGD,
        loss_fn: Callable[[Any, Any], SharedTensor],
        *,
        measure_phases: bool = True,
        phase_barriers: bool = False,
    ) -> None:
        self.cluster = cluster
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.measure_phases = measure_phases
        self.phase_barriers = phase_barriers
        if measure_phases:
            cluster.track_op_costs()
        self.iteration = 0
        self._log = get_logger(actor=cluster.coordinator)

    async def step(
        self, data: SharedTensor, target: Any, *, reveal_predictions: bool = False
    ) -> IterationRecord:
        """One SGD iteration on shares; every op it issues is tagged with the iteration.

        ``data`` and ``target`` must be SharedTensors: a plaintext target would go in clear
        to every party inside the commands."""
        for name, value in (("data", data), ("target", target)):
            if not isinstance(value, SharedTensor):
                raise TypeError(
                    f"TrainingCoordinator.step: {name} is a {type(value).__name__}, not a "
                    f"SharedTensor; share it first (cluster.share(...)) so it stays secret"
                )
        with self.cluster.iteration(self.iteration):
            return await self._step(data, target, reveal_predictions)

    async def _step(
        self, data: SharedTensor, target: Any, reveal_predictions: bool
    ) -> IterationRecord:
        c = self.cluster
        if self.iteration == 0:
            await c.flush()  # later steps start settled: each ends with a barrier
        start_stats, t0 = c.stats(), time.perf_counter()
        phases: dict[str, PhaseCost] = {}
        mark = start_stats

        async def settle(name: str) -> None:
            nonlocal mark
            if self.phase_barriers:
                await c.flush()
                now = c.stats()
                phases[name] = _cost(now - mark)
                mark = now

        self.optimizer.zero_grad()
        with c.label("forward"), _layer_labels(c, self.model):
            pred = self.model(data)
        await settle("forward")
        with c.label("loss"):
            loss = self.loss_fn(pred, target)
        await settle("loss")
        loss.backward()
        await settle("backward")
        with c.label("update"):
            self.optimizer.step()
        await settle("update")
        loss_value = float((await loss.get(dtype=torch.float64)).reshape(-1)[0])
        preds = await pred.get(dtype=torch.float64) if reveal_predictions else None
        await c.flush()
        seconds = time.perf_counter() - t0
        delta = c.stats() - start_stats
        if self.measure_phases and not self.phase_barriers:
            phases = _phases_from_ops(c.take_op_costs(), start_stats.online_rounds)
        record = IterationRecord(
            self.iteration,
            loss_value,
            delta.online_rounds,
            delta.online_bytes,
            delta.offline_bytes,
            seconds,
            phases,
            preds,
        )
        self._log.info(
            "train_iteration",
            iteration=self.iteration,
            loss=loss_value,
            online_rounds=delta.online_rounds,
            online_bytes=delta.online_bytes,
            offline_bytes=delta.offline_bytes,
            seconds=round(seconds, 6),
            phases={
                k: [v.online_rounds, v.online_bytes, v.offline_bytes] for k, v in phases.items()
            },
        )
        self.iteration += 1
        return record

    async def fit(
        self,
        data: SharedTensor,
        target: Any,
        iterations: int,
        on_iteration: Callable[[IterationRecord], None] | None = None,
    ) -> list[IterationRecord]:
        if not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        records = []
        for _ in range(iterations):
            rec = await self.step(data, target)
            records.append(rec)
            if on_iteration is not None:
                on_iteration(rec)
        return records
