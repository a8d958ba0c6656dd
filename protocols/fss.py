"""Two-party function secret sharing gates: 1-round DReLU, ReLU and truncation.

Each gate opens its input once, masked by the dealer's ``r``, and evaluates DCF keys
(:mod:`protocols.dcf`, BCG+21) on the public masked value; the dealer deals the keys and
the derived RING corrections as material (:func:`drelu_fss_spec`, :func:`relu_fss_spec`,
:func:`trunc_fss_spec`).

**DReLU** (BCG+21's DReLU/ReLU gates, which need a single DCF on n-1 bits; AriaNN, Ryffel
et al., PETS 2022, for the 1-round sign test from a mask opened once). The dealer deals a
uniform ``r`` (RING), ``b = msb(r)`` (RING, derived) and a DCF key on 63 bits at ``alpha =
r mod 2^63`` with payload ``1 - 2b``. Steps:

1. open ``x_hat = x + r`` (1 round, 8 bytes per element per party);
2. with ``a = msb(x_hat)``, ``y = x_hat mod 2^63``: ``msb(x) = a ^ b ^ [y < r mod 2^63]``
   (the borrow out of the low 63 bits of ``x_hat - r``), and ``b ^ w = b + (1-2b) w``,
   so the DCF output on y plus the share of b is a share of ``c = b ^ w``; then
   ``[x >= 0] = 1 - c`` if ``a = 0`` and ``c`` if ``a = 1``. Exact for every int64 x.

**ReLU**: the same DCF with the payload vector ``(1-2b, (1-2b) r)`` and the derived items
``b`` and ``b r`` gives shares of ``d = [x >= 0]`` and of ``d r`` from one key; then
``relu(x) = d x = d x_hat - d r`` is local (x_hat is public). 1 round, exact.

**Truncation** (BCG+21's logical/arithmetic right-shift gates, a DCF on n bits for the
wrap of ``x_hat - r`` and one on the low bits for the borrow, generalised here from 2^s to
any divisor; a public offset B makes the signed input non-negative). Public ``1 < d <= 2^62``; offset ``B =
d floor(2^63/d)`` (a multiple of d in ``(2^63 - d, 2^63]``). The dealer deals ``r``
uniform (RING), ``floor(r/d)`` (RING, derived; all divisions and residues here are of the
unsigned 64-bit reading) and two DCF keys: DCF1 on 64 bits at ``alpha = r`` with payload
``q3 = floor(2^64/d)``, DCF2 on ``k = bitlength(d-1)`` bits at ``alpha = r mod d`` with
payload 1. Steps:

1. open ``x_hat = x + B + r`` (1 round, 8 bytes per element per party);
2. locally ``q1 = floor(x_hat/d)``, ``m1 = x_hat mod d``; DCF1 on x_hat gives shares of
   ``w q3`` with ``w = [x_hat < r]``; DCF2 on m1 gives shares of ``c = [m1 < r mod d]``;
3. ``y = q1 - floor(r/d) + w q3 - c - B/d + delta`` with ``delta = 0`` if d is a power
   of two and 1 otherwise.

Error bound (proof). Let ``x' = x + B``; assume ``0 <= x' < 2^64`` (true for every int64
``x >= -B``, so for every ``|x| < 2^62``, and for all of int64 when d is a power of two).
Then ``x_hat = x' + r - 2^64 w`` exactly, with ``w = [x' + r >= 2^64] = [x_hat < r]``.
Write ``x_hat = q1 d + m1``, ``r = q2 d + m2``, ``2^64 = q3 d + m3`` (all residues in
``[0, d)``) and ``m' = m1 - m2 + c d`` in ``[0, d)``. Then
``x' = (q1 - q2 + w q3 - c) d + (m' + w m3)`` with ``0 <= m' + w m3 <= 2d - 2``, so
``floor(x'/d) = q1 - q2 + w q3 - c + e`` with ``e = [w = 1 and m' + m3 >= d]`` in {0, 1},
and ``e = 0`` when ``m3 = 0`` (d a power of two). Since B is a multiple of d,
``floor(x/d) = floor(x'/d) - B/d``, hence **y = floor(x/d) + delta - e**: exactly
``floor(x/d)`` for powers of two (BCG+21's exact shift), and ``floor(x/d)`` or
``floor(x/d) + 1`` otherwise, like the SecureML local truncation but *without* any
failure probability: no wrap-around can occur for inputs in the stated range.

Costs per element (N elements, 2 parties; W(n, m) the DCF key words above), asserted
exactly in the tests through :func:`fss_cost`:

========== ====== ============== ==================================== =====================
protocol   rounds online bytes   key bytes per party                  dealer bytes (total)
                  per party
========== ====== ============== ==================================== =====================
DReLU      1      8              8 W(63,1) = 1552                     8 + 2 * 1552 = 3112
ReLU       1      8              8 W(63,2) = 2064                     16 + 2 * 2064 = 4144
trunc d    1      8              8 (W(64,1) + W(k,1)) = 1576 + 8 W(k,1) 8 + 2 * key bytes
========== ====== ============== ==================================== =====================

``W(k, 1) = 3k + ceil(k/32) + 3``: for d = 1000 (k = 10) 34 words, so 1848 key bytes per
party and 3704 dealer bytes per element; for d = 2^16 (k = 16) 52 words, 1992 and 3992.
The extra 8 (16 for ReLU) dealer bytes per element are the derived RING corrections
(``b``; ``b`` and ``b r``; ``floor(r/d)``) sent to the last party. Divisor 1 costs nothing.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod

import numpy as np
import torch
from numba import njit

from .context import PartyContext, Share
from .dcf import dcf_eval, dcf_key_words, dcf_keygen, dcf_seed_bytes, i64, u64
from .material import Item, KeyGen, Kind, MaterialSpec
from .prg import Prg
from .sharing import open_ring

_LOW63 = (1 << 63) - 1
MAX_DIVISOR = 1 << 62
"""The largest divisor :func:`truncate_fss` takes (its offset ``B`` must stay in range)."""


def _require_two(n_parties: int) -> None:
    if n_parties != 2:
        raise ValueError(f"the FSS protocols are 2-party only, got {n_parties} parties")


def _numel(shape: tuple[int, ...]) -> int:
    return prod(shape)


def _key_pair(parts: list[tuple[torch.Tensor, torch.Tensor]]) -> list[dict[str, torch.Tensor]]:
    return [{f"k{j}": kp[rank] for j, kp in enumerate(parts)} for rank in range(2)]


def _sign_keygen(with_relu: bool) -> KeyGen:
    def keygen(
        values: dict[str, torch.Tensor], n_parties: int, prg: Prg, label: tuple[int, int]
    ) -> list[dict[str, torch.Tensor]]:
        _require_two(n_parties)
        r = u64(values["r"].reshape(-1)).view(np.int64)
        beta = np.empty((r.size, 2 if with_relu else 1), np.int64)  # numpy: tiny ops cost less
        np.subtract(1, 2 * u64(values["rb"].reshape(-1)).view(np.int64), out=beta[:, 0])
        if with_relu:  # (-1)^b and (-1)^b r, wrapping as the ring does
            np.multiply(beta[:, 0], r, out=beta[:, 1])
        seed = prg.random_bytes(dcf_seed_bytes(r.size), label)
        alpha = torch.from_numpy(r & np.int64(_LOW63))
        return _key_pair([dcf_keygen(alpha, torch.from_numpy(beta), 63, seed)])

    return keygen


@lru_cache(maxsize=256)
def drelu_fss_spec(shape: tuple[int, ...], sub: int = 0) -> MaterialSpec:
    """Mask ``r`` (RING), ``rb = msb(r)`` (RING, derived) and the 63-bit DCF key ``k0``."""
    N = _numel(shape)
    items = (
        Item("r", shape),
        Item("rb", shape, derived=True),
        Item("k0", (dcf_key_words(63, 1), N), kind=Kind.KEY),
    )
    return MaterialSpec(
        "drelu_fss", sub, items, lambda s: {"rb": (s["r"] < 0).long()}, _sign_keygen(False)
    )


@lru_cache(maxsize=256)
def relu_fss_spec(shape: tuple[int, ...], sub: int = 0) -> MaterialSpec:
    """Like :func:`drelu_fss_spec` plus ``rbr = msb(r) * r``; the key has payload 2."""
    N = _numel(shape)
    items = (
        Item("r", shape),
        Item("rb", shape, derived=True),
        Item("rbr", shape, derived=True),
        Item("k0", (dcf_key_words(63, 2), N), kind=Kind.KEY),
    )

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b = (s["r"] < 0).long()
        return {"rb": b, "rbr": b * s["r"]}

    return MaterialSpec("relu_fss", sub, items, derive, _sign_keygen(True))


def _check_divisor(divisor: int) -> None:
    if not isinstance(divisor, int) or not 1 <= divisor <= MAX_DIVISOR:
        raise ValueError(f"the divisor is an integer in [1, 2^62], got {divisor!r}")


def _residue_bits(divisor: int) -> int:
    """Bits of DCF2's input ``x_hat mod d`` (at least 1)."""
    return max(1, (divisor - 1).bit_length())


def _wrap(v: int) -> int:
    return ((v + (1 << 63)) % (1 << 64)) - (1 << 63)


def _udivmod(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Unsigned 64-bit ``(x // d, x % d)`` of an int64 tensor's bit patterns."""
    u = u64(x)
    q, rem = np.divmod(u, np.uint64(divisor))
    return i64(q).reshape(x.shape), i64(rem).reshape(x.shape)


@lru_cache(maxsize=256)
def trunc_fss_spec(shape: tuple[int, ...], divisor: int, sub: int = 0) -> MaterialSpec:
    """Mask ``r``, ``rq = floor(r/d)`` (unsigned; derived), DCF1 key ``k0`` (64 bits at r,
    payload floor(2^64/d)) and DCF2 key ``k1`` (k bits at r mod d, payload 1)."""
    _check_divisor(divisor)
    N = _numel(shape)
    k = _residue_bits(divisor)
    q3 = _wrap((1 << 64) // divisor)
    items = (
        Item("r", shape),
        Item("rq", shape, derived=True),
        Item("k0", (dcf_key_words(64, 1), N), kind=Kind.KEY),
        Item("k1", (dcf_key_words(k, 1), N), kind=Kind.KEY),
    )

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"rq": _udivmod(s["r"], divisor)[0]}

    def keygen(
        values: dict[str, torch.Tensor], n_parties: int, prg: Prg, label: tuple[int, int]
    ) -> list[dict[str, torch.Tensor]]:
        _require_two(n_parties)
        r = values["r"].reshape(-1)
        n = r.numel()
        seed = prg.random_bytes(2 * dcf_seed_bytes(n), label)
        half = dcf_seed_bytes(n)
        wrap_key = dcf_keygen(r, torch.full((n, 1), q3, dtype=torch.int64), 64, seed[:half])
        rem = _udivmod(r, divisor)[1]
        low_key = dcf_keygen(rem, torch.ones((n, 1), dtype=torch.int64), k, seed[half:])
        return _key_pair([wrap_key, low_key])

    return MaterialSpec("trunc_fss", sub, items, derive, keygen)


# --------------------------------------------------------------------------------------
# protocols


async def _open_masked(
    ctx: PartyContext, step: str, x: Share, r: torch.Tensor, offset: int = 0
) -> tuple[torch.Tensor, int]:
    value = x.value + r
    if offset and ctx.rank == 0:
        value = value + _wrap(offset)
    (x_hat,), depth = await open_ring(ctx, step, [value], x.depth)
    return x_hat, depth


async def _sign(ctx: PartyContext, x: Share, with_relu: bool, sub: int) -> tuple[Share, Share]:
    _require_two(ctx.n_parties)
    shape = tuple(x.value.shape)
    spec = relu_fss_spec(shape, sub) if with_relu else drelu_fss_spec(shape, sub)
    mat = await ctx.material(spec)
    x_hat, depth = await _open_masked(ctx, f"fss_sign{sub}", x, mat["r"])
    flat = x_hat.reshape(-1)
    m = 2 if with_relu else 1
    out = dcf_eval(ctx.rank, mat["k0"], flat & _LOW63, 63, m)
    d = torch.empty(shape, dtype=torch.int64)
    z = torch.empty(shape, dtype=torch.int64) if with_relu else d
    rbr, r = (mat["rbr"], mat["r"]) if with_relu else (d, d)
    x_hat_, rb_, rbr_, r_ = (u64(t.reshape(-1)).view(np.int64) for t in (x_hat, mat["rb"], rbr, r))
    n = x_hat_.size  # the kernel does not check bounds: every operand has n elements
    if rb_.size != n or rbr_.size != n or r_.size != n or tuple(out.shape) != (n, m):
        raise ValueError(f"FSS sign: material of {rb_.size} elements for {n} opened values")
    _sign_finish(
        x_hat_,
        rb_,
        rbr_,
        r_,
        out.numpy(),
        1 if ctx.rank == 0 else 0,
        z.numpy().reshape(-1),
        d.numpy().reshape(-1),
    )
    return Share(z, depth), Share(d, depth)


@njit(cache=True)
def _sign_finish(
    x_hat: np.ndarray,
    rb: np.ndarray,
    rbr: np.ndarray,
    r: np.ndarray,
    out: np.ndarray,
    lead: int,
    z: np.ndarray,
    d: np.ndarray,
) -> None:
    """The sign's shares from the DCF's ``out`` (``(N, m)``), element by element in one
    compiled pass (~7 against ~36 us of torch calls on 8 elements): ``c = rb + out0`` is a
    share of ``b ^ w``, ``[x >= 0] = msb(x_hat) ? c : lead - c``; with ``m = 2`` also
    ``cr = rbr + out1`` (a share of ``(b ^ w) r``) and ``relu = d x_hat - (msb ? cr : r - cr)``.
    Ring arithmetic: int64 wraps."""
    m = out.shape[1]
    for i in range(x_hat.size):
        neg = x_hat[i] < 0  # the msb of x_hat, public
        c = rb[i] + out[i, 0]
        di = c if neg else lead - c
        d[i] = di
        if m == 2:
            cr = rbr[i] + out[i, 1]
            z[i] = di * x_hat[i] - (cr if neg else r[i] - cr)


async def drelu_fss(ctx: PartyContext, x: Share, *, sub: int = 0) -> Share:
    """Arithmetic share of ``[x >= 0]`` (0/1) for every signed int64 x; 1 round, exact."""
    bit, _ = await _sign(ctx, x, False, sub)
    return bit


async def relu_fss(ctx: PartyContext, x: Share, *, sub: int = 0) -> tuple[Share, Share]:
    """``(relu(x), drelu(x))`` from one DCF key with a 2-word payload; 1 round, exact."""
    return await _sign(ctx, x, True, sub)


async def truncate_fss(ctx: PartyContext, x: Share, divisor: int, *, sub: int = 0) -> Share:
    """``floor(x/d)`` (d a power of two) or ``floor(x/d) + {0, 1}`` (other d) for every
    int64 ``x >= -d floor(2^63/d)`` (so every ``|x| < 2^62``); 1 round. See module doc."""
    _require_two(ctx.n_parties)
    _check_divisor(divisor)
    if divisor == 1:
        return x
    shape = tuple(x.value.shape)
    mat = await ctx.material(trunc_fss_spec(shape, divisor, sub))
    base = divisor * ((1 << 63) // divisor)
    x_hat, depth = await _open_masked(ctx, f"fss_trunc{sub}", x, mat["r"], base)
    flat = x_hat.reshape(-1)
    q1, m1 = _udivmod(flat, divisor)
    w_term = dcf_eval(ctx.rank, mat["k0"], flat, 64, 1)[:, 0]
    below = dcf_eval(ctx.rank, mat["k1"], m1, _residue_bits(divisor), 1)[:, 0]
    y = w_term - below
    if ctx.rank == 0:
        pow2 = divisor & (divisor - 1) == 0
        y = y + q1 - (base // divisor) + (0 if pow2 else 1)
    return Share(y.reshape(shape) - mat["rq"], depth)


# --------------------------------------------------------------------------------------
# costs


def fss_key_bytes(kind: str, divisor: int | None = None) -> int:
    """Key bytes per element that the dealer sends EACH party."""
    if kind == "drelu":
        return 8 * dcf_key_words(63, 1)
    if kind == "relu":
        return 8 * dcf_key_words(63, 2)
    if kind == "trunc":
        if divisor is None:
            raise ValueError("trunc costs need the divisor")
        _check_divisor(divisor)
        if divisor == 1:
            return 0
        return 8 * (dcf_key_words(64, 1) + dcf_key_words(_residue_bits(divisor), 1))
    raise ValueError(f"unknown FSS protocol {kind!r} (drelu, relu or trunc)")


def fss_cost(kind: str, numel: int, divisor: int | None = None) -> tuple[int, int, int]:
    """``(online rounds, online bytes sent by each party, dealer bytes in total)`` of one
    2-party FSS ``kind`` (``"drelu"``, ``"relu"``, ``"trunc"``) on ``numel`` elements."""
    key = fss_key_bytes(kind, divisor)
    if kind == "trunc" and divisor == 1:
        return 0, 0, 0
    corrections = 16 if kind == "relu" else 8
    return 1, 8 * numel, numel * (corrections + 2 * key)
