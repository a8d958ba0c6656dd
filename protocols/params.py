"""Public parameters of one operation, as a typed struct (msgspec).

The coordinator puts them in its commands and dealer requests; a party's runner and the
dealer's material builder read them. Everything here is public: a public tensor operand
travels as its shape and raw little-endian int64 bytes (the fixed-point encoding), never as
a list of numbers and never pickled. Decoding validates every field and names the one that
is wrong.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec
import torch

from .errors import ProtocolError


class Pub(msgspec.Struct, frozen=True, array_like=True):
    """A public int64 tensor: its shape and its little-endian bytes. ``ref`` (> 0) names it
    in the parties' cache of public constants (``actors.constants``): sent once with its
    bytes, then as the shape and the ref alone."""

    shape: tuple[int, ...]
    data: bytes
    ref: int = 0

    @classmethod
    def of(cls, t: torch.Tensor) -> Pub:
        t = t.to(torch.int64).contiguous()
        return cls(tuple(t.shape), t.numpy().tobytes())

    def tensor(self) -> torch.Tensor:
        return _decode(self)


@lru_cache(maxsize=64)
def _decode(pub: Pub) -> torch.Tensor:
    n = 1
    for s in pub.shape:
        if s < 0:
            raise ProtocolError(f"public tensor with a negative size in {pub.shape}")
        n *= s
    if len(pub.data) != 8 * n:
        raise ProtocolError(
            f"public tensor of shape {pub.shape} needs {8 * n} bytes, got {len(pub.data)}"
        )
    if n == 0:
        return torch.empty(pub.shape, dtype=torch.int64)
    return torch.frombuffer(bytearray(pub.data), dtype=torch.int64).reshape(pub.shape)


class Params(msgspec.Struct, frozen=True, omit_defaults=True):
    """Public parameters of an op; each kind reads the fields it needs."""

    d: int = 1
    """Truncation divisor (a public positive integer, the fixed-point scale): the ring
    holds ``d`` times a product until the kind truncates it."""
    keep: int = 0
    """dropout: the keep probability in units of ``2**-20``
    (:data:`protocols.layers.KEEP_UNITS`), 1 to ``2**20``; 0 for every other kind."""
    scale: int = 1
    """input of a party's own tensor: the fixed-point encoding scale (the party shares
    ``round(v * scale)``)."""
    pub: Pub | None = None
    """Public operand (add_pub, mul_pub, scale, matmul_pub)."""
    left: bool = False
    """matmul_pub: the public operand is on the left."""
    dims: tuple[int, ...] | None = None
    """sum: dimensions to reduce (None: all); slice: ``(start, step, length)`` for every
    input dimension."""
    keepdim: bool = False
    shape: tuple[int, ...] | None = None
    """reshape / expand / input: the target shape."""
    d0: int = 0
    d1: int = 0
    """transpose: the two dimensions."""

    def public(self) -> torch.Tensor:
        if self.pub is None:
            raise ProtocolError("this operation needs a public operand and got none")
        return self.pub.tensor()


NO_PARAMS = Params()
