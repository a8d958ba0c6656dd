"""The training coordinator: runs encrypted SGD and measures every step.

It reveals only the loss (and, on request, the predictions) to itself, the owner, and
logs one structlog ``train_iteration`` event per step with the measured online rounds,
online bytes, offline bytes and seconds, plus where the rounds and bytes went (forward,
loss, backward, update). The phases are attributed from the ops' labels and the depths
the meter saw, without stopping the pipeline: phases overlap as the dependencies allow
(the backward pass does not wait for the loss's square). ``phase_barriers=True`` instead
lets each phase settle before the next starts, which costs extra waiting.

Long runs report progress (:class:`ProgressBar`): ``fit``, :func:`predict` and
``export_module`` take ``progress=``: ``None`` (default) draws a tqdm bar on stderr only
when it is a terminal, ``True`` always, ``False`` never, and a callable receives a
:class:`ProgressEvent` once per step instead of any bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from actors import CommStats, OpRecord, get_logger
from actors.log import info_enabled
from actors.stats import LabelBook, LabelStats

from .optim import SGD
from .progress import ProgressBar, ProgressOption
from .replay import StepReplay
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
    by_label: Mapping[str, LabelStats] = field(default_factory=dict)
    """Per op label (``forward/fc1``, ``backward/fc1``, ...), with ``measure_phases``."""


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
    """Drives ``zero_grad / forward / loss / backward / step`` on shares.

    ``measure_phases`` (the default without ``replay``) keeps the op log: per-phase and
    per-label costs in each :class:`IterationRecord`, and ops labelled per layer
    (``forward/fc1``, also in error messages). Without it (and without
    ``cluster.track_op_costs()`` or debug logging) a step skips that bookkeeping and its ops
    are labelled by phase (``forward``). ``replay=True`` records the step's ops and issues
    them again for later steps with the same public facts (:mod:`training.replay`); it
    measures each step's rounds and bytes, not each op's (no ``measure_phases``)."""

    def __init__(
        self,
        cluster: Any,
        model: nn.Module,
        optimizer: SGD,
        loss_fn: Callable[[Any, Any], SharedTensor],
        *,
        measure_phases: bool | None = None,
        phase_barriers: bool = False,
        replay: bool = False,
    ) -> None:
        if replay and (measure_phases or phase_barriers):
            raise ValueError(
                "replay=True re-issues a recorded step's ops without measuring each: "
                "pass measure_phases=False (or leave it out) and no phase_barriers"
            )
        measure_phases = not replay if measure_phases is None else measure_phases
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
        self.replay = StepReplay(self) if replay else None
        """The step replay (``replay=True``): its ``replayed``/``recorded`` counts and
        ``why_not`` (:mod:`training.replay`)."""

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
        replay = self.replay
        key = None if replay is None else replay.key(data, target)
        if replay is not None and key is not None and replay.ready(key, data, target):
            loss, pred = replay.run(data, target, reveal_predictions)
        else:
            recording: AbstractContextManager[list[Any]] = nullcontext([])
            if replay is not None and key is not None:
                recording = replay.record(key, data, target)
            with recording as result:
                # per-layer labels only where something reads them (the op log, debug
                # logging): their hooks cost ~2% of a seed step; else labels by phase
                layers = _layer_labels(c, self.model) if c.logs_ops else nullcontext()
                with c.label("forward"), layers:
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
                result += [loss, pred]
        # the step's barrier goes with its last reveal (one exchange with the parties)
        revealed = await loss.get(dtype=torch.float64, flush=not reveal_predictions)
        loss_value = float(revealed.reshape(-1)[0])
        preds = None
        if reveal_predictions:
            assert pred is not None  # (a replay returns it when asked)
            preds = await pred.get(dtype=torch.float64, flush=True)
        seconds = time.perf_counter() - t0
        end = c.stats()
        costs = c.take_op_costs() if self.measure_phases else []
        if self.measure_phases and not self.phase_barriers:
            phases = _phases_from_ops(costs, start_stats.online_rounds)
        # this step's ops only (not those the caller issued between two steps)
        labels = LabelBook.sums(op for op in costs if op[0].iteration == self.iteration)
        record = IterationRecord(
            self.iteration,
            loss_value,
            end.online_rounds - start_stats.online_rounds,  # (the full difference only
            end.online_bytes - start_stats.online_bytes,  # where it is logged below)
            end.offline_bytes - start_stats.offline_bytes,
            seconds,
            phases,
            preds,
            labels,
        )
        if info_enabled():  # the event's fields cost more than a seed step's bookkeeping
            fields = (end - start_stats).as_dict()
            fields["wall_seconds"] = round(end.wall_seconds, 6)  # since the cluster started
            self._log.info(
                "train_iteration",
                iteration=self.iteration,
                loss=loss_value,
                **fields,
                seconds=round(seconds, 6),
                phases={
                    k: [v.online_rounds, v.online_bytes, v.offline_bytes] for k, v in phases.items()
                },
                by_label={k: v.as_dict() for k, v in labels.items()},
            )
        self.iteration += 1
        return record

    async def fit(
        self,
        data: SharedTensor,
        target: Any,
        iterations: int | None = None,
        on_iteration: Callable[[IterationRecord], None] | None = None,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        batches: Callable[[int], Sequence[Any]] | None = None,
        progress: ProgressOption = None,
    ) -> list[IterationRecord]:
        """Train, one :meth:`step` at a time: ``iterations`` steps on the whole of
        ``data``, or ``epochs`` over mini-batches of it.

        With ``epochs``, ``batch_size`` takes consecutive slices ``data[i:i + batch_size]``
        and ``batches(epoch)`` instead returns the epoch's indices (index tensors or
        slices, e.g. a shuffled permutation cut in pieces); the indices are public, only
        the rows stay secret. Neither: the whole of ``data`` each epoch. ``progress``: see
        :class:`ProgressBar` (one event per step)."""
        plan = self._plan(data, iterations, epochs, batch_size, batches)
        records = []
        with ProgressBar(len(plan), "training", progress) as bar:
            for epoch, index in plan:
                if index is None:
                    rec = await self.step(data, target)
                else:
                    rec = await self.step(data[index], target[index])
                records.append(rec)
                if on_iteration is not None:
                    on_iteration(rec)
                info = {
                    "iteration": rec.iteration,
                    "epoch": epoch,
                    "loss": rec.loss,
                    "online_rounds": rec.online_rounds,
                    "online_bytes": rec.online_bytes,
                    "seconds": rec.seconds,
                }
                shown = {"loss": f"{rec.loss:.4f}", "rounds": rec.online_rounds}
                if epochs is not None:
                    shown = {"epoch": f"{epoch + 1}/{epochs}", **shown}
                bar.advance(1, info, shown=shown)
        return records

    @staticmethod
    def _plan(
        data: Any,
        iterations: int | None,
        epochs: int | None,
        batch_size: int | None,
        batches: Callable[[int], Sequence[Any]] | None,
    ) -> list[tuple[int, Any]]:
        """``(epoch, index or None)`` of every step ``fit`` will take."""
        if (iterations is None) == (epochs is None):
            raise ValueError("fit takes either iterations (full-batch steps) or epochs")
        count = iterations if iterations is not None else epochs
        what = "iterations" if iterations is not None else "epochs"
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"{what} must be a positive integer, got {count!r}")
        if iterations is not None:
            if batch_size is not None or batches is not None:
                raise ValueError("batch_size and batches go with epochs, not iterations")
            return [(0, None)] * iterations
        if batch_size is not None and batches is not None:
            raise ValueError("give batch_size or batches, not both")
        if batch_size is not None and (
            not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1
        ):
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        plan: list[tuple[int, Any]] = []
        n = int(data.shape[0])
        for e in range(count):
            if batches is not None:
                chosen = list(batches(e))
                if not chosen:
                    raise ValueError(f"batches({e}) returned no batch")
                plan += [(e, b) for b in chosen]
            elif batch_size is not None:
                plan += [(e, slice(i, i + batch_size)) for i in range(0, n, batch_size)]
            else:
                plan.append((e, None))
        return plan

    async def predict(
        self,
        data: SharedTensor,
        *,
        batch_size: int = 256,
        reveal: Callable[[Any], SharedTensor] | None = None,
        progress: ProgressOption = None,
    ) -> torch.Tensor:
        """:func:`predict` with this coordinator's model."""
        return await predict(
            self.model, data, batch_size=batch_size, reveal=reveal, progress=progress
        )


async def predict(
    model: nn.Module,
    data: SharedTensor,
    *,
    batch_size: int = 256,
    reveal: Callable[[Any], SharedTensor] | None = None,
    progress: ProgressOption = None,
) -> torch.Tensor:
    """Inference on shares over mini-batches of ``data`` (no autograd); what
    ``reveal(output)`` gives (default: the outputs themselves) is revealed to the owner
    for each batch and the results are concatenated along dimension 0.

    Pass e.g. ``reveal=lambda y: y.argmax(dim=1)`` to reveal only the classes. Each
    batch is revealed before the next is issued, so the progress (one event per batch)
    is real and the parties hold one batch's intermediates at a time."""
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(data, SharedTensor):
        raise TypeError(
            f"predict: data is a {type(data).__name__}, not a SharedTensor; share it first"
        )
    n = int(data.shape[0])
    out = []
    with (
        torch.no_grad(),
        ProgressBar(-(-n // batch_size), "inference", progress, unit="batch", delay=1.0) as bar,
    ):
        for i in range(0, n, batch_size):
            y = model(data[i : i + batch_size])
            out.append(await (y if reveal is None else reveal(y)).get())
            bar.advance(1, {"rows": min(n, i + batch_size)})
    return torch.cat(out)
