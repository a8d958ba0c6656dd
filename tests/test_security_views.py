"""Security evidence that can fail: full views, A-vs-B and real-vs-simulated tests.

Each protocol runs in the in-memory harness with the runtime's dealer path
(``Board(real_dealer=True)``: per-party PRG keys, streams labelled ``(op_id, sub)``),
so a party's view holds its key, its PRG-derived material shares, its input shares,
everything it receives and everything it opens. :mod:`protocols.analysis` compares the
views of many independent runs on secret A with those on secret B (fixed vs fixed, fixed
vs random; the secrets differ in parity, low bits, magnitude and sign) and, with no
secret at all, real views against :func:`protocols.analysis.simulate`.

Every analysis is shown to fail on a realistic broken variant (the dealer or the protocol
changed in this file, never the library), each of which still computes the right result:

* ``SAME_KEY``: every party gets the same PRG key (the party recovers x exactly);
* ``NonceReuseBoard``: every op draws its material under the same label;
* ``even_mask``: the comparison's mask ``r`` is even, so ``c = x + r`` keeps x's parity;
* ``narrow_trunc_mask``: the truncation mask ``r`` is drawn from ``[0, 2**48)`` ("so that
  ``x - r`` never wraps"): statistical masking with too little slack shows magnitudes;
* ``beaver_b_is_a``: a triple with ``b = a``: ``eps - delta = x - y``.

Sample sizes: ``RUNS`` runs of ``NUMEL`` elements per secret, each element an independent
instance of the protocol. Every protocol secret (party keys, the dealer's generator, the
input shares) is fresh from the OS in every run (:func:`protocols.testing.fresh_board`);
only the test's own sampling (the random secrets, the simulator) has fixed seeds. The
threshold is Bonferroni over every feature of every party's view, so a real protocol fails
one analysis with probability at most ``FWER`` (G-tests with Williams' correction, checked
calibrated down to 1e-4), and the whole file (about 70 analyses of real protocols) with
probability below 1e-4. The machinery is :mod:`protocols.analysis`; the leaks of the newer
protocols are in ``tests/test_leaks.py``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

import protocols as P
from protocols import conv, fss
from protocols.analysis import (
    Ctx,
    Program,
    Report,
    a_vs_b,
    collect,
    compare,
    expect_caught,
    expect_secure,
    program_inputs,
    real_vs_sim,
    run_views,
)
from protocols.context import Share
from protocols.material import Item, MaterialSpec
from protocols.params import Params
from protocols.prg import Prg
from protocols.ring import floor_div
from protocols.sharing import share
from protocols.suite import DEFAULT
from protocols.testing import Board, LocalContext, TamperContext, fresh_board, run_parties

FWER = 1e-6
"""Family-wise false-alarm rate of one analysis (Bonferroni over its features)."""
NUMEL = 2000
DIVISOR = 2**16
I64 = torch.int64


# ---------------------------------------------------------------------------------------
# Programs: one or several ops, with the check that they compute the right thing
# ---------------------------------------------------------------------------------------


async def _mul(ctx: Ctx, x: list[Share]) -> Any:
    return await P.mul(ctx(5), x[0], x[1])


async def _square(ctx: Ctx, x: list[Share]) -> Any:
    return await P.square(ctx(5), x[0])


async def _matmul(ctx: Ctx, x: list[Share]) -> Any:
    return await P.matmul(ctx(5), x[0], x[1])


async def _trunc(ctx: Ctx, x: list[Share]) -> Any:
    return await P.truncate(ctx(5), x[0], DIVISOR, sub=1)


async def _drelu(ctx: Ctx, x: list[Share]) -> Any:
    return await P.drelu(ctx(5), x[0])


async def _relu(ctx: Ctx, x: list[Share]) -> Any:
    return await P.relu(ctx(5), x[0])


async def _two_muls(ctx: Ctx, x: list[Share]) -> Any:
    return [await P.mul(ctx(11), x[0], x[1]), await P.mul(ctx(12), x[2], x[3])]


async def _drelu_relu(ctx: Ctx, x: list[Share]) -> Any:
    return [await P.drelu(ctx(21), x[0]), await P.relu(ctx(22), x[1])]


async def _fss_drelu(ctx: Ctx, x: list[Share]) -> Any:
    return await fss.drelu_fss(ctx(5), x[0])


async def _fss_relu(ctx: Ctx, x: list[Share]) -> Any:
    return await fss.relu_fss(ctx(5), x[0])


async def _fss_trunc(ctx: Ctx, x: list[Share]) -> Any:
    return await fss.truncate_fss(ctx(5), x[0], 1000, sub=1)


async def _conv(ctx: Ctx, x: list[Share]) -> Any:
    return await conv.bilinear(ctx(5), "conv", x[0], x[1], CONV_OUT)


def _sign(x: torch.Tensor) -> torch.Tensor:
    return (x >= 0).to(I64)


def _relu_ring(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, x, torch.zeros_like(x))


N = (NUMEL,)
M, K, L = 40, 50, 30  # matmul (M, K) @ (K, L): 2000 and 1500 elements
CONV_X, CONV_W, CONV_OUT = (5, 4, 10, 10), (8, 4, 3, 3), (5, 8, 8, 8)  # 2000 inputs
PROGRAMS = {
    p.name: p
    for p in [
        Program("mul", (N, N), _mul, lambda s: [s[0] * s[1]]),
        Program("square", (N,), _square, lambda s: [s[0] * s[0]]),
        Program("matmul", ((M, K), (K, L)), _matmul, lambda s: [s[0] @ s[1]]),
        Program(
            "truncate",
            (N,),
            _trunc,
            lambda s: [floor_div(s[0], DIVISOR)],
            tolerance=1,
            parties=(3,),
        ),
        Program("drelu", (N,), _drelu, lambda s: [_sign(s[0])]),
        Program("fss drelu", (N,), _fss_drelu, lambda s: [_sign(s[0])], parties=(2,)),
        Program(
            "fss relu",
            (N,),
            _fss_relu,
            lambda s: [_relu_ring(s[0]), _sign(s[0])],
            parties=(2,),
        ),
        Program(
            "fss truncate",
            (N,),
            _fss_trunc,
            lambda s: [floor_div(s[0], 1000)],
            tolerance=1,
            parties=(2,),
        ),
        Program(
            "conv",
            (CONV_X, CONV_W),
            _conv,
            lambda s: [conv.conv_ring(s[0], s[1], CONV_OUT)],
        ),
        Program("relu", (N,), _relu, lambda s: [_relu_ring(s[0]), _sign(s[0])]),
        Program("two muls", (N, N, N, N), _two_muls, lambda s: [s[0] * s[1], s[2] * s[3]]),
        Program(
            "drelu then relu",
            (N, N),
            _drelu_relu,
            lambda s: [_sign(s[0]), _relu_ring(s[1]), _sign(s[1])],
        ),
    ]
}


Swap = Callable[[MaterialSpec], MaterialSpec | None]


def swapped(swap: Swap) -> Callable[[Any], Any]:
    """Context wrapper: the party asks the dealer for ``swap(spec)`` (a broken spec)."""
    return lambda ctx: TamperContext(ctx, swap=swap)


def assert_secure(report: Report) -> None:
    worst = expect_secure(report, FWER)
    print(f"\n{len(report)} tests, threshold {report.threshold(FWER):.2g}; worst {worst}")


def assert_caught(report: Report, *parts: str) -> None:
    """The analysis rejects, and (one of) the features named by ``parts`` is rejected."""
    hit = expect_caught(report, FWER, *parts)
    print(f"\ncaught: {hit}\n{report.summary(FWER, top=3)}")


# ---------------------------------------------------------------------------------------
# 1. The real protocols pass
# ---------------------------------------------------------------------------------------

CASES = [(name, n) for name, p in PROGRAMS.items() for n in p.parties]


@pytest.mark.parametrize("b_kind", ["B", "random"])
@pytest.mark.parametrize(("name", "n"), CASES)
async def test_real_views_do_not_depend_on_the_secret(name: str, n: int, b_kind: str) -> None:
    assert_secure(await a_vs_b(PROGRAMS[name], n, b_kind))


@pytest.mark.parametrize(("name", "n"), CASES)
async def test_real_views_match_the_simulator(name: str, n: int) -> None:
    assert_secure(await real_vs_sim(PROGRAMS[name], n))


# ---------------------------------------------------------------------------------------
# 2. Broken variants fail the same analyses
# ---------------------------------------------------------------------------------------


def same_key_board(n: int, run: int) -> Board:
    """BROKEN: the provider gives every party the same PRG key."""
    key = Prg.fresh()
    return Board(n, real_dealer=True, party_keys=[Prg(key.key) for _ in range(n)])


class NonceReuseBoard(Board):
    """BROKEN: every op draws its material under the same label (op id 0)."""

    def material_label(self, op_id: int, spec: MaterialSpec) -> int:
        return 0


def nonce_reuse_board(n: int, run: int) -> Board:
    return fresh_board(n, cls=NonceReuseBoard)


def _with_raw(spec: MaterialSpec, name: str, fix: Callable[..., Any]) -> MaterialSpec:
    """``spec`` with the random item ``name`` replaced by a derived one: the dealer draws
    ``name + '0'`` uniformly and derives ``name = fix(raw, values)`` from it."""
    items: list[Item] = []
    for item in spec.items:
        if item.name == name:
            items += [
                Item(f"{name}0", item.shape, item.kind),
                Item(name, item.shape, item.kind, True),
            ]
        else:
            items.append(item)

    def derive(s: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        v = fix(s[f"{name}0"], s)
        return {name: v, **spec.derive({**s, name: v})}

    return MaterialSpec(spec.kind, spec.sub, tuple(items), derive, spec.keygen)


def even_mask(spec: MaterialSpec) -> MaterialSpec | None:
    """BROKEN: the comparison's mask r is forced even."""
    if spec.kind not in ("drelu", "relu"):
        return None
    return _with_raw(spec, "r", lambda r, s: r & ~1)


def narrow_trunc_mask(spec: MaterialSpec) -> MaterialSpec | None:
    """BROKEN: the truncation mask r is uniform in [0, 2**48) only."""
    if spec.kind != "trunc":
        return None
    return _with_raw(spec, "r", lambda r, s: r & (2**48 - 1))


def beaver_b_is_a(spec: MaterialSpec) -> MaterialSpec | None:
    """BROKEN: the triple's b is its a (one mask for both factors)."""
    if spec.kind != "mul":
        return None
    return _with_raw(spec, "b", lambda b, s: s["a"])


@pytest.mark.parametrize("n", [2, 3])
async def test_same_key_is_caught(n: int) -> None:
    """Every party shares one key: a = n * a_i, so x = eps + n * a_i. With 3 parties the
    opened value alone is uniform (a = 3 a_i is), and only the joint test with the party's
    own mask share sees x; with 2 parties a = 2 a_i is even and eps even shows x's parity."""
    report = await a_vs_b(PROGRAMS["mul"], n, "B", board=same_key_board)
    marginal = [f for f in report.rejected(FWER) if "(a) marginal" in f.name]
    if n == 3:
        assert not marginal, marginal[0]
    else:
        assert any(f.name.endswith("open op5 mul0[0]: parity") for f in marginal)
    assert_caught(report, "(b) joint open op5 mul0[0] with own op5 a: (mod16, mod16)")
    sim = await real_vs_sim(PROGRAMS["mul"], n, board=same_key_board)
    assert_caught(sim, "(b) joint open op5 mul0[0] with own op5 a")


async def test_same_key_needs_the_full_view() -> None:
    """Why the view must hold the party's own material: without it (what is received and
    opened only, as in the older view tests) the 3-party same-key dealer passes."""
    program = PROGRAMS["mul"]
    runs_a = await collect(program, "A", 3, board=same_key_board)
    runs_b = await collect(program, "B", 3, first=2000, board=same_key_board)
    partial = compare(
        *([[replace(v, own=[]) for v in run] for run in runs] for runs in (runs_a, runs_b))
    )
    assert not partial.rejected(FWER), partial.summary(FWER)
    assert_caught(compare(runs_a, runs_b), "(b) joint open op5 mul0[0] with own op5 a")


async def test_same_key_is_caught_in_the_comparison() -> None:
    report = await a_vs_b(PROGRAMS["drelu"], 2, "random", board=same_key_board)
    assert_caught(report, "(b) joint open op5 cmp[0] with own op5 r: (mod16, mod16)")


@pytest.mark.parametrize(
    ("name", "first", "second"),
    [
        ("two muls", "op11 mul0[0]", "op12 mul0[0]"),
        ("drelu then relu", "op21 cmp[0]", "op22 cmp[0]"),
    ],
)
async def test_nonce_reuse_is_caught(name: str, first: str, second: str) -> None:
    """Both ops get the same masks: the difference of their openings is x1 - x2."""
    report = await a_vs_b(PROGRAMS[name], 2, "B", board=nonce_reuse_board)
    assert_caught(report, f"(c) pair open {first} and open {second}: diff mod16")
    sim = await real_vs_sim(PROGRAMS[name], 2, board=nonce_reuse_board)
    assert_caught(sim, f"(c) pair open {first} and open {second}: diff")


@pytest.mark.parametrize("n", [2, 3])
async def test_even_comparison_mask_is_caught(n: int) -> None:
    """c = x + r with r even: c mod 2 = x mod 2 (A is odd, B even)."""
    report = await a_vs_b(PROGRAMS["drelu"], n, "B", wrap=swapped(even_mask))
    assert_caught(report, "(a) marginal open op5 cmp[0]: parity")
    assert_caught(report, "(a) marginal open op5 cmp[0]: mod16")
    sim = await real_vs_sim(PROGRAMS["drelu"], n, wrap=swapped(even_mask))
    assert_caught(sim, "(a) marginal open op5 cmp[0]: parity")


async def test_narrow_truncation_mask_is_caught() -> None:
    """c = x - r with r < 2**48 and |x| up to 2**44: the bit length of c shows |x|."""
    for b_kind in ("B", "random"):
        report = await a_vs_b(PROGRAMS["truncate"], 3, b_kind, wrap=swapped(narrow_trunc_mask))
        assert_caught(report, "(a) marginal open op5 tr1[0]: magnitude")
    sim = await real_vs_sim(PROGRAMS["truncate"], 3, wrap=swapped(narrow_trunc_mask))
    assert_caught(sim, "(a) marginal open op5 tr1[0]: top4")


@pytest.mark.parametrize("n", [2, 3])
async def test_beaver_b_equal_to_a_is_caught(n: int) -> None:
    """eps - delta = (x - a) - (y - a) = x - y, within one op."""
    report = await a_vs_b(PROGRAMS["mul"], n, "B", wrap=swapped(beaver_b_is_a))
    assert not any("(a) marginal" in f.name for f in report.rejected(FWER))
    assert_caught(report, "(c) pair open op5 mul0[0] and open op5 mul0[1]: diff mod16")


# ---------------------------------------------------------------------------------------
# 3. Audit: no holder ever draws the same (key, label) twice
# ---------------------------------------------------------------------------------------


class RecordingPrg(Prg):
    """A Prg that logs every ``(holder, key, label)`` it draws."""

    def __init__(self, key: bytes, holder: str, log: list[tuple[str, bytes, tuple[int, int]]]):
        super().__init__(key)
        self.holder = holder
        self.log = log

    def random_array(self, n: int, label: tuple[int, int]) -> np.ndarray:
        self.log.append((self.holder, self.key, label))
        return super().random_array(n, label)


async def audited_run(
    n: int, board_cls: type[Board] = Board, same_key: bool = False
) -> list[tuple[str, bytes, tuple[int, int]]]:
    """mul, relu, matmul and a truncation, with every generator recorded."""
    log: list[tuple[str, bytes, tuple[int, int]]] = []
    keys = [Prg.from_seed(0 if same_key else r, "audit").key for r in range(n)]
    board = board_cls(
        n,
        0,
        real_dealer=True,
        party_keys=[RecordingPrg(k, f"party {r}", log) for r, k in enumerate(keys)],
        dealer_keys=[RecordingPrg(k, "dealer", log) for k in keys],
        dealer_prg=RecordingPrg(Prg.from_seed(0, "provider").key, "dealer", log),
    )
    coord = RecordingPrg(Prg.from_seed(0, "coordinator").key, "coordinator", log)
    xs = [torch.arange(-6, 6, dtype=I64) * 1000, torch.arange(12, dtype=I64).reshape(3, 4)]
    shares = [share(x, n, coord) for x in xs]

    async def body(rank: int, ctx_for: Callable[[int], LocalContext]) -> Any:
        x, w = Share(shares[0][rank]), Share(shares[1][rank])
        y = await P.mul(ctx_for(1), x, x)
        y, _ = await P.relu(ctx_for(2), y)
        y = Share(y.value.reshape(3, 4), y.depth)
        z = await P.matmul(ctx_for(3), y, Share(w.value.T.contiguous()))
        return await P.truncate(ctx_for(4), z, 1000, sub=1)

    await run_parties(n, body, board=board)
    return log


def repeats(log: list[tuple[str, bytes, tuple[int, int]]]) -> list[Any]:
    return [k for k, c in Counter(log).items() if c > 1]


def cross_holder(log: list[tuple[str, bytes, tuple[int, int]]]) -> list[Any]:
    """Streams drawn by more than one party (each stream should be one party's and the
    dealer's copy of it)."""
    who: defaultdict[tuple[bytes, tuple[int, int]], set[str]] = defaultdict(set)
    for holder, key, label in log:
        who[key, label].add(holder)
    return [k for k, h in who.items() if len(h - {"dealer"}) > 1]


@pytest.mark.parametrize("n", [2, 3])
async def test_no_holder_draws_the_same_stream_twice(n: int) -> None:
    log = await audited_run(n)
    holders = {h for h, _, _ in log}
    assert holders == {"coordinator", "dealer", *(f"party {r}" for r in range(n))}
    assert len(log) > 10
    assert not repeats(log), repeats(log)
    assert not cross_holder(log)


async def test_audit_catches_label_reuse_and_shared_keys() -> None:
    reused = await audited_run(3, NonceReuseBoard)
    assert repeats(reused)  # the same party draws (key, (0, 0)) for several ops
    shared = await audited_run(3, same_key=True)
    assert {h for h, _, _ in repeats(shared)} == {"dealer"}  # each party alone looks fine
    assert cross_holder(shared)  # but two parties draw the same stream


# ---------------------------------------------------------------------------------------
# 4. The provider's messages do not depend on the secret
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2, 3])
async def test_dealer_messages_do_not_depend_on_the_secret(n: int) -> None:
    """Same keys, different secrets: everything the provider sends is byte-identical."""
    boards = [Board(n, 77, real_dealer=True) for _ in range(2)]
    program = PROGRAMS["drelu then relu"]
    for kind, board in zip(("A", "B"), boards, strict=True):
        await run_views(program, program_inputs(kind, program, 0), n, board=board)
    first, second = (b.dealer_sent for b in boards)
    assert len(first) == len(second) > 0
    for (op_a, r_a, ta), (op_b, r_b, tb) in zip(first, second, strict=True):
        assert (op_a, r_a) == (op_b, r_b)
        assert all(torch.equal(a, b) for a, b in zip(ta, tb, strict=True))


def even_fss_mask(spec: MaterialSpec) -> MaterialSpec | None:
    """BROKEN: the FSS comparison's input mask r is forced even."""
    if spec.kind not in ("drelu_fss", "relu_fss"):
        return None
    return _with_raw(spec, "r", lambda r, s: r & ~1)


def narrow_fss_trunc_mask(spec: MaterialSpec) -> MaterialSpec | None:
    """BROKEN: the FSS truncation's input mask r is uniform in [0, 2**48) only."""
    if spec.kind != "trunc_fss":
        return None
    return _with_raw(spec, "r", lambda r, s: r & (2**48 - 1))


async def test_even_fss_comparison_mask_is_caught() -> None:
    """The FSS DReLU opens x_hat = x + r once: with r even, x_hat keeps x's parity."""
    report = await a_vs_b(PROGRAMS["fss drelu"], 2, "B", wrap=swapped(even_fss_mask))
    assert_caught(report, "(a) marginal open op5 fss_sign0[0]: parity")
    sim = await real_vs_sim(PROGRAMS["fss drelu"], 2, wrap=swapped(even_fss_mask))
    assert_caught(sim, "(a) marginal open op5 fss_sign0[0]: parity")


async def test_narrow_fss_truncation_mask_is_caught() -> None:
    report = await a_vs_b(PROGRAMS["fss truncate"], 2, "B", wrap=swapped(narrow_fss_trunc_mask))
    assert report.rejected(FWER), report.summary(FWER)
    sim = await real_vs_sim(PROGRAMS["fss truncate"], 2, wrap=swapped(narrow_fss_trunc_mask))
    assert sim.rejected(FWER), sim.summary(FWER)


async def _dropout(ctx: Ctx, x: list[Share]) -> Any:
    kind = DEFAULT.kind("dropout", ctx(0).n_parties)
    assert kind.run is not None
    return await kind.run(ctx(5), [x[0]], Params(keep=3 * 2**18))


def dropout_check(xs: list[torch.Tensor], out: list[torch.Tensor]) -> None:
    """The outputs are ``x * b`` and the 0/1 mask b itself (kept for backward)."""
    y, b = out
    assert bool(((b == 0) | (b == 1)).all()), "the mask is not 0/1"
    assert torch.equal(y, xs[0] * b), "dropout is not x * mask"
    kept = float(b.double().mean())
    assert 0.6 < kept < 0.9, kept  # keep probability 0.75


PROGRAMS["dropout"] = Program("dropout", (N,), _dropout, check=dropout_check)


@pytest.mark.parametrize("n", [2, 3])
async def test_dropout_views_do_not_depend_on_the_secret(n: int) -> None:
    assert_secure(await a_vs_b(PROGRAMS["dropout"], n, "B"))


@pytest.mark.parametrize("n", [2, 3])
async def test_training_run_draws_no_stream_twice(n: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Over a cluster's training run with momentum and comparisons (the real runtime, not
    the harness), every (key, label) stream is drawn by at most its two holders (a party
    and the dealer derive the same material stream; the coordinator's and the dealer's own
    keys have one holder): a spy records every draw, changing nothing."""
    from seed_net import DATA, TARGET, loss_fn, make_net

    from training import SGD, TrainingCoordinator
    from training.testing import start_cluster

    draws: list[tuple[bytes, tuple[int, int]]] = []
    real = Prg.random_array

    def spy(self: Prg, nbytes: int, label: tuple[int, int]) -> np.ndarray:
        draws.append((self.key, label))
        return real(self, nbytes, label)

    monkeypatch.setattr(Prg, "random_array", spy)
    async with start_cluster(n) as c:
        x, y = c.share(DATA), c.share(TARGET)
        model = c.share_module(make_net())
        coord = TrainingCoordinator(
            c, model, SGD(model.parameters(), lr=0.1, momentum=0.9), loss_fn
        )
        for _ in range(5):  # ~26 draws a step (the backward's masks are dealt ahead)
            await coord.step(x, y)
        (x >= 0.5).drelu()
        await c.flush()
    counts: dict[tuple[bytes, tuple[int, int]], int] = {}
    for d in draws:
        counts[d] = counts.get(d, 0) + 1
    assert len(draws) > 100
    assert max(counts.values()) <= 2, [d for d, k in counts.items() if k > 2][:3]
