"""How a party executes each command kind: local arithmetic on its shares, or a protocol.

Local kinds are plain functions; interactive kinds are coroutines over a PartyContext.
Command parameters are public (JSON): public tensors travel encoded as integers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import torch

import protocols as P
from protocols import PartyContext, Share
from protocols.shapes import broadcast


def public_tensor(spec: dict[str, Any]) -> torch.Tensor:
    return torch.tensor(spec["data"], dtype=torch.int64).reshape(spec["shape"])


def encode_public(t: torch.Tensor) -> dict[str, Any]:
    return {"shape": list(t.shape), "data": t.reshape(-1).tolist()}


def _d(xs: Sequence[Share]) -> int:
    return max(x.depth for x in xs)


Local = Callable[[int, Sequence[Share], dict[str, Any]], list[Share]]
Interactive = Callable[[PartyContext, Sequence[Share], dict[str, Any]], Awaitable[list[Share]]]


def _add(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [Share(x[0].value + x[1].value, _d(x))]


def _sub(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [Share(x[0].value - x[1].value, _d(x))]


def _neg(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [Share(-x[0].value, x[0].depth)]


def _add_pub(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    v = x[0].value
    pub = public_tensor(p["pub"])
    out = v + pub if rank == 0 else v.expand(broadcast("add", v.shape, pub.shape)).clone()
    return [Share(out, x[0].depth)]


def _mul_pub(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [Share(x[0].value * public_tensor(p["pub"]), x[0].depth)]


def _sum(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    v = x[0].value
    dims = p.get("dims")
    out = v.sum() if dims is None else v.sum(dim=tuple(dims), keepdim=bool(p.get("keepdim")))
    return [Share(out, x[0].depth)]


def _transpose(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [Share(x[0].value.transpose(p["d0"], p["d1"]).contiguous(), x[0].depth)]


def _reshape(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [Share(x[0].value.reshape(p["shape"]), x[0].depth)]


def _expand(rank: int, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [Share(x[0].value.expand(p["shape"]).contiguous(), x[0].depth)]


LOCAL: dict[str, Local] = {
    "add": _add,
    "sub": _sub,
    "neg": _neg,
    "add_pub": _add_pub,
    "mul_pub": _mul_pub,
    "sum": _sum,
    "transpose": _transpose,
    "reshape": _reshape,
    "expand": _expand,
}


def _scale_product(x: Sequence[Share], p: dict[str, Any]) -> Share:
    return Share(x[0].value * public_tensor(p["pub"]), x[0].depth)


def _matmul_product(x: Sequence[Share], p: dict[str, Any]) -> Share:
    pub, v = public_tensor(p["pub"]), x[0].value
    return Share(torch.matmul(pub, v) if p.get("left") else torch.matmul(v, pub), x[0].depth)


def _as_is(x: Sequence[Share], p: dict[str, Any]) -> Share:
    return x[0]


PUBLIC_PRODUCTS: dict[str, Callable[[Sequence[Share], dict[str, Any]], Share]] = {
    "scale": _scale_product,
    "matmul_pub": _matmul_product,
    "trunc": _as_is,
}
"""Kinds that compute a product with a public value locally and then truncate it once."""


def _truncating_local(product: Callable[[Sequence[Share], dict[str, Any]], Share]) -> Local:
    return lambda rank, x, p: [P.truncate_local(product(x, p), p["d"], rank)]


def _truncating(product: Callable[[Sequence[Share], dict[str, Any]], Share]) -> Interactive:
    async def run(ctx: PartyContext, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
        return [await P.truncate(ctx, product(x, p), p["d"], sub=1)]

    return run


def local_table(n_parties: int) -> dict[str, Local]:
    """Kinds a party runs without communication: with 2 parties, truncation is local
    (SecureML), so multiplying by a public fixed-point value is too."""
    if n_parties != 2:
        return LOCAL
    return {**LOCAL, **{k: _truncating_local(f) for k, f in PUBLIC_PRODUCTS.items()}}


async def _mul(ctx: PartyContext, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [await P.truncate(ctx, await P.mul(ctx, x[0], x[1]), p["d"], sub=1)]


async def _square(ctx: PartyContext, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [await P.truncate(ctx, await P.square(ctx, x[0]), p["d"], sub=1)]


async def _matmul(ctx: PartyContext, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [await P.truncate(ctx, await P.matmul(ctx, x[0], x[1]), p["d"], sub=1)]


async def _drelu(ctx: PartyContext, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    return [await P.drelu(ctx, x[0])]


async def _relu(ctx: PartyContext, x: Sequence[Share], p: dict[str, Any]) -> list[Share]:
    y, bit = await P.relu(ctx, x[0])
    return [y, bit]


INTERACTIVE: dict[str, Interactive] = {
    "mul": _mul,
    "square": _square,
    "matmul": _matmul,
    **{k: _truncating(f) for k, f in PUBLIC_PRODUCTS.items()},
    "drelu": _drelu,
    "relu": _relu,
}

DEALER_KIND = {
    "mul": "mul",
    "square": "square",
    "matmul": "matmul",
    "scale": "trunc",
    "matmul_pub": "trunc",
    "trunc": "trunc",
    "drelu": "drelu",
    "relu": "relu",
}
"""Command kind -> dealer material kind (see protocols.registry)."""
