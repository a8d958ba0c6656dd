"""Secure sign test: DReLU as an arithmetic share of the bit ``[x >= 0]``, and ReLU.

Protocol: a dealer-assisted masked comparison with a log-depth carry circuit on XOR-shared
bits, for any number n >= 2 of parties. It follows the edaBit idea (Escudero, Ghosh,
Keller, Rachuri, Scholl, "Improved primitives for MPC over mixed arithmetic-binary
circuits", CRYPTO 2020): the dealer deals a random ring element ``r`` both as arithmetic
shares and as XOR-shared bits, so the parties can open ``c = x + r`` and compute the sign
of ``x = c - r`` as a binary circuit in which ``c`` is public. The carry uses the
parallel-prefix (Kogge-Stone / Brent-Kung) generate/propagate combination, only its
reduction tree, since only the carry into the top bit is needed.

Steps (l = 64 ring bits):

1. Open ``c = x + r`` (1 round; ReLU also opens ``eps = x - a`` in the same message).
2. Locally: ``x = c + ~r + 1``, so with ``nr = ~r`` (party 0 flips its bits), per bit
   ``g_j = c_j & nr_j`` and ``p_j = c_j ^ nr_j`` (c is public: no interaction), and the
   carry-in 1 folds into ``g_0 <- g_0 | p_0 = g_0 ^ p_0``.
3. Carry tree over bits 0..62: 63 leaves padded to 64 with the identity ``(G, P) = (0, 1)``;
   each level pairs neighbours: ``G = G_hi ^ (P_hi & G_lo)``, ``P = P_hi & P_lo``, both ANDs
   of a level batched in one round with XOR Beaver triples that share the mask of
   ``P_hi``; the last level needs only ``G``. 6 levels = 6 rounds.
4. ``msb = c_63 ^ nr_63 ^ carry`` and ``[x >= 0] = 1 ^ msb``, XOR-shared.
5. Bit to arithmetic with a dealer daBit ``(rb as bits, rb as ring)``: open
   ``e = bit ^ rb`` (1 round, 1 bit per element) and set ``bit = e + rb - 2 e rb``
   (party 0 adds ``e``).

ReLU ``x * bit`` costs no extra round: the dealer also deals ``a`` and ``a * rb``; ``eps =
x - a`` is opened in step 1, so ``x * rb = eps * rb + a * rb`` is local and, after step 5,
``x * bit = e * x + (1 - 2e) * (x * rb)``.

Measured costs, per element, n parties, each party sending to each of the n-1 others
(bits are packed per message, so totals are ceilings over the whole tensor, see
:func:`drelu_online_bytes`):

* DReLU: 8 online rounds; 8 bytes + 189 bits = 31.625 bytes per peer; dealer sends the
  last party 8 (bits of r) + 188/8 (AND triples) + 8 (daBit) ~ 39.5 bytes.
* ReLU: 8 online rounds (the same as DReLU); 16 bytes + 189 bits = 39.625 bytes per peer;
  dealer +8 bytes.

CrypTen's A2B-adder ReLU: 9 rounds, 232 bytes per party; SecureNN's: 10 rounds, ~704.

Correctness is exact (never a wrong bit) for every x in the ring read as a signed 64-bit
integer: ``c`` is uniform and the circuit computes the top bit of ``c - r`` exactly.
"""

from __future__ import annotations

from math import ceil

import torch

from .context import PartyContext, Share
from .material import Item, MaterialSpec
from .ring import RING_BITS, to_bits
from .sharing import open_bits, open_ring


def tree_pairs(leaves: int = RING_BITS - 1) -> list[int]:
    """Number of (hi, lo) pairs combined at each level of the carry tree."""
    pairs, m = [], leaves
    while m > 1:
        m = (m + 1) // 2
        pairs.append(m)
    return pairs


def drelu_spec(shape: tuple[int, ...], *, with_relu: bool, sub: int = 0) -> MaterialSpec:
    items = [Item("r", shape), Item("rbits", (*shape, RING_BITS), bits=True, derived=True)]
    levels = tree_pairs()
    for lvl, q in enumerate(levels):
        last = lvl == len(levels) - 1
        items += [Item(f"a{lvl}", (*shape, q), bits=True), Item(f"b{lvl}", (*shape, q), bits=True)]
        if not last:
            items.append(Item(f"bb{lvl}", (*shape, q), bits=True))
        items.append(Item(f"c{lvl}", (*shape, q), bits=True, derived=True))
        if not last:
            items.append(Item(f"cc{lvl}", (*shape, q), bits=True, derived=True))
    items += [Item("rb", shape, bits=True), Item("rba", shape, derived=True)]
    if with_relu:
        items += [Item("ax", shape), Item("axrb", shape, derived=True)]

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {"rbits": to_bits(s["r"]), "rba": s["rb"].to(torch.int64)}
        for lvl in range(len(levels)):
            out[f"c{lvl}"] = s[f"a{lvl}"] & s[f"b{lvl}"]
            if f"bb{lvl}" in s:
                out[f"cc{lvl}"] = s[f"a{lvl}"] & s[f"bb{lvl}"]
        if "ax" in s:
            out["axrb"] = s["ax"] * out["rba"]
        return out

    return MaterialSpec("relu" if with_relu else "drelu", sub, tuple(items), derive)


def _and_share(
    rank: int, c: torch.Tensor, d: torch.Tensor, e: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Share of ``u & v`` from opened ``d = u ^ a``, ``e = v ^ b`` and the triple share."""
    z = c ^ (d & b) ^ (e & a)
    return z ^ (d & e) if rank == 0 else z


async def _sign(ctx: PartyContext, x: Share, with_relu: bool) -> tuple[Share, Share | None]:
    shape = tuple(x.value.shape)
    m = await ctx.material(drelu_spec(shape, with_relu=with_relu))
    lead = ctx.rank == 0

    opened = [x.value + m["r"]] + ([x.value - m["ax"]] if with_relu else [])
    values, depth = await open_ring(ctx, "cmp", opened, x.depth)
    c = values[0]

    cb = to_bits(c)
    nr = ~m["rbits"] if lead else m["rbits"]
    g = cb & nr
    p = nr ^ cb if lead else nr
    top_c, top_nr = cb[..., -1], nr[..., -1]
    G = g[..., : RING_BITS - 1].clone()
    P = p[..., : RING_BITS - 1]
    G[..., 0] ^= P[..., 0]

    levels = tree_pairs()
    for lvl, q in enumerate(levels):
        last = lvl == len(levels) - 1
        if G.shape[-1] % 2:
            pad_g = torch.zeros((*shape, 1), dtype=torch.bool)
            pad_p = torch.full((*shape, 1), lead, dtype=torch.bool)
            G, P = torch.cat([G, pad_g], -1), torch.cat([P, pad_p], -1)
        g_lo, g_hi, p_lo, p_hi = G[..., 0::2], G[..., 1::2], P[..., 0::2], P[..., 1::2]
        a, b = m[f"a{lvl}"], m[f"b{lvl}"]
        masked = [p_hi ^ a, g_lo ^ b] + ([] if last else [p_lo ^ m[f"bb{lvl}"]])
        o, depth = await open_bits(ctx, f"and{lvl}", masked, depth)
        G = g_hi ^ _and_share(ctx.rank, m[f"c{lvl}"], o[0], o[1], a, b)
        if not last:
            P = _and_share(ctx.rank, m[f"cc{lvl}"], o[0], o[2], a, m[f"bb{lvl}"])
        if G.shape[-1] != q:
            raise AssertionError("carry tree shape")  # pragma: no cover - internal invariant

    carry = G[..., 0]
    msb = top_nr ^ carry ^ top_c if lead else top_nr ^ carry
    bit = ~msb if lead else msb

    (e,), depth = await open_bits(ctx, "b2a", [bit ^ m["rb"]], depth)
    e64 = e.to(torch.int64)
    arith = (1 - 2 * e64) * m["rba"] + (e64 if lead else 0)
    bit_share = Share(arith, depth)
    if not with_relu:
        return bit_share, None
    eps = values[1]
    x_rb = eps * m["rba"] + m["axrb"]
    y = e64 * x.value + (1 - 2 * e64) * x_rb
    return Share(y, depth), bit_share


async def drelu(ctx: PartyContext, x: Share) -> Share:
    """Arithmetic share of ``[x >= 0]`` (0 or 1, unscaled). 8 rounds; see module doc."""
    bit, _ = await _sign(ctx, x, with_relu=False)
    return bit


async def relu(ctx: PartyContext, x: Share) -> tuple[Share, Share]:
    """``(relu(x), drelu(x))``; the bit is kept for backward. 8 rounds; see module doc."""
    y, bit = await _sign(ctx, x, with_relu=True)
    if bit is None:  # pragma: no cover - with_relu=True always returns the bit
        raise AssertionError("relu lost its bit")
    return y, bit


def drelu_online_bytes(numel: int, n_parties: int, *, with_relu: bool = False) -> int:
    """Closed form of the bytes each party sends in one DReLU/ReLU on ``numel`` elements."""
    per_peer = 8 * numel * (2 if with_relu else 1)
    levels = tree_pairs()
    for lvl, q in enumerate(levels):
        tensors = 2 if lvl == len(levels) - 1 else 3
        per_peer += tensors * ceil(numel * q / 8)
    per_peer += ceil(numel / 8)
    return per_peer * (n_parties - 1)


def drelu_offline_bytes(numel: int, *, with_relu: bool = False) -> int:
    """Closed form of the dealer's per-op correction bytes (sent to the last party)."""
    total = ceil(numel * RING_BITS / 8)  # the bits of r
    levels = tree_pairs()
    for lvl, q in enumerate(levels):
        tensors = 1 if lvl == len(levels) - 1 else 2
        total += tensors * ceil(numel * q / 8)  # AND-triple products
    total += 8 * numel  # daBit, arithmetic side
    return total + (8 * numel if with_relu else 0)  # a * rb for ReLU
