"""Beaver multiplication, squaring and matrix multiplication on additive shares.

Beaver, "Efficient multiparty protocols using circuit randomization", CRYPTO 1991; the
dealer variant as in CrypTen's trusted third party.

``mul(x, y)`` with a triple ``(a, b, c = a*b)`` from the dealer:

1. every party opens ``eps = x - a`` and ``delta = y - b`` in one batched message;
2. each party computes ``z_i = c_i + eps * b_i + x_i * delta`` from its own share ``x_i``
   of ``x``. Then ``sum z_i = ab + eps b + (eps + a) delta = x * y`` (the textbook form
   ``c_i + eps b_i + a_i delta``, plus ``eps delta`` at party 0, has the same sum but one
   more term at party 0).

``matmul`` is the same with ``@`` and ``c = a @ b``; ``square`` needs only ``(a, a*a)`` and
opens ``eps`` alone: ``z_i = c_i + 2 * eps * a_i`` (+ ``eps**2`` at party 0).

Costs with n parties (N = numel), all measured by the meter and asserted in tests:

=========== ============== ================================= ==============================
op          online rounds  online bytes sent by each party   dealer bytes (to last party)
=========== ============== ================================= ==============================
mul         1              8 (N_x + N_y) (n-1)               8 N_xy
square      1              8 N_x (n-1)                       8 N_x
matmul      1              8 (mk + kn) (n-1)  for (m,k)(k,n)  8 mn
=========== ============== ================================= ==============================

The products are ring products: with fixed-point inputs the result carries the square of
the scale and must be truncated once (:mod:`protocols.truncate`).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from . import shapes
from .context import PartyContext, Share
from .material import Item, MaterialSpec
from .ring import ring_matmul
from .sharing import open_ring


def masked(x: Share, mask: torch.Tensor) -> torch.Tensor:
    """``x - mask`` written in the mask's (contiguous) layout: a transposed share (local
    transposes are views) would otherwise give a transposed difference, which the opening
    then copies again to send it."""
    if x.value.shape != mask.shape or x.value.is_contiguous():
        return x.value - mask
    return torch.sub(x.value, mask, out=torch.empty_like(mask))


@lru_cache(maxsize=256)
def mul_spec(x_shape: tuple[int, ...], y_shape: tuple[int, ...], sub: int = 0) -> MaterialSpec:
    out = shapes.broadcast("mul", x_shape, y_shape)
    return MaterialSpec(
        "mul",
        sub,
        (Item("a", x_shape), Item("b", y_shape), Item("c", out, derived=True)),
        lambda s: {"c": s["a"] * s["b"]},
    )


@lru_cache(maxsize=256)
def matmul_spec(x_shape: tuple[int, ...], y_shape: tuple[int, ...], sub: int = 0) -> MaterialSpec:
    out = shapes.matmul(x_shape, y_shape)
    return MaterialSpec(
        "matmul",
        sub,
        (Item("a", x_shape), Item("b", y_shape), Item("c", out, derived=True)),
        lambda s: {"c": ring_matmul(s["a"], s["b"])},
    )


@lru_cache(maxsize=256)
def square_spec(x_shape: tuple[int, ...], sub: int = 0) -> MaterialSpec:
    return MaterialSpec(
        "square",
        sub,
        (Item("a", x_shape), Item("c", x_shape, derived=True)),
        lambda s: {"c": s["a"] * s["a"]},
    )


async def mul(ctx: PartyContext, x: Share, y: Share, *, sub: int = 0) -> Share:
    """Elementwise product (with broadcasting) of two shared tensors; 1 round."""
    t = await ctx.material(mul_spec(tuple(x.value.shape), tuple(y.value.shape), sub))
    (eps, delta), depth = await open_ring(
        ctx, f"mul{sub}", [masked(x, t["a"]), masked(y, t["b"])], max(x.depth, y.depth)
    )
    # sum_i (c_i + eps b_i + x_i delta) = ab + eps b + (eps + a) delta = xy: bilinearity
    # (exact: the ring distributes) saves one product per party, and using the party's own
    # x_i instead of a_i removes party 0's extra "+ eps delta" term and its addition
    z = eps * t["b"]
    z += t["c"]
    z += x.value * delta
    return Share(z, depth)


async def square(ctx: PartyContext, x: Share, *, sub: int = 0) -> Share:
    """``x * x`` opening only ``x - a``; 1 round, half the bytes of ``mul(x, x)``."""
    t = await ctx.material(square_spec(tuple(x.value.shape), sub))
    (eps,), depth = await open_ring(ctx, f"sq{sub}", [masked(x, t["a"])], x.depth)
    z = t["c"] + eps * (2 * t["a"] + eps if ctx.rank == 0 else 2 * t["a"])
    return Share(z, depth)


async def matmul(ctx: PartyContext, x: Share, y: Share, *, sub: int = 0) -> Share:
    """Matrix product of two shared tensors (torch.matmul semantics); 1 round."""
    t = await ctx.material(matmul_spec(tuple(x.value.shape), tuple(y.value.shape), sub))
    (eps, delta), depth = await open_ring(
        ctx, f"mm{sub}", [masked(x, t["a"]), masked(y, t["b"])], max(x.depth, y.depth)
    )
    # as for mul: sum_i (c_i + eps b_i + x_i delta) = xy, two GEMMs per party and no
    # party-0 term (which cost an addition the size of y)
    c, b = t["c"], t["b"]
    if eps.dim() == 2 and b.dim() == 2:  # fused GEMM + add, measured 10-17% faster here
        z = torch.addmm(c, eps, b)
        z.addmm_(x.value, delta)
    else:
        z = ring_matmul(eps, b)
        z += c
        z += ring_matmul(x.value, delta)
    return Share(z, depth)
