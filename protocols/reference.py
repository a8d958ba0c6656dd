"""Plaintext reference semantics of every built-in op kind, for check mode.

A reference computes what an op kind should give, in float64 on *encoded* values (the
integers the ring holds, before any wrap): ``reference(kind)(inputs, params, out_shapes,
revealed)``. Products are divided exactly (no floor) and never wrap, so a protocol result
differs from its reference by at most one unit in the last place (the truncation's
rounding) unless something went wrong: a product that needed more than 64 bits, a failed
truncation (probability ``|x| / 2**64``, :mod:`protocols.truncate`) or a wrong protocol.

The references are written apart from the protocols on purpose: a protocol swapped in
with :meth:`protocols.opkind.Suite.replace` is checked against the same meaning. Local
linear kinds reuse :mod:`protocols.local` (on the whole value instead of a share).
Dropout's mask is dealt by the provider and known to nobody, so its reference takes the
revealed mask (checked to be 0/1) and checks ``x * mask``. A kind without a reference
(one a test or an experiment registers) is reported by the caller, never skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from . import local as L
from .context import Share
from .conv import BILINEAR, put, take
from .opkind import LocalRun
from .params import Params

Shape = tuple[int, ...]
Reference = Callable[
    [Sequence[torch.Tensor], Params, Sequence[Shape], Sequence[torch.Tensor]], list[torch.Tensor]
]


@dataclass(frozen=True, slots=True)
class Tolerance:
    """How far an op's result may be from its reference: ``units`` units in the last
    place of the result's encoding (``units / base**precision`` in real terms) plus
    ``rel`` times the reference's magnitude (float64 rounding of references above 2**53).
    The default, 2 units and 1e-9, is twice the truncation's worst rounding (one unit)."""

    units: float = 2.0
    rel: float = 1e-9

    def __post_init__(self) -> None:
        for name in ("units", "rel"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not v >= 0:
                raise ValueError(f"check tolerance {name} must be a number >= 0, got {v!r}")

    def allowed(self, expected: torch.Tensor) -> torch.Tensor:
        """The largest allowed absolute difference per element, in encoded units."""
        return self.units + self.rel * expected.abs()


def _linear(fn: LocalRun) -> Reference:
    """A local op of :mod:`protocols.local` applied to the whole value (party 0's rule)."""
    return lambda x, p, out, got: [s.value for s in fn(0, [Share(v, 0) for v in x], p)]


def _public_matmul(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    pub = p.public().to(torch.float64)
    return [(pub @ x[0] if p.left else x[0] @ pub) / p.d]


def _bilinear(name: str) -> Reference:
    fn = BILINEAR[name]
    return lambda x, p, out, got: [fn(x[0], x[1], out[0]) / p.d]


def _relu(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    bit = (x[0] >= 0).to(torch.float64)
    return [x[0] * bit, bit]


def _dropout(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    mask = got[1].to(torch.float64)
    bit = (mask > 0.5).to(torch.float64)  # a mask element that is not 0/1 will differ
    return [x[0] * bit, bit]


REFERENCES: dict[str, Reference] = {
    "add": _linear(L.add),
    "sub": _linear(L.sub),
    "neg": _linear(L.neg),
    "add_pub": _linear(L.add_pub),
    "mul_pub": _linear(L.mul_pub),
    "sum": _linear(L.sum_),
    "transpose": _linear(L.transpose),
    "reshape": _linear(L.reshape),
    "expand": _linear(L.expand),
    "take": _linear(take),
    "put": _linear(put),
    "trunc": lambda x, p, out, got: [x[0] / p.d],
    "scale": lambda x, p, out, got: [x[0] * p.public().to(torch.float64) / p.d],
    "matmul_pub": _public_matmul,
    "mul": lambda x, p, out, got: [x[0] * x[1] / p.d],
    "square": lambda x, p, out, got: [x[0] * x[0] / p.d],
    "matmul": lambda x, p, out, got: [x[0] @ x[1] / p.d],
    **{name: _bilinear(name) for name in BILINEAR},
    "drelu": lambda x, p, out, got: [(x[0] >= 0).to(torch.float64)],
    "relu": _relu,
    "dropout": _dropout,
}
"""Op kind -> its plaintext reference (see module doc)."""

TRUNCATING = frozenset({"trunc", "scale", "matmul_pub", "mul", "square", "matmul", *BILINEAR})
"""Kinds that divide a product by ``params.d`` (the ring holds ``d`` times the result
before the truncation)."""
