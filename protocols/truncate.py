"""Truncation of fixed-point products: divide a shared value by the public scale ``d``.

After a Beaver product of two values at scale ``d`` the result is at scale ``d**2``; one
truncation brings it back. Both protocols below give ``floor(x/d)`` or ``floor(x/d) + 1``
(an error of at most one unit in the last place) except with a small failure probability,
in which case the result is garbage. With ``|x| < 2**lx`` (x the *product*, at double
scale) the failure probability per element is at most ``2**(lx + 1 - 64)``. Example: the
seed network's products stay below ``2**30`` at base 10 / precision 3, giving
``<= 2**-33`` per element; the safe encoding range (``|e| < 2**31`` per factor) allows
products up to ``2**62``, where the bound becomes useless, so keep products well below it.

**2 parties, SecureML local truncation** (Mohassel & Zhang, S&P 2017, Thm. 1):
party 0 replaces its share ``x0`` by ``floor(x0 / d)``, party 1 its share ``x1`` by
``-floor(-x1 / d)``. 0 rounds, 0 bytes, no dealer material. It fails when ``x0 + x1``
wraps around 2**64 as signed integers, which for uniform ``x1`` happens with probability
``|x| / 2**64``.

**3 or more parties, dealer truncation pair** (ABY3, Mohassel & Rindal, CCS 2018, §5.1.2;
local truncation is wrong for n >= 3, as PySyft's issues 2341 and 2706 found):

1. the dealer deals shares of a uniform ``r`` and of ``r' = floor(r / d)``;
2. the parties open ``c = x - r`` (uniform, so it reveals nothing);
3. party 0 adds ``floor(c / d) + 1`` to its share of ``r'``; the others keep theirs.
   (``floor(c/d) + floor(r/d)`` is ``floor(x/d)`` or one less; the ``+ 1`` makes the
   result ``floor(x/d)`` or ``floor(x/d) + 1`` like the 2-party protocol, exact for
   multiples of ``d`` unless both ``c`` and ``r`` are.)

1 online round, ``8 N (n-1)`` bytes sent by each party, 8 N dealer bytes (the correction
for ``r'``). Fails when ``c + r`` wraps as signed integers: probability ``|x| / 2**64``.
"""

from __future__ import annotations

from functools import lru_cache

from .context import PartyContext, Share
from .material import Item, MaterialSpec
from .ring import ceil_div, floor_div
from .sharing import open_ring


@lru_cache(maxsize=256)
def trunc_spec(shape: tuple[int, ...], divisor: int, sub: int = 0) -> MaterialSpec:
    return MaterialSpec(
        "trunc",
        sub,
        (Item("r", shape), Item("rt", shape, derived=True)),
        lambda s: {"rt": floor_div(s["r"], divisor)},
    )


def truncate_local(x: Share, divisor: int, rank: int) -> Share:
    """SecureML's 2-party local truncation (no communication): party 0 takes the floor of
    its share, party 1 the ceiling (computed without negating, which would map -2**63 to
    itself)."""
    if divisor == 1:
        return x
    if rank == 0:
        return Share(floor_div(x.value, divisor), x.depth)
    return Share(ceil_div(x.value, divisor), x.depth)


async def truncate_pair(ctx: PartyContext, x: Share, divisor: int, *, sub: int = 0) -> Share:
    """The dealer truncation pair (any number of parties; see module doc)."""
    if divisor == 1:
        return x
    t = await ctx.material(trunc_spec(tuple(x.value.shape), divisor, sub))
    (c,), depth = await open_ring(ctx, f"tr{sub}", [x.value - t["r"]], x.depth)
    z = t["rt"] + floor_div(c, divisor) + 1 if ctx.rank == 0 else t["rt"]
    return Share(z, depth)


async def truncate(ctx: PartyContext, x: Share, divisor: int, *, sub: int = 0) -> Share:
    """Local truncation with 2 parties, the dealer pair with more (the default suite's
    choice; the runtime takes it from the suite)."""
    if ctx.n_parties == 2:
        return truncate_local(x, divisor, ctx.rank)
    return await truncate_pair(ctx, x, divisor, sub=sub)
