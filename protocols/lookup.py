"""Digit lookups: arithmetic shares of the one-hot indicators of the digits of a shared
integer, from a dealer one-hot and one small opening per digit (no comparison).

Kind ``digits`` with ``params.d = B`` (1 <= B <= :data:`MAX_BITS`): the input is an
additive sharing of an integer j (precision 0); the output, of shape ``(rows, *shape)``,
holds the indicators ``[digit_i(j mod 2**B) == v]`` of every digit, digit 0 first, each
digit's ``2**b_i`` rows in the order v = 0, 1, ... The digits are 3 bits from the bottom,
the last one what remains (:func:`digit_bits`: B = 5 -> 3 + 2 bits, 12 rows). Any table
over a digit is then a local public product ``T @ rows``; with ``params.pub = T`` (int64,
``(n_t, rows)``) the kind returns ``T @ rows`` itself, shape ``(n_t, *shape)`` (exp's
powers of two: no separate op and no dense int64 product). A table over j that factors
over the digits is a product of such lookups.

Protocol for one digit of b bits (m = 2**b), from the dealer's uniform ``r`` (RING,
drawn by every party from its PRG: no bytes) and the arithmetic shares of the one-hot
``e_v = [r mod m == v]`` for v < m - 1 (RING, derived: ``8 (m - 1)`` bytes per element to
the last party; ``e_{m-1} = 1 - sum e_v`` is local):

1. every party sends its ``(s_p + r_p) mod m`` (one byte per element to each peer) and
   all compute ``c = (j + r) mod m``, uniform since r mod m is;
2. ``[digit == v] = [r mod m == (c - v) mod m] = e_{(c - v) mod m}``: a gather by the
   public c, local.

**2 parties, digit by digit**: digit 0 as above; then ``j - d_0`` (d_0 = sum v [d_0 ==
v], local) is a shared multiple of m, and with ``s_0 + s_1 = m h (mod 2**64)`` and
``l_p = s_p mod m`` (so ``l_0 + l_1 = m [l_0 != 0]``), ``h = (s_0 >> b) + (s_1 >> b) +
[l_0 != 0] (mod 2**(64 - b))``: an exact, local halving. Shares of h modulo
``2**(64-b)`` are all the next digit needs (its residue mod 2**b'), so the next digit
follows the same way. Rounds: one per digit; dealer ``8 sum (2**b_i - 1)`` bytes per
element (B = 5: 8 * (7 + 3) = 80).

**3 or more parties** (the carry ``[l_0 + ... != 0]`` of the halving is not local): one
digit of all B bits, opened once, and each digit's indicators summed from j's one-hot
(local). 1 round, one byte per element per peer, dealer ``8 (2**B - 1)`` bytes.

Security: each opening is ``(x + r) mod m`` with r mod m uniform and fresh, so what every
party sees (its peers' messages, c) is uniform whatever j is; the output is shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from math import prod

import numpy as np
import torch
from numba import njit

from .context import PartyContext, Share
from .errors import ProtocolError
from .material import Item, MaterialSpec
from .opkind import Cost, Example, OpKind, Shape, Suite
from .params import Params, Pub

MAX_BITS = 8
"""Largest B: a 3+-party lookup deals a one-hot of 2**B rows (2 KB per element at 8)."""

DIGIT_BITS = 3


def digit_bits(bits: int, n_parties: int = 2) -> list[int]:
    """The digit sizes of a B-bit lookup: 3 bits from the bottom, the last what remains
    (2 parties); one digit of B bits with 3 or more."""
    if not 1 <= bits <= MAX_BITS:
        raise ProtocolError(f"digit lookup needs 1 <= bits <= {MAX_BITS}, got {bits}")
    if n_parties != 2:
        return [bits]
    out = [DIGIT_BITS] * (bits // DIGIT_BITS)
    if bits % DIGIT_BITS:
        out.append(bits % DIGIT_BITS)
    return out


def rows(bits: int) -> int:
    """Output rows of a B-bit lookup (the 2-party digits' sizes, for any number of
    parties: the meaning does not depend on the protocol)."""
    return sum(1 << b for b in digit_bits(bits))


def _onehot(v: torch.Tensor, m: int) -> torch.Tensor:
    """Rows ``[v == i]`` for i < m - 1 (int64, the dealer's derived items)."""
    ar = torch.arange(m - 1, dtype=torch.int64).view(-1, *([1] * v.dim()))
    return (v.unsqueeze(0) == ar).to(torch.int64)


@lru_cache(maxsize=256)
def digits_spec(shape: Shape, bits: int, n_parties: int) -> MaterialSpec:
    sizes = digit_bits(bits, n_parties)
    items: list[Item] = []
    for i, b in enumerate(sizes):
        items += [Item(f"r{i}", shape), Item(f"e{i}", ((1 << b) - 1, *shape), derived=True)]

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {f"e{i}": _onehot(s[f"r{i}"] & ((1 << b) - 1), 1 << b) for i, b in enumerate(sizes)}

    return MaterialSpec("digits", 0, tuple(items), derive)


def digits_cost(shape: Shape, bits: int, n_parties: int) -> Cost:
    """Closed form: one round per digit, one byte per element per digit to each peer;
    dealer ``8 sum (2**b_i - 1)`` bytes per element (from the spec)."""
    k = len(digit_bits(bits, n_parties))
    return Cost(k, k * prod(shape) * (n_parties - 1))


async def _open_residue(
    ctx: PartyContext, step: str, v: torch.Tensor, m: int, depth: int
) -> tuple[torch.Tensor, int]:
    """Open ``sum v_p mod m`` (m <= 256): each party sends its residue as one byte."""
    mine = (v & (m - 1)).to(torch.uint8).contiguous()
    peers = [p for p in range(ctx.n_parties) if p != ctx.rank]
    for p in peers:
        await ctx.send(p, step, [mine], depth + 1)
    total = mine.to(torch.int64)
    out = depth + 1
    for p in peers:
        msg = await ctx.recv(p, step, [(tuple(v.shape), torch.uint8)])
        total = total + msg.tensors[0].to(torch.int64)
        out = max(out, msg.depth)
    return total & (m - 1), out


def _indicators(ctx: PartyContext, e: torch.Tensor, c: torch.Tensor, m: int) -> torch.Tensor:
    """Shares of ``[d == v]`` (rows v < m) from shares of the one-hot of r mod m (its
    first m - 1 rows dealt) and the public ``c = (d + r) mod m``."""
    full = torch.empty((m, *e.shape[1:]), dtype=e.dtype)
    full[: m - 1] = e
    torch.sum(e, 0, out=full[m - 1])
    full[m - 1].neg_()
    if ctx.rank == 0:
        full[m - 1] += 1
    ar = torch.arange(m, dtype=torch.int64).view(-1, *([1] * c.dim()))
    return full.gather(0, (c.unsqueeze(0) - ar) & (m - 1))


async def digits(
    ctx: PartyContext, x: Share, bits: int, table: torch.Tensor | None = None
) -> Share:
    """The indicator rows of j's digits (see module doc), or ``table @ rows`` for a public
    int64 ``table`` of shape ``(n_t, rows)``."""
    shape = tuple(x.value.shape)
    sizes = digit_bits(bits, ctx.n_parties)
    mat = await ctx.material(digits_spec(shape, bits, ctx.n_parties))
    s, depth = x.value, x.depth
    out: list[torch.Tensor] = []
    acc: torch.Tensor | None = None  # table @ rows, digit by digit (no concatenation)
    col = 0
    for i, b in enumerate(sizes):
        m = 1 << b
        c, depth = await _open_residue(ctx, f"dg{i}", s + mat[f"r{i}"], m, depth)
        if table is not None and len(sizes) == len(digit_bits(bits)):
            if acc is None:
                acc = torch.zeros((table.shape[0], *shape), dtype=torch.int64)
            digit = _table_digit(ctx.rank == 0, mat[f"e{i}"], c, table[:, col : col + m], acc)
            col += m
        else:
            ind = _indicators(ctx, mat[f"e{i}"], c, m)
            out.append(ind)
            ar = torch.arange(m, dtype=torch.int64).view(-1, *([1] * len(shape)))
            digit = (ind * ar).sum(0)
        if i + 1 < len(sizes):  # exact halving of j - d_i by m (2 parties)
            s = s - digit
            low = s & (m - 1)
            s = s >> b
            if ctx.rank == 0:
                s = s + (low != 0).to(torch.int64)
    if acc is not None:
        return Share(acc, depth)
    if len(sizes) != len(digit_bits(bits)):  # 3+ parties: one digit of all B bits
        out = _split(out[0], bits)
    ind = torch.cat(out)
    return Share(ind if table is None else apply_table(table, ind), depth)


def _table_digit(
    lead: bool, e: torch.Tensor, c: torch.Tensor, table: torch.Tensor, acc: torch.Tensor
) -> torch.Tensor:
    """One digit of a table lookup, fused (:func:`_digit_kernel`): adds ``table @ [d ==
    v]`` to ``acc`` in place and returns the share of the digit d itself (for the halving),
    the indicators never materialised: the same integers as :func:`_indicators` and
    :func:`apply_table` modulo 2**64, ~10x faster at 10**5 elements."""
    n = c.numel()
    digit = torch.empty(c.shape, dtype=torch.int64)
    _digit_kernel(
        np.uint64(1 if lead else 0),
        e.contiguous().view(e.shape[0], n).numpy().view(np.uint64),
        c.contiguous().view(n).numpy(),
        table.contiguous().numpy().view(np.uint64),
        acc.view(acc.shape[0], n).numpy().view(np.uint64),
        digit.view(n).numpy().view(np.uint64),
    )
    return digit


@njit(cache=True)
def _digit_kernel(
    lead: np.uint64,
    e: np.ndarray,
    c: np.ndarray,
    table: np.ndarray,
    acc: np.ndarray,
    digit: np.ndarray,
) -> None:  # pragma: no cover - compiled (its results are tested against the reference)
    """Per element i: the one-hot shares f_w (rows w < m - 1 dealt, the last ``lead -
    sum``), ``[d == v] = f_{(c_i - v) mod m}``, ``acc[t, i] += table[t, v] [d == v]`` and
    ``digit[i] = sum_v v [d == v]``; unsigned, so every sum wraps modulo 2**64."""
    m1 = e.shape[0]
    m = m1 + 1
    for i in range(c.shape[0]):
        last = lead
        for w in range(m1):
            last -= e[w, i]
        ci = c[i]
        d = np.uint64(0)
        for v in range(m):
            w = (ci - v) & (m - 1)
            f = last if w == m1 else e[w, i]
            d += np.uint64(v) * f
            for t in range(table.shape[0]):
                if table[t, v] != 0:
                    acc[t, i] += table[t, v] * f
        digit[i] = d


def apply_table(table: torch.Tensor, ind: torch.Tensor) -> torch.Tensor:
    """``table @ ind`` modulo 2**64 over the nonzero entries of the (small, sparse) public
    table: a table over one digit touches only that digit's rows."""
    out = torch.zeros((table.shape[0], *ind.shape[1:]), dtype=torch.int64)
    for t, v in table.nonzero().tolist():
        out[t].add_(ind[v], alpha=int(table[t, v]))  # in place, wrapping as the ring does
    return out


def _split(onehot: torch.Tensor, bits: int) -> list[torch.Tensor]:
    """Each digit's indicators from the one-hot of all B bits (sums of its rows)."""
    out = []
    shift = 0
    j = torch.arange(1 << bits)
    for b in digit_bits(bits):
        d = (j >> shift) & ((1 << b) - 1)
        out.append(torch.stack([onehot[d == v].sum(0) for v in range(1 << b)]))
        shift += b
    return out


def digits_reference(
    x: Sequence[torch.Tensor], p: Params, out: Sequence[Shape], got: Sequence[torch.Tensor]
) -> list[torch.Tensor]:
    """Plaintext: the indicators of the digits of j mod 2**B (j the encoded integer)."""
    j = x[0].to(torch.int64) & ((1 << p.d) - 1)
    res = []
    shift = 0
    for b in digit_bits(p.d):
        d = (j >> shift) & ((1 << b) - 1)
        res += [(d == v).to(torch.float64) for v in range(1 << b)]
        shift += b
    ind = torch.stack(res)
    if p.pub is None:
        return [ind]
    return [(p.public().to(torch.float64) @ ind.flatten(1)).view(-1, *ind.shape[1:])]


def build_digits(suite: Suite, n: int) -> OpKind:
    """The ``digits`` kind (registered in :mod:`protocols.kinds`)."""

    async def run(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
        table = None if p.pub is None else p.public().to(torch.int64)
        return [await digits(ctx, x[0], p.d, table)]

    return OpKind(
        "digits",
        run=run,
        specs=lambda s, out, d, n: [digits_spec(tuple(s[0]), d, n)],
        cost=lambda s, out, d, n: digits_cost(tuple(s[0]), d, n),
    )


def digits_examples(size: int, mat: tuple[int, int, int]) -> list[Example]:
    table = torch.zeros(3, rows(5), dtype=torch.int64)
    table[0, :8] = 2 ** torch.arange(8)
    table[1, 8:10] = torch.tensor([1, 256])
    table[2, 10:12] = torch.tensor([1, 256])
    return [
        Example("B = 5, rows", ((size,),), ((rows(5), size),), Params(d=5)),
        Example("B = 5, exp's table", ((size,),), ((3, size),), Params(d=5, pub=Pub.of(table))),
    ]
