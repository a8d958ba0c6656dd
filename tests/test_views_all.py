"""Every protocol's messages are distributed independently of the secret inputs.

Semi-honest security: what an actor sees must not depend on the secrets. For each
protocol (input sharing, Beaver mul, square, matmul, the 3-party dealer truncation pair,
DReLU, ReLU, the digit lookup of 2 and 3 parties) this file runs the operation on secret
A and, in a fresh cluster, on secret B (unseeded clusters: fresh OS keys), records every
message with the network's interceptor, and compares, per actor:

* every tensor it receives: input shares, online openings from each peer, dealer
  material (decoded with ``Envelope.tensors()``);
* every value it opens: its own share of a masked value (what it sends, identical to each
  peer) combined with the peers' shares.

The views (``conftest.envelope_view``) are compared by the one shared analysis,
:func:`protocols.analysis.compare` (G-tests on marginal, joint, pair and per-element
cross features). Each tensor holds 1,000-2,000 independent instances of the protocol (one
run per secret). Bonferroni: the family-wise false-alarm rate over the whole file is below
``FWER``.

The provider must receive only CONTROL messages from the coordinator, byte-identical for
A and B (op ids, kinds, shapes, divisors). The same analysis must flag deliberately leaky
variants of mul, matmul, truncation and the digit lookup (mask r = 0), which still
compute the right result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import torch

import protocols as P
from actors import Phase
from protocols import FixedPoint, Share
from protocols.analysis import Report
from protocols.beaver import matmul_spec, mul_spec
from protocols.lookup import digits, digits_reference, rows
from protocols.params import Params
from protocols.ring import floor_div
from protocols.suite import DEFAULT, OpKind, Suite
from protocols.truncate import trunc_spec
from training import Cluster, SharedTensor
from training.testing import PROVIDER, Recording, recorded, start_cluster
from training.testing import analyse as kit_analyse

COORD = "coordinator"
FWER = 1e-6  # family-wise false-alarm rate of all the independence tests in this file
NUMEL = 2000
RAW = FixedPoint(10, 0)  # ring integers as they are (for the truncation protocol)


pytestmark = pytest.mark.usefixtures("quiet_logs")


# ---------------------------------------------------------------------------------------
# The protocols and their secrets
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Protocol:
    n: int
    secrets: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
    """Plaintext inputs for secret A and for secret B (same names and shapes)."""
    run: Callable[[Cluster, dict[str, Any]], Any]
    """Issues the operation on the shared inputs; returns the handle to reveal."""
    check: Callable[[dict[str, torch.Tensor], torch.Tensor], None]
    """Asserts that the revealed result is right."""
    raw: bool = False
    """Inputs are ring integers shared as they are (no fixed-point encoding)."""


def full(shape: Sequence[int], v: float) -> torch.Tensor:
    return torch.full(tuple(shape), v, dtype=torch.float64)


def near(tol: float, fn: Callable[..., torch.Tensor]) -> Callable[[dict, torch.Tensor], None]:
    def check(x: dict[str, torch.Tensor], got: torch.Tensor) -> None:
        want = fn(**x)
        err = float((got.to(torch.float64) - want).abs().max())
        assert err <= tol + 1e-6 * float(want.abs().max()), err

    return check


def trunc_check(x: dict[str, torch.Tensor], got: torch.Tensor) -> None:
    want = floor_div(x["x"].to(torch.int64), 1000)
    assert bool(((got - want) >= -1).all() and ((got - want) <= 1).all())


def run_trunc(c: Cluster, xs: dict[str, Any]) -> Any:
    shape = tuple(xs["x"].shape)
    (tid,) = c.submit("trunc", [xs["x"].tid], [shape], [shape], Params(d=1000))
    return SharedTensor(c, tid, xs["x"].shape, RAW)


def run_digits(c: Cluster, xs: dict[str, Any]) -> Any:
    """The 5-bit digit lookup (exp's): 12 indicator rows per element."""
    shape = tuple(xs["x"].shape)
    out = (rows(5), *shape)
    (tid,) = c.submit("digits", [xs["x"].tid], [shape], [out], Params(d=5))
    return SharedTensor(c, tid, out, RAW)


def digits_check(x: dict[str, torch.Tensor], got: torch.Tensor) -> None:
    (want,) = digits_reference([x["x"]], Params(d=5), [], [])
    assert torch.equal(got.double(), want)


M, K, N = 40, 25, 40  # matmul (M, K) @ (K, N): 1,000 + 1,000 opened, 1,600 dealt
VEC = (NUMEL,)
A_MUL = {"x": full(VEC, 1.5), "y": full(VEC, 2.0)}
B_MUL = {"x": full(VEC, -250.25), "y": full(VEC, 0.125)}
A_MM = {"x": full((M, K), 1.5), "w": full((K, N), -0.5)}
B_MM = {"x": full((M, K), -30.75), "w": full((K, N), 4.0)}
A_TR = {"x": full(VEC, 1_234_567_891.0)}
B_TR = {"x": full(VEC, -987_654.0)}
A_DG = {"x": full(VEC, 5.0)}  # digits 5, 0
B_DG = {"x": full(VEC, 26.0)}  # digits 2, 3
A_CMP = {"x": full(VEC, 5.0)}
B_CMP = {"x": full(VEC, -5.0)}

PROTOCOLS: dict[str, Protocol] = {
    "input-2": Protocol(2, (A_MUL, B_MUL), lambda c, xs: xs["x"], near(0, lambda x, y: x)),
    "input-3": Protocol(3, (A_MUL, B_MUL), lambda c, xs: xs["x"], near(0, lambda x, y: x)),
    "mul-2": Protocol(
        2, (A_MUL, B_MUL), lambda c, xs: xs["x"] * xs["y"], near(2e-3, lambda x, y: x * y)
    ),
    "mul-3": Protocol(
        3, (A_MUL, B_MUL), lambda c, xs: xs["x"] * xs["y"], near(2e-3, lambda x, y: x * y)
    ),
    "square-2": Protocol(
        2, (A_MUL, B_MUL), lambda c, xs: xs["x"] ** 2, near(2e-3, lambda x, y: x * x)
    ),
    "matmul-2": Protocol(
        2, (A_MM, B_MM), lambda c, xs: xs["x"] @ xs["w"], near(2e-3, lambda x, w: x @ w)
    ),
    "truncation-3": Protocol(3, (A_TR, B_TR), run_trunc, trunc_check, raw=True),
    "drelu-2": Protocol(
        2, (A_CMP, B_CMP), lambda c, xs: xs["x"].drelu(), near(0, lambda x: (x >= 0).double())
    ),
    "relu-2": Protocol(2, (A_CMP, B_CMP), lambda c, xs: xs["x"].relu(), near(0, torch.relu)),
    "digits-2": Protocol(2, (A_DG, B_DG), run_digits, digits_check, raw=True),
    "digits-3": Protocol(3, (A_DG, B_DG), run_digits, digits_check, raw=True),
}
REAL_TESTS = len(PROTOCOLS)


# ---------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------


async def record(
    proto: Protocol, secret: dict[str, torch.Tensor], suite: Suite = DEFAULT
) -> Recording:
    """Share ``secret``, run the protocol, reveal and check; every message from the first
    input share to the last protocol message is recorded."""
    async with start_cluster(proto.n, seed=None, protocols=suite) as c:
        async with recorded(c) as rec:
            if proto.raw:
                xs = {
                    k: SharedTensor(c, c.input(v.to(torch.int64)), v.shape, RAW)
                    for k, v in secret.items()
                }
            else:
                xs = {k: c.share(v) for k, v in secret.items()}
            out = proto.run(c, xs)
            await c.flush()
        raw = await c.reveal(out.tid, out.shape)
        got = raw if proto.raw else out.fp.with_precision(out.prec).decode(raw)
        proto.check(secret, got)
    return rec


# ---------------------------------------------------------------------------------------
# Views and two-sample tests
# ---------------------------------------------------------------------------------------


def analyse(ta: Recording, tb: Recording) -> Report:
    """Every feature of every party's view, one run on secret A against one on B."""
    for party, v in zip(ta.parties, ta.views(), strict=True):
        assert v.opened or v.own, f"{party} saw nothing"
    return kit_analyse(ta, tb)


def provider_inbox(t: Recording) -> list[tuple[str, str, Phase, bytes]]:
    return [(e.sender, e.tag, e.phase, e.body) for e in t.received(PROVIDER)]


async def transcripts(proto: Protocol, suite: Suite = DEFAULT) -> tuple[Recording, Recording]:
    ta = await record(proto, proto.secrets[0], suite)
    tb = await record(proto, proto.secrets[1], suite)
    assert ta.metadata() == tb.metadata(), "message pattern depends on the secret"
    return ta, tb


# ---------------------------------------------------------------------------------------
# The real protocols
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(PROTOCOLS))
async def test_views_independent_of_secret(name: str) -> None:
    proto = PROTOCOLS[name]
    ta, tb = await transcripts(proto)
    report = analyse(ta, tb)
    bad = report.rejected(FWER / REAL_TESTS)
    assert not bad, "views depend on the secret:\n" + report.summary(FWER / REAL_TESTS, 20)
    # every party hears from every peer, or (input sharing) from the coordinator
    for party in ta.parties:
        senders = {e.sender for e in ta.received(party) if e.phase != Phase.CONTROL}
        want = {COORD} if name.startswith("input") else {p for p in ta.parties if p != party}
        assert want <= senders, (party, senders)
    # the provider: control messages from the coordinator only, identical for A and B
    inbox_a, inbox_b = provider_inbox(ta), provider_inbox(tb)
    assert all(s == COORD and ph == Phase.CONTROL for s, _, ph, _ in inbox_a), inbox_a
    assert inbox_a == inbox_b
    if not name.startswith("input"):
        assert inbox_a, "the provider received no dealer request"
    print(f"\n{name}: {report.summary(FWER / REAL_TESTS, top=1)}")


# ---------------------------------------------------------------------------------------
# Leaky variants: the same analysis must see the leak
# ---------------------------------------------------------------------------------------


async def leaky_mul(ctx: P.PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
    """BROKEN on purpose: opens x and y themselves instead of x - a and y - b (it still
    takes its Beaver triple, so the dealer traffic is unchanged)."""
    await ctx.material(mul_spec(tuple(x[0].value.shape), tuple(x[1].value.shape)))
    (xo, yo), depth = await P.open_ring(ctx, "mul0", [x[0].value, x[1].value], x[0].depth)
    z = xo * yo if ctx.rank == 0 else torch.zeros_like(xo * yo)
    return [await P.truncate(ctx, Share(z, depth), p.d, sub=1)]


async def leaky_matmul(ctx: P.PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
    """BROKEN on purpose: opens both matrices unmasked."""
    await ctx.material(matmul_spec(tuple(x[0].value.shape), tuple(x[1].value.shape)))
    (xo, wo), depth = await P.open_ring(ctx, "mm0", [x[0].value, x[1].value], x[0].depth)
    z = xo @ wo if ctx.rank == 0 else torch.zeros_like(xo @ wo)
    return [await P.truncate(ctx, Share(z, depth), p.d, sub=1)]


async def leaky_trunc(ctx: P.PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
    """BROKEN on purpose: the truncation mask r is tiny (0..15, party 0 only) instead of
    uniform in the ring, so the opened ``c = x - r`` is x give or take 15. The result is
    still floor(x/d) or one less."""
    shape, d = tuple(x[0].value.shape), p.d
    await ctx.material(trunc_spec(shape, d, sub=1))  # consume the dealer's (real) pair
    r = torch.randint(0, 16, shape) if ctx.rank == 0 else torch.zeros(shape, dtype=torch.int64)
    (c,), depth = await P.open_ring(ctx, "tr1", [x[0].value - r], x[0].depth)
    z = floor_div(c, d) if ctx.rank == 0 else torch.zeros_like(c)
    return [Share(z, depth)]


class _NoMask:
    """A party context whose digit-lookup material is r = 0 (its one-hot e_0)."""

    def __init__(self, ctx: P.PartyContext) -> None:
        self._ctx = ctx

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ctx, name)

    async def material(self, spec: Any) -> dict[str, torch.Tensor]:
        real = await self._ctx.material(spec)  # consume the dealer's (real) material
        out = {k: torch.zeros_like(v) for k, v in real.items()}
        if self._ctx.rank == 0:
            for k, v in out.items():
                if k.startswith("e"):
                    v[0] = 1
        return out


async def leaky_digits(ctx: P.PartyContext, x: Sequence[Share], p: Params) -> list[Share]:
    """BROKEN on purpose: the lookup's mask r is 0, so c = j mod 2**b is opened as it is
    (the result is still right: the one-hot of r = 0 is e_0)."""
    return [await digits(_NoMask(ctx), x[0], p.d)]  # type: ignore[arg-type]


LEAKY = {
    "digits-2": ("digits", leaky_digits),
    "digits-3": ("digits", leaky_digits),
    "mul-2": ("mul", leaky_mul),
    "mul-3": ("mul", leaky_mul),
    "matmul-2": ("matmul", leaky_matmul),
    "truncation-3": ("trunc", leaky_trunc),
}


@pytest.mark.parametrize("name", list(LEAKY))
async def test_analysis_detects_leaky_variant(name: str) -> None:
    kind, fn = LEAKY[name]
    proto = PROTOCOLS[name]

    def build(suite: Suite, n: int) -> OpKind:
        return dataclasses.replace(DEFAULT.kind(kind, n), run=fn, local=None)

    ta, tb = await transcripts(
        proto, DEFAULT.replace(f"leaky-{name}", **{kind: build})
    )  # the leaky variants still compute the right result
    report = analyse(ta, tb)
    bad = [f.name for f in report.rejected(FWER / REAL_TESTS)]  # the real test's threshold
    assert bad, f"{name}: the analysis missed the leak"
    # every party opens the leaked values, so every party's view gives it away; what it
    # receives alone is a peer's share, still uniform
    for rank in range(proto.n):
        assert any(k.startswith(f"party {rank} (a) marginal open") for k in bad), (rank, bad)
    assert not [k for k in bad if " recv " in k], bad[:5]
    print(f"\n{name}: {report.summary(FWER / REAL_TESTS, top=1)}")
