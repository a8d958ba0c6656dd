"""The ring Z_2^64 on ``torch.int64``.

torch's int64 add, sub, mul and matmul wrap around modulo 2^64 (two's complement), which is
exactly ring arithmetic; these helpers name the few operations that need care.
"""

from __future__ import annotations

import torch

RING_BITS = 64
DTYPE = torch.int64

_BIT_POSITIONS = torch.arange(RING_BITS, dtype=torch.int64)


def to_bits(x: torch.Tensor) -> torch.Tensor:
    """Two's-complement bits of each element, least significant first: shape ``x.shape + (64,)``."""
    return ((x.unsqueeze(-1) >> _BIT_POSITIONS) & 1).bool()


def floor_div(x: torch.Tensor, d: int) -> torch.Tensor:
    """Signed floor division of ring elements (read as int64) by a positive public integer."""
    return torch.div(x, d, rounding_mode="floor")
