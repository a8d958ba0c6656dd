"""Softmax, log-softmax and the losses on SharedTensors: MSE, L1, NLL, cross entropy and
binary cross entropy (on probabilities and on logits).

* softmax: ``e^(x - max) / sum``: the max along the dimension (a tournament,
  :mod:`training.maxima`), ``exp`` for ``z <= 0`` (a ReLU + 5 rounds), the reciprocal of the sum on
  its known range [1, n] (7), one product. log-softmax takes ``z - log(sum)`` instead.
  Backward rules from the same exponentials: ``y (g - sum(g y))``.
* cross entropy: ``-(T * log_softmax(x)).sum()`` with public one-hot (or probability)
  targets T, and the backward ``(softmax(x) rowsum(T) - T) / N`` from the same
  exponentials, never differentiating the approximations; class weights, ignore_index
  and label smoothing go into T as torch's (:func:`_class_targets`). Shared targets that
  require grad get torch's gradient here and in both BCEs, from the forward's values (local).
* MSE (one square) and L1 (one ReLU) work at any encoding; NLL is a public selection.
* binary cross entropy: log on every positive encoding [2**-f, 1] (0 gives ln 2**-f,
  -11.09 at 2/16; torch clamps at -100), the gradient exact for p (1 - p) >= 2**(2-f)
  and clamped at 2**(f-2) = 16384 in magnitude below (p < 6.1e-5 at 2/16); with logits,
  ``softplus(x) - t x`` with the backward ``sigmoid(x) - t``.

Reductions follow torch (``mean``, ``sum``, ``none``); the deprecated ``size_average``
/ ``reduce`` arguments are refused by name.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from protocols import shapes as S
from protocols.errors import ShapeError, UnsupportedOperation
from protocols.params import Params

from .activations import abs_
from .approximation import expect_shared, frac_bits, require_bits
from .autograd import Value
from .loss_parts import _legacy, _reduce, _target
from .maxima import max_dim
from .normalisation import lower
from .operands import public
from .range_reduction import exp_nonpositive, log, reciprocal_positive
from .shaping import cat
from .tensor import SharedTensor


def _denominator_domain(n: int) -> tuple[int, int]:
    return 0, max(1, math.ceil(math.log2(max(n, 2)))) + 1


def _softmax_parts(
    x: SharedTensor, dim: int
) -> tuple[SharedTensor, SharedTensor, SharedTensor, int]:
    """(z = x - max, e = exp(z), S = sum e, n) along ``dim``, no autograd. The
    exponentials come at up to 2 more fractional bits (:func:`_sum_bits`) and are summed
    there: S is rounded once to f bits instead of carrying n roundings of a unit (at 10**7
    logits in rows of 10 that sum's error alone took softmax to 9e-5); e is kept at one
    bit more (:func:`_times`)."""
    f = x.fp.precision
    n = int(x.shape[dim])
    with torch.no_grad():
        m, _ = max_dim(x.detach(), dim, keepdim=True, need_onehot=False)
        z = x.detach() - m
        fine = exp_nonpositive(z, _sum_bits(n, f))
        s = lower(fine.sum(dim, keepdim=True), f)
        e = lower(fine, f + 1)
    return z, e, s, n


def _sum_bits(n: int, f: int) -> int:
    """Extra bits of the exponentials summed: 2, fewer where the sum (<= n, n 2**(f + b)
    raw) would reach 2**34 raw before it is lowered (a local truncation's failure rate)."""
    return max(0, min(2, 33 - f - n.bit_length()))


def _times(e: SharedTensor, r: SharedTensor) -> SharedTensor:
    """e r at r's precision f, one truncation (e at f + 1 bits, both <= 1 + a few units:
    below 2**33 raw)."""
    shape = S.broadcast("mul", e.shape, r.shape)
    return e._op("mul", [r], shape, Params(d=2**e.prec), prec=r.prec)


def _softmax_dim(x: SharedTensor, dim: int | None) -> int:
    """``dim``, or torch's implicit choice when it is None (torch warns that it is
    deprecated): 0 for 0-, 1- and 3-d inputs, else 1. A 0-d input takes dim 0 or -1."""
    if dim is None:
        return 0 if x.dim() in (0, 1, 3) else 1
    S.norm_dim("softmax", dim, max(x.dim(), 1))  # torch's range check, as a ShapeError
    return dim


def _constant_like(x: SharedTensor, value: float) -> SharedTensor:
    """softmax (1) / log_softmax (0) of a 0-d tensor, as torch: a single-element
    distribution. Local; gradient 0 (torch's too)."""
    with torch.no_grad():
        out = x.detach() * 0 + value
    return x._record(out, [x], lambda g: (g * 0,))


def softmax(x: SharedTensor, dim: int | None = None, **kwargs: Any) -> SharedTensor:
    """e^(x - max) / sum: max (ceil(log2 n) rounds), exp for z <= 0 (ReLU + 5), reciprocal of
    the sum on [1, n] (7), product (1). Backward y (g - sum(g y))."""
    x = expect_shared(x, "softmax")
    require_bits(x, "softmax", base2=True)
    d = _softmax_dim(x, dim)
    if x.dim() == 0:
        return _constant_like(x, 1.0)
    _, e, s, n = _softmax_parts(x, d)
    with torch.no_grad():
        y = _times(e, reciprocal_positive(s, _denominator_domain(n)))

    def back(g: Value) -> tuple[Value]:
        return (y * (g - (g * y).sum(d, keepdim=True)),)

    return x._record(y, [x], back)


def log_softmax(x: SharedTensor, dim: int | None = None, **kwargs: Any) -> SharedTensor:
    """z - log(sum e^z): max, exp (ReLU + 5), log of the sum on [1, n] (4). Backward
    g - softmax * sum(g)."""
    x = expect_shared(x, "log_softmax")
    require_bits(x, "log_softmax", base2=True)
    d = _softmax_dim(x, dim)
    if x.dim() == 0:
        return _constant_like(x, 0.0)
    z, e, s, n = _softmax_parts(x, d)
    dom = _denominator_domain(n)
    with torch.no_grad():
        y = z - log(s, dom)
        p = _times(e, reciprocal_positive(s, dom)) if x.requires_grad else None

    def back(g: Value) -> tuple[Value]:
        assert p is not None
        return (g - p * g.sum(d, keepdim=True),)

    return x._record(y, [x], back)


# -- losses -----------------------------------------------------------------------------------------


def _difference(
    name: str,
    input: Any,
    target: Any,
    size_average: Any,
    reduce: Any,
    reduction: str,
    weight: Any,
) -> tuple[SharedTensor, str]:
    """``x - t`` (the shared one first) and the reduction, for the pointwise losses."""
    if weight is not None:
        raise UnsupportedOperation(f"{name}: weight= is not supported")
    reduction = _legacy(size_average, reduce, reduction)
    x, t = (input, target) if isinstance(input, SharedTensor) else (target, input)
    return x - _target(t, x, name), reduction


def mse_loss(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    weight: Any = None,
) -> SharedTensor:
    """mean/sum of (x - t)^2: one square (1 round)."""
    diff, reduction = _difference(
        "mse_loss", input, target, size_average, reduce, reduction, weight
    )
    return _reduce(diff**2, reduction)


def l1_loss(
    input: Any,
    target: Any,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
    weight: Any = None,
) -> SharedTensor:
    """mean/sum of |x - t|: one ReLU (1 round)."""
    diff, reduction = _difference("l1_loss", input, target, size_average, reduce, reduction, weight)
    return _reduce(abs_(diff), reduction)


def _class_weights(input: SharedTensor, weight: Any) -> torch.Tensor | None:
    """``weight`` (C,) as float64, shaped to broadcast along the class dimension."""
    if weight is None:
        return None
    cdim = 1 if input.dim() > 1 else 0
    w = torch.as_tensor(weight, dtype=torch.float64)
    if tuple(w.shape) != (int(input.shape[cdim]),):
        raise ShapeError(f"weight of shape {tuple(w.shape)} for {input.shape[cdim]} classes")
    return w.reshape([-1 if d == cdim else 1 for d in range(input.dim())])


def _class_targets(
    input: SharedTensor, target: Any, weight: Any, ignore_index: int, name: str, eps: float = 0.0
) -> tuple[Any, float]:
    """Per-element weights T (N, C, ...) of -log_softmax and the mean's denominator, as
    torch: probability targets t give ``(t (1 - eps) + eps / C) w`` over N samples (public
    or shared); class indices y give ``((1 - eps) onehot(y) + eps / C) w``, 0 where y is
    ignore_index, over ``sum w[y]`` of the samples kept (public)."""
    c = int(input.shape[1]) if input.dim() > 1 else int(input.shape[0])
    rows = float(input.numel() // c)
    wb = _class_weights(input, weight)
    if isinstance(target, SharedTensor):
        if tuple(target.shape) != tuple(input.shape):
            raise UnsupportedOperation(
                f"{name}: shared class indices cannot select entries; share one-hot targets "
                "(F.one_hot(y, C).float()) as probabilities instead"
            )
        t: Any = target
    else:
        try:
            t = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError) as exc:
            msg = f"{name}: cannot use a {type(target).__name__} target"
            raise UnsupportedOperation(msg) from exc
        if not t.is_floating_point():
            return _index_targets(input, t, weight, ignore_index, name, eps, c)
        if tuple(t.shape) != tuple(input.shape):
            raise ShapeError(
                f"{name}: probability target shape {tuple(t.shape)} != {tuple(input.shape)}"
            )
        t = t.to(torch.float64)
    if eps:
        t = t * (1.0 - eps) + eps / c
    return (t if wb is None else t * wb), rows


def _index_targets(
    input: SharedTensor, t: torch.Tensor, weight: Any, ignore: int, name: str, eps: float, c: int
) -> tuple[torch.Tensor, float]:
    """:func:`_class_targets` for class indices (public)."""
    t = t.to(torch.int64)
    want = tuple(input.shape[:1]) + tuple(input.shape[2:]) if input.dim() > 1 else ()
    if tuple(t.shape) != want:
        raise ShapeError(f"{name}: class-index target shape {tuple(t.shape)}, expected {want}")
    valid = t != ignore
    safe = torch.where(valid, t, torch.zeros_like(t))
    if bool(((safe < 0) | (safe >= c)).any()):
        raise ShapeError(f"{name}: class index out of range [0, {c})")
    wb = _class_weights(input, weight)
    w = torch.ones(c, dtype=torch.float64) if wb is None else wb.reshape(-1)
    onehot = torch.nn.functional.one_hot(safe, c).to(torch.float64)
    big_t = (onehot * (1.0 - eps) + eps / c) * w * valid.unsqueeze(-1)
    denom = float((w[safe] * valid).sum())
    return (big_t.movedim(-1, 1) if input.dim() > 1 else big_t), denom


def nll_loss(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
) -> SharedTensor:
    """-(log-probs at the targets): a public one-hot selection (local)."""
    x = expect_shared(input, "nll_loss")
    reduction = _legacy(size_average, reduce, reduction)
    t, denom = _class_targets(x, target, weight, ignore_index, "nll_loss")
    picked = x * t
    cdim = 1 if x.dim() > 1 else 0
    return _reduce(-(picked.sum(cdim)), reduction, denom)


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    ignore_index: int = -100,
    reduce: Any = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
) -> SharedTensor:
    """-(T * log_softmax(x)).sum() with torch's T (:func:`_class_targets`); the backward is
    (softmax(x) rowsum(T) - T) s from the same exponentials (no differentiation of the
    approximations), s the reduction's factor; a shared probability target t that requires
    grad gets -(1 - eps) w log_softmax(x) s (local)."""
    x = expect_shared(input, "cross_entropy")
    require_bits(x, "cross_entropy", base2=True)
    reduction = _legacy(size_average, reduce, reduction)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction!r} is not a valid value for reduction")
    eps = float(label_smoothing)
    with torch.no_grad():  # T's gradient is taken below, in one product
        t, denom = _class_targets(x, target, weight, ignore_index, "cross_entropy", eps)
    cdim = 1 if x.dim() > 1 else 0
    shared = isinstance(t, SharedTensor)
    z, e, s, n = _softmax_parts(x, cdim)
    dom = _denominator_domain(n)
    with torch.no_grad():
        lsm = z - log(s, dom)
        loss = _reduce(-((lsm * (t if shared else public(t))).sum(cdim)), reduction, denom)
        p = _times(e, reciprocal_positive(s, dom)) if x.requires_grad else None
    wb = _class_weights(x, weight)
    dt = -(1.0 - eps) * (1.0 if wb is None else wb)  # d T / d target, times -1

    def back(g: Value) -> tuple[Value | None, ...]:
        scale = (
            g / denom if reduction == "mean" else g.unsqueeze(cdim) if reduction == "none" else g
        )
        gx = None
        if x.requires_grad:
            assert p is not None
            gx = (p * t.sum(cdim, keepdim=True) - t) * scale
        if not shared:
            return (gx,)
        if not target.requires_grad:
            return gx, None
        if isinstance(scale, torch.Tensor):  # public: one product
            return gx, lsm * public(dt * scale)
        return gx, (lsm * public(torch.as_tensor(dt))) * scale

    return x._record(loss, [x, target] if shared else [x], back)


def binary_cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    size_average: Any = None,
    reduce: Any = None,
    reduction: str = "mean",
) -> SharedTensor:
    """-(t log p + (1-t) log(1-p)); log on [2**-f, 1]; backward (p - t) / (p (1 - p))
    (see the module doc for the edges: p = 0.001 and 1e-4 were 20% and 86% off when the
    log and reciprocal domains started at 2**-(f//2))."""
    p = expect_shared(input, "binary_cross_entropy")
    require_bits(p, "binary_cross_entropy", base2=True)
    reduction = _legacy(size_average, reduce, reduction)
    t = _target(target, p, "binary_cross_entropy")
    if weight is not None:
        raise UnsupportedOperation("binary_cross_entropy: weight= is not supported")
    f = frac_bits(p)
    dom = (-f, 1)  # every positive encoding of p and 1 - p; 0 gives ln 2**-f
    with torch.no_grad():
        lp, lq = log(p.detach(), dom, below=True), log(1.0 - p.detach(), dom, below=True)
        loss = _reduce(-(lp * t + lq * (1.0 - t)), reduction)
    count = p.numel()

    def back(g: Value) -> tuple[Value | None, ...]:
        scale = g / count if reduction == "mean" else g
        gp = None
        if p.requires_grad:
            q = p.detach()
            # (p - t) / (p (1 - p)) = (1 - t) / (1 - p) - t / p: 1 - p and p are exact
            # where p (1 - p) = q - q**2 was rounded to a unit (1.4% off at p = 0.999), and
            # with public t the combination is local. Both reciprocals in one op, exact from
            # 2**(2-f) (6.1e-5 at 2/16), clamped below to 2**(f-2) = 16384 (must encode)
            pair = cat([q.unsqueeze(0), (1.0 - q).unsqueeze(0)])
            both = reciprocal_positive(pair, (2 - f, 1), below=True)
            gp = (both[1] * (1.0 - t) - both[0] * t) * scale
        if not isinstance(t, SharedTensor):
            return (gp,)
        return gp, (
            lq - lp
        ) * scale if t.requires_grad else None  # d/dt: log(1 - p) - log p, the forward's logs

    return p._record(loss, [p, t] if isinstance(t, SharedTensor) else [p], back)
