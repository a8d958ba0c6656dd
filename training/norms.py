"""Vector norms of SharedTensors and what is built on them: ``torch.norm`` /
``Tensor.norm`` / ``torch.linalg.vector_norm`` / ``torch.linalg.norm`` (vector orders),
``F.normalize`` and ``F.cosine_similarity``.

* p = 2 (``'fro'``): ``sqrt(sum x**2)``. The sum of squares of many elements easily
  passes the encoding's limit (2**15 at 2/16: 10**5 values of magnitude 0.6 do), where
  sqrt's range normalisation stops, so the root is taken twice side by side: of s
  itself (exact below 2**14) and of ``s / 2**16`` times 2**8 (every s up to 2**30,
  i.e. every norm that encodes), selected by one comparison bit ``[s >= 2**14]``; the
  unselected root's garbage is multiplied by an exact zero. Rounds: 1 square + sqrt +
  1 selection product.
* p = 1: ``sum |x|`` (1 ReLU); p = inf / -inf: the max / min of ``|x|`` (a ReLU
  tournament); p = 0: the number of nonzero elements, ``sum [x != 0]`` (1 comparison op);
  any other positive integer p: ``(sum |x|**p) ** (1/p)`` (repeated squaring, then
  exp/log on the sum, which must lie in log's domain [2**-8, 2**15)). Fractional p is
  refused (|x|**p through exp/log would not be 0 at x = 0).
* ``F.normalize``: ``x * reciprocal(norm)`` (keepdim along ``dim``). torch divides by
  ``max(norm, eps)``; the reciprocal's domain starts at 2**-8 (2/16) and clamps below
  it to 256, so a norm under 2**-8 acts as ``eps = 2**-8`` (documented and tested).
* ``F.cosine_similarity``: ``sum(normalize(x1) * normalize(x2))`` along ``dim`` (torch
  normalises each vector by ``max(norm, eps)`` too), the same clamp.

Gradients flow through the ops (sqrt's, the reciprocal's and the products' rules).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from protocols.errors import UnsupportedOperation

from .activations import abs_
from .approximation import expect_shared, require_bits
from .maxima import max_dim
from .normalisation import lower, reinterpret
from .range_reduction import exp, log, reciprocal_positive, sqrt
from .tensor import SharedTensor

_WIDE_SHIFT = 16
"""The second root is of ``s / 2**16``: its domain [2**-8, 2**15) covers s in
[2**8, 2**31), and it is selected from s >= 2**14 on (where sqrt(s / 2**16) >= 0.5
carries ~u / 2**8 relative error, times 2**8)."""

_SWITCH = 2.0**14


def sqrt_wide(s: SharedTensor, sh: SharedTensor | None = None) -> SharedTensor:
    """sqrt(s) for s >= 0 up to 2**30 (every root that encodes at 2/16): see module doc.
    The two roots and the comparison run side by side; 1 more round for the selection.
    ``sh``: s / 2**16 computed without dividing s (:func:`_sum_squares`); s itself may
    then be garbage where s >= 2**14 (its root is multiplied by an exact 0)."""
    lo = sqrt(s)
    if sh is None:
        sh = s / 2**_WIDE_SHIFT
    hi = sqrt(sh) * 2 ** (_WIDE_SHIFT // 2)
    with torch.no_grad():
        b = (sh - _SWITCH / 2**_WIDE_SHIFT).drelu()
    return lo + b * (hi - lo)


_LOW_BITS = 8
"""The cross terms 2 xh xl of :func:`_sum_squares` are summed at 8 fractional bits for
s / 2**16: one unit of 2**-9 per element in s, below 2**-16 relative in the norm."""


def _sum_squares(
    x: SharedTensor, dims: list[int] | None, keepdim: bool
) -> tuple[SharedTensor, SharedTensor]:
    """(s, s / 2**16) for s = sum x**2, no truncation of a large value: x = xh + xl with
    xh = x rounded to an integer (one local truncation of x itself) and |xl| <= 1;
    x**2 = xh**2 + 2 xh xl + xl**2 with xh**2 an exact integer product (precision 0),
    2 xh xl an exact product (an integer times a value) and xl**2 truncated from below
    2**33 raw (the square x * x truncated 2**60 raw at x = 20,000 and failed in ~5% of
    runs). s / 2**16 is xh**2's integers read at 16 more bits (exact) plus the other
    terms, summed at 8 bits and lowered (one truncation of their sum, below 2**34 raw
    for sums of squares up to 2**30 over up to 2**16 elements)."""
    f = x.fp.precision
    with torch.no_grad():
        xh = lower(x.detach(), 0)
        xl = x.detach() - xh
        a = _sum(xh * xh, dims, True)  # precision 0, exact
        c = xh * xl * 2  # precision f, exact
        q = xl * xl
        s0 = a._at_prec(f) + _sum(c + q, dims, True)
        low = _sum(lower(c, _LOW_BITS) + lower(q, _LOW_BITS), dims, True)
        sh0 = reinterpret(a, f) + lower(reinterpret(low, _LOW_BITS + _WIDE_SHIFT), f)
    s = x._record(s0, [x], lambda g: (g * (x.detach() * 2.0),))
    sh = x._record(sh0, [x], lambda g: (g * (x.detach() * 2.0**-15),))
    if not keepdim:
        red = {d % x.dim() for d in dims} if dims is not None else set(range(x.dim()))
        shape = tuple(n for i, n in enumerate(x.shape) if i not in red)
        s, sh = s.reshape(shape), sh.reshape(shape)
    return s, sh


def _dims(dim: Any) -> list[int] | None:
    if dim is None:
        return None
    if isinstance(dim, int):
        return [dim]
    return [int(d) for d in dim]


def _sum(v: SharedTensor, dims: list[int] | None, keepdim: bool) -> SharedTensor:
    if dims is None:
        total = v.sum()
        return total.reshape([1] * v.dim()) if keepdim else total
    return v.sum(dims, keepdim)


def _extreme(a: SharedTensor, dims: list[int] | None, keepdim: bool) -> SharedTensor:
    """The max of ``a`` over ``dims`` (all if None)."""
    if dims is None:
        m, _ = max_dim(a.reshape(-1), 0)
        return m.reshape([1] * a.dim()) if keepdim else m
    if len(dims) != 1:
        raise UnsupportedOperation("norm(p=inf) over several dims: reduce one dim at a time")
    m, _ = max_dim(a, dims[0], keepdim=keepdim)
    return m


def _order(p: Any) -> float:
    if isinstance(p, str):
        if p == "fro":
            return 2.0
        raise UnsupportedOperation(
            f"norm(p={p!r}) is not supported on SharedTensor (vector norms and 'fro' only)"
        )
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise UnsupportedOperation(f"norm: p must be a number, 'fro', inf or -inf, got {p!r}")
    p = float(p)
    if math.isinf(p) or p in (0.0, 1.0, 2.0) or (p > 0 and p.is_integer()):
        return p
    raise UnsupportedOperation(
        f"norm(p={p:g}): only p = 0, 1, 2, positive integers, inf and -inf are supported "
        "on SharedTensor (|x|**p for fractional p would go through log, which is not 0 at 0)"
    )


def vector_norm(
    x: Any,
    ord: Any = 2,
    dim: Any = None,
    keepdim: bool = False,
    *,
    dtype: Any = None,
    out: Any = None,
) -> SharedTensor:
    """torch.linalg.vector_norm on a SharedTensor (see module doc)."""
    x = expect_shared(x, "vector_norm")
    if out is not None:
        raise UnsupportedOperation("norm: out= is not supported on SharedTensor")
    p = _order(ord)
    dims = _dims(dim)
    if p == 2.0:
        require_bits(x, "norm (p=2)", base2=True)
        res = sqrt_wide(*_sum_squares(x, dims, keepdim))
    elif p == 1.0:
        res = _sum(abs_(x), dims, keepdim)
    elif p == math.inf:
        res = _extreme(abs_(x), dims, keepdim)
    elif p == -math.inf:
        res = -_extreme(-abs_(x), dims, keepdim)
    elif p == 0.0:
        res = _sum(x.ne(0.0), dims, keepdim)
    else:
        require_bits(x, f"norm (p={p:g})", base2=True)
        s = _sum(abs_(x) ** int(p), dims, keepdim)
        res = exp(log(s) * (1.0 / p))
    return res if dtype is None else res.to(dtype)


def norm(
    input: Any,
    p: Any = "fro",
    dim: Any = None,
    keepdim: bool = False,
    out: Any = None,
    dtype: Any = None,
) -> SharedTensor:
    """torch.norm / Tensor.norm: vector norms (``'fro'`` is the 2-norm of the elements
    over ``dim``, as torch computes it); ``'nuc'`` and matrix norms are refused."""
    return vector_norm(input, 2 if p is None else p, dim, keepdim, dtype=dtype, out=out)


def linalg_norm(
    input: Any,
    ord: Any = None,
    dim: Any = None,
    keepdim: bool = False,
    *,
    out: Any = None,
    dtype: Any = None,
) -> SharedTensor:
    """torch.linalg.norm: ord None (2-norm of the flattened tensor or over ``dim``),
    'fro', or a vector order with one dim; matrix orders are refused."""
    x = expect_shared(input, "linalg.norm")
    dims = _dims(dim)
    n_dims = x.dim() if dims is None else len(dims)
    if ord is not None and ord != "fro" and n_dims != 1:
        raise UnsupportedOperation(
            f"torch.linalg.norm(ord={ord!r}) over {n_dims} dims is a matrix norm, not supported "
            "on SharedTensor; use ord=None/'fro' or torch.linalg.vector_norm"
        )
    return vector_norm(x, 2 if ord is None else ord, dim, keepdim, dtype=dtype, out=out)


def normalize(
    input: Any, p: float = 2.0, dim: int = 1, eps: float = 1e-12, out: Any = None
) -> SharedTensor:
    """F.normalize: ``x / max(norm_p(x, dim), eps)``, as ``x * reciprocal(norm)``; a norm
    below 2**-8 gives the reciprocal's clamp 256 (an eps of 2**-8)."""
    x = expect_shared(input, "normalize")
    if out is not None:
        raise UnsupportedOperation("F.normalize: out= is not supported on SharedTensor")
    require_bits(x, "normalize", base2=True)
    n = vector_norm(x, p, dim, keepdim=True)
    return x * reciprocal_positive(n)


def _normalized(v: Any, dim: int, eps: float) -> Any:
    if isinstance(v, SharedTensor):
        return normalize(v, 2.0, dim, eps)
    t = torch.as_tensor(v, dtype=torch.float64)
    return t / t.norm(2, dim, keepdim=True).clamp_min(eps)


def cosine_similarity(x1: Any, x2: Any, dim: int = 1, eps: float = 1e-8) -> SharedTensor:
    """F.cosine_similarity: ``sum(normalize(x1) * normalize(x2), dim)`` after
    broadcasting; x1 or x2 may be public (normalised in plaintext)."""
    if not isinstance(x1, SharedTensor) and not isinstance(x2, SharedTensor):
        raise UnsupportedOperation("cosine_similarity: expected a SharedTensor operand")
    shape = torch.broadcast_shapes(tuple(x1.shape), tuple(x2.shape))
    a = _normalized(_expand(x1, shape), dim, eps)
    b = _normalized(_expand(x2, shape), dim, eps)
    prod = a * b if isinstance(a, SharedTensor) else b * a
    return prod.sum(dim)


def _expand(v: Any, shape: Sequence[int]) -> Any:
    if tuple(v.shape) == tuple(shape):
        return v
    return (
        v.expand(tuple(shape))
        if isinstance(v, SharedTensor)
        else torch.as_tensor(v).expand(tuple(shape))
    )
