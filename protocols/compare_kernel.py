"""The carry-tree comparison's local work (:mod:`protocols.compare`) as compiled (numba)
kernels, bit for bit the torch code they replace.

Why: on the tensors a training step compares (16k elements a ReLU) the torch version spent
its time in call overhead, ~130 small ops per comparison (the transpose's six
mask-and-shift passes, level 0's strided slices, three XORs and ANDs per AND share, the
bit unpacking and the final sign arithmetic), and on 10^6 elements in streaming the same
planes through memory once per op. Each kernel here makes one pass over the words of a
group of 64 elements: the 64x64 bit transpose runs on 64 words held in a small local
array (the same six block swaps, :data:`protocols.ring._TRANSPOSE_STEPS`), level 0 is
computed straight from the transposed words, an AND level masks (or combines) all its
planes in one loop, and the last step turns the opened bit into the shares of the bit and
of ``relu(x)`` per element. The messages, their layout and every share are unchanged
(tests/test_compare_kernel.py checks them against the torch reference).

Everything runs on int64 (two's complement: ``^ & | ~ << * + -`` give the bits uint64
would, ``>>`` is arithmetic and its sign bits always land outside the swap mask), so no
uint64/int64 promotion to float can creep in. Kernels compile on first use and are cached
on disk (``cache=True``, in ``__pycache__`` beside this file). No branch or index depends
on a secret: the only branch is on the party's rank.
"""

from __future__ import annotations

import numpy as np
import torch
from numba import njit

_M32 = np.int64(0x00000000FFFFFFFF)
_M16 = np.int64(0x0000FFFF0000FFFF)
_M8 = np.int64(0x00FF00FF00FF00FF)
_M4 = np.int64(0x0F0F0F0F0F0F0F0F)
_M2 = np.int64(0x3333333333333333)
_M1 = np.int64(0x5555555555555555)


def _np(t: torch.Tensor) -> np.ndarray:
    """The numpy view of a C-contiguous int64 tensor (a copy only if it is not)."""
    return t.contiguous().numpy()


_LANES = 64
"""Groups transposed side by side (a block of 64 x 64 words, 32 KiB, stays in L1): row k of
the block holds word k of each group's 64, so every swap step is a vector loop over the
groups, and the loop overhead is paid once per 64 groups (measured 86-112 ns per group of 64
elements against ~200 with 8 groups side by side and ~250 for 1 group)."""


@njit(cache=True, inline="always")
def _swap_step(v: np.ndarray, nb: int, j: int, mask: np.int64) -> None:
    """One block swap of the transpose in the ``nb`` lanes: rows k (bit j of k clear) and
    k + j (row k of lane b is ``v[k * _LANES + b]``)."""
    for k in range(64):
        if k & j == 0:
            for b in range(nb):
                lo = v[k * _LANES + b]
                hi = v[(k + j) * _LANES + b]
                t = ((lo >> j) ^ hi) & mask
                v[(k + j) * _LANES + b] = hi ^ t
                v[k * _LANES + b] = lo ^ (t << j)


@njit(cache=True, inline="always")
def _transpose_block(x: np.ndarray, w0: int, nb: int, v: np.ndarray) -> None:
    """``v[j * _LANES + b]`` := bit plane j of the 64 elements of group ``w0 + b`` of
    ``x`` (zeros past the end of ``x``), for the lanes ``b < nb``."""
    n = x.shape[0]
    for b in range(nb):
        start = 64 * (w0 + b)
        if start + 64 <= n:
            for k in range(64):
                v[k * _LANES + b] = x[start + k]
        else:
            for k in range(64):
                i = start + k
                v[k * _LANES + b] = x[i] if i < n else 0
    _swap_step(v, nb, 32, _M32)
    _swap_step(v, nb, 16, _M16)
    _swap_step(v, nb, 8, _M8)
    _swap_step(v, nb, 4, _M4)
    _swap_step(v, nb, 2, _M2)
    _swap_step(v, nb, 1, _M1)


@njit(cache=True)
def _planes_kernel(x: np.ndarray, out: np.ndarray) -> None:
    v = np.empty(64 * _LANES, np.int64)
    width = out.shape[1]
    for w0 in range(0, width, _LANES):
        nb = min(_LANES, width - w0)
        _transpose_block(x, w0, nb, v)
        for j in range(64):
            for b in range(nb):
                out[j, w0 + b] = v[j * _LANES + b]


@njit(cache=True)
def _planes_pairs_kernel(x: np.ndarray, planes: np.ndarray, pairs: np.ndarray) -> None:
    v = np.empty(64 * _LANES, np.int64)
    width = planes.shape[1]
    for w0 in range(0, width, _LANES):
        nb = min(_LANES, width - w0)
        _transpose_block(x, w0, nb, v)
        for j in range(64):
            for b in range(nb):
                planes[j, w0 + b] = v[j * _LANES + b]
        for i in range(pairs.shape[0]):
            for b in range(nb):
                pairs[i, w0 + b] = ~(v[(2 * i + 1) * _LANES + b] | v[2 * i * _LANES + b])


def planes(x: torch.Tensor) -> torch.Tensor:
    """:func:`protocols.ring.to_planes`: bit planes ``(64, ceil(N / 64))`` of ``x``."""
    flat = x.reshape(-1).contiguous()
    out = torch.empty((64, -(-flat.numel() // 64)), dtype=torch.int64)
    _planes_kernel(flat.numpy(), out.numpy())
    return out


def planes_and_pairs(x: torch.Tensor, n_pairs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The dealer's ``rbits`` (the planes of ``x``) and ``rpairs`` (``~hi & ~lo`` of
    the planes ``2i + 1, 2i``, ``i < n_pairs``) in one pass."""
    flat = x.reshape(-1).contiguous()
    w = -(-flat.numel() // 64)
    out = torch.empty((64, w), dtype=torch.int64)
    pairs = torch.empty((n_pairs, w), dtype=torch.int64)
    _planes_pairs_kernel(flat.numpy(), out.numpy(), pairs.numpy())
    return out, pairs


@njit(cache=True)
def _level0_kernel(
    c_elems: np.ndarray,
    r: np.ndarray,
    pairs: np.ndarray,
    lead: bool,
    g: np.ndarray,
    p: np.ndarray,
    c_top: np.ndarray,
) -> None:
    n_pairs = pairs.shape[0]
    top = 2 * n_pairs  # leaf 62, with the padding (G, P) = (0, 1) as its high neighbour
    ld = np.int64(-1) if lead else np.int64(0)  # party 0 adds the public terms
    v = np.empty(64 * _LANES, np.int64)
    width = g.shape[1]
    for w0 in range(0, width, _LANES):
        nb = min(_LANES, width - w0)
        _transpose_block(c_elems, w0, nb, v)
        for b in range(nb):
            c_top[w0 + b] = v[63 * _LANES + b]
        for i in range(n_pairs):
            for b in range(nb):
                w = w0 + b
                ch = v[(2 * i + 1) * _LANES + b]
                cl = v[2 * i * _LANES + b]
                rh = r[2 * i + 1, w]
                rl = r[2 * i, w]
                m = pairs[i, w]
                chl = ch & cl
                g[i, w] = (ch & rh) ^ (chl & rl) ^ (cl & m) ^ ((ch ^ chl) & ld)
                p[i, w] = (ch & rl) ^ (cl & rh) ^ m ^ ((ch ^ cl ^ chl) & ld)
        for b in range(nb):  # leaf 0 carries the carry-in: its generate is c_0 | nr_0
            w = w0 + b
            c0 = v[b]
            c1 = v[_LANES + b]
            nc0 = ~c0
            rh = r[1, w]
            g[0, w] = (c1 & rh) ^ (c1 & nc0 & r[0, w]) ^ (c0 & rh) ^ (nc0 & pairs[0, w])
            g[0, w] ^= c0 & ld
            c62 = v[top * _LANES + b]
            r62 = r[top, w]
            g[n_pairs, w] = (c62 & r62) ^ (c62 & ld)
            p[n_pairs, w] = r62 ^ ((c62 ^ np.int64(-1)) & ld)


def level0(
    opened_c: torch.Tensor, r: torch.Tensor, pairs: torch.Tensor, lead: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Level 0 of the tree straight from the opened ring elements ``c``: the shares of the
    32 (G, P) planes (as :func:`protocols.compare._level0` of ``to_planes(c)``) and the
    public plane of c's top bit."""
    flat = opened_c.reshape(-1).contiguous()
    w = r.shape[1]
    nodes = pairs.shape[0] + 1
    g = torch.empty((nodes, w), dtype=torch.int64)
    p = torch.empty((nodes, w), dtype=torch.int64)
    top = torch.empty((w,), dtype=torch.int64)
    _level0_kernel(
        flat.numpy(),
        r.contiguous().numpy(),
        pairs.contiguous().numpy(),
        lead,
        g.numpy(),
        p.numpy(),
        top.numpy(),
    )
    return g, p, top


@njit(cache=True)
def _mask_kernel(
    g: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray, bb: np.ndarray, out: np.ndarray
) -> None:
    both = out.shape[0] == 3
    for i in range(a.shape[0]):
        for w in range(a.shape[1]):
            out[0, i, w] = p[2 * i + 1, w] ^ a[i, w]
            out[1, i, w] = g[2 * i, w] ^ b[i, w]
            if both:
                out[2, i, w] = p[2 * i, w] ^ bb[i, w]


def mask_level(
    g: torch.Tensor, p: torch.Tensor, a: torch.Tensor, b: torch.Tensor, bb: torch.Tensor | None
) -> torch.Tensor:
    """The masked planes an AND level opens, ``(P_hi ^ a, G_lo ^ b[, P_lo ^ bb])``, as one
    ``(2 or 3, q, W)`` tensor (``bb`` None: the root, whose P is not needed)."""
    q, w = a.shape
    out = torch.empty((2 if bb is None else 3, q, w), dtype=torch.int64)
    _mask_kernel(_np(g), _np(p), _np(a), _np(b), _np(a if bb is None else bb), out.numpy())
    return out


@njit(cache=True)
def _combine_kernel(
    g: np.ndarray,
    d: np.ndarray,
    e: np.ndarray,
    f: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    bb: np.ndarray,
    c: np.ndarray,
    cc: np.ndarray,
    lead: bool,
    both: bool,
    g_out: np.ndarray,
    p_out: np.ndarray,
) -> None:
    for i in range(a.shape[0]):
        for w in range(a.shape[1]):
            di = d[i, w]
            ai = a[i, w]
            z = c[i, w] ^ (di & b[i, w]) ^ (e[i, w] & ai)
            if lead:
                z ^= di & e[i, w]
            g_out[i, w] = g[2 * i + 1, w] ^ z
            if both:
                y = cc[i, w] ^ (di & bb[i, w]) ^ (f[i, w] & ai)
                if lead:
                    y ^= di & f[i, w]
                p_out[i, w] = y


def combine_level(
    g: torch.Tensor, opened: list[torch.Tensor], m: dict[str, torch.Tensor], lvl: int, lead: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The next level's ``(G, P)`` shares from the opened planes of level ``lvl``:
    ``G = G_hi ^ (P_hi & G_lo)``, ``P = P_hi & P_lo`` (None at the root)."""
    a, b, c = m[f"a{lvl}"], m[f"b{lvl}"], m[f"c{lvl}"]
    both = len(opened) == 3
    bb = m[f"bb{lvl}"] if both else a
    cc = m[f"cc{lvl}"] if both else c
    f = opened[2] if both else opened[0]
    g_out = torch.empty(a.shape, dtype=torch.int64)
    p_out = torch.empty(a.shape if both else (0, 0), dtype=torch.int64)
    _combine_kernel(
        _np(g),
        _np(opened[0]),
        _np(opened[1]),
        _np(f),
        _np(a),
        _np(b),
        _np(bb),
        _np(c),
        _np(cc),
        lead,
        both,
        g_out.numpy(),
        p_out.numpy(),
    )
    return g_out, (p_out if both else None)


@njit(cache=True)
def _finish_kernel(
    k: np.ndarray,
    m_a: np.ndarray,
    lead: bool,
    with_relu: bool,
    c: np.ndarray,
    r_a: np.ndarray,
    x: np.ndarray,
    bit: np.ndarray,
    y: np.ndarray,
) -> None:
    for i in range(m_a.shape[0]):
        s = -((k[i >> 6] >> (i & 63)) & 1)  # 0 or all ones
        v = (m_a[i] ^ s) - s
        if lead:
            v -= s
        bit[i] = v
        if with_relu:
            u = c[i] * m_a[i] - r_a[i]
            y[i] = ((u ^ s) - s) + (x[i] & s)


def finish(
    k: torch.Tensor,
    m: dict[str, torch.Tensor],
    lead: bool,
    opened_c: torch.Tensor,
    x: torch.Tensor,
    with_relu: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Shares of the bit ``K = k + (1 - 2k) alpha`` and (``with_relu``) of ``x K``, from
    the opened word bits ``k``; see :func:`protocols.compare._sign`."""
    shape = tuple(m["m_a"].shape)
    m_a = m["m_a"].reshape(-1).contiguous()
    bit = torch.empty(shape, dtype=torch.int64)
    if with_relu:
        y = torch.empty(shape, dtype=torch.int64)
        c, r_a, xv = (t.reshape(-1).contiguous() for t in (opened_c, m["r_a"], x))
    else:
        y = c = r_a = xv = torch.empty((0,), dtype=torch.int64)
    _finish_kernel(
        k.contiguous().numpy(),
        m_a.numpy(),
        lead,
        with_relu,
        c.numpy(),
        r_a.numpy(),
        xv.numpy(),
        bit.reshape(-1).numpy(),
        y.reshape(-1).numpy(),
    )
    return bit, (y if with_relu else None)


@njit(cache=True)
def _alpha_kernel(
    fa: np.ndarray, r: np.ndarray, with_relu: bool, alpha: np.ndarray, r_a: np.ndarray
) -> None:
    for i in range(alpha.shape[0]):
        a = (fa[i >> 6] >> (i & 63)) & 1
        alpha[i] = a
        if with_relu:
            r_a[i] = r[i] * a


def alpha_items(
    fa: torch.Tensor, r: torch.Tensor, with_relu: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The dealer's ``m_a`` (the bits of ``fa`` as 0/1 ring elements, shaped like ``r``)
    and, ``with_relu``, ``r_a = r * m_a``."""
    shape = tuple(r.shape)
    alpha = torch.empty(shape, dtype=torch.int64)
    r_a = torch.empty(shape if with_relu else (0,), dtype=torch.int64)
    _alpha_kernel(
        fa.contiguous().numpy(),
        r.reshape(-1).contiguous().numpy(),
        with_relu,
        alpha.reshape(-1).numpy(),
        r_a.reshape(-1).numpy(),
    )
    return alpha, (r_a if with_relu else None)
