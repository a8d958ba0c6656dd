"""Convolutions on additive shares: ring convolutions and their Beaver triples, plus the
local gather/scatter ops (``take``/``put``) that slicing, padding, pooling windows and
concatenation are built from.

Beaver for a bilinear map ``f`` (Beaver, CRYPTO 1991, as in :mod:`protocols.beaver`):
the dealer deals ``(a, b, c = f(a, b))``; the parties open ``eps = x - a`` and
``delta = y - b`` in one round and compute ``z_i = c_i + f(eps, b_i) + f(a_i, delta)``
(+ ``f(eps, delta)`` at party 0). ``f`` is linear in each argument over Z_2^64, so this
is exact. Three bilinear maps share the machinery:

========== ===================================== ==========================================
kind       operands -> result                    f
========== ===================================== ==========================================
conv       x (N,C,H,W), w (O,C/g,kh,kw)          cross-correlation, stride s, groups g
conv_dx    g (N,O,Ho,Wo), w (O,C/g,kh,kw)        its transpose in x: d(out)/dx applied to g
conv_dw    x (N,C,H,W), g (N,O,Ho,Wo)            its transpose in w: d(out)/dw applied to g
========== ===================================== ==========================================

The dealer sees only kinds and shapes, so the geometry is made a function of the shapes:
the frontend pads and crops ``x`` (local ``put``/``take``) so that
``H = (Ho - 1) s + kh`` exactly and dilates the kernel by inserting zeros, so every
kind here is a *valid* correlation whose stride is ``(H - kh) / (Ho - 1)`` (1 when
``Ho == 1``) and whose groups are ``C / w.shape[1]``.

Online cost, n parties, per party: ``8 (numel x + numel y) (n - 1)`` bytes, 1 round (+ the
suite's truncation); dealer: ``8 numel(result)`` (the correction of ``c``), like matmul.

Ring convolution: ``torch.nn.functional.conv2d`` / ``conv_transpose2d`` and the int64
``einsum`` on CPU tensors wrap mod 2^64 exactly: integer kernels, no float on the way
(pinned on full-range operands against a numpy uint64 shift-and-sum reference in
tests/test_kernels.py, and as adjoints in tests/test_layers.py). They stay: the float64
limb split that the matmul once used was measured 6-12x slower for these convolutions
(``scripts/bench_ring.py``), and a dilated-conv2d form of ``conv_dw`` was no faster than
the einsum (2x slower for the MNIST Net's second layer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F

from .beaver import masked
from .context import PartyContext, Share
from .errors import ShapeError
from .material import Item, MaterialSpec
from .params import Params
from .sharing import open_ring

Shape = tuple[int, ...]


def _stride(inner: int, k: int, out: int) -> int:
    if out <= 1:
        return 1
    if (inner - k) % (out - 1):
        raise ShapeError(f"conv geometry: size {inner}, kernel {k}, output {out} is not exact")
    return (inner - k) // (out - 1)


def conv_out_shape(x: Shape, w: Shape, stride: tuple[int, int]) -> Shape:
    n, c, h, wd = x
    o, cg, kh, kw = w
    if cg <= 0 or c % cg or o % (c // cg):
        raise ShapeError(f"conv: input {x} and kernel {w} do not agree on channels/groups")
    return (n, o, (h - kh) // stride[0] + 1, (wd - kw) // stride[1] + 1)


def geometry(x: Shape, w: Shape, out: Shape) -> tuple[tuple[int, int], int]:
    """(stride, groups) of the valid correlation ``x * w -> out`` (see module doc)."""
    if len(x) != 4 or len(w) != 4 or len(out) != 4:
        raise ShapeError(f"conv expects 4-d shapes, got {x}, {w}, {out}")
    s = (_stride(x[2], w[2], out[2]), _stride(x[3], w[3], out[3]))
    if conv_out_shape(x, w, s) != tuple(out):
        raise ShapeError(f"conv geometry: {x} * {w} cannot give {out}")
    return s, x[1] // w[1]


def conv_ring(x: torch.Tensor, w: torch.Tensor, out: Shape) -> torch.Tensor:
    s, g = geometry(tuple(x.shape), tuple(w.shape), out)
    return F.conv2d(x, w, stride=s, groups=g)


def conv_dx_ring(g: torch.Tensor, w: torch.Tensor, xshape: Shape) -> torch.Tensor:
    s, groups = geometry(xshape, tuple(w.shape), tuple(g.shape))
    return F.conv_transpose2d(g, w, stride=s, groups=groups)


def conv_dw_ring(x: torch.Tensor, g: torch.Tensor, wshape: Shape) -> torch.Tensor:
    s, groups = geometry(tuple(x.shape), wshape, tuple(g.shape))
    n = x.shape[0]
    o, cg, kh, kw = wshape
    ho, wo = g.shape[2], g.shape[3]
    cols = x.unfold(2, kh, s[0]).unfold(3, kw, s[1])[:, :, :ho, :wo]
    cols = cols.reshape(n, groups, cg, ho, wo, kh, kw)
    gg = g.reshape(n, groups, o // groups, ho, wo)
    return torch.einsum("ngchwij,ngohw->gocij", cols, gg).reshape(wshape)


Bilinear = Callable[[torch.Tensor, torch.Tensor, Shape], torch.Tensor]

BILINEAR: dict[str, Bilinear] = {
    "conv": conv_ring,
    "conv_dx": conv_dx_ring,
    "conv_dw": conv_dw_ring,
}


@lru_cache(maxsize=256)
def bilinear_spec(kind: str, x: Shape, y: Shape, out: Shape, sub: int = 0) -> MaterialSpec:
    fn = BILINEAR[kind]
    return MaterialSpec(
        kind,
        sub,
        (Item("a", x), Item("b", y), Item("c", out, derived=True)),
        lambda s: {"c": fn(s["a"], s["b"], out)},
    )


async def bilinear(
    ctx: PartyContext, kind: str, x: Share, y: Share, out: Shape, *, sub: int = 0
) -> Share:
    """``f(x, y)`` for the bilinear map ``kind`` by one Beaver round."""
    fn = BILINEAR[kind]
    t = await ctx.material(
        bilinear_spec(kind, tuple(x.value.shape), tuple(y.value.shape), out, sub)
    )
    (eps, delta), depth = await open_ring(
        ctx, f"{kind}{sub}", [masked(x, t["a"]), masked(y, t["b"])], max(x.depth, y.depth)
    )
    # f(eps, b) + f(a, delta) (+ f(eps, delta) at rank 0) with f(eps, b + delta) at rank 0:
    # two convolutions per party instead of three (exact: f is bilinear over the ring)
    b = t["b"] + delta if ctx.rank == 0 else t["b"]
    z = t["c"] + fn(eps, b, out) + fn(t["a"], delta, out)
    return Share(z, depth)


# -- local gather / scatter ------------------------------------------------------------------


def take(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    """``out = x.flatten()[idx]`` reshaped to ``idx``'s shape (any indexing, permute,
    windows): linear, so every party applies it to its share."""
    idx = p.public()
    return [Share(x[0].value.reshape(-1)[idx.reshape(-1)].reshape(idx.shape), x[0].depth)]


def put(rank: int, x: Sequence[Share], p: Params) -> list[Share]:
    """The adjoint of :func:`take`: zeros of ``p.shape`` with ``x`` added at ``idx``."""
    if p.shape is None:
        raise ShapeError("put needs a target shape")
    idx = p.public()
    n = 1
    for s in p.shape:
        n *= s
    out = torch.zeros(n, dtype=x[0].value.dtype)
    out.index_add_(0, idx.reshape(-1), x[0].value.reshape(-1))
    return [Share(out.reshape(p.shape), x[0].depth)]
