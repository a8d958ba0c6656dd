"""Secure-computation protocols as coroutines over a party context (no actor code)."""

from .beaver import matmul, mul, square
from .compare import drelu, drelu_offline_bytes, drelu_online_bytes, relu
from .context import PartyContext, Received, Share
from .errors import (
    AccessDenied,
    ActorTimeout,
    EncodingError,
    PartyFailure,
    ProtocolError,
    ShapeError,
    SmpcError,
    UnknownTensorError,
    UnsupportedOperation,
)
from .fixed_point import ENCODED_LIMIT_BITS, FixedPoint
from .material import Item, Kind, MaterialSpec, dealer_messages, party_material
from .prg import Prg
from .registry import dealer_specs, needs_material
from .sharing import open_bits, open_ring, reconstruct, share
from .truncate import truncate, truncate_local

__all__ = [
    "ENCODED_LIMIT_BITS",
    "AccessDenied",
    "ActorTimeout",
    "EncodingError",
    "FixedPoint",
    "Item",
    "Kind",
    "MaterialSpec",
    "PartyContext",
    "PartyFailure",
    "Prg",
    "ProtocolError",
    "Received",
    "ShapeError",
    "Share",
    "SmpcError",
    "UnknownTensorError",
    "UnsupportedOperation",
    "dealer_messages",
    "dealer_specs",
    "drelu",
    "drelu_offline_bytes",
    "drelu_online_bytes",
    "matmul",
    "mul",
    "needs_material",
    "open_bits",
    "open_ring",
    "party_material",
    "reconstruct",
    "relu",
    "share",
    "square",
    "truncate",
    "truncate_local",
]
