"""The losses' shared argument handling: reductions, torch's deprecated arguments, targets."""

from __future__ import annotations

from typing import Any

import torch

from protocols.errors import ShapeError, UnsupportedOperation

from .tensor import SharedTensor


def _reduce(v: SharedTensor, reduction: str, count: int | float | None = None) -> SharedTensor:
    if reduction == "mean":
        c = v.numel() if count is None else count
        return v.sum() * (1.0 / c) if not float(c).is_integer() else v.sum() / int(c)
    if reduction == "sum":
        return v.sum()
    if reduction == "none":
        return v
    raise ValueError(f"{reduction!r} is not a valid value for reduction")


def _legacy(size_average: Any, reduce: Any, reduction: str) -> str:
    if size_average is not None or reduce is not None:
        raise UnsupportedOperation(
            "size_average/reduce are deprecated and not supported; use reduction="
        )
    return reduction


def _target(target: Any, like: SharedTensor, name: str) -> Any:
    if isinstance(target, SharedTensor):
        if tuple(target.shape) != tuple(like.shape):
            raise ShapeError(
                f"{name}: target shape {tuple(target.shape)} != input {tuple(like.shape)}"
            )
        return target
    try:
        t = torch.as_tensor(target, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise UnsupportedOperation(
            f"{name}: cannot use a {type(target).__name__} target: {exc}"
        ) from None
    if tuple(t.shape) != tuple(like.shape):
        raise ShapeError(f"{name}: target shape {tuple(t.shape)} != input {tuple(like.shape)}")
    return t
