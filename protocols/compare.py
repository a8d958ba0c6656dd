"""Secure sign test: DReLU as an arithmetic share of the bit ``[x >= 0]``, and ReLU.

Protocol: a dealer-assisted masked comparison with a log-depth carry circuit on XOR-shared
bits, for any number n >= 2 of parties. It follows the edaBit idea (Escudero, Ghosh,
Keller, Rachuri, Scholl, "Improved primitives for MPC over mixed arithmetic-binary
circuits", CRYPTO 2020): the dealer deals a random ring element ``r`` both as arithmetic
shares and as XOR-shared bits, so the parties can open ``c = x + r`` and compute the sign
of ``x = c - r`` as a binary circuit in which ``c`` is public. The carry uses the
generate/propagate combination of parallel-prefix adders (Kogge-Stone), reduced to a tree
since only the carry into the top bit is needed. Because ``c`` is public, the first tree
level is a degree-2 polynomial in the bits of ``r`` alone, so the dealer's products of
neighbouring mask bits make it local (the "public operand" trick of masked comparisons).

Packed layout (bit-slicing, :mod:`protocols.ring`): the N elements are cut into groups of
64 (the last padded); bit plane ``j`` of a group is one int64 word whose bit ``i`` is bit
``j`` of element ``64 w + i``. Every tree node is a tensor of planes ``(nodes, ceil(N/64))``
and each ``&``/``^`` handles 64 elements; ``c`` is turned into planes by a 64x64 bit-matrix
transpose (six mask-and-shift steps). The local work (transpose, level 0, each AND level's
masking and combining, the last step; the dealer's planes of r and alpha) runs in the
compiled kernels of :mod:`protocols.compare_kernel`, one pass each, bit for bit the torch
code they replaced (kept as the reference in tests/test_compare_kernel.py). The dealer's bit
material is packed the same way (``Kind.WORDS`` items): a party holds 47.125 bytes of
material per element for DReLU, 55.125 for ReLU (r, its 64 bits, 31 level-0 products, 153
planes of AND triples, alpha as a word bit and as a ring share, and ``r * alpha``).

Steps (l = 64 ring bits):

1. Open ``c = x + r`` (1 round).
2. Locally: ``x = c + ~r + 1``, so with ``nr = ~r = r ^ 1`` (a public flip), per bit
   ``g_j = c_j & nr_j`` and ``p_j = c_j ^ nr_j``, and the carry-in 1 makes bit 0's
   generate ``c_0 | nr_0``. Level 0 of the tree pairs the leaves (1,0), (3,2) .. (61,60)
   locally with the dealt products ``M_i = nr_{2i+1} & nr_{2i}``:
   ``G = c_hi nr_hi ^ c_hi c_lo nr_lo ^ c_lo M``, ``P = c_hi c_lo ^ c_hi nr_lo ^ c_lo nr_hi
   ^ M``; leaf 62 meets the identity ``(G, P) = (0, 1)``: 32 nodes, no interaction.
3. Five AND levels 32 -> 16 -> 8 -> 4 -> 2 -> 1 nodes, 5 rounds: each pairs neighbours,
   ``G = G_hi ^ (P_hi & G_lo)``, ``P = P_hi & P_lo``, both ANDs of a level batched in one
   round with XOR Beaver triples on words that share the mask of ``P_hi``; the root's
   ``P`` is not needed, so the last level opens 2 planes, the others 3.
4. The bit is ``[x >= 0] = K = 1 ^ c_63 ^ nr_63 ^ G_root``. The parties open
   ``k = K ^ alpha`` (1 round, 1 bit) for a dealer bit ``alpha``, and
   ``K = k + (1 - 2k) alpha`` is linear in an arithmetic share of ``alpha``. For ReLU the
   dealer also shares ``r * alpha``, and since ``x = c - r`` with ``c`` public,
   ``x K = k x + (1 - 2k) (c alpha - r alpha)``: no extra round and no extra opening.

Messages: when 64 divides N the masked planes travel as int64 words (8 bytes per 64 bits,
no padding); otherwise each plane as its first ``ceil(N / 8)`` bytes (the bits past N
cleared), so no padding bit is ever sent. Either way q planes cost ``q ceil(N / 8)`` bytes
per peer.

Costs per element for N a multiple of 64 (online figures hold for any N a multiple of 8;
the dealer deals every bit plane as ``ceil(N/64)`` words; exact totals with ceilings are
:func:`drelu_online_bytes` and :func:`drelu_offline_bytes`):

* DReLU: **7 online rounds**; each party sends each of its n-1 peers 8 bytes + 93 bits
  (= 19.625 bytes; 2 parties: 19.625 bytes per party, 3 parties: 39.25); the dealer
  sends the last party 156 bit planes (8 bytes of bits of r, 31 level-0 products, 61
  AND-triple products = 19.5 bytes) + 8 bytes (alpha) = 27.5 bytes, for any n.
* ReLU (with its DReLU bit kept for backward): **7 online rounds** and the same online
  bytes as DReLU (19.625 per peer); dealer 35.5 bytes (DReLU's 27.5 + 8 bytes of
  ``r * alpha``).

For comparison (2 parties, 64-bit ring): CrypTen's A2B-adder ReLU takes 9 rounds and 232
bytes per party; SecureNN's 10 rounds and ~704 bytes.

Correctness is exact (never a wrong bit) for every x in the ring read as a signed 64-bit
integer: ``c`` is uniform and the circuit computes the top bit of ``c - r`` exactly.
"""

from __future__ import annotations

from functools import lru_cache
from math import ceil, prod

import torch

from . import compare_kernel as kernel
from .context import PartyContext, Share
from .material import Item, Kind, MaterialSpec
from .ring import RING_BITS, bytes_to_words, n_words, words_to_bytes
from .sharing import open_bits, open_ring

LEAF_PAIRS = (RING_BITS - 2) // 2
"""Pairs of leaves (bits 1,0 .. 61,60) combined locally at level 0 with the dealer's
products ``~r_{2i+1} & ~r_{2i}``; leaf 62 pairs with the identity padding."""

LEVELS = (16, 8, 4, 2, 1)
"""Nodes left after each interactive AND level of the carry tree (32 nodes after level 0)."""


@lru_cache(maxsize=256)
def drelu_spec(shape: tuple[int, ...], *, with_relu: bool, sub: int = 0) -> MaterialSpec:
    """Dealer material of one DReLU (ReLU) on a tensor of ``shape``; see the module doc.

    Bit-level items are WORDS: bit planes ``(planes, ceil(N / 64))`` of 64 elements a word.
    """
    numel = prod(shape)
    w = n_words(numel)
    items = [
        Item("r", shape),
        Item("rbits", (RING_BITS, w), kind=Kind.WORDS, derived=True),
        Item("rpairs", (LEAF_PAIRS, w), kind=Kind.WORDS, derived=True),
    ]
    for lvl, q in enumerate(LEVELS):
        masks = ("a", "b", "bb") if q > 1 else ("a", "b")
        items += [Item(f"{n}{lvl}", (q, w), kind=Kind.WORDS) for n in masks]
        prods = ("c", "cc") if q > 1 else ("c",)
        items += [Item(f"{n}{lvl}", (q, w), kind=Kind.WORDS, derived=True) for n in prods]
    items += [Item("fa", (w,), kind=Kind.WORDS), Item("m_a", shape, derived=True)]
    if with_relu:
        items.append(Item("r_a", shape, derived=True))

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        rbits, rpairs = kernel.planes_and_pairs(s["r"], LEAF_PAIRS)  # rpairs: ~hi & ~lo
        out = {"rbits": rbits, "rpairs": rpairs}
        for lvl, q in enumerate(LEVELS):
            out[f"c{lvl}"] = s[f"a{lvl}"] & s[f"b{lvl}"]
            if q > 1:
                out[f"cc{lvl}"] = s[f"a{lvl}"] & s[f"bb{lvl}"]
        out["m_a"], r_a = kernel.alpha_items(s["fa"], s["r"], with_relu)
        if r_a is not None:
            out["r_a"] = r_a
        return out

    return MaterialSpec("relu" if with_relu else "drelu", sub, tuple(items), derive)


async def _open_planes(
    ctx: PartyContext,
    step: str,
    planes: list[torch.Tensor],
    depth: int,
    shape: tuple[int, ...],
) -> tuple[list[torch.Tensor], int]:
    """Open XOR-shared bit planes (already masked!) in one round.

    When the element count is a multiple of 64 the words travel as they are (8 bytes per 64
    bits, no padding); otherwise each plane as its first ``ceil(N / 8)`` bytes (uint8, the
    bits past N cleared), so that no padding bit is ever sent. Either way a tensor of q
    planes costs ``q ceil(N / 8)`` bytes per peer. (Bit planes used to travel as bools,
    one per element and plane: unpacking, transposing and re-packing them cost ~10x the
    rest of a 10^5-element comparison.)
    """
    numel = prod(shape)
    if numel % RING_BITS == 0:
        return await open_bits(ctx, step, planes, depth)
    wire = [words_to_bytes(p, numel) for p in planes]
    opened, depth = await open_bits(ctx, step, wire, depth)
    return [bytes_to_words(o, numel) for o in opened], depth


async def _sign(ctx: PartyContext, x: Share, with_relu: bool) -> tuple[Share, Share | None]:
    shape = tuple(x.value.shape)
    m = await ctx.material(drelu_spec(shape, with_relu=with_relu))
    lead = ctx.rank == 0

    (opened_c,), depth = await open_ring(ctx, "cmp", [x.value + m["r"]], x.depth)
    G, P, c_top = kernel.level0(opened_c, m["rbits"], m["rpairs"], lead)

    for lvl, q in enumerate(LEVELS):
        masked = kernel.mask_level(G, P, m[f"a{lvl}"], m[f"b{lvl}"], m.get(f"bb{lvl}"))
        o, depth = await _open_planes(ctx, f"and{lvl}", list(masked), depth, shape)
        G, P_next = kernel.combine_level(G, o, m, lvl, lead)
        if P_next is not None:  # the root's propagate is never used
            P = P_next
        if G.shape[0] != q:  # pragma: no cover - internal invariant
            raise AssertionError("carry tree shape")

    # [x >= 0] = 1 ^ msb(x) = 1 ^ c_63 ^ nr_63 ^ carry into bit 63 = c_63 ^ r_63 ^ carry
    big_k = m["rbits"][RING_BITS - 1] ^ G[0]
    if lead:
        big_k ^= c_top
    (k,), depth = await _open_planes(ctx, "fin", [big_k ^ m["fa"]], depth, shape)
    # bit = alpha if k = 0, 1 - alpha if k = 1 (alpha arithmetic-shared as m_a): with the
    # mask s = -k (0 or all ones), (v ^ s) - s is v or -v. For ReLU, x bit = x alpha if
    # k = 0, x - x alpha if k = 1, and x alpha = c alpha - r alpha. One compiled pass.
    bit, y = kernel.finish(k, m, lead, opened_c, x.value, with_relu)
    if y is None:
        return Share(bit, depth), None
    return Share(y, depth), Share(bit, depth)


async def drelu(ctx: PartyContext, x: Share) -> Share:
    """Arithmetic share of ``[x >= 0]`` (0 or 1, unscaled). 7 rounds; see module doc."""
    bit, _ = await _sign(ctx, x, with_relu=False)
    return bit


async def relu(ctx: PartyContext, x: Share) -> tuple[Share, Share]:
    """``(relu(x), drelu(x))``; the bit is kept for backward. 7 rounds; see module doc."""
    y, bit = await _sign(ctx, x, with_relu=True)
    if bit is None:  # pragma: no cover - with_relu=True always returns the bit
        raise AssertionError("relu lost its bit")
    return y, bit


DRELU_ROUNDS = 1 + len(LEVELS) + 1
"""Online rounds of drelu and relu: the opening of c, the AND levels, the final opening."""


def drelu_online_bytes(numel: int, n_parties: int, *, with_relu: bool = False) -> int:
    """Closed form of the bytes each party sends in one DReLU/ReLU on ``numel`` elements
    (the same for both: ReLU's product reuses the opened ``c``)."""
    per_peer = 8 * numel  # c; ReLU needs nothing more (x = c - r)
    for q in LEVELS:
        per_peer += (3 if q > 1 else 2) * q * ceil(numel / 8)
    per_peer += ceil(numel / 8)
    return per_peer * (n_parties - 1)


def drelu_offline_bytes(numel: int, *, with_relu: bool = False) -> int:
    """Closed form of the dealer's per-op correction bytes (sent to the last party)."""
    planes = RING_BITS + LEAF_PAIRS  # the bits of r, the level-0 products
    planes += sum(2 * q if q > 1 else 1 for q in LEVELS)  # AND-triple products
    per_elt = 8 * numel * (2 if with_relu else 1)  # alpha (and r alpha)
    return 8 * n_words(numel) * planes + per_elt
