"""Rounds, online bytes per element and max error of the smooth functions and losses
against plaintext torch (2 parties, default suite, base 2 / 16 fractional bits), with
the targets set from CrypTen 0.4.1's figures as anchors (docs/ops.md, "Targets against
CrypTen 0.4.1").

    python scripts/bench_ops.py            # the targets table
    python scripts/bench_ops.py --all      # every op of docs/ops.md, and issue 20's op
                                           # table (scripts/op_table.py) at 10^3 and 10^5

Rounds and bytes are ``cluster.stats()`` deltas around the op after ``await
cluster.flush()``; bytes are online bytes sent per party divided by the input's elements.

The suite is the default suite's WAN form, ``default@10000`` (FSS comparisons up to 10^4
elements per op): the figures docs/ops.md states and the CrypTen targets are about (rounds
matter on a network). ``--protocols default`` measures what ``Cluster.start`` picks in
this process instead (FSS only up to ~205 elements: more rounds, fewer dealer bytes). The
first line printed names the suite and its limit.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import op_table
import torch
import torch.nn.functional as F
import trio

from protocols.suite import describe
from training import Cluster

PARTIES = ["alice", "bob"]
PROVIDER = "james"
WAN_DEFAULT = "default@10000"
"""The default suite as over a WAN link: the suite of docs/ops.md's figures."""


@dataclass(frozen=True)
class Row:
    op: str
    rounds: int
    bytes_per_element: float
    max_error: float
    target: str


async def measure(c: Any, make: Callable[[], Any], numel: int) -> tuple[Any, int, float]:
    await c.flush()
    before = c.stats()
    y = make()
    await c.flush()
    d = c.stats() - before
    return y, d.online_rounds, d.online_bytes / len(PARTIES) / numel


async def err(y: Any, ref: torch.Tensor) -> float:
    return float(((await y.get()).double() - ref.double()).abs().max())


def share(c: Any, t: torch.Tensor, requires_grad: bool = False) -> Any:
    return c.share(t, precision=16, base=2, requires_grad=requires_grad)


async def targets(c: Any, n: int = 10_000) -> list[Row]:
    rows: list[Row] = []
    g = torch.Generator().manual_seed(0)
    x = torch.linspace(-8, 8, n)
    sx = share(c, x)
    for name, fn, ref, tgt in (
        (
            f"sigmoid {_count(n)} in [-8,8]",
            lambda: sx.sigmoid(),
            torch.sigmoid(x),
            "<= 8 r, 256 B, 0.003",
        ),
        (f"tanh {_count(n)} in [-8,8]", lambda: sx.tanh(), torch.tanh(x), "<= 8 r, 256 B, 0.005"),
    ):
        y, r, b = await measure(c, fn, x.numel())
        rows.append(Row(name, r, b, await err(y, ref), tgt))
    logits = torch.randn(32, 10, generator=g) * 3
    sl = share(c, logits)
    y, r, b = await measure(c, lambda: F.softmax(sl, dim=1), logits.numel())
    rows.append(Row("softmax 32x10 (s=3)", r, b, await err(y, logits.softmax(1)), "<= 30 r, 0.003"))
    labels = torch.randint(0, 10, (32,), generator=g)
    sl = share(c, logits, requires_grad=True)
    lt = logits.clone().requires_grad_(True)
    ref = F.cross_entropy(lt, labels)
    ref.backward()

    holder: dict[str, Any] = {}

    def ce() -> Any:
        loss = F.cross_entropy(sl, labels)
        loss.backward()
        holder["loss"] = loss
        return loss

    loss, r, b = await measure(c, ce, logits.numel())
    e_loss = await err(loss, ref.detach())
    assert lt.grad is not None
    e_grad = await err(sl.grad, lt.grad)
    rows.append(
        Row(f"cross-entropy f+b 32x10 (grad err {e_grad:.1e})", r, b, e_loss, "<= 40 r, 0.01")
    )
    return rows


async def every_op(c: Any, n: int = 4000) -> list[Row]:
    """Each op of docs/ops.md: (name, input, op, torch reference, precision) -> a row;
    the error is absolute ("rel.": relative where |result| > 1, absolute below)."""
    g = torch.Generator().manual_seed(1)
    pos = torch.linspace(0.05, 200.0, n)
    anyx = torch.linspace(-6, 6, n)
    img = torch.randn(8, 4, 12, 12, generator=g)
    ker = torch.randn(6, 4, 3, 3, generator=g) * 0.3
    probs = torch.rand(n, generator=g) * 0.9 + 0.05
    bits = (torch.rand(n, generator=g) > 0.5).float()
    rows_ = n // 10
    labels = torch.randint(0, 10, (rows_,), generator=g)
    rows: list[Row] = []
    Case = tuple[
        str, torch.Tensor, Callable[[Any], Any], Callable[[torch.Tensor], torch.Tensor], str
    ]
    cases: list[Case] = [
        ("exp [-6,6] (rel.)", anyx, lambda s: s.exp(), torch.exp, "2/16"),
        ("log [0.05,200]", pos, lambda s: s.log(), torch.log, "2/16"),
        ("reciprocal [0.05,200] (rel.)", pos, lambda s: s.reciprocal(), torch.reciprocal, "2/16"),
        ("sqrt [0.05,200]", pos, lambda s: s.sqrt(), torch.sqrt, "2/16"),
        ("rsqrt [0.05,200]", pos, lambda s: s.rsqrt(), torch.rsqrt, "2/16"),
        (
            "x / y, y in [0.05,200] (rel.)",
            pos,
            lambda s: s / s.flip(),
            lambda t: t / t.flip(0),
            "2/16",
        ),
        ("softplus", anyx, lambda s: F.softplus(_any(s)), F.softplus, "2/16"),
        (
            f"log_softmax {rows_}x10",
            anyx.reshape(rows_, 10) * 2,
            lambda s: F.log_softmax(_any(s), 1),
            lambda t: F.log_softmax(t, 1),
            "2/16",
        ),
        ("abs", anyx, lambda s: s.abs(), torch.abs, "10/3"),
        (
            "leaky_relu",
            anyx,
            lambda s: F.leaky_relu(_any(s), 0.1),
            lambda t: F.leaky_relu(t, 0.1),
            "10/3",
        ),
        ("hardtanh / clamp", anyx, lambda s: F.hardtanh(_any(s)), F.hardtanh, "10/3"),
        (
            f"max dim=1 {rows_}x10",
            anyx.reshape(rows_, 10),
            lambda s: s.max(1)[0],
            lambda t: t.max(1)[0],
            "10/3",
        ),
        (
            f"argmax dim=1 {rows_}x10",
            anyx.reshape(rows_, 10).flip(1),
            lambda s: s.argmax(1),
            lambda t: t.argmax(1).double(),
            "10/3",
        ),
        (
            "conv2d 8x4x12x12 * 6x4x3x3",
            img,
            lambda s: F.conv2d(s, c.share(ker)),
            lambda t: F.conv2d(t, ker),
            "10/3",
        ),
        (
            "max_pool2d 2x2",
            img,
            lambda s: F.max_pool2d(_any(s), 2),
            lambda t: F.max_pool2d(t, 2),
            "10/3",
        ),
        (
            "avg_pool2d 2x2",
            img,
            lambda s: F.avg_pool2d(_any(s), 2),
            lambda t: F.avg_pool2d(t, 2),
            "10/3",
        ),
        (
            "batch_norm (train) 8x4x12x12",
            img,
            lambda s: F.batch_norm(_any(s), None, None, training=True),
            lambda t: F.batch_norm(t, None, None, training=True),
            "2/16",
        ),
        (
            "mse_loss",
            anyx,
            lambda s: F.mse_loss(_any(s), anyx.flip(0)),
            lambda t: F.mse_loss(t, anyx.flip(0)),
            "10/3",
        ),
        (
            "l1_loss",
            anyx,
            lambda s: F.l1_loss(_any(s), anyx.flip(0)),
            lambda t: F.l1_loss(t, anyx.flip(0)),
            "10/3",
        ),
        (
            "binary_cross_entropy",
            probs,
            lambda s: F.binary_cross_entropy(_any(s), bits),
            lambda t: F.binary_cross_entropy(t, bits),
            "2/16",
        ),
        (
            "bce_with_logits",
            anyx,
            lambda s: F.binary_cross_entropy_with_logits(_any(s), bits),
            lambda t: F.binary_cross_entropy_with_logits(t, bits),
            "2/16",
        ),
        (
            f"cross_entropy {rows_}x10",
            anyx.reshape(rows_, 10),
            lambda s: F.cross_entropy(_any(s), labels),
            lambda t: F.cross_entropy(t, labels),
            "2/16",
        ),
    ]
    for name, x, fn, ref, prec in cases:
        s = share(c, x) if prec == "2/16" else c.share(x)
        y, r, b = await measure(c, _bind(fn, s), x.numel())
        want = ref(x).double()
        e = (await y.get()).double() - want
        if "(rel.)" in name:
            e = e / want.abs().clamp(min=1.0)
        rows.append(Row(name, r, b, float(e.abs().max()), prec))
    return rows


def _count(n: int) -> str:
    """10000 as "1e4" (the table's name for it), other counts as they are."""
    k = len(str(n)) - 1
    return f"1e{k}" if n == 10**k else str(n)


def _any(s: Any) -> Any:
    return s


def _bind(fn: Callable[[Any], Any], s: Any) -> Callable[[], Any]:
    return lambda: fn(s)


def render(rows: list[Row]) -> str:
    out = [
        "| op | rounds | online B/element | max error | CrypTen 0.4.1 target or fixed point (base/bits) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        out.append(
            f"| {row.op} | {row.rounds} | {row.bytes_per_element:.1f} | {row.max_error:.2e} | {row.target} |"
        )
    return "\n".join(out)


async def run(all_ops: bool, shrink: int = 1, protocols: str = WAN_DEFAULT) -> None:
    async with Cluster.start(PARTIES, provider=PROVIDER, seed=3, protocols=protocols) as c:
        print(f"suite: {describe(c.suite)}")
        rows = await targets(c, 10_000 // shrink)
        if all_ops:
            rows += await every_op(c, 4000 // shrink)
        print(render(rows))
        if all_ops:
            # issue 20's ops at 10**3 and 10**5 elements (--quick: 10**2 and 10**3)
            small, large = (100, 1000) if shrink > 1 else (1000, 100_000)
            print()
            print(await op_table.table(c, small, large))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--all", action="store_true", help="every op of docs/ops.md")
    p.add_argument(
        "--quick",
        action="store_true",
        help="inputs 2x smaller (a smoke run; the default suite still picks the same protocols, so rounds and bytes per element match; docs/ops.md is at full size)",
    )
    p.add_argument(
        "--protocols",
        default=WAN_DEFAULT,
        help=f"protocol suite (default {WAN_DEFAULT}, docs/ops.md's; 'default': the limit "
        "Cluster.start picks in this process)",
    )
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    trio.run(run, a.all, 2 if a.quick else 1, a.protocols)


if __name__ == "__main__":
    main()
