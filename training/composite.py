"""Torch functions composed of the other ops: ``pow`` / ``**``, ``where``, ``var``,
``std`` and ``F.pad``.

* ``x ** p``: integer p by repeated squaring (exact as the products), p = 0.5 / -0.5 by
  sqrt / rsqrt, negative integers through the reciprocal, other reals and tensor
  exponents as ``exp(p log x)`` for x > 0; ``b ** x`` for a public b > 0 as
  ``exp(x ln b)`` (:mod:`training.range_reduction`'s domains and clamps).
* ``where``: a public condition selects by public masks (local, exact); a shared 0/1
  condition blends with one product.
* ``var`` / ``std``: the mean subtracted, one square, a division by the public number of
  degrees of freedom (local), and sqrt for std.
* ``F.pad`` (constant mode): a public-index take zeroed by a public mask, plus the value.

Each records no rule of its own: the gradient flows through the ops it is made of.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from protocols import shapes as S
from protocols.errors import ShapeError, UnsupportedOperation

from .approximation import expect_shared, require_bits
from .operands import public
from .range_reduction import exp, log, reciprocal, rsqrt, sqrt
from .tensor import SharedTensor


def _int_power(x: SharedTensor, n: int) -> SharedTensor:
    """x**n, n >= 1, by repeated squaring: x**(2**i) by squares (one round each) and the
    set bits of n multiplied in as their powers appear, so the depth is
    floor(log2 n) + (1 if n is not a power of two): x**3 2 rounds, x**4 2, x**5..x**8 3.
    Autograd through the squares and products."""
    acc: SharedTensor | None = None
    base = x
    e = n
    while True:
        if e & 1:
            acc = base if acc is None else acc * base
        e >>= 1
        if not e:
            break
        base = base._square()
    assert acc is not None
    return acc


def _as_exponent(p: Any) -> Any:
    """An integral scalar exponent as an int (2.0 -> 2); other scalars as floats."""
    if isinstance(p, torch.Tensor) and p.numel() == 1 and p.dim() == 0:
        p = p.item()
    if isinstance(p, bool):
        raise UnsupportedOperation("x ** bool is not supported; use an int or a float")
    if isinstance(p, int):
        return p
    if isinstance(p, float):
        if not math.isfinite(p):
            raise UnsupportedOperation(f"x ** {p}: the exponent must be finite")
        return int(p) if p.is_integer() and abs(p) < 2**31 else p
    return p


def pow(x: SharedTensor, exponent: Any) -> SharedTensor:
    """torch.pow(x, p) for a shared x.

    * integer p >= 1 (also 2.0, 3.0): repeated squaring (:func:`_int_power`), any x, as
      exact as the products; |x|**p must encode (< 2**(31-f), 32768 at 2/16) and its
      products stay below ~2**44 raw for a reliable truncation: |x**p| < 2**(44-2f)
      (4096 at 2/16); beyond, revealed values outside the headroom raise ValueOutOfRange.
    * p = 0: ones (torch: 0**0 = 1), no gradient to x. p = 1: x.
    * p = 0.5, -0.5: :func:`sqrt`, :func:`rsqrt` (their domains).
    * negative integer p: reciprocal(x) ** |p| (any sign of x; |x| in the reciprocal's
      domain, documented clamp to +-2**(f//2) below it).
    * any other real p, or a tensor p (public or shared): ``exp(p * log(x))`` for x > 0
      (log's domain and clamp; x <= 0 is not checked: it gives exp(p ln 2**-(f//2))),
      and p log x in exp's domain (it saturates above ln(max_value)).
    """
    x = expect_shared(x, "pow")
    p = _as_exponent(exponent)
    if isinstance(p, int):
        if p == 0:
            ones = (x.detach() * 0 + 1).detach()
            return x._record(ones, [x], lambda g: (g * 0,))
        if p == 1:
            return x
        if p > 0:
            return _int_power(x, p)
        if p == -1:
            return reciprocal(x)
        require_bits(x, f"power (x ** {p})", base2=True)
        return _int_power(reciprocal(x), -p)
    if isinstance(p, float) and p == 0.5:
        return sqrt(x)
    if isinstance(p, float) and p == -0.5:
        return rsqrt(x)
    if isinstance(p, float | SharedTensor | torch.Tensor | public):
        require_bits(x, f"power (x ** {p if isinstance(p, float) else 'tensor'})", base2=True)
        lx = log(x)
        return exp(lx * p)
    raise UnsupportedOperation(f"x ** {type(exponent).__name__} is not supported")


def rpow(base: Any, x: SharedTensor) -> SharedTensor:
    """``b ** x`` for a public scalar b > 0: exp(x ln b) (exp's domain)."""
    b = _as_exponent(base)
    if not isinstance(b, int | float) or b <= 0:
        raise UnsupportedOperation(
            f"{base!r} ** SharedTensor: only a public scalar base > 0 is supported"
        )
    require_bits(x, f"power ({b} ** x)")
    return exp(x * math.log(b))


def where(condition: Any, input: Any, other: Any) -> SharedTensor:
    """torch.where(condition, input, other) with at least one SharedTensor.

    A public condition (bool or 0/1 tensor) selects by public masks: ``input * c +
    other * (1 - c)``, local and exact. A shared condition must hold 0/1 values (a
    comparison's result); it is not checked (it is private): ``other + c (input -
    other)`` is one product (1 round; a linear blend for other values of c). Gradients
    flow to input and other as torch's."""
    if isinstance(condition, SharedTensor):
        if not isinstance(input, SharedTensor) and not isinstance(other, SharedTensor):
            diff = torch.as_tensor(input, dtype=torch.float64) - torch.as_tensor(
                other, dtype=torch.float64
            )
            return condition * public(diff) + public(torch.as_tensor(other, dtype=torch.float64))
        if isinstance(other, SharedTensor):
            return condition * (input - other) + other
        return condition * (input - other) + public(torch.as_tensor(other, dtype=torch.float64))
    if not isinstance(input, SharedTensor | float | int) and not isinstance(other, SharedTensor):
        raise UnsupportedOperation("torch.where: expected a SharedTensor among its arguments")
    if isinstance(condition, public):
        condition = condition.tensor
    try:
        c = torch.as_tensor(condition)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UnsupportedOperation(
            f"torch.where: cannot use a {type(condition).__name__} condition"
        ) from exc
    if c.dtype != torch.bool and not bool(((c == 0) | (c == 1)).all()):
        raise ValueError("torch.where: a public condition must be boolean (or 0/1)")
    c64 = c.to(torch.float64)

    def part(v: Any, mask: torch.Tensor) -> Any:
        if isinstance(v, SharedTensor):
            return v * public(mask)
        return public(torch.as_tensor(v, dtype=torch.float64) * mask)

    a, b = part(input, c64), part(other, 1.0 - c64)
    if isinstance(a, SharedTensor):
        return a + b
    assert isinstance(b, SharedTensor)
    return b + a


def _correction(unbiased: Any, correction: Any, name: str) -> float:
    if correction is not None and unbiased is not None:
        raise ValueError(f"{name}: give unbiased or correction, not both")
    if correction is not None:
        return float(correction)
    return 1.0 if unbiased is None or bool(unbiased) else 0.0


def var(
    x: SharedTensor,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: bool = False,
    *,
    correction: Any = None,
    out: Any = None,
) -> SharedTensor:
    """torch.var: ``sum((x - mean)**2) / (N - correction)`` over ``dim`` (default all),
    correction 1 (``unbiased=True``) unless given. One square (1 round); the division by
    a public integer is local. Backward through the ops (exact: autograd of the mean
    subtraction). ``torch.var(x, False)`` (a bool second argument) means unbiased."""
    x = expect_shared(x, "var")
    if out is not None:
        raise UnsupportedOperation("var: out= is not supported on SharedTensor")
    if isinstance(dim, bool):
        dim, unbiased = None, dim
    c = _correction(unbiased, correction, "var")
    if dim is None:
        dims: list[int] | None = None
        n = x.numel()
    else:
        dims = [dim] if isinstance(dim, int) else list(dim)
        S.reduce("var", x.shape, dims, keepdim)
        n = 1
        for d in dims:
            n *= int(x.shape[S.norm_dim("var", d, x.dim())])
    dof = n - c
    if dof <= 0:
        raise ValueError(
            f"var: {n} values with correction {c:g} leave {dof:g} degrees of freedom "
            "(torch returns nan/inf)"
        )
    mean = x.mean(dims, keepdim=True) if dims else x.mean()
    sq = (x - mean) ** 2
    total = sq.sum(dims, keepdim) if dims is not None else sq.sum()
    if keepdim and dims is None:
        total = total.reshape([1] * x.dim())
    return total / int(dof) if float(dof).is_integer() else total * (1.0 / dof)


def std(
    x: SharedTensor,
    dim: Any = None,
    unbiased: Any = None,
    keepdim: bool = False,
    *,
    correction: Any = None,
    out: Any = None,
) -> SharedTensor:
    """torch.std: ``sqrt(var)`` (sqrt's domain: every positive encoding; 0 gives 0)."""
    v = var(x, dim, unbiased, keepdim, correction=correction, out=out)
    require_bits(v, "std", base2=True)
    return sqrt(v)


def pad(x: SharedTensor, pad: Sequence[int], mode: str = "constant", value: Any = None) -> Any:
    """F.pad with ``mode="constant"`` (negative pads crop, as torch): a public-index take
    of x, zeroed by a public 0/1 mask where the output is padding, plus ``value`` (public
    or a shared scalar) there. Local, exact; backward the adjoint of the take."""
    x = expect_shared(x, "pad")
    if mode != "constant":
        raise UnsupportedOperation(f"F.pad(mode={mode!r}): only mode='constant' is supported")
    try:
        idx = torch.nn.functional.pad(x._positions(), tuple(pad), value=-1)
    except (RuntimeError, IndexError, TypeError, ValueError) as exc:
        raise ShapeError(f"pad{tuple(pad)} of shape {tuple(x.shape)}: {exc}") from None
    inside = (idx >= 0).to(torch.float64)
    out = x._take(idx.clamp_min(0)) * public(inside)
    if value is None or (not isinstance(value, SharedTensor) and float(value) == 0.0):
        return out
    if isinstance(value, SharedTensor):
        if value.numel() != 1:
            raise ShapeError("pad: a shared value must have one element")
        return out + value.reshape(()) * public(1.0 - inside)
    return out + public((1.0 - inside) * float(value))
