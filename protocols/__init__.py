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
from .params import Params, Pub
from .prg import Prg
from .sharing import open_bits, open_ring, reconstruct, share
from .suite import DEFAULT, SUITES, Cost, OpKind, Suite, get_suite, register_suite
from .truncate import truncate, truncate_local

__all__ = [
    "DEFAULT",
    "ENCODED_LIMIT_BITS",
    "SUITES",
    "AccessDenied",
    "ActorTimeout",
    "Cost",
    "EncodingError",
    "FixedPoint",
    "Item",
    "Kind",
    "MaterialSpec",
    "OpKind",
    "Params",
    "PartyContext",
    "PartyFailure",
    "Prg",
    "ProtocolError",
    "Pub",
    "Received",
    "ShapeError",
    "Share",
    "SmpcError",
    "Suite",
    "UnknownTensorError",
    "UnsupportedOperation",
    "dealer_messages",
    "drelu",
    "drelu_offline_bytes",
    "drelu_online_bytes",
    "get_suite",
    "matmul",
    "mul",
    "open_bits",
    "open_ring",
    "party_material",
    "reconstruct",
    "register_suite",
    "relu",
    "share",
    "square",
    "truncate",
    "truncate_local",
]
