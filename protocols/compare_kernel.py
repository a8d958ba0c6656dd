"""The carry-tree comparison's local work (:mod:`protocols.compare`) as compiled (numba)
kernels, bit for bit the torch code they replace.

Why: on the tensors a training step compares (16k elements a ReLU) the torch version spent
its time in call overhead, over a hundred small torch ops per party (the transpose's six
mask-and-shift passes, level 0's strided slices, three XORs and ANDs per AND share, the
bit unpacking and the final sign arithmetic), and on 10^6 elements in streaming the same
planes through memory once per op. Each kernel here makes one pass: the 64x64 bit
transpose runs on blocks of 64 groups side by side held in L1 (the same six block swaps as
:func:`protocols.ring.transpose64`), level 0 is computed straight from the transposed
words, an AND level masks (or combines) all its planes in one loop, and the last step
turns the opened bit into the shares of the bit and of ``relu(x)`` per element; the
dealer's ``rbits``/``rpairs`` and ``m_a``/``r_a`` take one pass each. The messages, their
layout and every share are unchanged (tests/test_compare_kernel.py checks them against the
torch reference).

Every loop indexes 1-d slices by its bare loop variable: numba's ``a[i, w0 + b]`` on 2-d
arrays measured ~10x slower (it does not vectorise).

Everything runs on int64 (two's complement: ``^ & | ~ << * + -`` give the bits uint64
would, ``>>`` is arithmetic and its sign bits always land outside the swap mask), so no
uint64/int64 promotion to float can creep in. No branch or index depends on a secret:
branches are on public sizes and on the party's rank, and party 0's public terms are
masked in (``& ld``). Kernels compile on first use and are cached on disk
(``cache=True``, in ``__pycache__`` beside this file): measured cold (no cache) ~8 s for
the six kernels of a first ReLU, ~2 s each for the two that inline the transpose; warm, the
first ReLU of a process costs ~0.75 s, ~0.65 s of it numba's one-time start-up.
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
    """The numpy view of an int64 tensor (a contiguous copy first if it is not)."""
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
            lo = v[k * _LANES : (k + 1) * _LANES]
            hi = v[(k + j) * _LANES : (k + j + 1) * _LANES]
            for b in range(nb):
                t = ((lo[b] >> j) ^ hi[b]) & mask
                hi[b] ^= t
                lo[b] ^= t << j


@njit(cache=True, inline="always")
def _transpose_block(x: np.ndarray, w0: int, nb: int, v: np.ndarray) -> None:
    """``v[j * _LANES + b]`` := bit plane j of the 64 elements of group ``w0 + b`` of
    ``x`` (zeros past the end of ``x``), for the lanes ``b < nb``."""
    n = x.shape[0]
    for b in range(nb):
        start = 64 * (w0 + b)
        if start + 64 <= n:
            src = x[start : start + 64]
            for k in range(64):
                v[k * _LANES + b] = src[k]
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


@njit(cache=True, inline="always")
def _store_rows(v: np.ndarray, j0: int, j1: int, nb: int, out: np.ndarray, w0: int) -> None:
    """``out[j, w0 + b] = v[j * _LANES + b]`` for rows ``j0 <= j < j1`` and lanes b < nb.
    (Every loop in this module indexes 1-d slices by the bare loop variable: numba's
    ``a[i, w0 + b]`` measured ~10x slower, it does not vectorise.)"""
    for j in range(j0, j1):
        dst = out[j, w0 : w0 + nb]
        src = v[j * _LANES : j * _LANES + nb]
        for b in range(nb):
            dst[b] = src[b]


@njit(cache=True)
def _planes_pairs_kernel(x: np.ndarray, planes: np.ndarray, pairs: np.ndarray) -> None:
    v = np.empty(64 * _LANES, np.int64)
    width = planes.shape[1]
    for w0 in range(0, width, _LANES):
        nb = min(_LANES, width - w0)
        _transpose_block(x, w0, nb, v)
        _store_rows(v, 0, 64, nb, planes, w0)
        for i in range(pairs.shape[0]):
            hi = v[(2 * i + 1) * _LANES : (2 * i + 2) * _LANES]
            lo = v[2 * i * _LANES : (2 * i + 1) * _LANES]
            dst = pairs[i, w0 : w0 + nb]
            for b in range(nb):
                dst[b] = ~(hi[b] | lo[b])


def planes(x: torch.Tensor) -> torch.Tensor:
    """:func:`protocols.ring.to_planes`: bit planes ``(64, ceil(N / 64))`` of ``x``."""
    return planes_and_pairs(x, 0)[0]


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
        w1 = w0 + nb
        _transpose_block(c_elems, w0, nb, v)
        top_row = c_top[0, w0:w1]
        top_src = v[63 * _LANES : 64 * _LANES]
        for b in range(nb):
            top_row[b] = top_src[b]
        for i in range(n_pairs):
            chs = v[(2 * i + 1) * _LANES : (2 * i + 2) * _LANES]
            cls = v[2 * i * _LANES : (2 * i + 1) * _LANES]
            rhs, rls, ms = r[2 * i + 1, w0:w1], r[2 * i, w0:w1], pairs[i, w0:w1]
            gs, ps = g[i, w0:w1], p[i, w0:w1]
            for b in range(nb):
                ch, cl, rh, rl, m = chs[b], cls[b], rhs[b], rls[b], ms[b]
                chl = ch & cl
                gs[b] = (ch & rh) ^ (chl & rl) ^ (cl & m) ^ ((ch ^ chl) & ld)
                ps[b] = (ch & rl) ^ (cl & rh) ^ m ^ ((ch ^ cl ^ chl) & ld)
        # leaf 0 carries the carry-in: its generate is c_0 | nr_0
        c0s, c1s = v[0:_LANES], v[_LANES : 2 * _LANES]
        r0s, r1s, m0s, g0s = r[0, w0:w1], r[1, w0:w1], pairs[0, w0:w1], g[0, w0:w1]
        c62s = v[top * _LANES : (top + 1) * _LANES]
        r62s, gls, pls = r[top, w0:w1], g[n_pairs, w0:w1], p[n_pairs, w0:w1]
        for b in range(nb):
            c0, c1, rh = c0s[b], c1s[b], r1s[b]
            nc0 = ~c0
            g0s[b] = (c1 & rh) ^ (c1 & nc0 & r0s[b]) ^ (c0 & rh) ^ (nc0 & m0s[b]) ^ (c0 & ld)
            c62, r62 = c62s[b], r62s[b]
            gls[b] = (c62 & r62) ^ (c62 & ld)
            pls[b] = r62 ^ (~c62 & ld)


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
    top = torch.empty((1, w), dtype=torch.int64)
    _level0_kernel(
        flat.numpy(),
        r.contiguous().numpy(),
        pairs.contiguous().numpy(),
        lead,
        g.numpy(),
        p.numpy(),
        top.numpy(),
    )
    return g, p, top[0]


@njit(cache=True)
def _mask_kernel(
    g: np.ndarray, p: np.ndarray, a: np.ndarray, b: np.ndarray, bb: np.ndarray, out: np.ndarray
) -> None:
    for i in range(a.shape[0]):
        d, e, ph, gl, ai, bi = out[0, i], out[1, i], p[2 * i + 1], g[2 * i], a[i], b[i]
        for w in range(a.shape[1]):
            d[w] = ph[w] ^ ai[w]
            e[w] = gl[w] ^ bi[w]
        if out.shape[0] == 3:
            f, pl, bbi = out[2, i], p[2 * i], bb[i]
            for w in range(a.shape[1]):
                f[w] = pl[w] ^ bbi[w]


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
    ld = np.int64(-1) if lead else np.int64(0)  # party 0 adds d & e
    for i in range(a.shape[0]):
        di, ei, ai, bi, ci, gh, go = d[i], e[i], a[i], b[i], c[i], g[2 * i + 1], g_out[i]
        for w in range(a.shape[1]):
            go[w] = gh[w] ^ ci[w] ^ (di[w] & bi[w]) ^ (ei[w] & ai[w]) ^ (di[w] & ei[w] & ld)
        if both:
            fi, bbi, cci, po = f[i], bb[i], cc[i], p_out[i]
            for w in range(a.shape[1]):
                po[w] = cci[w] ^ (di[w] & bbi[w]) ^ (fi[w] & ai[w]) ^ (di[w] & fi[w] & ld)


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
    n = m_a.shape[0]
    ld = np.int64(-1) if lead else np.int64(0)  # party 0 subtracts s once more
    s = np.empty(n, np.int64)  # -k per element: 0 or all ones
    for w in range(k.shape[0]):
        kw = k[w]
        row = s[64 * w : min(n, 64 * w + 64)]
        for t in range(row.shape[0]):
            row[t] = -((kw >> t) & 1)
    for i in range(n):
        bit[i] = (m_a[i] ^ s[i]) - s[i] - (s[i] & ld)
    if with_relu:
        for i in range(n):
            si = s[i]
            y[i] = ((c[i] * m_a[i] - r_a[i]) ^ si) - si + (x[i] & si)


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
