"""Step replay: a training step's ops recorded, then issued again without the frontend.

The coordinator's Python cannot branch on a secret, so for the same public facts a step
issues the same ops. The facts (:meth:`StepReplay.key`): the data's and targets' shapes
and encodings; each parameter's identity, shape and encoding; the param groups'
hyper-parameters; the optimiser state's names; every module's kind, settings
(``extra_repr``: Dropout's p, ...) and train/eval mode; which of these name the same
tensor; the identity of the model, the optimiser and the loss function.
``TrainingCoordinator(..., replay=True)`` records a step's ops (:mod:`actors.recording`);
once two steps with the same facts recorded the same ops (the first step may differ:
SGD's momentum buffer starts as the gradient), later steps with those facts re-issue them
directly: no module calls, no autograd, no submit checks. The parameters, their
gradients, the optimiser's state and the loss are rebound to the new results; the step's
intermediates are freed.

What the replay holds to:
- it only runs where nothing else reads the ops: not with the op log (``measure_phases``,
  off by default with ``replay``; ``track_op_costs``), debug logging, check mode or phase
  barriers;
- the optimiser's class must declare that its step follows from its ``param_groups``
  alone (``replayable = True`` in the class itself, not inherited:
  :class:`training.optim.SGD`; Adam's step depends on its count);
- every operand created before the step must be the data, the targets, a parameter or an
  optimiser state tensor (a module buffer that a step rewrites, e.g. batch norm's running
  statistics, or a shared tensor the loss closes over, is none of these: never replayed);
- a recording is replayed for other data (targets) than it was recorded with only once
  two agreeing recordings had different ones (a tensor the loss closes over may be the
  recorded data itself);
- a change of a fact (a learning-rate schedule, ``model.eval()``, a last smaller batch, a
  new loss function) records again;
- every :attr:`StepReplay.verify_every` replays (50), a step with those facts is recorded
  again and compared with its recording: if they differ, a :class:`ReplayWarning` says
  so and those facts are never replayed again.

The one promise left to the user (hence opt-in): the model's forward and the loss issue
the same ops whenever those facts are the same, with no Python state of their own that
changes the ops from one step to the next (``if self.steps > 100: ...``; the periodic
check catches it late, not at once). A module attribute assigned inside ``forward`` is
not updated by a replayed step.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from actors.recording import Recording, recording

from .check import Origin
from .handle import Handle

Role = tuple[Any, ...]
"""What an operand created before the step is: ``("data",)``, ``("param", i)``, ..."""


@dataclass(frozen=True, slots=True)
class _Out:
    """A result of the step that outlives it: what to rebind, and to which result."""

    role: Role
    tid: int
    cls: type
    shape: torch.Size
    fp: Any
    prec: int
    dtype: torch.dtype
    entry: int
    """The recorded op that made it (its origin in error messages)."""


@dataclass(frozen=True, slots=True)
class _Template:
    rec: Recording
    roles: dict[int, Role]
    """Recorded external operand -> its role."""
    outs: tuple[_Out, ...]
    dead: tuple[int, ...]
    """The internal ids that do not outlive the step (freed after a replay)."""
    ins: tuple[int, int]
    """The data's and the targets' tensor ids when it was recorded."""
    fixed: tuple[bool, bool] = (True, True)
    """Whether it is replayed only for those data (targets): until two agreeing recordings
    had other data (targets), a tensor the step closes over may be the data itself."""

    def shape_of(self) -> tuple[Any, ...]:
        """The recording with its ids relative: two steps that issue the same ops compare
        equal."""
        first = self.rec.first_tid

        def rel(t: int) -> Any:
            return t - first if self.rec.internal(t) else self.roles[t]

        ops = tuple(
            (e.kind, tuple(map(rel, e.ins)), tuple(map(rel, e.outs)), e.shapes, e.params, e.dealt)
            for e in self.rec.entries
        )
        outs = tuple((o.role, rel(o.tid), o.cls, o.shape, o.fp, o.prec, o.dtype) for o in self.outs)
        # (o.entry follows from the ops and the ids)
        return (self.rec.end_tid - first, ops, outs)


class StepReplay:
    """The replay of one coordinator's steps (see the module doc)."""

    def __init__(self, coordinator: Any) -> None:
        self.coordinator = coordinator
        """Its model, optimiser and loss are read at every step (they may be reassigned)."""
        self.cluster = coordinator.cluster
        self.verify_every = VERIFY_EVERY
        """Replays of a recording before a step with its facts is recorded again and compared
        with it (a broken promise is then a :class:`ReplayWarning` and no more replays)."""
        self._since: dict[tuple[Any, ...], int] = {}
        self.replayed = 0
        """Steps issued by replay so far."""
        self.recorded = 0
        """Steps recorded so far."""
        self.why_not: str | None = None
        """Why the last step was not replayed (None: it was)."""
        self._last: dict[tuple[Any, ...], _Template] = {}
        """The last recording of each step's facts."""
        self._ready: dict[tuple[Any, ...], _Template] = {}
        """The recordings two steps with the same facts agreed on (replayed from then on)."""
        self._current: _Template | None = None
        self._key: tuple[Any, ...] = ()
        self._dead_keys: set[tuple[Any, ...]] = set()
        """Facts whose recording failed a check: never replayed again."""

    @property
    def model(self) -> nn.Module:
        return self.coordinator.model  # type: ignore[no-any-return]

    @property
    def optimizer(self) -> Any:
        return self.coordinator.optimizer

    # -- the public facts a step's ops follow from -----------------------------------------
    def _params(self) -> list[Handle]:
        seen: dict[int, Handle] = {}
        for p in [*self.model.parameters(), *self.optimizer.params]:
            if isinstance(p, Handle):
                seen.setdefault(id(p), p)
        return list(seen.values())

    def _state(self, params: list[Handle]) -> Iterator[tuple[int, str, Any]]:
        for i, p in enumerate(params):
            for name, value in self.optimizer.state.get(id(p), {}).items():
                yield i, name, value

    def _operands(
        self, data: Handle, target: Handle, params: list[Handle]
    ) -> list[tuple[Role, Handle]]:
        """The tensors a step may read that were made before it, each with its role."""
        out: list[tuple[Role, Handle]] = [(("data",), data), (("target",), target)]
        out += [(("param", i), p) for i, p in enumerate(params)]
        out += [
            (("state", i, name), v) for i, name, v in self._state(params) if isinstance(v, Handle)
        ]
        return out

    def key(self, data: Handle, target: Handle) -> tuple[Any, ...] | None:
        """The step's public facts, or None (and :attr:`why_not`) where a replay cannot hold."""
        c = self.cluster
        why = None
        if c.logs_ops:
            why = (
                "the op log or debug logging reads every op (the op log is on once a "
                "TrainingCoordinator with measure_phases, the default without replay, or "
                "cluster.track_op_costs() ran on this cluster; a new cluster has it off)"
            )
        elif getattr(c, "checker", None) is not None:
            why = "check mode checks every op"
        elif vars(type(self.optimizer)).get("replayable") is not True:  # not inherited
            why = (
                f"{type(self.optimizer).__name__} does not declare replayable = True (its step "
                "must follow from its param_groups alone; a subclass declares it itself)"
            )
        elif data.requires_grad or target.requires_grad:
            why = "the data or the targets require gradients"
        elif not torch.is_grad_enabled():
            why = "gradients are disabled"
        if why is not None:
            self.why_not = why
            return None
        params = self._params()
        groups = tuple(
            (
                tuple(id(p) for p in g["params"]),
                tuple((k, repr(v)) for k, v in g.items() if k != "params"),
            )
            for g in self.optimizer.param_groups
        )
        state = tuple(
            (i, name, "shared" if isinstance(v, Handle) else repr(v))
            for i, name, v in self._state(params)
        )
        # which of these name the same tensor (the data as its own target, say): a
        # replay maps each recorded operand by its role
        first: dict[int, int] = {}
        operands = self._operands(data, target, params)
        aliases = tuple(first.setdefault(h.tid, i) for i, (_, h) in enumerate(operands))
        return (
            aliases,
            tuple((h.shape, h.fp, h.prec, h.dtype) for h in (data, target)),
            tuple((id(p), p.shape, p.fp, p.prec, p.dtype, p.requires_grad) for p in params),
            groups,
            state,
            # every module's kind, settings (Dropout's p, ...) and mode
            tuple((type(m), m.extra_repr(), m.training) for m in self.model.modules()),
            (id(self.model), id(self.optimizer), id(self.coordinator.loss_fn)),
        )

    # -- recording --------------------------------------------------------------------------
    @contextmanager
    def record(self, key: tuple[Any, ...], data: Handle, target: Handle) -> Iterator[list[Any]]:
        """Record the step run inside; the caller puts ``[loss, pred]`` in the list it
        gets, and the recording becomes the template once two with ``key`` agree."""
        roles: dict[int, Role] = {}
        for role, h in self._operands(data, target, self._params()):
            roles.setdefault(h.tid, role)  # (an aliased tensor: its first role)
        result: list[Any] = []
        with recording(self.cluster) as rec:
            yield result
        self.recorded += 1
        template = self._template(rec, roles, result, (data.tid, target.tid))
        if template is None or key in self._dead_keys:
            return
        ready = self._ready.get(key)
        ref = ready if ready is not None else self._last.get(key)
        if ref is not None and ref.shape_of() == template.shape_of():
            same = (ref.ins[0] == template.ins[0], ref.ins[1] == template.ins[1])
            fixed = (ref.fixed[0] and same[0], ref.fixed[1] and same[1])
            _keep(self._ready, key, replace(template, fixed=fixed), READY)
            self._last.pop(key, None)
            self._since[key] = 0
            return
        if ready is not None:  # a check of a replayed recording failed: the promise broke
            del self._ready[key]
            self.why_not = "a step issued other ops than its recording: no more replays"
            warnings.warn(
                ReplayWarning(
                    "step replay: a step recorded again to check its recording issued other "
                    "ops than it, with the same public facts (shapes, hyper-parameters, "
                    "modes): the model's or the loss's own Python state changes its ops, "
                    f"so the {self._since.get(key, 0)} steps replayed since the last check "
                    "may have run the old ones. Replays with these facts stopped; use "
                    "replay=False for this model"
                ),
                stacklevel=2,
            )
            self._dead_keys.add(key)
            return
        if ref is not None:
            self.why_not = "the last two steps with these facts issued different ops"
        _keep(self._last, key, template, LAST)

    def _template(
        self, rec: Recording, roles: dict[int, Role], result: list[Any], ins: tuple[int, int]
    ) -> _Template | None:
        if rec.blocker is not None:
            self.why_not = f"the step cannot be replayed: {rec.blocker}"
            return None
        stray = sorted(rec.externals() - roles.keys())
        if stray:
            self.why_not = (
                f"the step reads tensors made before it that are not the data, targets, "
                f"parameters or optimiser state (ids {stray[:5]}): a module buffer the step "
                "rewrites, or a shared tensor the model or the loss closes over"
            )
            return None
        loss, pred = result
        params = self._params()
        outs: list[tuple[Role, Any]] = [(("loss",), loss), (("pred",), pred)]
        for i, p in enumerate(params):
            outs.append((("param", i), p))
            if p.grad is not None:
                outs.append((("grad", i), p.grad))
        for i, name, v in self._state(params):
            outs.append((("state", i, name), v))
        made = {t: i for i, e in enumerate(rec.entries) for t in e.outs}
        kept: list[_Out] = []
        for role, h in outs:
            if not isinstance(h, Handle):
                self.why_not = f"the step's {role[0]} is not a SharedTensor"
                return None
            if rec.internal(h.tid):
                facts = (type(h), h.shape, h.fp, h.prec, h.dtype, made.get(h.tid, -1))
                kept.append(_Out(role, h.tid, *facts))
            elif roles.get(h.tid) != role:  # an untouched parameter keeps its tensor
                self.why_not = f"the step's {role[0]} is a tensor made before the step"
                return None
        live = {o.tid for o in kept}
        dead = tuple(t for t in range(rec.first_tid, rec.end_tid) if t not in live)
        return _Template(rec, roles, tuple(kept), dead, ins)

    # -- replaying ----------------------------------------------------------------------------
    def ready(self, key: tuple[Any, ...], data: Handle, target: Handle) -> bool:
        """Whether this step is replayed (the next :meth:`run`); else it is recorded."""
        self._key = key
        t = self._current = self._ready.get(key)
        if t is None:
            self.why_not = (
                "a recording issued other ops than its check: replays stopped"
                if key in self._dead_keys
                else "no two recorded steps with these facts agree yet (recording)"
            )
        elif (t.fixed[0] and data.tid != t.ins[0]) or (t.fixed[1] and target.tid != t.ins[1]):
            self.why_not = "other data or targets than the recordings had (recording)"
            self._current = None
        elif self._since.get(key, 0) >= self.verify_every:
            self.why_not = f"every {self.verify_every + 1}th step is recorded to check the replay"
            self._current = None
        return self._current is not None

    def run(self, data: Handle, target: Handle, pred: bool) -> tuple[Handle, Handle | None]:
        """Issue the recorded step again; returns ``(loss, the predictions if pred)``."""
        t = self._current
        assert t is not None, "run() follows a ready() that returned True"
        c = self.cluster
        params = self._params()
        now = {role: h.tid for role, h in self._operands(data, target, params)}
        state = self.optimizer.state
        offset, ops = t.rec.replay(c, {tid: now[role] for tid, role in t.roles.items()})
        entries = t.rec.entries
        got: dict[Role, Handle] = {}
        by_tid: dict[int, Handle] = {}  # (SGD's first momentum buffer is the gradient)
        for o in t.outs:
            if o.role == ("pred",) and not pred:
                if all(x.tid != o.tid for x in t.outs if x is not o):
                    c.release(o.tid + offset)  # (kept where the loss is the prediction)
                continue
            h = by_tid.get(o.tid)
            if h is None:
                h = by_tid[o.tid] = o.cls(c, o.tid + offset, o.shape, o.fp, o.prec, o.dtype)
                if o.entry >= 0:
                    e = entries[o.entry]
                    h._origin = Origin(ops[o.entry], e.kind, e.label)
            got[o.role] = h
            what = o.role[0]
            if what == "param":
                params[o.role[1]]._assign(h)
            elif what == "grad":
                params[o.role[1]].grad = h
            elif what == "state":
                state[id(params[o.role[1]])][o.role[2]] = h
        for tid in t.dead:
            c.release(tid + offset)
        self._since[self._key] = self._since.get(self._key, 0) + 1
        self.replayed += 1
        self.why_not = None
        return got[("loss",)], got.get(("pred",))


READY, LAST = 4, 2
"""Recordings kept per coordinator (each for one set of public facts, oldest dropped):
replayed ones, and unconfirmed ones waiting for a second step with their facts. Each keeps
its ops' public constants (a CNN's gather indices)."""

VERIFY_EVERY = 50
"""Default :attr:`StepReplay.verify_every` (one recorded step in 51: ~2% of the savings)."""


class ReplayWarning(UserWarning):
    """A replayed recording no longer matches what its step issues (see :mod:`training.replay`)."""


def _keep(
    book: dict[tuple[Any, ...], _Template], key: tuple[Any, ...], t: _Template, limit: int
) -> None:
    book.pop(key, None)
    book[key] = t
    while len(book) > limit:
        del book[next(iter(book))]
