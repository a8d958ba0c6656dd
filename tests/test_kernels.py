"""The ring's compute kernels against independent references, bit for bit.

* ``ring_matmul`` (torch's own int64 matmul) and ``ring_matmul_limbs`` (float64 limbs)
  against numpy's uint64 matmul (integer loops; unsigned arithmetic wraps modulo 2^64 by
  definition), on full-range operands: 2-D, 1-D, batched and broadcast 3-D/4-D, inner
  dimensions beyond 2048 (where the limb plan switches to 4 limbs). A kernel that went
  through float anywhere would lose the low bits of such operands.
* The three ring convolutions of :mod:`protocols.conv` against a numpy uint64
  shift-and-sum reference, on the geometries the layers use (MNIST-Net and LeNet channel
  counts at small batch, strides 1 and 2, groups, depthwise).
* The thread policy's parsing of its environment variables.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from protocols import allocator
from protocols.conv import conv_dw_ring, conv_dx_ring, conv_ring
from protocols.ring import THREADS_ENV, ring_matmul, ring_matmul_limbs, thread_policy

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def full_range(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    x = torch.randint(INT64_MIN, INT64_MAX, shape, generator=g, dtype=torch.int64)
    flat = x.view(-1)
    flat[: min(3, flat.numel())] = torch.tensor([INT64_MIN, INT64_MAX, -1])[: flat.numel()]
    return x


def u64(x: torch.Tensor) -> np.ndarray:
    return x.contiguous().numpy().view(np.uint64)


def i64(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).view(np.int64))


MATMUL_SHAPES = [
    ((128, 784), (784, 128)),  # Network A, first layer
    ((784, 128), (128, 128)),  # its weight gradient (x^T g)
    ((128, 10), (10, 128)),
    ((128,), (128, 64)),
    ((70, 90), (90,)),
    ((3, 40, 50), (50, 30)),  # batched @ matrix
    ((4, 20, 30), (4, 30, 6)),  # batched @ batched
    ((2, 1, 8, 9), (3, 9, 5)),  # broadcast batch dims
    ((4, 2048), (2048, 8)),  # the largest inner dimension with 3 limbs
    ((4, 3000), (3000, 8)),  # 4 limbs
    ((2, 3, 5000), (5000, 4)),  # batched, 4 limbs
]


@pytest.mark.parametrize(("ash", "bsh"), MATMUL_SHAPES, ids=str)
def test_matmul_kernels_wrap_exactly(ash: tuple[int, ...], bsh: tuple[int, ...]) -> None:
    g = torch.Generator().manual_seed(sum(ash) * 7 + sum(bsh))
    a, b = full_range(ash, g), full_range(bsh, g)
    ref = i64(np.matmul(u64(a), u64(b)))
    assert torch.equal(ring_matmul(a, b), ref)
    assert torch.equal(ring_matmul_limbs(a, b), ref)
    # a transposed (non-contiguous) operand, as in the backward pass
    if a.dim() == 2:
        at = a.t().contiguous().t()
        assert torch.equal(ring_matmul(at, b), ref)


@pytest.mark.parametrize(("ash", "bsh"), MATMUL_SHAPES[:3], ids=str)
def test_addmm_wraps_exactly(ash: tuple[int, ...], bsh: tuple[int, ...]) -> None:
    """torch's int64 ``addmm``/``addmm_`` (Beaver matmul's fused ``c + eps b + x delta``)
    against the uint64 reference, on full-range operands and a transposed (strided) one."""
    g = torch.Generator().manual_seed(sum(ash) + 3 * sum(bsh))
    a, b, x, d = full_range(ash, g), full_range(bsh, g), full_range(ash, g), full_range(bsh, g)
    c = full_range((ash[0], bsh[1]), g)
    ref = i64(u64(c) + np.matmul(u64(a), u64(b)) + np.matmul(u64(x), u64(d)))
    z = torch.addmm(c, a, b)
    z.addmm_(x.t().contiguous().t(), d)
    assert torch.equal(z, ref)


def test_matmul_reference_catches_a_float_kernel() -> None:
    """The comparison can fail: a float64 product of full-range operands is not the ring's."""
    g = torch.Generator().manual_seed(5)
    a, b = full_range((8, 16), g), full_range((16, 4), g)
    as_float = (a.double() @ b.double()).to(torch.int64)
    assert not torch.equal(as_float, i64(np.matmul(u64(a), u64(b))))


def np_conv(x: np.ndarray, w: np.ndarray, s: int, groups: int) -> np.ndarray:
    """Valid cross-correlation mod 2^64 by summing the kernel's shifted slices."""
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    ho, wo = (h - kh) // s + 1, (wd - kw) // s + 1
    og = o // groups
    out = np.zeros((n, o, ho, wo), np.uint64)
    for gi in range(groups):
        xs = x[:, gi * cg : (gi + 1) * cg]
        ws = w[gi * og : (gi + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
                out[:, gi * og : (gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    return out


def np_conv_dx(
    gy: np.ndarray, w: np.ndarray, xshape: tuple[int, ...], s: int, groups: int
) -> np.ndarray:
    o, cg, kh, kw = w.shape
    ho, wo = gy.shape[2:]
    og = o // groups
    dx = np.zeros(xshape, np.uint64)
    for gi in range(groups):
        gs = gy[:, gi * og : (gi + 1) * og]
        ws = w[gi * og : (gi + 1) * og]
        for i in range(kh):
            for j in range(kw):
                sl = dx[:, gi * cg : (gi + 1) * cg, i : i + s * (ho - 1) + 1 : s]
                sl[..., j : j + s * (wo - 1) + 1 : s] += np.einsum(
                    "nohw,oc->nchw", gs, ws[:, :, i, j]
                )
    return dx


def np_conv_dw(
    x: np.ndarray, gy: np.ndarray, wshape: tuple[int, ...], s: int, groups: int
) -> np.ndarray:
    o, cg, kh, kw = wshape
    ho, wo = gy.shape[2:]
    og = o // groups
    dw = np.zeros(wshape, np.uint64)
    for gi in range(groups):
        xs = x[:, gi * cg : (gi + 1) * cg]
        gs = gy[:, gi * og : (gi + 1) * og]
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
                dw[gi * og : (gi + 1) * og, :, i, j] = np.einsum("nchw,nohw->oc", patch, gs)
    return dw


CONV_SHAPES = [
    # (x shape, w shape, stride, groups)
    ((2, 1, 28, 28), (32, 1, 3, 3), 1, 1),  # MNIST Net conv1
    ((2, 32, 26, 26), (64, 32, 3, 3), 1, 1),  # MNIST Net conv2
    ((2, 6, 14, 14), (16, 6, 5, 5), 1, 1),  # LeNet conv2
    ((3, 4, 11, 11), (6, 4, 3, 3), 2, 1),  # stride 2
    ((2, 6, 9, 9), (12, 3, 3, 3), 2, 2),  # groups
    ((2, 8, 8, 8), (8, 1, 3, 3), 1, 8),  # depthwise
]


@pytest.mark.parametrize(("xs", "ws", "s", "groups"), CONV_SHAPES, ids=str)
def test_conv_kernels_wrap_exactly(
    xs: tuple[int, ...], ws: tuple[int, ...], s: int, groups: int
) -> None:
    g = torch.Generator().manual_seed(sum(xs) + 3 * sum(ws) + s)
    x, w = full_range(xs, g), full_range(ws, g)
    ref = np_conv(u64(x), u64(w), s, groups)
    out = tuple(ref.shape)
    assert torch.equal(conv_ring(x, w, out), i64(ref))
    gy = full_range(out, g)
    assert torch.equal(conv_dx_ring(gy, w, xs), i64(np_conv_dx(u64(gy), u64(w), xs, s, groups)))
    assert torch.equal(conv_dw_ring(x, gy, ws), i64(np_conv_dw(u64(x), u64(gy), ws, s, groups)))


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, 1),
        ({"OMP_NUM_THREADS": "4"}, None),
        ({THREADS_ENV: "3", "OMP_NUM_THREADS": "4"}, 3),
        ({THREADS_ENV: "0"}, None),
    ],
)
def test_thread_policy(env: dict[str, str], want: int | None) -> None:
    assert thread_policy(env) == want


@pytest.mark.parametrize("bad", ["-1", "two", ""])
def test_thread_policy_rejects_a_bad_count(bad: str) -> None:
    with pytest.raises(ValueError, match=THREADS_ENV):
        thread_policy({THREADS_ENV: bad})


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, True),
        ({"SMPC_MALLOC": "off"}, False),
        ({"SMPC_MALLOC": "ON"}, True),
        ({"MALLOC_ARENA_MAX": "2"}, True),  # not a MALLOC_*_ tunable alias
        ({"MALLOC_MMAP_THRESHOLD_": "65536"}, False),  # the user's own tuning wins
        ({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"}, False),
        ({"GLIBC_TUNABLES": "x", "SMPC_MALLOC": "on"}, True),
    ],
)
def test_malloc_policy(env: dict[str, str], want: bool) -> None:
    assert allocator.malloc_policy(env) is want


def test_malloc_policy_rejects_a_bad_value() -> None:
    with pytest.raises(ValueError, match="SMPC_MALLOC"):
        allocator.malloc_policy({"SMPC_MALLOC": "maybe"})


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the tuning is glibc's")
def test_tuned_malloc_reuses_freed_tensors() -> None:
    """Importing the library sets the thresholds: 10 allocations of a 64 MiB tensor (a
    CNN step's PRG draws are this large), each written and freed, then fault in its pages
    about once instead of 10 times (what ``SMPC_MALLOC=off``, glibc's default, does: above
    its dynamic threshold's 32 MiB ceiling, a fresh mmap each time)."""
    code = (
        "import resource, torch, protocols\n"
        "from protocols import allocator\n"
        "f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(10):\n"
        "    t = torch.empty(1 << 23, dtype=torch.int64); t.fill_(1); del t\n"
        "print(allocator.APPLIED, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)\n"
    )
    faults = {}
    for mode in ("on", "off"):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        env["SMPC_MALLOC"] = mode
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr[-2000:]
        applied, count = out.stdout.split()
        assert applied == str(mode == "on")
        faults[mode] = int(count)
    assert faults["off"] > 10 * 16384 * 0.9  # 16,384 pages per allocation, every time
    assert faults["on"] < faults["off"] / 5, faults


@pytest.mark.parametrize("n", [0, 1, 8, 63, 64, 1000, 20_003])
@pytest.mark.parametrize("d", [2, 3, 7, 1000, 2**16, 2**62, 10**18])
def test_floor_and_ceil_division_are_exact_on_every_int64(n: int, d: int) -> None:
    """The local truncation's floor (party 0) and ceiling (party 1) against Python's
    integers, on both sides of the compiled kernels' size threshold and on the ring's edges
    (-2^63, 2^63 - 1, multiples and near-multiples of d); a transposed view comes out
    right too."""
    from protocols.ring import ceil_div, floor_div

    x = torch.randint(-(2**63), 2**63 - 1, (n,), generator=torch.Generator().manual_seed(n))
    edges = [-(2**63), 2**63 - 1, -d, -d + 1, d, d - 1, 0, -1]
    x[: min(n, len(edges))] = torch.tensor(edges[:n], dtype=torch.int64)
    values = x.tolist()
    assert floor_div(x, d).tolist() == [v // d for v in values]
    assert ceil_div(x, d).tolist() == [-(-v // d) for v in values]
    view = x[: n - n % 4].reshape(4, -1).t()
    want = [[-(-v // d) for v in row] for row in view.tolist()]
    assert ceil_div(view, d).tolist() == want
