"""Plaintext reference semantics of every built-in op kind, for check mode.

A reference computes what an op kind should give, in float64 on *encoded* values (the
integers the ring holds, before any wrap): ``reference(inputs, params, out_shapes,
revealed)``, declared with each kind's registration (:func:`protocols.opkind.register`;
check mode asks the cluster's suite: :meth:`protocols.opkind.Suite.reference`). Products are divided exactly (no floor) and never wrap, so a protocol result
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

from dataclasses import dataclass

import torch

from .context import Share
from .opkind import LocalRun, Reference


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


def linear(fn: LocalRun) -> Reference:
    """A local op of :mod:`protocols.local` applied to the whole value (party 0's rule)."""
    return lambda x, p, out, got: [s.value for s in fn(0, [Share(v, 0) for v in x], p)]
