"""Programs: one or several ops run in the harness, their views collected and compared.

A :class:`Program` runs in the in-memory harness of :mod:`protocols.testing` with every
protocol secret fresh, and its results are checked (:func:`verify`) before its views are
used, so a leaky variant under test still computes the right thing. :func:`run_views`
gives every party's :class:`~.views.FullView` of one run; :func:`collect` many runs on
the fixed secrets A, B (:data:`FIXED_A`, :data:`FIXED_B`) or random ones. The analyses:
:func:`a_vs_b` varies the inputs, :func:`real_vs_sim` tests real views against the
simulator, :func:`dealer_a_vs_b` varies the dealer's secrets as well (masks ``r`` with
fixed openings, dropout masks); :func:`expect_secure` / :func:`expect_caught` state the
verdict at a family-wise rate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..context import Share
from ..prg import Prg
from ..testing import (
    Board,
    FixedSecretsBoard,
    LocalContext,
    fresh_board,
    reveal,
    run_parties,
    share_inputs,
)
from .gtest import Finding, Report, compare
from .simulator import simulate
from .views import FullView, full_view

Ctx = Callable[[int], Any]
"""``ctx(op_id)``: a party's context for one op (a new op id per protocol call)."""
Wrap = Callable[[Any], Any]
"""Wraps each party context, e.g. in a :class:`~protocols.testing.TamperContext`."""
BoardFactory = Callable[[int, int], Board]
"""``factory(n_parties, run index)``: the board of one run."""


@dataclass(frozen=True)
class Program:
    """One or several ops on shared inputs, with what they must compute.

    ``expect(inputs)`` gives the plaintext outputs (compared within ``tolerance``), or
    ``check(inputs, outputs)`` asserts on the revealed outputs itself (a dropout's output
    depends on the dealer's mask, which the check reads from the revealed mask)."""

    name: str
    shapes: tuple[tuple[int, ...], ...]
    body: Callable[[Ctx, list[Share]], Awaitable[Any]]
    expect: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None
    tolerance: int = 0
    parties: tuple[int, ...] = (2, 3)
    check: Callable[[list[torch.Tensor], list[torch.Tensor]], None] | None = None


def outputs(res: Any) -> list[Share]:
    """Every :class:`Share` in a (nested) result, in order."""
    if isinstance(res, Share):
        return [res]
    out: list[Share] = []
    for r in res:
        out += outputs(r)
    return out


def _default_board(n: int, run: int) -> Board:
    return fresh_board(n)


def verify(program: Program, xs: list[torch.Tensor], per_party: list[list[Share]]) -> None:
    """AssertionError unless the revealed outputs are what ``program`` computes."""
    got = [reveal(list(s)) for s in zip(*per_party, strict=True)]
    if program.check is not None:
        program.check(xs, got)
        return
    if program.expect is None:
        raise AssertionError(f"{program.name}: neither expect nor check")
    want = program.expect(xs)
    if len(got) != len(want):
        raise AssertionError(f"{program.name}: {len(got)} outputs, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        err = int((g - w).abs().max().item())
        if err > program.tolerance:
            raise AssertionError(f"{program.name}: output {i} off by {err}")


async def run_views(
    program: Program,
    xs: list[torch.Tensor],
    n: int,
    *,
    board: Board | None = None,
    wrap: Wrap | None = None,
) -> list[FullView]:
    """Run ``program`` once on inputs ``xs`` (shared with a fresh generator) and return every
    party's full view, after checking the results. ``board`` defaults to
    :func:`~protocols.testing.fresh_board` (fresh keys); ``wrap`` wraps every context."""
    if len(xs) != len(program.shapes):
        raise ValueError(f"{program.name} takes {len(program.shapes)} inputs, got {len(xs)}")
    shares = share_inputs(xs, n, prg=Prg.fresh())
    used = fresh_board(n) if board is None else board

    async def body(rank: int, ctx_for: Callable[[int], LocalContext]) -> Any:
        ctx: Ctx = ctx_for if wrap is None else (lambda op: wrap(ctx_for(op)))
        return await program.body(ctx, shares[rank])

    results, used = await run_parties(n, body, board=used)
    verify(program, xs, [outputs(r) for r in results])
    for rank in range(n):
        used.views[rank].inputs = [s.value for s in shares[rank]]
    return [full_view(used.views[rank], rank) for rank in range(n)]


FIXED_A = (5, 3, -7, 9)
FIXED_B = (-(2**44) - 2, 2**33 + 8, 2**40 + 1, -4)
"""The fixed secrets: A and B differ in parity, low bits, magnitude and sign."""
RANDOM_BITS = 44
"""Random secrets are uniform in ``(-2**44, 2**44)`` (a truncation by the SecureML rule
fails with probability 2**-20 per element)."""


def program_inputs(kind: str, program: Program, run: int) -> list[torch.Tensor]:
    """Inputs of one run: ``"A"`` or ``"B"`` (every element the fixed value, input i the
    i-th of :data:`FIXED_A` / :data:`FIXED_B`) or ``"random"`` (a fixed seed per run: the
    test's sampling, not a protocol secret)."""
    shapes = program.shapes
    if kind == "random":
        g = torch.Generator().manual_seed(7919 * run + 1)
        lim = 2**RANDOM_BITS
        return [torch.randint(-lim, lim, s, dtype=torch.int64, generator=g) for s in shapes]
    if kind not in ("A", "B"):
        raise ValueError(f"secret kind is A, B or random, got {kind!r}")
    values = FIXED_A if kind == "A" else FIXED_B
    if len(shapes) > len(values):
        raise ValueError(f"{program.name}: at most {len(values)} fixed inputs")
    return [torch.full(s, v, dtype=torch.int64) for s, v in zip(shapes, values, strict=False)]


RUNS = 2
"""Independent runs per secret (each element of each run is one instance)."""


async def collect(
    program: Program,
    kind: str,
    n: int,
    *,
    runs: int = RUNS,
    first: int = 0,
    board: BoardFactory = _default_board,
    wrap: Wrap | None = None,
) -> list[list[FullView]]:
    """``runs`` independent runs on secrets of ``kind`` (runs ``first ..``)."""
    return [
        await run_views(program, program_inputs(kind, program, i), n, board=board(n, i), wrap=wrap)
        for i in range(first, first + runs)
    ]


async def a_vs_b(program: Program, n: int, b_kind: str, **kw: Any) -> Report:
    """Views on the fixed secret A against views on ``b_kind`` (``"B"`` or ``"random"``)."""
    return compare(
        await collect(program, "A", n, first=1000, **kw),
        await collect(program, b_kind, n, first=2000, **kw),
    )


async def real_vs_sim(program: Program, n: int, **kw: Any) -> Report:
    """Real views on the fixed secret A against :func:`simulate` run on the party's own view
    of independent runs (on random secrets; the simulator ignores their openings)."""
    real = await collect(program, "A", n, first=3000, **kw)
    other = await collect(program, "random", n, first=4000, **kw)
    rng = np.random.default_rng(5)
    return compare(real, [[simulate(v, rng) for v in run] for run in other])


DealerSecrets = Callable[[int], tuple[list[torch.Tensor], dict[tuple[int, str, str], torch.Tensor]]]
"""``secrets(run)``: the inputs and the dealer's secrets ``{(op id, spec kind, item):
plaintext}`` of one run (see :class:`~protocols.testing.FixedSecretsBoard`)."""


async def dealer_a_vs_b(
    program: Program,
    n: int,
    secrets_a: DealerSecrets,
    secrets_b: DealerSecrets,
    *,
    runs: int = RUNS,
    wrap: Wrap | None = None,
) -> Report:
    """Views when the *dealer's* secrets vary as well as the inputs: every run draws its
    shares and keys fresh but takes its masks (``r``, a dropout draw ``u``) from
    ``secrets_a`` / ``secrets_b``. Choosing ``x + r`` equal in A and B makes every opening
    the same, so a view that depends on x or r beyond what is opened differs; choosing a
    dropout mask all-keep in A and all-drop in B tests that no party learns the mask."""

    async def side(secrets: DealerSecrets, first: int) -> list[list[FullView]]:
        out = []
        for i in range(first, first + runs):
            xs, dealer = secrets(i)
            board = FixedSecretsBoard(n, dealer)
            out.append(await run_views(program, xs, n, board=board, wrap=wrap))
        return out

    return compare(await side(secrets_a, 0), await side(secrets_b, 1000))


def expect_secure(report: Report, fwer: float) -> Finding:
    """AssertionError if any feature is rejected at family-wise rate ``fwer``; else the
    worst finding (for the log)."""
    bad = report.rejected(fwer)
    if bad:
        raise AssertionError(report.summary(fwer))
    return report.worst()


def expect_caught(report: Report, fwer: float, *parts: str) -> Finding:
    """AssertionError unless a feature whose name holds every one of ``parts`` is rejected
    at family-wise rate ``fwer``; returns the strongest such finding."""
    hits = [f for f in report.rejected(fwer) if all(p in f.name for p in parts)]
    if not hits:
        raise AssertionError(f"not caught by {parts}:\n{report.summary(fwer)}")
    return hits[0]
