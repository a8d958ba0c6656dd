"""Truncation (protocols/truncate.py): floor(x/d) or floor(x/d) + 1, except with
probability <= 2**(lx + 1 - 64) per element when |x| < 2**lx.

Values are ring elements at double scale (the product of two fixed-point values), fed to
the cluster as raw encoded input (``Cluster.input``) and truncated with the ``trunc`` op.
"""

from __future__ import annotations

import math

import pytest
import torch

from actors import Phase
from protocols import Prg, Share, reconstruct, share, truncate_local
from protocols.params import Params
from training.testing import measure, start_cluster

D = 1000  # base 10, precision 3
LX = 36  # documented range of products in these checks: |x| < 2**36


def floor_div(x: torch.Tensor, d: int) -> torch.Tensor:
    return torch.div(x, d, rounding_mode="floor")


def errors(result: torch.Tensor, x: torch.Tensor, d: int) -> torch.Tensor:
    """result - floor(x/d); 0 or 1 is correct."""
    return result - floor_div(x, d)


def values(n: int, lx: int, seed: int) -> torch.Tensor:
    """Uniform in (-2**lx, 2**lx) with edge values planted: 0, +-1, multiples of d,
    and the extremes +-(2**lx - 1)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(-(2**lx) + 1, 2**lx, (n,), generator=gen, dtype=torch.int64)
    edges = torch.tensor(
        [0, 1, -1, D, -D, D - 1, -D + 1, D + 1, 7 * D, -7 * D, 2**lx - 1, -(2**lx) + 1]
    )
    x[: len(edges)] = edges
    return x


async def cluster_truncate(
    n_parties: int, x: torch.Tensor, seed: int
) -> tuple[torch.Tensor, object]:
    async with start_cluster(n_parties, seed=seed) as c:
        tid = c.input(x)
        async with measure(c) as m:
            (out,) = c.submit("trunc", [tid], [x.shape], [x.shape], Params(d=D))
        cost = m.stats
        return await c.reveal(out, tuple(x.shape)), cost


def assert_within_one_ulp(err: torch.Tensor) -> None:
    bad = ~((err == 0) | (err == 1))
    assert not bool(bad.any()), f"{int(bad.sum())} elements off by more than 1 ulp"
    # both outcomes occur (the +1 is not a constant bias)
    assert bool((err == 0).any()) and bool((err == 1).any())


async def test_two_party_protocol_million_values() -> None:
    x = values(10**6, LX, seed=1)
    got, cost = await cluster_truncate(2, x, seed=1)
    assert_within_one_ulp(errors(got, x, D))
    # SecureML local truncation: no communication at all
    assert cost.online_rounds == 0
    assert cost.online_bytes == cost.offline_bytes == 0


def test_two_party_local_million_values() -> None:
    x = values(10**6, LX, seed=2)
    prg = Prg.from_seed(2, "test")
    s0, s1 = share(x, 2, prg)
    z0 = truncate_local(Share(s0), D, 0).value
    z1 = truncate_local(Share(s1), D, 1).value
    assert_within_one_ulp(errors(reconstruct([z0, z1]), x, D))


def test_local_truncation_is_exact_on_multiples_of_d() -> None:
    # floor(x0/d) + ceil(x1/d) = k whenever x0 + x1 = k d without wrapping.
    x = torch.arange(-500, 500, dtype=torch.int64) * D
    s0, s1 = share(x, 2, Prg.from_seed(3, "test"))
    z = reconstruct([truncate_local(Share(s0), D, 0).value, truncate_local(Share(s1), D, 1).value])
    assert torch.equal(z, x // D)


async def test_three_party_protocol() -> None:
    x = values(10**5, LX, seed=4)
    got, cost = await cluster_truncate(3, x, seed=4)
    assert_within_one_ulp(errors(got, x, D))
    n = x.numel()
    # dealer pair: 1 round, 8 N (n-1) bytes per party, 8 N dealer bytes to the last party
    assert cost.online_rounds == 1
    assert cost.online_bytes == 3 * 8 * n * 2
    assert cost.offline_bytes == 8 * n
    assert cost.per_actor["carol"].received[Phase.OFFLINE] == 8 * n


@pytest.mark.parametrize("divisor", [2, 10, 2**16, 10**6])
async def test_other_divisors(divisor: int) -> None:
    for n_parties in (2, 3):
        x = values(2000, LX, seed=divisor)
        async with start_cluster(n_parties, seed=5) as c:
            (out,) = c.submit("trunc", [c.input(x)], [x.shape], [x.shape], Params(d=divisor))
            got = await c.reveal(out, tuple(x.shape))
        err = errors(got, x, divisor)
        assert bool(((err == 0) | (err == 1)).all()), (n_parties, divisor)


def failure_rate_bound(lx: int) -> float:
    return 2.0 ** (lx + 1 - 64)


def check_failure_rate(err: torch.Tensor, x: torch.Tensor, lx: int) -> None:
    """Failures below the documented bound, and at the rate the analysis predicts."""
    n = x.numel()
    failures = int((~((err == 0) | (err == 1))).sum())
    rate = failures / n
    # Both protocols fail exactly when the shares wrap around 2**64 as signed integers,
    # which happens with probability |x| / 2**64 for a uniform share.
    predicted = float(x.double().abs().mean()) / 2.0**64
    sigma = math.sqrt(predicted * (1 - predicted) / n)
    assert rate <= failure_rate_bound(lx), (rate, failure_rate_bound(lx))
    assert abs(rate - predicted) < 6 * sigma, (rate, predicted, sigma)


def big_values(n: int, lx: int, seed: int) -> torch.Tensor:
    """|x| uniform in [2**(lx-1), 2**lx), random sign: near 2**lx."""
    gen = torch.Generator().manual_seed(seed)
    mag = torch.randint(2 ** (lx - 1), 2**lx, (n,), generator=gen, dtype=torch.int64)
    sign = torch.randint(0, 2, (n,), generator=gen, dtype=torch.int64) * 2 - 1
    return mag * sign


def test_local_failure_rate_near_2_to_60() -> None:
    lx = 60
    x = big_values(200_000, lx, seed=6)
    s0, s1 = share(x, 2, Prg.from_seed(6, "test"))
    z = reconstruct([truncate_local(Share(s0), D, 0).value, truncate_local(Share(s1), D, 1).value])
    check_failure_rate(errors(z, x, D), x, lx)


@pytest.mark.parametrize("n_parties", [2, 3])
async def test_protocol_failure_rate_near_2_to_60(n_parties: int) -> None:
    lx = 60
    x = big_values(100_000, lx, seed=7 + n_parties)
    got, _ = await cluster_truncate(n_parties, x, seed=7)
    check_failure_rate(errors(got, x, D), x, lx)


@pytest.mark.parametrize("d", [1, 2, 2**16, 2**62, 3, 1000, 2**31 - 1])
def test_ring_floor_and_ceil_division_match_exact_integers(d: int) -> None:
    """ring.floor_div / ceil_div (shifts and masks for powers of two, torch's floor division
    otherwise) against Python's exact integers, at the int64 extremes and around multiples
    of ``d``: the 2-party truncation is built on them."""
    from protocols.ring import ceil_div
    from protocols.ring import floor_div as ring_floor

    gen = torch.Generator().manual_seed(d % 1000)
    edges = [-(2**63), -(2**63) + 1, 2**63 - 1, 2**63 - 2, 0, 1, -1]
    near = [k * d + e for k in (-3, -1, 0, 1, 5) for e in (-1, 0, 1)]
    near = [v for v in near if -(2**63) <= v < 2**63]
    rand = torch.randint(-(2**63), 2**63 - 1, (500,), generator=gen, dtype=torch.int64)
    x = torch.cat([torch.tensor(edges + near, dtype=torch.int64), rand])
    fl, ce = ring_floor(x, d).tolist(), ceil_div(x, d).tolist()
    for v, f, c in zip(x.tolist(), fl, ce, strict=True):
        assert f == v // d, (v, d)
        assert c == -(-v // d), (v, d)
