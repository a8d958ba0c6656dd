"""What each actor sees during DReLU/ReLU is distributed independently of the secret.

Semi-honest security of the comparison means a party's view (everything it receives, plus
what it computes from its own shares) has the same distribution whatever ``x`` is. These
tests run the protocol on a secret tensor A and on a different secret tensor B in unseeded
clusters (fresh OS keys), record every message with the network's interceptor, and apply
two-sample tests to each party's view:

* every tensor it receives (a peer's share of a masked value, or dealer material);
* every value it *opens*: its own share (which it sends) combined with the peers' shares,
  i.e. ``c = x + r``, ``eps = x - a``, the masked AND inputs and the masked last step;
* joint features: the tuple of bits opened together in one message, per position, and the
  top bit of the opened ``c`` together with every bit opened once per element.

Each ring tensor gets a two-proportion test per bit and a Kolmogorov-Smirnov test on each
16-bit slice; each bit tensor gets a two-proportion test per bit position; each joint
feature a chi-square test of homogeneity. The family-wise false-alarm rate is bounded by
Bonferroni at ``FWER``. The same analysis is then shown to fail on deliberately leaky
variants (which still compute the right answer), so it has the power to see a leak. The provider must receive only control messages carrying op ids,
kinds, shapes and divisors, identical for A and B.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
from conftest import envelope_metadata
from scipy import special, stats

from actors import Envelope, Phase
from actors.messages import Requests
from protocols import FixedPoint, Share
from protocols.compare import DRELU_ROUNDS
from protocols.ring import to_bits, to_planes
from protocols.suite import CARRY, OpKind, Suite
from training import Cluster, SharedTensor

PARTIES = {2: ["alice", "bob"], 3: ["alice", "bob", "carol"]}
NUMEL = 2000
FWER = 1e-6
RAW = FixedPoint(10, 0)


# ---------------------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------------------


class Transcript:
    def __init__(self, envs: list[Envelope], parties: list[str]) -> None:
        self.envs = envs
        self.parties = parties

    def received(self, name: str, phases: Sequence[Phase]) -> list[Envelope]:
        return [e for e in self.envs if e.receiver == name and e.phase in phases]

    def metadata(self) -> list[tuple[Any, ...]]:
        """Everything but the payload values, for messages that are not commands."""
        return envelope_metadata(self.envs)


async def record(
    value: int,
    n: int,
    *,
    check: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None],
    suite: Suite = CARRY,
) -> Transcript:
    """Run drelu and relu on a tensor of NUMEL copies of the ring integer ``value``."""
    x = torch.full((NUMEL,), value, dtype=torch.int64)
    log: list[Envelope] = []
    async with Cluster.start(PARTIES[n], provider="james", seed=None, protocols=suite) as c:
        xs = SharedTensor(c, c.input(x), x.shape, RAW)
        await c.flush()
        stop = c.network.observe(lambda env: (log.append(env), env)[1])
        bit, y = xs.drelu(), xs.relu()
        await c.flush()
        stop()
        check(x, await c.reveal(bit.tid, bit.shape), await c.reveal(y.tid, y.shape))
        totals = c.stats()
    # who may receive what, over the cluster's whole life
    james = totals.per_actor["james"].received
    assert {p for p, v in james.items() if v} == {Phase.CONTROL}
    coordinator = totals.per_actor["coordinator"].received
    assert {p for p, v in coordinator.items() if v} <= {Phase.OUTPUT, Phase.CONTROL}
    return Transcript(log, PARTIES[n])


def correct(x: torch.Tensor, bit: torch.Tensor, y: torch.Tensor) -> None:
    assert torch.equal(bit, (x >= 0).to(torch.int64))
    assert torch.equal(y, torch.where(x >= 0, x, torch.zeros_like(x)))


# ---------------------------------------------------------------------------------------
# Views and two-sample tests
# ---------------------------------------------------------------------------------------


def bit_matrix(t: torch.Tensor) -> np.ndarray:
    """A 0/1 uint8 matrix (samples, features): ring elements as their 64 bits (least
    significant first), bool tensors flattened after the leading dimension."""
    if t.dtype == torch.int64:
        raw = t.reshape(-1).numpy().astype("<i8").view(np.uint8).reshape(-1, 8)
        return np.unpackbits(raw, axis=1, bitorder="little")
    arr = t.numpy().astype(np.uint8)
    return arr.reshape(arr.shape[0], -1) if arr.ndim > 1 else arr.reshape(-1, 1)


def codes(tensors: Sequence[torch.Tensor]) -> np.ndarray:
    """Joint categorical code of several same-shape bit tensors, per (sample, position)."""
    out = np.zeros_like(bit_matrix(tensors[0]), dtype=np.int64)
    for i, t in enumerate(tensors):
        out |= bit_matrix(t).astype(np.int64) << i
    return out


class View:
    """Named samples from one party's view; the leading dimension indexes elements."""

    def __init__(self) -> None:
        self.marginal: dict[str, torch.Tensor | np.ndarray] = {}
        """Per-bit (and for ring values per-16-bit-slice) samples."""
        self.joint: dict[str, tuple[np.ndarray, int]] = {}
        """Categorical codes (samples, positions) and their number of categories."""

    def add_message(self, name: str, tensors: Sequence[torch.Tensor]) -> None:
        for i, tensor in enumerate(tensors):
            self.marginal[f"{name}[{i}]"] = tensor
        same = len({(t.dtype, tuple(t.shape)) for t in tensors}) == 1
        if len(tensors) > 1 and same and tensors[0].dtype == torch.bool:
            self.joint[f"{name} jointly"] = (codes(tensors), 2 ** len(tensors))


def view_of(t: Transcript, party: str) -> View:
    """Everything ``party`` receives (online and offline), and everything it opens: its own
    share (what it sends, identical to every peer) combined with the peers' shares."""
    view = View()
    received = t.received(party, (Phase.ONLINE, Phase.OFFLINE))
    for e in received:
        view.add_message(f"recv {e.sender} {e.tag}", e.tensors())
    opened: dict[str, list[torch.Tensor]] = {}
    for e in t.envs:
        if e.sender == party and e.phase == Phase.ONLINE and e.tag not in opened:
            opened[e.tag] = list(e.tensors())
    for e in received:
        if e.phase != Phase.ONLINE:
            continue
        acc = opened[e.tag]
        for i, tensor in enumerate(e.tensors()):
            acc[i] = acc[i] ^ tensor if tensor.dtype == torch.bool else acc[i] + tensor
    for tag, tensors in opened.items():
        view.add_message(f"open {tag}", tensors)
    # across messages of one op: the top bit of the opened c with every opened bit tensor
    # that holds one bit per element (the sign is a function of such a combination)
    for tag, tensors in opened.items():
        op, _, step = tag.partition("/")
        if step != "cmp":
            continue
        for other, bits in opened.items():
            per_element = [b for b in bits if b.dtype == torch.bool and b.shape == tensors[0].shape]
            if other.partition("/")[0] == op and per_element:
                top = (tensors[0] < 0).reshape(-1, 1).numpy().astype(np.int64)
                joint = top | (codes(per_element) << 1)
                view.joint[f"open {tag} top bit with {other}"] = (
                    joint,
                    2 ** (1 + len(per_element)),
                )
    return view


class Results:
    """p-values of many two-sample tests, named lazily."""

    def __init__(self) -> None:
        self.groups: list[tuple[str, np.ndarray, list[str]]] = []

    def add(self, name: str, pvalues: Sequence[float], details: Sequence[str]) -> None:
        self.groups.append((name, np.asarray(pvalues, dtype=np.float64), list(details)))

    def __len__(self) -> int:
        return sum(len(p) for _, p, _ in self.groups)

    def failures(self, alpha: float) -> list[str]:
        return [
            f"{name} {details[j]}: p={pv[j]:.3g}"
            for name, pv, details in self.groups
            for j in np.flatnonzero(pv < alpha)
        ]


def two_sample(results: Results, name: str, a: Any, b: Any) -> None:
    """Per-bit two-proportion z tests, and KS on the 16-bit slices of ring values."""
    ma, mb = (x if isinstance(x, np.ndarray) else bit_matrix(x) for x in (a, b))
    assert ma.shape == mb.shape, name
    n1, n2 = ma.shape[0], mb.shape[0]
    p1, p2 = ma.mean(0, dtype=np.float64), mb.mean(0, dtype=np.float64)
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    var = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    z = np.where(var > 0, np.abs(p1 - p2) / np.sqrt(np.maximum(var, 1e-300)), 0.0)
    details = [f"bit{j} (freq {p1[j]:.3f} vs {p2[j]:.3f})" for j in range(len(p1))]
    results.add(name, special.erfc(z / math.sqrt(2)), details)
    if isinstance(a, torch.Tensor) and a.dtype == torch.int64:
        assert isinstance(b, torch.Tensor) and b.dtype == torch.int64, name
        pv, det = [], []
        for k in range(4):  # KS on each 16-bit slice of the ring value
            sa = ((a.reshape(-1) >> (16 * k)) & 0xFFFF).numpy()
            sb = ((b.reshape(-1) >> (16 * k)) & 0xFFFF).numpy()
            pv.append(stats.ks_2samp(sa, sb).pvalue)
            det.append(f"KS bits {16 * k}..{16 * k + 15}")
        results.add(name, pv, det)


def two_sample_joint(results: Results, name: str, a: np.ndarray, b: np.ndarray, k: int) -> None:
    """Chi-square test of homogeneity of two categorical samples, per position."""
    assert a.shape[1:] == b.shape[1:], name
    cats = np.arange(k)
    oa = (a[..., None] == cats).sum(0).astype(np.float64)  # (positions, k)
    ob = (b[..., None] == cats).sum(0).astype(np.float64)
    n1, n2 = a.shape[0], b.shape[0]
    tot = oa + ob
    ea, eb = tot * n1 / (n1 + n2), tot * n2 / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = np.where(tot > 0, (oa - ea) ** 2 / ea + (ob - eb) ** 2 / eb, 0.0)
    stat, df = cells.sum(1), (tot > 0).sum(1) - 1
    pv = np.where(df > 0, stats.chi2.sf(stat, np.maximum(df, 1)), 1.0)
    results.add(
        name, pv, [f"position {j} (chi2 {stat[j]:.1f}, df {df[j]})" for j in range(len(pv))]
    )


def analyse(ta: Transcript, tb: Transcript) -> tuple[Results, float]:
    """All p-values comparing the two transcripts' views, and the per-test threshold."""
    results = Results()
    for party in ta.parties:
        va, vb = view_of(ta, party), view_of(tb, party)
        assert va.marginal.keys() == vb.marginal.keys(), party
        assert va.joint.keys() == vb.joint.keys(), party
        for key in sorted(va.marginal):
            two_sample(results, f"{party}: {key}", va.marginal[key], vb.marginal[key])
        for key in sorted(va.joint):
            (ca, k), (cb, _) = va.joint[key], vb.joint[key]
            two_sample_joint(results, f"{party}: {key}", ca, cb, k)
    return results, FWER / len(results)


def provider_requests(t: Transcript) -> list[Any]:
    envs = [e for e in t.envs if e.receiver == "james"]
    assert envs, "the provider received no request"
    out = []
    for e in envs:
        assert e.phase == Phase.CONTROL and e.sender == "coordinator", e
        reqs = e.control(Requests).items
        for req in reqs:
            assert req.kind in {"drelu", "relu"}, req
            assert req.shapes == [(NUMEL,)] and req.out == (NUMEL,) and req.d == 1, req
        out.append(reqs)
    return out


# ---------------------------------------------------------------------------------------
# The real protocol
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("pair", [(5, -5), (0, -(2**62))], ids=["+5/-5", "0/-2^62"])
async def test_views_independent_of_secret(n: int, pair: tuple[int, int]) -> None:
    ta = await record(pair[0], n, check=correct)
    tb = await record(pair[1], n, check=correct)
    # same messages, tags, phases, depths, sizes and shapes
    assert ta.metadata() == tb.metadata()
    # every party gets one message per round from every peer, for each of the two ops
    for party in PARTIES[n]:
        got = ta.received(party, (Phase.ONLINE,))
        assert len(got) == 2 * DRELU_ROUNDS * (n - 1)
        assert {e.depth for e in got} == set(range(1, DRELU_ROUNDS + 1))
    results, alpha = analyse(ta, tb)
    assert len(results) > 1000
    bad = results.failures(alpha)
    assert not bad, "views depend on the secret:\n" + "\n".join(bad[:20])
    # the provider learns op ids, kinds and shapes only, the same for A and B
    assert provider_requests(ta) == provider_requests(tb)


async def test_opened_comparison_value_is_uniform() -> None:
    """One-sample sanity check: the opened ``c = x + r`` of bob's view is uniform."""
    t = await record(5, 2, check=correct)
    c = view_of(t, "bob").marginal
    opened = [v for k, v in c.items() if k.startswith("open") and k.endswith("/cmp[0]")]
    assert len(opened) == 2
    for v in opened:
        bits = to_bits(v).double().mean(0)
        assert float((bits - 0.5).abs().max()) < 6 * math.sqrt(0.25 / NUMEL)
        for k in range(4):
            s = ((v >> (16 * k)) & 0xFFFF).double() / 65536
            assert stats.kstest(s.numpy(), "uniform").pvalue > 1e-6


# ---------------------------------------------------------------------------------------
# Leaky variants: the same analysis must see the leak
# ---------------------------------------------------------------------------------------

Tamper = Callable[[int, dict[str, torch.Tensor]], dict[str, torch.Tensor]]


class _TamperedContext:
    """Forwards to the party's real context but alters the dealer material it returns."""

    def __init__(self, ctx: Any, tamper: Tamper) -> None:
        self._ctx = ctx
        self._tamper = tamper

    @property
    def rank(self) -> int:
        return self._ctx.rank

    @property
    def n_parties(self) -> int:
        return self._ctx.n_parties

    @property
    def op_id(self) -> int:
        return self._ctx.op_id

    async def send(self, *args: Any) -> None:
        await self._ctx.send(*args)

    async def recv(self, *args: Any) -> Any:
        return await self._ctx.recv(*args)

    async def material(self, spec: Any) -> dict[str, torch.Tensor]:
        return self._tamper(self.rank, dict(await self._ctx.material(spec)))


def small_mask(rank: int, m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The comparison mask r is the constant 7 instead of uniform over the ring (every
    item derived from r is made consistent: its bits, the level-0 products, r * alpha)."""
    k = torch.full_like(m["r"], 7 if rank == 0 else 0)
    bits = to_planes(k)
    pairs = ~(bits[1:62:2] | bits[0:62:2]) if rank == 0 else torch.zeros_like(m["rpairs"])
    out = {**m, "r": k, "rbits": bits, "rpairs": pairs}
    if "r_a" in m:
        out["r_a"] = 7 * m["m_a"]
    return out


def unmasked_final(rank: int, m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The last step's mask alpha is zero (and so r * alpha): it opens ``K``, the sign
    bit itself."""
    zero = ["fa", "m_a", *(["r_a"] if "r_a" in m else [])]
    return {**m, **{k: torch.zeros_like(m[k]) for k in zero}}


def unmasked_and(rank: int, m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The first AND level's mask a is zero: it opens the propagate bits of c ^ ~r."""
    return {**m, **{k: torch.zeros_like(m[k]) for k in ("a0", "c0", "cc0")}}


def leaky(tamper: Tamper) -> Suite:
    """The default suite with drelu and relu running over a tampering context."""

    def wrap(kind: str) -> Any:
        def build(suite: Suite, n: int) -> OpKind:
            real = CARRY.kind(kind, n)
            assert real.run is not None
            inner = real.run

            async def run(ctx: Any, xs: Sequence[Share], params: Any) -> list[Share]:
                return await inner(_TamperedContext(ctx, tamper), xs, params)

            return dataclasses.replace(real, run=run)

        return build

    return CARRY.replace(f"leaky-{tamper.__name__}", drelu=wrap("drelu"), relu=wrap("relu"))


@pytest.mark.parametrize(
    ("tamper", "pair"),
    [(small_mask, (5, -5)), (unmasked_final, (5, -5)), (unmasked_and, (0, -5))],
    ids=["small-mask", "unmasked-final", "unmasked-and"],
)
@pytest.mark.parametrize("n", [2, 3])
async def test_analysis_detects_leaky_variants(
    n: int, tamper: Tamper, pair: tuple[int, int]
) -> None:
    suite = leaky(tamper)
    # the leaky variants still compute the right answer: only the views give them away
    ta = await record(pair[0], n, check=correct, suite=suite)
    tb = await record(pair[1], n, check=correct, suite=suite)
    assert ta.metadata() == tb.metadata()
    results, alpha = analyse(ta, tb)
    bad = results.failures(alpha)
    assert bad, f"{tamper.__name__}: the two-sample tests missed the leak"
    # every party opens the leaked values, so every party's view must give it away
    for party in PARTIES[n]:
        assert any(b.startswith(f"{party}: open") for b in bad), party


def test_two_sample_tests_power_and_level() -> None:
    """The tests on a small controlled example (no cluster)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-(2**63), 2**63 - 1, (NUMEL,), generator=g)
    b = torch.randint(-(2**63), 2**63 - 1, (NUMEL,), generator=g)
    alpha = FWER / 68
    assert np.array_equal(bit_matrix(a), to_bits(a).numpy().astype(np.uint8))

    def fails(x: torch.Tensor, y: torch.Tensor) -> list[str]:
        r = Results()
        two_sample(r, "t", x, y)
        assert len(r) == 68
        return r.failures(alpha)

    assert not fails(a, b)
    assert fails(a, b | (1 << 62))  # one bit always set
    assert fails(a, (b & ~0xFF) + 17)  # low byte constant
    assert fails(a, b >> 2)  # top bits biased
