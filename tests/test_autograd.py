"""Autograd on SharedTensors against torch autograd, for 2 and 3 parties.

Every case computes ``loss = (f(inputs) * R).sum()`` twice: on float64 torch leaves and on
SharedTensor leaves (base 10, precision 3), where ``R`` is a random upstream weight
(shared, without grad). ``R`` makes the gradient reaching ``f``'s output non-uniform and
secret, so each op's backward rule is checked on a shared gradient (with an all-ones
upstream a wrong transpose or broadcast rule could go unnoticed). Then every input's
revealed ``.grad`` must match torch's within a bound derived from the fixed-point rules.

Error rules (u = 1 / 10**3 = 0.001, one unit in the last place):

* encoding rounds to nearest: each input and ``R`` is off by at most u/2;
* the upstream gradient is ``ones * R`` where ``ones`` is a public integer tensor:
  an integer multiply needs no truncation, so that gradient is exactly ``R``'s encoding
  (off by u/2);
* add, sub, neg, transpose, reshape, expand and sum only add or move shares: exact, so
  errors add up (a sum of N gradient entries is off by at most N u/2);
* a product of approximations ``a + da`` and ``b + db`` is off by ``|a||db| + |b||da| +
  |da||db|``, and its one truncation adds less than u (floor or floor + 1, 2 and 3
  parties alike); a matmul sums the first three terms over its inner dimension and
  truncates once;
* a product with a ReLU bit (precision 0) is not truncated at all;
* decoding to float32 adds a relative 2**-24.

Inputs are uniform in [-2, 2] from a seeded torch generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protocols.errors import UnsupportedOperation
from training import SharedTensor
from training.testing import measure, reveal, start_cluster

U = 1e-3  # base 10, precision 3
HALF = U / 2  # input encoding error
F32 = 2.0**-24  # float32 decoding, relative


def uniform(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    return (torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 2).to(torch.float32)


def prod_err(
    a: torch.Tensor | float, da: float, b: torch.Tensor | float, db: float
) -> torch.Tensor:
    """Error of one truncated elementwise product of approximations (see module doc)."""
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return a.abs() * db + b.abs() * da + da * db + U


def matmul_err(a: torch.Tensor, da: float, b: torch.Tensor, db: float) -> torch.Tensor:
    """Error of one truncated matmul ``a @ b`` of approximations (see module doc)."""
    k = a.shape[-1]
    return a.abs() @ torch.full_like(b, db) + torch.full_like(a, da) @ b.abs() + k * da * db + U


# A case: input shapes, the function (works on torch tensors and SharedTensors alike), and
# the error bound of each input's gradient given the plaintext inputs and R.
Bound = Callable[[list[torch.Tensor], torch.Tensor], list[torch.Tensor]]


@dataclass(frozen=True)
class Case:
    name: str
    shapes: list[tuple[int, ...]]
    fn: Callable[..., object]
    bound: Bound


def exact_copy(n: int) -> Bound:
    """Gradient is R (moved, negated or broadcast back one-to-one): u/2 per input."""
    return lambda xs, R: [torch.full(xs[i].shape, HALF, dtype=torch.float64) for i in range(n)]


def _linear_bound(xs: list[torch.Tensor], R: torch.Tensor) -> list[torch.Tensor]:
    x, W, b = xs
    # out = x @ W.t() + b.  grad_x = R @ W, grad_W = (x.t() @ R).t() (one truncated
    # matmul each), grad_b = R.sum(0) over the batch of 3 rows: 3 u/2, no truncation.
    gx = matmul_err(R, HALF, W, HALF)
    gW = matmul_err(x.t(), HALF, R, HALF).t()
    gb = torch.full(b.shape, R.shape[0] * HALF, dtype=torch.float64)
    return [gx, gW, gb]


def _relu_bound(xs: list[torch.Tensor], R: torch.Tensor) -> list[torch.Tensor]:
    # grad = R * bit with bit in {0, 1} at precision 0: no truncation, so the gradient is
    # R's encoding where x >= 0 and exactly 0 elsewhere.
    return [(xs[0] > 0).to(torch.float64) * HALF]


def composite_bound(xs: list[torch.Tensor], R: torch.Tensor) -> list[torch.Tensor]:
    # loss = (relu(x @ W.t() + b).t() * 0.5 * R).sum().  Upstream of the relu: g = (R * 0.5).t()
    # masked by the bit. R * 0.5 is a truncated product with 0.5 encoded exactly:
    # |0.5| u/2 + u; the bit mask adds nothing. Then the linear rules with that g
    # (off by eg = u/4 + u), x and W off by u/2.
    x, W, b = xs
    mask = ((x @ W.t() + b) > 0).to(torch.float64)
    g = R.t().to(torch.float64) * 0.5 * mask
    eg = 0.5 * HALF + U
    gx = matmul_err(g, eg, W, HALF)
    gW = matmul_err(x.t(), HALF, g, eg).t()
    gb = torch.full(b.shape, 3 * eg, dtype=torch.float64)
    return [gx, gW, gb]


X = (3, 4)
CASES = [
    Case("add", [X, X], lambda x, y: x + y, exact_copy(2)),
    # broadcast: b's gradient sums R over the 3 rows: 3 u/2
    Case(
        "add_broadcast",
        [X, (4,)],
        lambda x, b: x + b,
        lambda xs, R: [torch.full(X, HALF), torch.full((4,), 3 * HALF)],
    ),
    Case("sub", [X, X], lambda x, y: x - y, exact_copy(2)),
    Case("neg", [X], lambda x: -x, exact_copy(1)),
    # grad_x = R * y, grad_y = R * x: one truncated product each
    Case(
        "mul",
        [X, X],
        lambda x, y: x * y,
        lambda xs, R: [prod_err(R, HALF, xs[1], HALF), prod_err(R, HALF, xs[0], HALF)],
    ),
    # x used twice: grad = R * x + R * x, two truncated products
    Case("mul_self", [X], lambda x: x * x, lambda xs, R: [2 * prod_err(R, HALF, xs[0], HALF)]),
    # grad = R * (2 x): 2 x is an exact integer multiple of x's encoding (off by 2 u/2 = u)
    Case("square", [X], lambda x: x**2, lambda xs, R: [prod_err(R, HALF, 2 * xs[0], U)]),
    # grad_x = R @ y.t(), grad_y = x.t() @ R
    Case(
        "matmul",
        [X, (4, 5)],
        lambda x, y: x @ y,
        lambda xs, R: [
            matmul_err(R, HALF, xs[1].t(), HALF),
            matmul_err(xs[0].t(), HALF, R, HALF),
        ],
    ),
    Case(
        "torch_matmul",
        [X, (4, 5)],
        torch.matmul,
        lambda xs, R: [
            matmul_err(R, HALF, xs[1].t(), HALF),
            matmul_err(xs[0].t(), HALF, R, HALF),
        ],
    ),
    Case("sum_all", [X], lambda x: x.sum(), exact_copy(1)),
    Case("sum_dim0", [X], lambda x: x.sum(0), exact_copy(1)),
    Case("sum_dim1_keepdim", [X], lambda x: x.sum(dim=1, keepdim=True), exact_copy(1)),
    Case("sum_dim_neg", [X], lambda x: x.sum(dim=-1), exact_copy(1)),
    Case("torch_sum_dim", [X], lambda x: torch.sum(x, dim=0), exact_copy(1)),
    # mean = sum * (1/N) with 1/N a public real: grad = R * (1/N), one truncated product
    # of R (u/2) and the encoded 1/N (u/2); the expand back is exact.
    Case("mean_all", [X], lambda x: x.mean(), lambda xs, R: [prod_err(R, HALF, 1 / 12, HALF)]),
    Case(
        "mean_dim1",
        [X],
        lambda x: x.mean(dim=1),
        lambda xs, R: [prod_err(R, HALF, 1 / 4, HALF).reshape(3, 1).expand(X)],
    ),
    Case("transpose_T", [X], lambda x: x.T, exact_copy(1)),
    Case("transpose_t", [X], lambda x: x.t(), exact_copy(1)),
    Case("transpose_01", [X], lambda x: x.transpose(0, 1), exact_copy(1)),
    Case("transpose_3d", [X], lambda x: x.reshape(2, 3, 2).transpose(0, 2), exact_copy(1)),
    Case("reshape", [X], lambda x: x.reshape(2, 6), exact_copy(1)),
    Case("reshape_flat", [X], lambda x: x.reshape(-1), exact_copy(1)),
    Case("linear_bias_broadcast", [X, (5, 4), (5,)], F.linear, _linear_bound),
    Case(
        "linear_no_bias",
        [X, (5, 4)],
        F.linear,
        lambda xs, R: [matmul_err(R, HALF, xs[1], HALF), matmul_err(xs[0].t(), HALF, R, HALF).t()],
    ),
    Case("relu_F", [X], F.relu, _relu_bound),
    Case("relu_torch", [X], torch.relu, _relu_bound),
    Case("relu_method", [X], lambda x: x.relu(), _relu_bound),
    # public real: grad = R * s, s = 0.3217 encoded as 0.322 (off by <= u/2), truncated
    Case(
        "mul_public_float",
        [X],
        lambda x: x * 0.3217,
        lambda xs, R: [prod_err(R, HALF, 0.3217, HALF)],
    ),
    Case(
        "rmul_public_float",
        [X],
        lambda x: -1.75 * x,
        lambda xs, R: [prod_err(R, HALF, 1.75, HALF)],
    ),
    # public integer: grad = R * 3, no truncation: 3 u/2
    Case("mul_public_int", [X], lambda x: x * 3, lambda xs, R: [torch.full(X, 3 * HALF)]),
    Case("rmul_public_int", [X], lambda x: -2 * x, lambda xs, R: [torch.full(X, 2 * HALF)]),
    # a small network-like composition: every rule above chained
    Case(
        "composite",
        [X, (5, 4), (5,)],
        lambda x, W, b: F.relu(F.linear(x, W, b)).t() * 0.5,
        composite_bound,
    ),
]


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_gradients_match_torch(case: Case, n: int) -> None:
    gen = torch.Generator().manual_seed(1000 + CASES.index(case))
    xs = [uniform(gen, s) for s in case.shapes]
    ref_leaves = [x.to(torch.float64).requires_grad_() for x in xs]
    out_ref = case.fn(*ref_leaves)
    R = uniform(gen, tuple(out_ref.shape))
    (out_ref * R.to(torch.float64)).sum().backward()
    if "relu" in case.name or case.name == "composite":
        # the ReLU derivative at 0 is a convention (torch: 0, DReLU: 1); keep the
        # pre-activations away from 0 by more than the forward error so both agree.
        pre = xs[0] if case.name != "composite" else F.linear(*[x.double() for x in xs])
        assert float(pre.abs().min()) > 20 * U, "regenerate: a pre-activation is near 0"
    async with start_cluster(n, seed=n) as c:
        leaves = [c.share(x, precision=3, base=10, requires_grad=True) for x in xs]
        Rs = c.share(R, precision=3, base=10)
        out = case.fn(*leaves)
        assert isinstance(out, SharedTensor)
        assert tuple(out.shape) == tuple(out_ref.shape)
        (out * Rs).sum().backward()
        got = [await reveal(leaf.grad) for leaf in leaves]
    plain = [x.to(torch.float64) for x in xs]
    tols = case.bound(plain, R.to(torch.float64))
    for i, (g, ref, tol) in enumerate(zip(got, ref_leaves, tols, strict=True)):
        assert ref.grad is not None
        want = ref.grad
        assert g.shape == want.shape, f"{case.name}: grad {i} shape"
        limit = tol.to(torch.float64) + F32 * want.abs() + 1e-12
        gap = (g - want).abs()
        assert bool((gap <= limit).all()), (
            f"{case.name}, {n} parties, input {i}: max gap {float(gap.max()):.5f}, "
            f"worst excess {float((gap - limit).max()):.5f}\n got {g}\n want {want}"
        )


@pytest.mark.parametrize("n", [2, 3])
async def test_public_gradients_stay_public_and_exact(n: int) -> None:
    """d(x.sum())/dx is the public ones, d((3x).sum())/dx the public 3s, d((x/4).sum())/dx
    the public 0.25: no secret is involved, so they stay torch tensors and are exact."""
    gen = torch.Generator().manual_seed(7)
    x = uniform(gen, X)
    async with start_cluster(n, seed=3) as c:
        cases = [
            (lambda t: t.sum(), torch.ones(X)),
            (lambda t: (t * 3).sum(), torch.full(X, 3.0)),
            (lambda t: (t * 0.25).sum(), torch.full(X, 0.25)),
            (lambda t: (t - 1.5).sum(dim=0).sum(), torch.ones(X)),
        ]
        for fn, want in cases:
            xs = c.share(x, requires_grad=True)
            fn(xs).backward()
            assert isinstance(xs.grad, torch.Tensor), type(xs.grad).__name__
            assert torch.equal(xs.grad.to(torch.float64), want.to(torch.float64))


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("order", ["shared_then_mixed", "public_then_shared", "public_twice"])
async def test_gradient_accumulates_over_two_backward_calls(n: int, order: str) -> None:
    """Like torch, a second ``backward`` adds to ``.grad`` instead of replacing it."""
    gen = torch.Generator().manual_seed(11)
    x, R1, R2 = uniform(gen, X), uniform(gen, X), uniform(gen, X)

    def losses(t: object, r1: object, r2: object) -> list[Callable[[], object]]:
        shared_loss = lambda: (t * r1).sum()  # noqa: E731
        mixed_loss = lambda: (t**2 * r2).sum() + (t * 3).sum()  # noqa: E731
        public_loss = lambda: (t * 2).sum()  # noqa: E731
        return {
            "shared_then_mixed": [shared_loss, mixed_loss],
            "public_then_shared": [public_loss, shared_loss],
            "public_twice": [public_loss, lambda: t.sum()],
        }[order]

    ref = x.to(torch.float64).requires_grad_()
    for make in losses(ref, R1.double(), R2.double()):
        make().backward()
    assert ref.grad is not None
    # Bounds: R1 path u/2 (R1's encoding), R2 path one truncated product of R2 (u/2) and
    # 2x (u), the integer paths are exact; accumulation adds shares exactly.
    tol = {
        "shared_then_mixed": HALF + prod_err(R2.double(), HALF, 2 * x.double(), U),
        "public_then_shared": torch.full(X, HALF, dtype=torch.float64),
        "public_twice": torch.zeros(X, dtype=torch.float64),
    }[order]
    async with start_cluster(n, seed=5) as c:
        xs = c.share(x, requires_grad=True)
        r1, r2 = c.share(R1), c.share(R2)
        makes = losses(xs, r1, r2)
        makes[0]().backward()
        first = await reveal(xs.grad)
        makes[1]().backward()
        got = await reveal(xs.grad)
        if order == "public_twice":
            assert isinstance(xs.grad, torch.Tensor), "public + public must stay public"
    ref_first = x.to(torch.float64).requires_grad_()
    losses(ref_first, R1.double(), R2.double())[0]().backward()
    assert ref_first.grad is not None
    assert bool(((first - ref_first.grad).abs() <= HALF + 1e-9).all()), "first backward"
    gap = (got - ref.grad).abs()
    assert bool((gap <= tol + F32 * ref.grad.abs() + 1e-12).all()), (
        f"accumulated gradient off by {float(gap.max()):.5f}: got {got}, want {ref.grad}"
    )


@pytest.mark.parametrize(
    ("fn", "name"),
    [
        # exp, sigmoid, tanh, softmax and max are supported since issue 12
        # (tests/test_functional.py); these still have no secure version.
        (torch.atan, "atan"),
        (torch.erf, "erf"),
        (lambda t: torch.cumprod(t, 1), "cumprod"),
        (lambda t: torch.sort(t), "sort"),
        (F.gelu, "gelu"),
    ],
    ids=["atan", "erf", "cumprod", "sort", "gelu"],
)
async def test_unsupported_torch_function_names_it(fn: Callable[..., object], name: str) -> None:
    async with start_cluster(2, seed=1) as c:
        xs = c.share(torch.ones(2, 3), requires_grad=True)
        with pytest.raises(UnsupportedOperation, match=name):
            fn(xs)


async def test_unsupported_function_inside_module_forward_names_it() -> None:
    async with start_cluster(2, seed=1) as c:
        model = c.share_module(nn.Sequential(nn.Linear(2, 2), nn.GELU()))
        with pytest.raises(UnsupportedOperation, match="gelu"):
            model(c.share(torch.ones(4, 2)))


class _IntBuffer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.register_buffer("counts", torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize(
    "module",
    [_IntBuffer(), nn.Sequential(nn.Linear(3, 3), _IntBuffer())],
    ids=["int_buffer", "sequential_with_int_buffer"],
)
async def test_share_module_refuses_buffers(module: nn.Module) -> None:
    # BatchNorm's floating-point running statistics are shared since issue 12
    # (tests/test_layers.py); integer buffers other than num_batches_tracked are refused.
    async with start_cluster(2, seed=1) as c:
        async with measure(c) as m:
            with pytest.raises(UnsupportedOperation, match="counts"):
                c.share_module(module, requires_grad=True)
        # refused before anything was shared: no parameter left the coordinator
        assert m.stats.input_bytes == 0
