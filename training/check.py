"""No silent numeric failures: the revealed-value range check and check mode.

**Range check** (always on unless ``Cluster.start(value_bound=None)``). Every value the
coordinator reveals (``SharedTensor.get``) must satisfy ``|v| < bound``; by default the
bound is the ring's headroom of the value's encoding, ``2**31.5 / scale``
(:attr:`protocols.fixed_point.FixedPoint.headroom`: a value whose square still fits the
ring at double scale; 3,037,000.5 at base 10 / precision 3, 46,340.95 at base 2 / 16
bits). A failed truncation (off by ``2**64 / d``, e.g. 1.8e13) always lands outside it, a
wrapped product almost always; either raises :class:`ValueOutOfRange` naming the op kind,
op id and label that produced the value, instead of returning garbage.

**Check mode** (``Cluster.start(check=True)`` or a :class:`protocols.reference.Tolerance`).
The coordinator owns every value it shared, so it keeps a float64 plaintext *shadow* of
each SharedTensor (in encoded units; :class:`Shadow`, shared by every handle of the same
value). Ops are queued as usual; at the next reveal (``get``) or ``flush`` the coordinator
reveals the result of every op issued since, in one batch, and in issue order computes
each op's plaintext reference (declared with its kind: :meth:`protocols.opkind.Suite.reference`, plain torch) from
its operands' shadows. The first result further from its reference than the tolerance
(2 units in the last place + 1e-9 of the magnitude by default) raises
:class:`ShadowMismatch` naming the op kind, op id, label, the error and the tolerance,
and a likely cause (a wrap, a truncation failure, a wrong protocol). A checked result
becomes the shadow of what follows, so rounding never accumulates and a comparison near
zero cannot flip between the shadow and the shares: every op is judged on its own.

Where there is no shadow it is said, once per cluster and cause, with
:class:`UncheckedOpWarning`: values the coordinator never saw (``share_from``, a loaded
checkpoint) and everything computed from them are not checked; a kind without a
reference is revealed but not compared.

Cost: every op's result is revealed once (each party sends 8 bytes per element to the
coordinator), one extra round trip per ``get``/``flush``, float64 reference work at the
coordinator, and the revealed results are kept alive at the parties until checked. The
measured rounds and bytes of a check-mode run are not the protocol's.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import torch

from protocols import FixedPoint
from protocols.errors import ShadowMismatch, ValueOutOfRange
from protocols.opkind import Suite
from protocols.params import NO_PARAMS, Params
from protocols.reference import Tolerance

if TYPE_CHECKING:
    from .handle import Handle


class UncheckedOpWarning(UserWarning):
    """Check mode cannot check an op: no shadow of an operand, or no reference for its
    kind. Issued once per cluster and cause."""


@dataclass(frozen=True, slots=True)
class Origin:
    """The op that produced a value: its id, kind and the label active when it was issued."""

    op: int | None
    kind: str
    label: str | None

    def __str__(self) -> str:
        where = f", label {self.label!r}" if self.label else ", no label"
        return f"op {self.op if self.op is not None else '?'} ({self.kind}{where})"


class Shadow:
    """The coordinator's float64 copy of one value, in encoded units (``value``), or
    ``pending`` until check mode has revealed and checked the op that makes it."""

    __slots__ = ("pending", "value")

    def __init__(self, value: torch.Tensor | None = None, *, pending: bool = False) -> None:
        self.value = value
        self.pending = pending

    @property
    def known(self) -> bool:
        return self.pending or self.value is not None


def _encoding(fp: FixedPoint, prec: int) -> str:
    return f"base {fp.base} / precision {prec}"


def check_range(t: Handle, raw: torch.Tensor) -> torch.Tensor:
    """``raw`` decoded, or :class:`ValueOutOfRange` if a value exceeds the cluster's bound."""
    fp = t.fp if t.prec == t.fp.precision else t.fp.with_precision(t.prec)
    setting = getattr(t.cluster, "value_bound", "headroom")
    if setting is None:
        return fp.decode(raw)
    bound = fp.headroom if setting == "headroom" else float(setting)
    if raw.numel() == 1:  # a loss: the same float64 steps in Python
        v = float(int(raw.reshape(()).item())) / float(fp.scale)
        if abs(v) < bound:
            return torch.tensor(v, dtype=torch.float64).reshape(raw.shape)
    values = fp.decode(raw)
    if not values.numel():
        return values
    big = values.abs()
    if float(big.max()) < bound:
        return values
    worst = float(values.reshape(-1)[int(big.argmax())])
    origin = t._origin or Origin(None, "unknown", None)
    why = (
        f"the ring's headroom at {_encoding(fp, t.prec)}: a value whose square fits the "
        f"64-bit ring at double scale, 2**((63 - 2f)/2) with f = log2({fp.scale})"
        if setting == "headroom"
        else "the cluster's value_bound"
    )
    count = int((big >= bound).sum())
    checked = getattr(t.cluster, "checker", None) is not None and t._shadow is not None
    what = (
        "Check mode found the op's result correct: the value is true but too large to "
        "compute with (its square would wrap)."
        if checked and t._shadow is not None and t._shadow.value is not None
        else "Either it is garbage (a product wrapped around the ring or a truncation "
        "failed) or it is too large to compute with (its square would wrap)."
    )
    raise ValueOutOfRange(
        f"revealed value {worst:.6g} of {origin} is outside |v| < {bound:.8g} ({why}; "
        f"{count} of {values.numel()} elements are outside). {what} Use smaller inputs "
        "to this op, or a lower precision (more integer headroom in the 64-bit ring)"
        + (
            ""
            if checked
            else ", or Cluster.start(..., check=True) (--check) to name the first op that "
            "went wrong"
        )
        + " (value_bound=None, --value-bound none, turns this check off)",
        kind=origin.kind,
        op=origin.op,
        label=origin.label,
        measured=worst,
        limit=bound,
    )


@dataclass(frozen=True, slots=True)
class _Out:
    ref: Any  # the tensor id's owner: keeps the value alive at the parties until checked
    shape: tuple[int, ...]
    fp: FixedPoint
    prec: int
    shadow: Shadow


@dataclass(frozen=True, slots=True)
class _Issued:
    origin: Origin
    operands: tuple[Shadow, ...]
    outs: tuple[_Out, ...]
    params: Params


class ShadowChecker:
    """Check mode for one cluster (see module doc)."""

    def __init__(self, tolerance: Tolerance, suite: Suite) -> None:
        self.tolerance = tolerance
        self.suite = suite
        """Where each kind's reference is declared (the cluster's protocol suite)."""
        self._pending: list[_Issued] = []
        self._warned: set[str] = set()
        self.checked_ops = 0
        """Ops whose results matched their plaintext reference so far."""
        self.checked_elements = 0
        self.unchecked_ops = 0
        """Ops revealed but without a reference (warned about once per cause)."""

    def summary(self) -> str:
        """One line for the end of a run: what check mode verified."""
        return (
            f"check mode        {self.checked_ops} ops ({self.checked_elements} elements) "
            f"within {self.tolerance.units:g} units in the last place of their plaintext "
            f"reference; {self.unchecked_ops} without a reference"
        )

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warnings.warn(UncheckedOpWarning(message), stacklevel=4)

    def input(self, t: Handle, encoded: torch.Tensor) -> None:
        """The coordinator shared ``t`` itself: its shadow is what it encoded."""
        t._shadow = Shadow(encoded.to(torch.float64))

    def issued(
        self,
        origin: Origin,
        operands: Sequence[Handle],
        results: Sequence[Handle],
        params: Params | None,
    ) -> None:
        """Queue the check of one op (called as it is issued)."""
        shadows = [o._shadow for o in operands]
        if not all(s is not None and s.known for s in shadows):
            self._warn(
                "unknown",
                f"check mode: {origin} computes on a value the coordinator never saw "
                "(share_from, a loaded checkpoint): it and everything computed from it "
                "are not checked",
            )
            return
        outs = []
        for r in results:
            r._shadow = Shadow(pending=True)
            outs.append(_Out(r._ref, tuple(r.shape), r.fp, r.prec, r._shadow))
        self._pending.append(
            _Issued(origin, tuple(s for s in shadows if s), tuple(outs), params or NO_PARAMS)
        )

    async def verify(self, cluster: Any) -> None:
        """Reveal and check every op queued since the last call, in issue order."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        try:
            raws = await cluster.reveal_many(
                [(o.ref.tid, o.shape) for item in pending for o in item.outs]
            )
            got = iter(raws)
            for item in pending:
                self._check(item, [next(got).to(torch.float64) for _ in item.outs])
        finally:
            for item in pending:
                for o in item.outs:
                    o.shadow.pending = False  # unchecked after an error: unknown

    def _check(self, item: _Issued, got: list[torch.Tensor]) -> None:
        ref = self.suite.reference(item.origin.kind)
        if ref is None:
            self._warn(
                f"kind:{item.origin.kind}",
                f"check mode has no plaintext reference for op kind {item.origin.kind!r} "
                f"({item.origin}): its results are revealed but not checked, and become "
                "the shadows of what follows",
            )
            self.unchecked_ops += 1
        else:
            # every operand is known here: its op was checked earlier in issue order
            ins = [cast(torch.Tensor, s.value) for s in item.operands]
            expected = ref(ins, item.params, [o.shape for o in item.outs], got)
            for o, e, g in zip(item.outs, expected, got, strict=True):
                self._compare(item, o, e.to(torch.float64).expand(o.shape), g)
            self.checked_ops += 1
            self.checked_elements += sum(g.numel() for g in got)
        for o, g in zip(item.outs, got, strict=True):
            o.shadow.value = g

    def _compare(self, item: _Issued, out: _Out, expected: torch.Tensor, got: torch.Tensor) -> None:
        err = (got - expected).abs()
        allowed = self.tolerance.allowed(expected)
        over = err - allowed
        if not over.numel() or float(over.max()) <= 0:
            return
        i = int(over.reshape(-1).argmax())
        scale = out.fp.base**out.prec
        e, g = float(expected.reshape(-1)[i]), float(got.reshape(-1)[i])
        tol = float(allowed.reshape(-1)[i])
        origin = item.origin
        raise ShadowMismatch(
            f"check mode: {origin} differs from its plaintext reference: |error| "
            f"{abs(g - e) / scale:.6g} at element {i} (got {g / scale:.6g}, expected "
            f"{e / scale:.6g}), tolerance {tol / scale:.3g} ({self.tolerance.units:g} units "
            f"in the last place at {_encoding(out.fp, out.prec)} + {self.tolerance.rel:g} x "
            f"|expected|); {int((over > 0).sum())} of {over.numel()} elements are outside it. "
            f"Likely cause: {_cause(self.suite.truncating(origin.kind), item.params, expected, abs(g - e))}",
            kind=origin.kind,
            op=origin.op,
            label=origin.label,
            measured=abs(g - e) / scale,
            limit=tol / scale,
        )


def _cause(truncating: bool, params: Params, expected: torch.Tensor, error: float) -> str:
    d = params.d if truncating else 1
    need = float(expected.abs().max()) * d
    if need >= 2**63:
        return (
            f"the exact result needs 2**{math.log2(need):.1f} >= 2**63 in the ring (before "
            "truncation): it wrapped around the 64-bit ring. Use smaller inputs to this op, "
            "or a lower precision"
        )
    if truncating and d > 1 and error >= 2**62 / d:
        return (
            f"a truncation failure (off by about 2**64 / {d}; probability |x| / 2**64 per "
            "element, x the product, see protocols/truncate.py): keep products smaller, or "
            "use protocols='fss-exact' (exact truncation)"
        )
    return "the protocol computed a wrong result (its runner, its dealer material or a message)"
