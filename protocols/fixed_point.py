"""Fixed-point encoding of real numbers into Z_2^64.

A real ``v`` is stored as the integer ``round(v * base**precision)`` (round to nearest,
ties to even). The default, base 10 and precision 3, is the seed tutorial's.

Safe range: an encoding must satisfy ``|e| < 2**31`` (:data:`ENCODED_LIMIT_BITS`), so the
product of two encoded values stays below 2**62 and never wraps in the 64-bit ring. For
base 10 / precision 3 that is ``|v| < 2147483.647``; for base 2 / 16 bits ``|v| < 32768``.
NaN, infinities and values outside the range are refused with :class:`EncodingError`,
never wrapped silently. See :mod:`protocols.truncate` for the truncation error bound,
which depends on the magnitude of the product being truncated.

Revealed range (headroom): a value is safe to compute with if its square still fits the
ring at double scale, ``(v * scale)**2 < 2**63``, i.e. ``|v| < 2**((63 - 2f) / 2)`` with
``f = log2(scale)``, i.e. ``|e| < 2**31.5`` (:attr:`FixedPoint.headroom`): ``|v| <
3,037,000.5`` at base 10 / precision 3 and ``|v| < 46,340.95`` at base 2 / 16 bits. A
failed truncation is off by ``2**64 / d`` in the ring (``d < 2**31`` the divisor): at
least ``2**33`` encoded units, so a true value inside this range comes back outside it
(1.8e13 at base 10 / precision 3). A product that wrapped leaves a value spread over
``|e| < 2**63 / d``, inside the range only with probability about ``d / 2**31.5``
(2**-21.5 at base 10 / precision 3). The coordinator refuses revealed values outside it
(``ValueOutOfRange``); check mode names a wrapped op exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .errors import EncodingError

ENCODED_LIMIT_BITS = 31
HEADROOM_BITS = 31.5
"""Revealed values must satisfy ``|e| < 2**HEADROOM_BITS``: their square fits in 2**63."""


@dataclass(frozen=True, slots=True)
class FixedPoint:
    """Encoding parameters. ``scale = base**precision``."""

    base: int = 10
    """Radix of the fractional digits (10 as in the seed, 2 as in CrypTen)."""
    precision: int = 3
    """Number of fractional digits in ``base``."""

    def __post_init__(self) -> None:
        # bool is an int subclass: True would pass silently as base or precision 1
        if isinstance(self.base, bool) or not isinstance(self.base, int) or self.base < 2:
            raise EncodingError(f"fixed-point base must be an integer >= 2, got {self.base!r}")
        if (
            isinstance(self.precision, bool)
            or not isinstance(self.precision, int)
            or self.precision < 0
        ):
            raise EncodingError(
                f"fixed-point precision must be an integer >= 0, got {self.precision!r}"
            )
        # Compare logarithms first: base**precision of a huge precision would never finish.
        if self.precision * math.log2(self.base) >= ENCODED_LIMIT_BITS or (
            self.scale >= 2**ENCODED_LIMIT_BITS
        ):
            raise EncodingError(
                f"scale {self.base}**{self.precision} leaves no integer part below 2**31"
            )

    @property
    def scale(self) -> int:
        return int(self.base**self.precision)

    @property
    def max_value(self) -> float:
        """Largest magnitude that encodes without leaving the safe range."""
        return (2**ENCODED_LIMIT_BITS - 1) / self.scale

    @property
    def headroom(self) -> float:
        """Largest magnitude whose square still fits the ring at double scale:
        ``2**((63 - 2f) / 2)``, f = log2(scale) (3,037,000.5 at base 10 / precision 3,
        46,340.95 at base 2 / 16 bits); see the module doc."""
        return float(2**HEADROOM_BITS / self.scale)

    def with_precision(self, precision: int) -> FixedPoint:
        return FixedPoint(self.base, precision)

    def encode(self, values: torch.Tensor | float | int) -> torch.Tensor:
        """Encode a real tensor into ring elements; refuses NaN, inf and out-of-range values."""
        # Python floats are doubles: keep them doubles (as_tensor would make float32).
        t = (
            values
            if isinstance(values, torch.Tensor)
            else torch.as_tensor(values, dtype=torch.float64)
        )
        if t.is_complex():
            raise EncodingError("complex values cannot be encoded in fixed point")
        if t.numel() == 1:
            return self._encode_scalar(t)
        t = t.to(torch.float64)
        if not bool(torch.isfinite(t).all()):
            raise _not_finite(bool(torch.isnan(t).any()))
        e = torch.round(t * self.scale)
        if t.numel() and float(e.abs().max()) >= 2**ENCODED_LIMIT_BITS:
            raise self._out_of_range(float(t.abs().max()))
        return e.to(torch.int64)

    def _encode_scalar(self, t: torch.Tensor) -> torch.Tensor:
        """:meth:`encode` of a one-element tensor, the same checks and rounding (Python's
        float is the same double, its round the same ties-to-even) on a Python number:
        public scalars (learning rates, constant factors) are encoded on every step."""
        v = float(t.item())
        if not math.isfinite(v):
            raise _not_finite(math.isnan(v))
        e = round(v * self.scale)
        if abs(e) >= 2**ENCODED_LIMIT_BITS:
            raise self._out_of_range(abs(v))
        return torch.full(t.shape, e, dtype=torch.int64)

    def _out_of_range(self, worst: float) -> EncodingError:
        return EncodingError(
            f"value {worst!r} is outside the safe fixed-point range "
            f"|v| <= {self.max_value!r} (base {self.base}, precision {self.precision})"
        )

    def decode(self, encoded: torch.Tensor) -> torch.Tensor:
        """Ring elements (read as signed) back to float64 reals (float32 would lose the last
        fixed-point digit above ~16,384 at base 10 / precision 3)."""
        return encoded.to(torch.float64) / self.scale


def _not_finite(nan: bool) -> EncodingError:
    bad = "NaN" if nan else "an infinite value"
    return EncodingError(f"cannot encode {bad} in fixed point")
