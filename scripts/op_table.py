"""The op table of docs/ops.md (printed by ``python scripts/bench_ops.py --all``): for every
op CrypTen users test (docs/ops.md), the max error against float64 torch, rounds, online and dealer
bytes per element and wall-clock milliseconds, each at 10**3 and 10**5 input elements
(2 parties, base 2 / 16 bits, the default suite's WAN form ``default@10000`` that
bench_ops.py runs). That suite uses the FSS comparison up to 10**4 elements per op and the
carry tree above, so rounds and bytes differ between the two sizes (in one process
``Cluster.start``'s own ``default`` switches at ~205 elements: both sizes carry tree). Times are one run each (the first includes no warm-up beyond the cluster's
start), on whatever machine runs it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import torch
import torch.nn.functional as F

from training import SharedTensor, public


@dataclass(frozen=True)
class Op:
    name: str
    inputs: Callable[[int, torch.Generator], list[torch.Tensor]]
    """n -> the op's inputs (float ones are shared unless in ``public``; integer and
    bool ones stay plaintext)."""
    fn: Callable[..., Any]
    """Applied to the SharedTensors and to the float64 reference tensors alike."""
    public: tuple[int, ...] = ()
    relative: bool = False
    """Report the error relative to max(|result|, 1) (results of hundreds)."""


def _u(lo: float, hi: float) -> Callable[[int, torch.Generator], list[torch.Tensor]]:
    return lambda n, g: [torch.rand(n, generator=g) * (hi - lo) + lo]


def _two(lo: float, hi: float) -> Callable[[int, torch.Generator], list[torch.Tensor]]:
    def make(n: int, g: torch.Generator) -> list[torch.Tensor]:
        a = torch.rand(n, generator=g) * (hi - lo) + lo
        b = torch.rand(n, generator=g) * (hi - lo) + lo
        b[::2] = a[::2]  # ties, for eq/ne/ge/le
        return [a, b]

    return make


def _rows(cols: int, sigma: float) -> Callable[[int, torch.Generator], list[torch.Tensor]]:
    return lambda n, g: [torch.randn(n // cols, cols, generator=g) * sigma]


def _square(n: int, g: torch.Generator) -> list[torch.Tensor]:
    k = math.isqrt(n)
    return [torch.rand(k, k, generator=g) * 12 - 6]


def _with_index(
    kind: str,
) -> Callable[[int, torch.Generator], list[torch.Tensor]]:
    def make(n: int, g: torch.Generator) -> list[torch.Tensor]:
        r = n // 10
        x = torch.rand(r, 10, generator=g) * 12 - 6
        if kind == "gather":
            return [x, torch.randint(0, r, (r, 10), generator=g)]
        src = torch.rand(r, 10, generator=g) * 12 - 6
        if kind == "scatter":
            return [x, torch.randint(0, r, (r, 10), generator=g), src]
        return [x, torch.randint(0, r, (r,), generator=g), src]

    return make


def _public(shared: Any, t: Any) -> Any:
    """``t`` marked public when combined with a SharedTensor (the reference: as is)."""
    return public(t) if isinstance(shared, SharedTensor) else t


def _ce(n: int, g: torch.Generator) -> list[torch.Tensor]:
    x = torch.randn(n // 100, 100, generator=g) * 3
    return [x, torch.randint(0, 100, (n // 100,), generator=g)]


OPS: list[Op] = [
    Op("x > y (shared y)", _two(-6, 6), lambda a, b: a > b),
    Op("x >= y", _two(-6, 6), lambda a, b: a >= b),
    Op("x == y", _two(-6, 6), lambda a, b: a == b),
    Op("x != y (public y)", _two(-6, 6), lambda a, b: a != _public(a, b), public=(1,)),
    Op("sign", _u(-6, 6), torch.sign),
    Op("where (private condition)", _two(-6, 6), lambda a, b: torch.where(a > 0, a, b)),
    Op("var(dim=1)", _rows(10, 2), lambda x: torch.var(x, dim=1)),
    Op("std(dim=1)", _rows(10, 2), lambda x: torch.std(x, dim=1)),
    Op("x ** 3 on [-6, 6]", _u(-6, 6), lambda x: x**3),
    Op("x ** -2 on [0.05, 10] (rel.)", _u(0.05, 10), lambda x: x**-2, relative=True),
    Op("x ** 1.75 on [0.05, 10] (rel.)", _u(0.05, 10), lambda x: x**1.75, relative=True),
    Op("sin on [-10, 10]", _u(-10, 10), torch.sin),
    Op("cos on [-10, 10]", _u(-10, 10), torch.cos),
    Op("cumsum(dim=1), rows of 10", _rows(10, 2), lambda x: torch.cumsum(x, 1)),
    Op(
        "prod(dim=1), rows of 10 in [0.5, 1.5]",
        lambda n, g: [torch.rand(n // 10, 10, generator=g) + 0.5],
        lambda x: torch.prod(x, 1),
    ),
    Op("dot", _two(-1, 1), torch.dot),
    Op(
        "outer (sqrt(n) x sqrt(n) output)",
        lambda n, g: [
            torch.rand(math.isqrt(n), generator=g),
            torch.rand(math.isqrt(n), generator=g),
        ],
        torch.outer,
    ),
    Op("narrow", _rows(10, 2), lambda x: torch.narrow(x, 1, 2, 5)),
    Op(
        "index_select", _rows(10, 2), lambda x: torch.index_select(x, 1, torch.tensor([0, 3, 3, 9]))
    ),
    Op("repeat(2, 1)", _rows(10, 2), lambda x: x.repeat(2, 1)),
    Op("roll", _rows(10, 2), lambda x: torch.roll(x, 3, 1)),
    Op("diagonal / trace", _square, torch.trace),
    Op("F.pad (constant 1.5)", _rows(10, 2), lambda x: F.pad(x, (1, 2), value=1.5)),
    Op("gather(dim=0)", _with_index("gather"), lambda x, i: torch.gather(x, 0, i)),
    Op("scatter_add(dim=0)", _with_index("scatter"), lambda x, i, s: x.scatter_add(0, i, s)),
    Op("index_add(dim=0)", _with_index("index"), lambda x, i, s: x.index_add(0, i, s)),
    Op("norm (p=2, rows of 10)", _rows(10, 2), lambda x: torch.norm(x, dim=1)),
    Op("norm (p=2, all elements)", _u(-1, 1), lambda x: x.norm()),
    Op("norm (p=1, rows of 10)", _rows(10, 2), lambda x: torch.norm(x, p=1, dim=1)),
    Op("norm (p=inf, rows of 10)", _rows(10, 2), lambda x: torch.norm(x, p=math.inf, dim=1)),
    Op("F.normalize (rows of 10)", _rows(10, 2), lambda x: F.normalize(x, dim=1)),
    Op(
        "F.cosine_similarity (rows of 10)",
        lambda n, g: [*_rows(10, 2)(n, g), *_rows(10, 2)(n, g)],
        F.cosine_similarity,
    ),
    Op("softmax (rows of 100, sigma 3)", _rows(100, 3), lambda x: F.softmax(x, 1)),
    Op(
        "softmax (1-d, sigma 3)",
        lambda n, g: [torch.randn(n, generator=g) * 3],
        lambda x: F.softmax(x, 0),
    ),
    Op("log_softmax (rows of 100)", _rows(100, 3), lambda x: F.log_softmax(x, 1)),
    Op("cross_entropy (rows of 100)", _ce, F.cross_entropy),
]


@dataclass(frozen=True)
class Measured:
    error: float
    rounds: int
    online: float
    dealer: float
    ms: float


async def measure(c: Any, op: Op, n: int) -> Measured:
    g = torch.Generator().manual_seed(n)
    ins = op.inputs(n, g)
    args = [
        t if not t.is_floating_point() or i in op.public else c.share(t, precision=16, base=2)
        for i, t in enumerate(ins)
    ]
    numel = int(ins[0].numel())
    await c.flush()
    before = c.stats()
    start = time.perf_counter()
    out = op.fn(*args)
    await c.flush()
    ms = (time.perf_counter() - start) * 1e3
    d = c.stats() - before
    assert isinstance(out, SharedTensor), op.name
    got = await out.get(dtype=torch.float64)
    ref = op.fn(*[t.double() if t.is_floating_point() else t for t in ins]).double()
    err = (got - ref).abs()
    if op.relative:
        err = err / ref.abs().clamp(min=1.0)
    return Measured(
        float(err.max()) if ref.numel() else 0.0,
        d.online_rounds,
        d.online_bytes / 2 / numel,
        d.offline_bytes / numel,
        ms,
    )


def _count(n: int) -> str:
    k = round(math.log10(n))
    return f"10^{k}" if n == 10**k else str(n)


async def table(c: Any, small: int = 1000, large: int = 100_000) -> str:
    a, b = _count(small), _count(large)
    lines = [
        f"| issue-20 op | max error | rounds {a} / {b} | online B/elt {a} / {b} | "
        f"dealer B/elt {a} / {b} | ms {a} | ms {b} |",
        "|---|---|---|---|---|---|---|",
    ]
    for op in OPS:
        s, big = await measure(c, op, small), await measure(c, op, large)
        lines.append(
            f"| {op.name} | {max(s.error, big.error):.1e} | {s.rounds} / {big.rounds} | "
            f"{s.online:.1f} / {big.online:.1f} | {s.dealer:.0f} / {big.dealer:.0f} | "
            f"{s.ms:.0f} | {big.ms:.0f} |"
        )
    return "\n".join(lines)
