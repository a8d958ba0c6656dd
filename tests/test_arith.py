"""Arithmetic on SharedTensors against plaintext torch, for 2 and 3 parties.

Two oracles per op:

* exact: the revealed ring value against integer arithmetic on the encoded inputs; a
  truncated product must be ``floor(p / d)`` or ``floor(p / d) + 1`` (one unit in the last
  place per truncation), everything else must be exact;
* real: the decoded float32 result against float64 torch on the (float32) plaintexts, with
  the tolerance derived below.

Tolerance (u = 1 / scale, the unit in the last place). Encoding rounds to nearest, so an
encoded input is within u/2 of its value. Then, to first order plus the exact square term:

* add, sub: u/2 + u/2 = u; neg, transpose: u/2; sum of N values: N u/2;
* times a public integer k: |k| u/2 (no truncation);
* times a public real p (p encoded too) or a shared y: |y| u/2 + |x| u/2 + u²/4 from the
  inputs, plus u for the one truncation;
* square: 2 |x| u/2 + u²/4 + u;
* matmul: sum over k of (|x_ik| u/2 + |y_kj| u/2 + u²/4), plus u for its one truncation;
* decoding to float32 adds a relative 2**-24 of the result.

Products are kept well inside the truncation domain (|encoded product| <= ~2**42, failure
probability <= 2**-21 per element), so a wrong element is a bug, not bad luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st

from protocols import FixedPoint
from training import Cluster
from training.testing import start_cluster

CONFIGS = [FixedPoint(10, 3), FixedPoint(2, 16)]
F32 = 2.0**-24


@dataclass
class Case:
    n: int
    fp: FixedPoint
    seed: int
    dims: tuple[int, int, int]
    bound: float
    """Magnitude of most values."""
    extreme: float
    """The largest magnitude allowed for the ops under test, planted in every case."""


def draw_values(gen: torch.Generator, shape: tuple[int, ...], case: Case) -> torch.Tensor:
    """Uniform in [-bound, bound] with zeros and +-extreme planted (one element in ~7 each)."""
    x = (torch.rand(shape, generator=gen, dtype=torch.float64) * 2 - 1) * case.bound
    pick = torch.rand(shape, generator=gen)
    x = torch.where(pick < 0.15, torch.zeros_like(x), x)
    x = torch.where((pick >= 0.15) & (pick < 0.3), torch.full_like(x, case.extreme), x)
    x = torch.where((pick >= 0.3) & (pick < 0.45), torch.full_like(x, -case.extreme), x)
    return x.to(torch.float32)


def linear_bound(fp: FixedPoint, kind: str) -> float:
    # "limit" sits just inside the documented range; float32 rounding must not push it out.
    return {"tiny": 0.01, "unit": 1.0, "large": 1000.0, "limit": 0.999 * fp.max_value}[kind]


def product_bound(fp: FixedPoint, kind: str) -> float:
    # |x|, |y| <= 1000 at scale 10**3 (16 at scale 2**16) keeps products below ~2**40.
    top = 1000.0 if fp.base == 10 else 16.0
    return {"tiny": 0.01, "unit": 1.0, "large": top / 2, "limit": top}[kind]


@st.composite
def cases(draw: st.DrawFn, n: int, fp: FixedPoint, bound_of: object) -> Case:
    kind = draw(st.sampled_from(["tiny", "unit", "large", "limit"]))
    event(kind)
    return Case(
        n=n,
        fp=fp,
        seed=draw(st.integers(0, 2**31 - 1)),
        dims=(draw(st.integers(1, 5)), draw(st.integers(1, 5)), draw(st.integers(1, 4))),
        bound=bound_of(fp, kind),  # type: ignore[operator]
        extreme=bound_of(fp, "limit"),  # type: ignore[operator]
    )


GRID = pytest.mark.parametrize(
    ("n", "fp"),
    [(n, fp) for n in (2, 3) for fp in CONFIGS],
    ids=lambda v: f"{v}p" if isinstance(v, int) else f"base{v.base}-{v.precision}",
)


def floor_div(p: torch.Tensor, d: int) -> torch.Tensor:
    return torch.div(p, d, rounding_mode="floor")


def assert_exact(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    assert torch.equal(got, want), f"{what}: {got} != {want}"


def assert_truncated(got: torch.Tensor, product: torch.Tensor, d: int, what: str) -> None:
    """got is floor(product / d) or one more, elementwise."""
    assert got.shape == product.shape, (what, got.shape, product.shape)
    diff = got - floor_div(product, d)
    bad = ~((diff == 0) | (diff == 1))
    assert not bool(bad.any()), f"{what}: off by {diff[bad].tolist()} at {bad.nonzero().tolist()}"


def assert_close(got: torch.Tensor, want: torch.Tensor, tol: torch.Tensor, what: str) -> None:
    assert got.dtype == torch.float32, (what, got.dtype)  # the inputs' dtype (issue 20)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    limit = tol + (want.abs() + tol) * F32
    err = (got.double() - want).abs()
    assert bool((err <= limit).all()), f"{what}: max excess {float((err - limit).max())}"


async def raw(c: Cluster, t: object) -> torch.Tensor:
    return await c.reveal(t.tid, t.shape)  # type: ignore[attr-defined]


@GRID
@settings(max_examples=15, deadline=None, derandomize=True)
@given(data=st.data())
async def test_linear_ops(n: int, fp: FixedPoint, data: st.DataObject) -> None:
    case = data.draw(cases(n, fp, linear_bound))
    m, k, _ = case.dims
    u = 1.0 / fp.scale
    gen = torch.Generator().manual_seed(case.seed)
    x = draw_values(gen, (m, k), case)
    y = draw_values(gen, (m, k), case)
    row = draw_values(gen, (k,), case)
    ex, ey, erow = fp.encode(x), fp.encode(y), fp.encode(row)
    xd, yd, rowd = x.double(), y.double(), row.double()
    ints = [2, -3, 0, 1]
    # Linear ops are exact up to 2**63; sums of inputs at the encoding limit pass the
    # revealed-range bound (the headroom, where a square would wrap): switch it off here.
    async with start_cluster(case.n, seed=case.seed, value_bound=None) as c:
        X = c.share(x, precision=fp.precision, base=fp.base)
        Y = c.share(y, precision=fp.precision, base=fp.base)
        R = c.share(row, precision=fp.precision, base=fp.base)
        results = {
            "add": (X + Y, ex + ey, xd + yd, u),
            "sub": (X - Y, ex - ey, xd - yd, u),
            "add_broadcast": (X + R, ex + erow, xd + rowd, u),
            "torch.add": (torch.add(X, Y), ex + ey, xd + yd, u),
            "neg": (-X, -ex, -xd, u / 2),
            "transpose": (X.T, ex.T, xd.T, u / 2),
            "transpose(0,1)": (X.transpose(0, 1), ex.T, xd.T, u / 2),
            "sum": (X.sum(), ex.sum(), xd.sum(), m * k * u / 2),
            "sum(dim=0)": (X.sum(0), ex.sum(0), xd.sum(0), m * u / 2),
        }
        for i in ints:
            results[f"mul_int({i})"] = (X * i, ex * i, xd * i, abs(i) * u / 2)
            results[f"rmul_int({i})"] = (i * X, ex * i, xd * i, abs(i) * u / 2)
        for name, (t, exact, real, tol) in results.items():
            assert t.prec == fp.precision, name
            assert_exact(await raw(c, t), exact, name)
            assert_close(await t.get(), real, torch.full_like(real, tol), name)


@GRID
@settings(max_examples=15, deadline=None, derandomize=True)
@given(data=st.data())
async def test_products(n: int, fp: FixedPoint, data: st.DataObject) -> None:
    case = data.draw(cases(n, fp, product_bound))
    m, k, q = case.dims
    s, u = fp.scale, 1.0 / fp.scale
    gen = torch.Generator().manual_seed(case.seed)
    x = draw_values(gen, (m, k), case)
    y = draw_values(gen, (m, k), case)
    w = draw_values(gen, (k, q), case)
    row = draw_values(gen, (k,), case)
    small = (torch.rand((m, k), generator=gen) * 2 - 1).to(torch.float32)
    ex, ey, ew, erow, esmall = (fp.encode(t) for t in (x, y, w, row, small))
    xd, yd, wd, rowd, smalld = (t.double() for t in (x, y, w, row, small))
    ax, ay, aw, arow = (t.abs() for t in (xd, yd, wd, rowd))
    p = 0.37 if fp.base == 10 else 0.375
    ep = int(fp.encode(torch.tensor(p, dtype=torch.float64)))
    async with start_cluster(case.n, seed=case.seed) as c:
        X = c.share(x, precision=fp.precision, base=fp.base)
        Y = c.share(y, precision=fp.precision, base=fp.base)
        W = c.share(w, precision=fp.precision, base=fp.base)
        R = c.share(row, precision=fp.precision, base=fp.base)
        S = c.share(small, precision=fp.precision, base=fp.base)
        prod_tol = ax * u / 2 + ay * u / 2 + u * u / 4 + u
        mm_tol = (ax.sum(1, keepdim=True) + aw.sum(0, keepdim=True)) * u / 2 + k * u * u / 4 + u
        ones = torch.ones_like(xd)
        mmt_tol = (ax.T @ ones + ones.T @ ay) * u / 2 + m * u * u / 4 + u
        xy = X * Y
        results = {
            "mul": (xy, ex * ey, xd * yd, prod_tol),
            "torch.mul": (torch.mul(X, Y), ex * ey, xd * yd, prod_tol),
            "mul_broadcast": (
                X * R,
                ex * erow,
                xd * rowd,
                ax * u / 2 + arow * u / 2 + u * u / 4 + u,
            ),
            "mul_public_real": (X * p, ex * ep, xd * p, ax * u / 2 + p * u / 2 + u * u / 4 + u),
            "square": (X**2, ex * ex, xd * xd, ax * u + u * u / 4 + u),
            "matmul": (X @ W, ex @ ew, xd @ wd, mm_tol),
            "torch.matmul": (torch.matmul(X, W), ex @ ew, xd @ wd, mm_tol),
            "matmul_T": (X.T @ Y, ex.T @ ey, xd.T @ yd, mmt_tol),
        }
        for name, (t, product, real, tol) in results.items():
            assert t.prec == fp.precision, name
            assert_truncated(await raw(c, t), product, s, name)
            assert_close(await t.get(), real, tol, name)

        # Two truncations in a chain: (x*y)*z with |z| <= 1 (keeps the second product as
        # small as the first). With e1 the error of x*y (prod_tol), the second product
        # adds |z| e1 + |xy| u/2 + e1 u/2 + u.
        chain = xy * S
        chain_tol = smalld.abs() * prod_tol + (xd * yd).abs() * u / 2 + prod_tol * u / 2 + u
        assert_close(await chain.get(), xd * yd * smalld, chain_tol, "chain")
        first = await raw(c, xy)
        assert_truncated(await raw(c, chain), first * esmall, s, "chain exact")


async def test_mixed_precision_and_scalar_shapes() -> None:
    """Operands at different precisions align to the larger one; scalars broadcast."""
    async with start_cluster(2, seed=3) as c:
        a = c.share(torch.tensor([1.5, -2.25]), precision=2)
        b = c.share(torch.tensor([0.125, 4.0]), precision=3)
        total = a + b
        assert total.prec == 3
        assert (await total.get()).tolist() == [1.625, 1.75]
        prod = a * b
        assert prod.prec == 3
        got = await prod.get()
        # encodings are exact here; one truncation by 10**2 costs at most 1e-3
        assert torch.allclose(
            got.double(), torch.tensor([0.1875, -9.0], dtype=torch.float64), atol=1e-3
        )
        s = c.share(torch.tensor(3.0))
        assert (await (s * s).get()).item() == 9.0
        assert (await (s + 1).get()).item() == 4.0
        assert (await (1 - s).get()).item() == -2.0
