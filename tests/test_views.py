"""What a party sees does not depend on the secret (semi-honest security, statistically).

* Shares: each party's share of a constant secret is uniform in Z_2^64 (chi-square on its
  top and low bytes), and with 3 parties any two shares are jointly uniform.
* Online view: what bob receives, and what he opens by adding his own messages, has the
  same distribution for secret A and secret B (the shared analysis,
  :func:`protocols.analysis.compare`, on fresh-key clusters). The same analysis rejects a
  deliberately broken protocol that opens x and y without masking them.
* Dealer: the provider's inbox and the material it sends do not depend on the secret at
  all (byte-identical for the same seed).

The share tests use seeded clusters (reproducible p-values; the seeded and the secure mode
differ only in where the PRG keys come from); the online-view tests fresh keys, at a
family-wise false-alarm rate ``FWER`` each.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import torch
from scipy import stats

from actors import Phase
from protocols import PartyContext, Share, open_ring
from protocols.analysis import FullView, compare
from protocols.params import Params
from protocols.suite import DEFAULT, OpKind
from training.testing import PARTIES, PROVIDER, Tap, envelope_view, start_cluster

ALPHA = 1e-4  # per share test; a real leak gives p-values around 1e-100
FWER = 1e-6  # per online-view analysis (Bonferroni over its features)
N = 20_000  # elements per run: each is an independent instance of the protocol
RUNS = 3  # clusters per secret


def u64(t: torch.Tensor) -> np.ndarray:
    return t.numpy().astype(np.int64).view(np.uint64).reshape(-1)


# -- shares --------------------------------------------------------------------------------


def chi2_uniform_bytes(v: np.ndarray) -> dict[str, float]:
    out = {}
    for name, byte in (("low", v & np.uint64(0xFF)), ("top", v >> np.uint64(56))):
        counts = np.bincount(byte.astype(np.int64), minlength=256)
        out[name] = float(stats.chisquare(counts).pvalue)
    return out


async def input_shares(n: int, secret: float, seed: int | None) -> dict[str, np.ndarray]:
    async with start_cluster(n, seed=seed) as c:
        tap = Tap(c)
        c.share(torch.full((65536,), secret))
        await c.flush()
    return {
        env.receiver: u64(env.tensors()[0]) for env in tap.envelopes if env.phase == Phase.INPUT
    }


@pytest.mark.parametrize("n", [2, 3])
async def test_each_share_is_uniform(n: int) -> None:
    shares = await input_shares(n, 42.0, seed=100 + n)
    assert sorted(shares) == sorted(PARTIES[n])
    for party, v in shares.items():
        for where, p in chi2_uniform_bytes(v).items():
            assert p > ALPHA, (party, where, p)
    # and they add up to the secret
    total = sum((s.view(np.int64) for s in shares.values()), np.zeros(65536, np.int64))
    assert (total == 42_000).all()


async def test_two_of_three_shares_are_jointly_uniform() -> None:
    shares = await input_shares(3, -7.5, seed=200)
    for a, b in (("alice", "bob"), ("alice", "carol"), ("bob", "carol")):
        cells = (shares[a] >> np.uint64(60)) * np.uint64(16) + (shares[b] >> np.uint64(60))
        counts = np.bincount(cells.astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > ALPHA, (a, b)


def test_chi_square_rejects_non_uniform_bytes() -> None:
    """The share test is not vacuous: torch.randint's 0..2**32 range fails it."""
    v = u64(torch.randint(0, 2**32, (65536,), generator=torch.Generator().manual_seed(0)))
    assert chi2_uniform_bytes(v)["top"] < 1e-100


async def test_unseeded_clusters_draw_fresh_shares() -> None:
    a = await input_shares(2, 1.0, seed=None)
    b = await input_shares(2, 1.0, seed=None)
    assert not np.array_equal(a["alice"], b["alice"])
    c = await input_shares(2, 1.0, seed=5)
    d = await input_shares(2, 1.0, seed=5)
    assert np.array_equal(c["alice"], d["alice"])  # the documented insecure, reproducible mode


# -- online view ---------------------------------------------------------------------------


async def leaky_mul(ctx: PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
    """BROKEN on purpose: opens x and y themselves instead of x - a and y - b."""
    (xo, yo), depth = await open_ring(
        ctx, "leak", [x[0].value, x[1].value], max(x[0].depth, x[1].depth)
    )
    prod = torch.div(xo * yo, p.d, rounding_mode="floor")
    return [Share(prod if ctx.rank == 0 else torch.zeros_like(prod), depth)]


LEAKY = DEFAULT.replace("leaky", leaky_mul=OpKind("leaky_mul", run=leaky_mul, n_in=2))


async def bob_view(n: int, x: float, y: float, kind: str) -> FullView:
    """Bob's view of one product in an unseeded cluster (fresh keys): what he receives
    online and what he opens from it with his own messages (``conftest.envelope_view``)."""
    suite = LEAKY if kind == "leaky_mul" else DEFAULT
    async with start_cluster(n, seed=None, protocols=suite) as c:
        X = c.share(torch.full((N,), x))
        Y = c.share(torch.full((N,), y))
        await c.flush()
        tap = Tap(c)
        if kind == "mul":
            Z = X * Y
        else:
            (tid,) = c.submit(kind, [X.tid, Y.tid], [(N,), (N,)], [(N,)], Params(d=1000))
            Z = None
        await c.flush()
        got = await (Z.get() if Z is not None else c.reveal(tid, (N,)))
    # sanity: the computation itself is right in both variants
    want = x * y if Z is not None else x * y * 1000
    assert abs(float(got[0]) - want) <= 1e-2 * max(1.0, abs(want))
    return envelope_view(tap.envelopes, "bob", PARTIES[n])


async def collect(n: int, x: float, y: float, kind: str) -> list[list[FullView]]:
    return [[await bob_view(n, x, y, kind)] for _ in range(RUNS)]


SECRET_A = (1.0, 2.0)
SECRET_B = (-999.5, 0.125)


@pytest.mark.parametrize("n", [2, 3])
async def test_online_view_is_independent_of_the_secret(n: int) -> None:
    a = await collect(n, *SECRET_A, "mul")
    b = await collect(n, *SECRET_B, "mul")
    peers = {i for i, p in enumerate(PARTIES[n]) if p != "bob"}
    # bob hears eps, delta from every peer (and, with 3 parties, the truncation opening)
    assert {int(name.rsplit(" ", 1)[1]) for name, _, _ in a[0][0].received} == peers
    report = compare(a, b)
    assert not report.rejected(FWER), report.summary(FWER)
    print(f"\n{report.summary(FWER, top=1)}")


async def test_view_test_rejects_unmasked_opening() -> None:
    a = await collect(2, *SECRET_A, "leaky_mul")
    b = await collect(2, *SECRET_B, "leaky_mul")
    report = compare(a, b)
    # What bob receives alone is alice's share, still uniform: the view has to include
    # bob's own messages (his shares) to show the leak. What he opens is x and y.
    assert not report.matching("recv")[0].pvalue < report.threshold(FWER)
    for opened in ("open op", "leak[0]: "), ("open op", "leak[1]: "):
        for feature in ("mod16", "magnitude"):
            (f,) = [f for f in report.matching("(a) marginal", *opened) if feature in f.name]
            assert f.pvalue < 1e-100, f


async def test_dealer_traffic_is_independent_of_the_secret() -> None:
    """Same seed, different secrets: the provider's inbox and everything it sends are
    byte-identical, so nothing the dealer handles is derived from secret data."""

    async def dealer_traffic(x: float) -> list[tuple[str, str, str, bytes]]:
        async with start_cluster(3, seed=33) as c:
            tap = Tap(c)
            X = c.share(torch.full((50,), x))
            W = c.share(torch.full((50, 4), x / 2))
            ((X * X) @ W).relu()
            await c.flush()
        return [
            (e.sender, e.receiver, e.tag, e.body)
            for e in tap.envelopes
            if PROVIDER in (e.sender, e.receiver)
        ]

    first, second = await dealer_traffic(3.0), await dealer_traffic(-250.0)
    assert first == second
    assert any(e[0] == PROVIDER for e in first)
    assert any(e[1] == PROVIDER for e in first)
