"""The ``digits`` kind (protocols/lookup.py) against plaintext, with its exact costs, and
the base-2 exp built on it: values, rounds, dealer bytes and the 2**34 product bound."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import PARTIES, PROVIDER

from protocols import FixedPoint
from protocols.lookup import digit_bits, digits_reference, rows
from protocols.params import Params
from protocols.suite import DEFAULT
from training import Cluster, SharedTensor
from training.range_reduction import exp_domain, exp_pow2_domain
from training.testing import reveal, start_cluster

RAW = FixedPoint(10, 0)


def integers(c: Cluster, j: torch.Tensor) -> SharedTensor:
    return SharedTensor(c, c.input(j.to(torch.int64)), j.shape, RAW)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("bits", [3, 5, 6])
async def test_digits_are_the_indicators_of_j_mod_2_to_the_b(n: int, bits: int) -> None:
    """Every residue (and negative and large j, taken mod 2**B) gives exactly the plaintext
    indicator rows, for the 2-party digit-by-digit protocol and the 3-party one-shot one."""
    j = torch.cat([torch.arange(-70, 140), torch.tensor([2**40 + 3, -(2**50) - 1])])
    async with start_cluster(n, seed=4) as c:
        x = integers(c, j)
        out = x._op("digits", [], (rows(bits), *j.shape), Params(d=bits), prec=0)
        got = await c.reveal(out.tid, out.shape)
    (want,) = digits_reference([j.double()], Params(d=bits), [], [])
    assert torch.equal(got.double(), want)
    assert got.shape[0] == sum(1 << b for b in digit_bits(bits))
    # each digit's rows are a one-hot
    start = 0
    for b in digit_bits(bits):
        assert bool((got[start : start + (1 << b)].sum(0) == 1).all())
        start += 1 << b


@pytest.mark.parametrize("n", [2, 3])
async def test_digits_cost_is_its_closed_form(n: int) -> None:
    """B = 5 at 1,000 elements: 2 parties 2 rounds, 2 bytes per element to the peer, dealer
    8 (7 + 3) = 80 bytes per element; 3 parties 1 round, 1 byte per peer, 8 * 31."""
    parties = PARTIES[n]
    numel = 1000
    async with Cluster.start(parties, provider=PROVIDER, seed=5) as c:
        x = integers(c, torch.arange(numel) % 32)
        await c.flush()
        before = c.stats()
        x._op("digits", [], (rows(5), numel), Params(d=5), prec=0)
        await c.flush()
        d = c.stats() - before
    cost = DEFAULT.cost("digits", [(numel,)], (rows(5), numel), 5, n)
    want = (2, 2 * numel, 80 * numel) if n == 2 else (1, 2 * numel, 8 * 31 * numel)
    assert (cost.rounds, cost.online_bytes, cost.dealer_bytes) == want
    assert d.online_rounds == cost.rounds
    assert d.online_bytes == n * cost.online_bytes
    assert d.offline_bytes == cost.dealer_bytes


def test_digits_refuse_a_bad_width() -> None:
    from protocols.errors import ProtocolError

    for bits in (0, 9):
        with pytest.raises(ProtocolError, match="bits"):
            digit_bits(bits)


async def test_exp_pow2_accuracy_rounds_and_dealer_bytes() -> None:
    """exp at 2/16 over [-15, 12] (both clamps) and a dense [-6, 6]: relative 5e-5 where
    e^x >= 1 (measured ~3e-5: the fit's 8e-6, p's ~1.5 units of 2**-17 at p = 1/2, t's
    1.25 units, the final unit), 2 units below, saturation at e^hi; at 2,000 elements
    with the WAN default (`default@10000`: FSS clamp, 1 round) 6 rounds and 80 (lookup) +
    2 * 4,144 (ReLU keys) + 6 * 8 (products) dealer bytes per element."""
    x = torch.cat([torch.linspace(-15, 12, 1201), torch.linspace(-6, 6, 799)])
    async with start_cluster(2, seed=6, protocols="default@10000") as c:
        s = c.share(x, precision=16, base=2)
        await c.flush()
        before = c.stats()
        y = s.exp()
        await c.flush()
        d = c.stats() - before
        got = await reveal(y)
        lo, hi, big_j, bits = exp_pow2_domain(s)
    assert (big_j, bits) == (16, 5) and lo == pytest.approx(-11.09, abs=0.01)
    assert hi == exp_domain(s)[1]
    xe = torch.round(x.double() * 2**16) / 2**16
    want = xe.clamp(max=hi).exp()
    err = (got - want).abs()
    big = want >= 1
    assert float((err[big] / want[big]).max()) <= 5e-5
    assert float(err[~big].max()) <= 2 * 2**-16
    assert d.online_rounds == 6
    assert d.offline_bytes == x.numel() * (80 + 2 * 4144 + 6 * 8)


async def test_exp_pow2_three_parties() -> None:
    """With 3 parties (dealer-pair truncations, the one-shot 5-bit lookup) the same
    formula holds: relative 6e-5 above 1, 3 units below."""
    x = torch.linspace(-14, 11, 1001)
    async with start_cluster(3, seed=7) as c:
        s = c.share(x, precision=16, base=2)
        got = await reveal(s.exp())
        hi = exp_domain(s)[1]
    want = (torch.round(x.double() * 2**16) / 2**16).clamp(max=hi).exp()
    err = (got - want).abs()
    big = want >= 1
    assert float((err[big] / want[big]).max()) <= 6e-5
    assert float(err[~big].max()) <= 3 * 2**-16


def test_exp_pow2_products_stay_below_2_to_the_34() -> None:
    """The raw bounds the docstring states, from the domain at 2/16: t < 2**B, u**k < 1 at
    17 bits (2**34), p 2**d0 < 2**(1 + 7) at 17 bits times E- <= 2**8 (2**33), times E+
    (y < 2**15 at 17 bits: 2**32)."""
    f, fp1, big_j, bits = 16, 17, 16, 5
    hi = math.log(0.99 * 2**15)
    assert (hi + big_j * math.log(2)) * math.log2(math.e) + 1 < 2**bits
    assert 2 * 2**7 * 2**fp1 * 2**8 <= 2**34  # p 2**d0 E-
    assert math.exp(hi) * 2**fp1 < 2**32  # p 2**d0 E+ = y at 17 bits
    # log2 e's two integer products: |x| <= 11.09 at 16 bits times c1 < 2**13.53
    c1 = round(math.log2(math.e) * 2**13)
    assert 11.1 * 2**f * c1 < 2**34
    assert f == 16


@pytest.mark.parametrize("m", [2, 4, 8])
def test_fused_table_digit_is_indicators_times_table(m: int) -> None:
    """The fused kernel (lookup._table_digit) gives, for both parties' shares, exactly
    ``apply_table(table, indicators)`` and the digit's share ``sum v [d == v]`` modulo
    2**64, with shares and tables that wrap (full-range int64)."""
    from types import SimpleNamespace

    from protocols.lookup import _indicators, _table_digit, apply_table

    g = torch.Generator().manual_seed(m)
    n = 1_000
    full = torch.iinfo(torch.int64)
    table = torch.randint(full.min, full.max, (3, m), generator=g, dtype=torch.int64)
    table[1, 0] = 0  # a zero entry is skipped, not mistaken
    for rank in (0, 1):
        e = torch.randint(full.min, full.max, (m - 1, 5, n // 5), generator=g, dtype=torch.int64)
        c = torch.randint(0, m, (5, n // 5), generator=g, dtype=torch.int64)
        ind = _indicators(SimpleNamespace(rank=rank), e, c, m)  # type: ignore[arg-type]
        ar = torch.arange(m, dtype=torch.int64).view(-1, 1, 1)
        start = torch.randint(full.min, full.max, (3, 5, n // 5), generator=g, dtype=torch.int64)
        acc = start.clone()
        digit = _table_digit(rank == 0, e, c, table, acc)
        assert torch.equal(acc, start + apply_table(table, ind))
        assert torch.equal(digit, (ind * ar).sum(0))
