"""Leaks in the newer protocols, kept as tests: the shipped analysis rejects each of them
and passes the real protocol beside it.

A review injected four leaks into a copy of the library, each keeping every result
correct, and the view analyses of the time missed them:

(a) party 1's DCF root seed derived from a fixed seed (x recovered exactly);
(b) the dropout mask sent in the clear to one party;
(c) the carry tree's last mask equal to bit 0 of r, costs unchanged (``lsb(x) ^ sign(x)``
    opened);
(d) the FSS mask reused across ops.

The causes were: no multi-op FSS program, joint features only between tensors of equal
element counts (so a DCF key was never tested against an opening, nor a bit opening
against a ring opening), no analysis that varies the dealer's secrets (the dropout mask
was never varied), and no test of the keys themselves. This file has multi-op programs
for the FSS suite (DReLU, ReLU, truncation, a product truncated by FSS), the carry tree,
conv and dropout, run through :mod:`protocols.analysis` (views of the in-memory harness):

* ``a_vs_b`` / ``real_vs_sim``: views on fixed secrets against other secrets and against
  the simulator, with the per-element cross features, family (d) of the analysis;
* ``dealer_a_vs_b``: the dealer's secrets vary too: masks ``r = c - x`` for fixed
  openings ``c``, or a dropout mask all-keep against all-drop;
* the DCF key test: rebuild the other party's key from public constants and fixed seeds
  (:func:`protocols.analysis.dcf_rebuild`), and look for repeated roots over runs
  (:func:`protocols.analysis.dcf_root_repeats`).

Each leak is a realistic variant (a patched key generator, a broken dealer spec, a
dealer that reuses labels), asserted to compute the right result, and each analysis here
is shown to fail on one of them. Every protocol secret (party keys, dealer generator,
input shares, the dealer's random items) is fresh from the OS in every run; only the
test's own sampling (secrets, openings ``c``, simulator) uses fixed seeds. False alarms:
Bonferroni at ``FWER`` per analysis with Williams-corrected G-tests, so the ~30
analyses of real protocols here fail together with probability below 3e-5; the key test's
false alarm (a wrong root fitting every element) is below 2**-100.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from protocols import analysis as A
from protocols import compare as carry
from protocols import conv, fss
from protocols.analysis import Ctx, FullView, Program, Report
from protocols.context import Share
from protocols.layers import KEEP_UNITS
from protocols.material import Item, Kind, MaterialSpec
from protocols.params import Params
from protocols.ring import floor_div
from protocols.suite import DEFAULT, FSS_EXACT
from protocols.testing import Board, TamperContext, fresh_board

FWER = 1e-6
"""Family-wise false-alarm rate of one analysis (Bonferroni over its features)."""
NUMEL = 1000  # not a multiple of 64: the carry tree opens its bit planes as bools
RUNS = 2
N = (NUMEL,)
I64 = torch.int64
TRUNC_D = 1000
MUL_D = 2**16
KEEP = 3 * 2**18  # dropout keep probability 0.75


def _sign(x: torch.Tensor) -> torch.Tensor:
    return (x >= 0).to(I64)


def _relu(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, torch.zeros_like(x))


# ---------------------------------------------------------------------------------------
# Multi-op programs
# ---------------------------------------------------------------------------------------


async def _suite_op(
    ctx: Any, suite: Any, kind: str, xs: list[Share], d: int = 1, keep: int = 0
) -> list[Share]:
    op = suite.kind(kind, ctx.n_parties)
    assert op.run is not None
    out: list[Share] = await op.run(ctx, xs, Params(d=d, keep=keep))
    return out


async def _fss_layer(ctx: Ctx, x: list[Share]) -> Any:
    """The fss-exact suite: ReLU, DReLU, a truncation and a product truncated by FSS."""
    return [
        await _suite_op(ctx(21), FSS_EXACT, "relu", [x[0]]),
        await _suite_op(ctx(22), FSS_EXACT, "drelu", [x[1]]),
        await _suite_op(ctx(23), FSS_EXACT, "trunc", [x[2]], TRUNC_D),
        await _suite_op(ctx(24), FSS_EXACT, "mul", [x[0], x[1]], MUL_D),
    ]


def _fss_layer_expect(s: list[torch.Tensor]) -> list[torch.Tensor]:
    return [
        _relu(s[0]),
        _sign(s[0]),
        _sign(s[1]),
        floor_div(s[2], TRUNC_D),
        floor_div(s[0] * s[1], MUL_D),
    ]


def _fss_layer_check(xs: list[torch.Tensor], out: list[torch.Tensor]) -> None:
    want = _fss_layer_expect(xs)
    for i in (0, 1, 2, 4):  # relu, its bit, drelu, the product by 2**16: exact
        assert torch.equal(out[i], want[i]), i
    err = out[3] - want[3]  # division by 1000: floor or floor + 1
    assert bool(((err == 0) | (err == 1)).all())


async def _carry_layer(ctx: Ctx, x: list[Share]) -> Any:
    """The carry tree: ReLU then DReLU (ops 21, 22)."""
    return [await carry.relu(ctx(21), x[0]), await carry.drelu(ctx(22), x[1])]


CONV_X, CONV_W, CONV_OUT = (5, 2, 10, 10), (4, 2, 3, 3), (5, 4, 8, 8)  # 1000-element inputs


async def _conv_twice(ctx: Ctx, x: list[Share]) -> Any:
    """One conv layer on two batches (ops 31, 32), the same weights."""
    return [
        await conv.bilinear(ctx(31), "conv", x[0], x[1], CONV_OUT),
        await conv.bilinear(ctx(32), "conv", x[2], x[1], CONV_OUT),
    ]


async def _dropout(ctx: Any, x: Share) -> list[Share]:
    return await _suite_op(ctx, DEFAULT, "dropout", [x], keep=KEEP)


async def _dropout_twice(ctx: Ctx, x: list[Share]) -> Any:
    """Two dropout layers (ops 41, 42)."""
    return [await _dropout(ctx(41), x[0]), await _dropout(ctx(42), x[1])]


def _dropout_check(xs: list[torch.Tensor], out: list[torch.Tensor]) -> None:
    """Outputs ``x1 * b1, b1, x2 * b2, b2`` with 0/1 masks."""
    for x, y, b in ((xs[0], out[0], out[1]), (xs[1], out[2], out[3])):
        assert bool(((b == 0) | (b == 1)).all()), "the mask is not 0/1"
        assert torch.equal(y, x * b), "dropout is not x * mask"


PROGRAMS = {
    p.name: p
    for p in [
        Program("fss layer", (N, N, N), _fss_layer, check=_fss_layer_check, parties=(2,)),
        Program(
            "carry layer",
            (N, N),
            _carry_layer,
            lambda s: [_relu(s[0]), _sign(s[0]), _sign(s[1])],
        ),
        Program(
            "conv twice",
            (CONV_X, CONV_W, CONV_X),
            _conv_twice,
            lambda s: [conv.conv_ring(s[0], s[1], CONV_OUT), conv.conv_ring(s[2], s[1], CONV_OUT)],
        ),
        Program("dropout twice", (N, N), _dropout_twice, check=_dropout_check),
    ]
}
CASES = [(name, n) for name, p in PROGRAMS.items() for n in p.parties]


# ---------------------------------------------------------------------------------------
# Dealer secrets: which masks each program's ops draw
# ---------------------------------------------------------------------------------------

MASKS: dict[str, list[tuple[int, str, int]]] = {
    # (op id, spec kind, input index) of every mask r that is opened as x + r
    "fss layer": [(21, "relu_fss", 0), (22, "drelu_fss", 1), (23, "trunc_fss", 2)],
    "carry layer": [(21, "relu", 0), (22, "drelu", 1)],
}


def masked_secrets(name: str, kind: str) -> A.DealerSecrets:
    """Inputs of ``kind`` (A: fixed, or random) and, for every op that opens ``x + r``,
    the mask ``r = c - x`` for uniform ``c`` drawn by the test: the openings have the same
    distribution whatever x and r are, so a view that depends on them beyond ``c`` (or
    the offset a truncation adds to it) differs between A and B."""
    program = PROGRAMS[name]

    def secrets(run: int) -> tuple[list[torch.Tensor], dict[tuple[int, str, str], torch.Tensor]]:
        xs = A.program_inputs(kind, program, run)
        g = torch.Generator().manual_seed(31 * run + 7)
        dealer = {}
        for op, spec, i in MASKS[name]:
            c = torch.randint(-(2**63), 2**63 - 1, xs[i].shape, dtype=I64, generator=g)
            dealer[op, spec, "r"] = c - xs[i]
        return xs, dealer

    return secrets


def dropout_secrets(keep: bool) -> A.DealerSecrets:
    """Fixed inputs A; the dealer's draw ``u`` of both dropout ops makes the mask all-keep
    (``u = 0``) or all-drop (low 20 bits all ones, above the keep threshold)."""
    program = PROGRAMS["dropout twice"]
    u = 0 if keep else KEEP_UNITS - 1

    def secrets(run: int) -> tuple[list[torch.Tensor], dict[tuple[int, str, str], torch.Tensor]]:
        xs = A.program_inputs("A", program, run)
        return xs, {(op, "dropout", "u"): torch.full(N, u, dtype=I64) for op in (41, 42)}

    return secrets


# ---------------------------------------------------------------------------------------
# The leaky variants (each computes the right result: run_views checks every output)
# ---------------------------------------------------------------------------------------


@pytest.fixture
def fixed_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """LEAK (a): ``dcf_keygen`` takes party 1's root seeds from ``default_rng(0)`` (a
    debugging leftover) instead of the dealer's generator. Any root gives correct keys."""
    real = fss.dcf_keygen

    def keygen(
        alpha: torch.Tensor, beta: torch.Tensor, n_bits: int, seed: bytes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        half = fss.dcf_seed_bytes(alpha.numel()) // 2
        return real(alpha, beta, n_bits, seed[:half] + np.random.default_rng(0).bytes(half))

    monkeypatch.setattr(fss, "dcf_keygen", keygen)


@pytest.fixture
def root_from_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    """LEAK (twin of the key-against-opening features): party 0's root seed is the mask
    itself ("alpha is uniform, so it is a fine seed"). Keys stay correct."""
    real = fss.dcf_keygen

    def keygen(
        alpha: torch.Tensor, beta: torch.Tensor, n_bits: int, seed: bytes
    ) -> tuple[torch.Tensor, torch.Tensor]:
        roots = np.frombuffer(seed, dtype=np.uint64).reshape(2, -1, 2).copy()
        roots[0, :, 0] = alpha.numpy().view(np.uint64)
        return real(alpha, beta, n_bits, roots.tobytes())

    monkeypatch.setattr(fss, "dcf_keygen", keygen)


def mask_in_clear(ctx: Any) -> Any:
    """LEAK (b): the dropout mask is a per-party dealer item: the last party gets the mask
    itself, the others zeros (the shares still add up to the mask)."""

    def swap(spec: MaterialSpec) -> MaterialSpec | None:
        if spec.kind != "dropout":
            return None
        (u, b) = spec.items

        def keygen(values: dict, n: int, prg: Any, label: Any) -> list[dict[str, torch.Tensor]]:
            mask = spec.derive(values)["b"]
            return [{"b": mask if r == n - 1 else torch.zeros_like(mask)} for r in range(n)]

        return MaterialSpec(
            spec.kind, spec.sub, (u, Item("b", b.shape, Kind.KEY)), lambda s: {}, keygen
        )

    return TamperContext(ctx, swap=swap)


def last_mask_is_r0(ctx: Any) -> Any:
    """LEAK (c): the carry tree masks its final opening with bit 0 of r (already dealt)
    instead of a fresh bit alpha; the dealer derives ``m_a`` (and ``r * alpha``) from that
    bit. Every item keeps its size, so the costs are unchanged."""

    def swap(spec: MaterialSpec) -> MaterialSpec | None:
        if spec.kind not in ("drelu", "relu"):
            return None

        def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            out = dict(spec.derive(s))
            alpha = s["r"] & 1
            out["m_a"] = alpha
            if "r_a" in out:
                out["r_a"] = s["r"] * alpha
            return out

        return MaterialSpec(spec.kind, spec.sub, spec.items, derive, spec.keygen)

    def tamper(rank: int, spec: MaterialSpec, m: dict[str, torch.Tensor]) -> dict:
        if spec.kind in ("drelu", "relu"):
            m["fa"] = m["rbits"][0].clone()  # this party's XOR share of bit 0 of r
        return m

    return TamperContext(ctx, swap=swap, tamper=tamper)


def label_reuse(kinds: tuple[str, ...]) -> A.BoardFactory:
    """LEAK (d) and its conv twin: the dealer draws the material of ``kinds`` under one
    label (a cache "because FSS keygen is slow"): every such op gets the same masks."""

    class Reuse(Board):
        def material_label(self, op_id: int, spec: MaterialSpec) -> int:
            return 0 if spec.kind in kinds else op_id

    return lambda n, run: fresh_board(n, cls=Reuse)


FSS_KINDS = ("drelu_fss", "relu_fss", "trunc_fss")


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def secure(report: Report) -> None:
    worst = A.expect_secure(report, FWER)
    print(f"\n  pass: {len(report)} tests, threshold {report.threshold(FWER):.2g}; worst {worst}")


def caught(report: Report, *parts: str) -> None:
    hit = A.expect_caught(report, FWER, *parts)
    print(f"\n  caught ({len(report.rejected(FWER))} rejected of {len(report)}): {hit}")


def without(report: Report, family: str) -> Report:
    return Report([f for f in report.findings if family not in f.name])


# ---------------------------------------------------------------------------------------
# 1. The real multi-op programs pass every analysis
# ---------------------------------------------------------------------------------------


ANALYSES = {  # the analyses each program's leaky twins below fail
    "fss layer": ("B", "sim"),
    "carry layer": ("random", "sim"),
    "conv twice": ("B", "sim"),
    "dropout twice": ("B", "sim"),
}


@pytest.mark.parametrize(
    ("name", "n", "analysis"), [(m, n, a) for m, n in CASES for a in ANALYSES[m]]
)
async def test_real_programs_pass(name: str, n: int, analysis: str) -> None:
    program = PROGRAMS[name]
    if analysis == "sim":
        secure(await A.real_vs_sim(program, n, runs=RUNS))
    else:
        secure(await A.a_vs_b(program, n, analysis, runs=RUNS))


@pytest.mark.parametrize(("name", "n"), [c for c in CASES if c[0] in MASKS])
async def test_real_programs_pass_with_the_dealers_masks_varied(name: str, n: int) -> None:
    a, b = masked_secrets(name, "A"), masked_secrets(name, "random")
    secure(await A.dealer_a_vs_b(PROGRAMS[name], n, a, b, runs=RUNS))


@pytest.mark.parametrize("n", [2, 3])
async def test_real_dropout_passes_with_the_mask_varied(n: int) -> None:
    program = PROGRAMS["dropout twice"]
    secure(
        await A.dealer_a_vs_b(program, n, dropout_secrets(True), dropout_secrets(False), runs=RUNS)
    )


# ---------------------------------------------------------------------------------------
# 2. The DCF key test: the other party's key cannot be rebuilt
# ---------------------------------------------------------------------------------------

KEYS = {  # op id -> (opening, [(key item, n_bits, payload words)])
    21: ("fss_sign0[0]", [("k0", 63, 2)]),
    22: ("fss_sign0[0]", [("k0", 63, 1)]),
    23: ("fss_trunc1[0]", [("k0", 64, 1), ("k1", 10, 1)]),
    24: ("fss_trunc1[0]", [("k0", 64, 1), ("k1", 16, 1)]),
}


def _own(view: FullView, name: str) -> torch.Tensor:
    (t,) = (t for n, _, t in view.own if n == name)
    return t


def _opened(view: FullView, name: str) -> torch.Tensor:
    (t,) = (t for n, _, t in view.opened if n == name)
    return t


async def _fss_views(runs: int = RUNS) -> list[tuple[list[torch.Tensor], list[FullView]]]:
    program = PROGRAMS["fss layer"]
    out = []
    for i in range(runs):
        xs = A.program_inputs("random", program, i)
        out.append((xs, await A.run_views(program, xs, 2)))
    return out


LABELS = [(op, 1 if op >= 23 else 0) for op in KEYS]  # the truncations' specs have sub 1


def own_sources(key: bytes) -> list[tuple[str, Callable[[int], bytes]]]:
    """The sources that need the party's own PRG key."""
    return [s for s in A.public_seed_sources(key, LABELS, seeds=()) if "own" in s[0]]


class _Public:
    """The public guesses, built once for the file (they depend on no secret)."""

    _guesses: A.RootGuesses | None = None

    def guesses(self) -> A.RootGuesses:
        if self._guesses is None:
            self._guesses = A.RootGuesses(A.public_seed_sources(None, LABELS), NUMEL)
        return self._guesses


PUBLIC = _Public()


def key_findings(
    runs: list[tuple[list[torch.Tensor], list[FullView]]], attacker: int
) -> tuple[list[tuple[int, str, A.Rebuilt]], float, int]:
    """Every key ``attacker`` holds: rebuilt ones, the best fit of any source, and the
    repeated root candidates over all its keys of one shape."""
    rebuilt, best = [], 0.0
    by_shape: dict[tuple[int, int], list[torch.Tensor]] = {}
    for _, views in runs:
        view = views[attacker]
        assert view.key is not None
        own = A.RootGuesses(own_sources(view.key), NUMEL)
        for op, (_, keys) in KEYS.items():
            for item, bits, m in keys:
                key = _own(view, f"op{op} {item}")
                got, fit = A.dcf_rebuild(key, bits, m, own, PUBLIC.guesses())
                best = max(best, fit)
                if got is not None:
                    rebuilt.append((op, item, got))
                by_shape.setdefault((bits, m), []).append(key)
    repeats = sum(A.dcf_root_repeats(keys, bits, m) for (bits, m), keys in by_shape.items())
    return rebuilt, best, repeats


async def test_real_dcf_keys_cannot_be_rebuilt() -> None:
    """Neither party rebuilds the other's key of any op from any public source, its own
    root or its own PRG key, and no root candidate repeats over ops and runs."""
    runs = await _fss_views()
    n_sources = len(A.public_seed_sources(b"k" * 32, LABELS))
    for attacker in (0, 1):
        rebuilt, best, repeats = key_findings(runs, attacker)
        assert not rebuilt, rebuilt[0]
        assert best < 0.01 and repeats == 0, (best, repeats)
        print(f"\n  party {attacker}: {n_sources} sources x 12 keys: best fit {best}, repeats 0")


async def test_fixed_root_seed_is_caught(fixed_root: None) -> None:
    """LEAK (a): party 0 rebuilds party 1's keys from ``default_rng(0)``, recovers r from
    the DReLU and ReLU keys and with the opened x + r every x exactly. The repeat count
    sees the fixed seed without knowing it."""
    runs = await _fss_views()
    rebuilt, best, repeats = key_findings(runs, 0)
    assert best == 1.0 and repeats > 0
    assert {(op, item) for op, item, _ in rebuilt} == {
        (op, item) for op, (_, keys) in KEYS.items() for item, _, _ in keys
    }
    print(f"\n  rebuilt {len(rebuilt)} keys from {rebuilt[0][2].source}; {repeats} repeats")
    for xs, views in runs:
        for op, x in ((21, xs[0]), (22, xs[1])):
            _, bits, m = KEYS[op][1][0]
            root = next(r.root for o, _, r in rebuilt if o == op)
            alpha, beta = A.dcf_recover(0, _own(views[0], f"op{op} k0"), root, bits, m)
            r = alpha + (beta[:, 0] == -1).to(I64) * (-(2**63))  # msb from the payload 1 - 2b
            x_hat = _opened(views[0], f"op{op} {KEYS[op][0]}")
            assert torch.equal(x_hat - r, x), op  # x recovered exactly
    # the other direction still fails: party 0's roots are fresh
    assert not key_findings(runs, 1)[0]


# ---------------------------------------------------------------------------------------
# 3. The other leaks: each rejected by the analysis that the real programs pass
# ---------------------------------------------------------------------------------------


async def test_root_seed_from_the_mask_is_caught(root_from_mask: None) -> None:
    """Twin of the key-against-opening features (family (d)): party 0's key row 0 is
    ``r mod 2**63`` (bit 0 cleared), so its low bits against the opening's give x."""
    program = PROGRAMS["fss layer"]
    report = await A.a_vs_b(program, 2, "B", runs=RUNS)
    caught(report, "party 0 (d) cross open op22 fss_sign0[0] with own op22 k0: (mod16, [0] mod16)")
    assert not without(report, "(d)").rejected(FWER)  # invisible to the other families
    a, b = masked_secrets("fss layer", "A"), masked_secrets("fss layer", "random")
    caught(await A.dealer_a_vs_b(program, 2, a, b, runs=RUNS), "party 0 (d) cross")


@pytest.mark.parametrize("n", [2, 3])
async def test_dropout_mask_in_the_clear_is_caught(n: int) -> None:
    """LEAK (b): varying x misses it (the mask does not depend on x); varying the dealer's
    mask catches it in the last party's own material."""
    program = PROGRAMS["dropout twice"]
    secure(await A.a_vs_b(program, n, "B", runs=RUNS, wrap=mask_in_clear))
    report = await A.dealer_a_vs_b(
        program, n, dropout_secrets(True), dropout_secrets(False), runs=RUNS, wrap=mask_in_clear
    )
    caught(report, f"party {n - 1} (a) marginal own op41 b")
    caught(report, f"party {n - 1} (a) marginal own op42 b")


@pytest.mark.parametrize("n", [2, 3])
async def test_last_carry_mask_equal_to_r0_is_caught(n: int) -> None:
    """LEAK (c): ``fin = sign(x) ^ r_0`` and ``c_0 = x_0 ^ r_0``, so the bit opening
    against the ring opening gives ``sign(x) ^ lsb(x)``: family (d) (ring against bits)
    sees it, the older families do not."""
    program = PROGRAMS["carry layer"]
    report = await A.a_vs_b(program, n, "random", runs=RUNS, wrap=last_mask_is_r0)
    caught(report, "(d) cross open op22 cmp[0] and open op22 fin[0]: (mod16, bit)")
    assert not without(report, "(d)").rejected(FWER)
    caught(await A.real_vs_sim(program, n, runs=RUNS, wrap=last_mask_is_r0), "(d) cross")
    a, b = masked_secrets("carry layer", "A"), masked_secrets("carry layer", "random")
    caught(await A.dealer_a_vs_b(program, n, a, b, runs=RUNS, wrap=last_mask_is_r0), "fin[0]")


async def test_fss_mask_reused_across_ops_is_caught() -> None:
    """LEAK (d): with one label for every FSS spec, ReLU and DReLU (and the two
    truncations) get the same r: the difference of their openings is ``x1 - x2``."""
    program = PROGRAMS["fss layer"]
    board = label_reuse(FSS_KINDS)
    report = await A.a_vs_b(program, 2, "B", runs=RUNS, board=board)
    caught(report, "(c) pair open op21 fss_sign0[0] and open op22 fss_sign0[0]: diff mod16")
    sim = await A.real_vs_sim(program, 2, runs=RUNS, board=board)
    caught(sim, "(c) pair open op23 fss_trunc1[0] and open op24 fss_trunc1[0]: diff")


@pytest.mark.parametrize("n", [2, 3])
async def test_conv_mask_reused_across_ops_is_caught(n: int) -> None:
    """Twin of the multi-op conv program: one Beaver triple for both batches opens
    ``x1 - a`` and ``x2 - a``."""
    program = PROGRAMS["conv twice"]
    board = label_reuse(("conv",))
    report = await A.a_vs_b(program, n, "B", runs=RUNS, board=board)
    caught(report, "(c) pair open op31 conv0[0] and open op32 conv0[0]: diff mod16")


def test_recovery_needs_the_right_root() -> None:
    """dcf_recover is only as good as the root: with the true other root it returns alpha
    and beta, with the party's own root it does not."""
    g = torch.Generator().manual_seed(3)
    alpha = torch.randint(0, 2**62, (50,), generator=g)
    beta = torch.randint(-(2**62), 2**62, (50, 1), generator=g)
    seed = np.random.default_rng(9).bytes(fss.dcf_seed_bytes(50))
    k0, _ = fss.dcf_keygen(alpha, beta, 63, seed)
    roots = np.frombuffer(seed, dtype=np.uint64).reshape(2, 50, 2)
    assert A.dcf_fits(k0, roots[1], 63, 1).all()
    assert not A.dcf_fits(k0, roots[0], 63, 1).any()
    got_alpha, got_beta = A.dcf_recover(0, k0, roots[1], 63, 1)
    assert torch.equal(got_alpha, alpha) and torch.equal(got_beta, beta)
    wrong, _ = A.dcf_recover(0, k0, roots[0], 63, 1)
    assert not torch.equal(wrong, alpha)
