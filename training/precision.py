"""Warnings for values and learning rates that the fixed-point encoding cannot represent.

Fixed point at base b and precision p holds multiples of ``1 / b**p`` (the *resolution*).
Two mistakes then fail without a word: data whose values are mostly below the resolution
(they are shared as zeros), and a learning rate so small that ``lr * grad`` rounds to zero
for every gradient the model will see (``lr = 1e-7`` at base 10, precision 3 updates
nothing). Both are caught where the user chooses them, at ``share``/``share_module`` and at
the optimizer's construction, as a :class:`PrecisionWarning` that names the numbers and
the fix (more fractional digits: ``precision=16, base=2`` gives a resolution of 1.5e-5).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import torch

from protocols import FixedPoint

LOST_SHARE = 0.1
"""Warn when at least this fraction of a tensor's nonzero values encodes to zero."""

SMALLEST_MOVING_GRAD = 1.0
"""Warn when SGD moves a weight only for gradients at least this large (in magnitude)."""


class PrecisionWarning(UserWarning):
    """A value or a learning rate is too small for the fixed-point resolution."""


_ROOT = Path(__file__).resolve().parents[1]
_PACKAGES = tuple(f"{_ROOT / p}/" for p in ("actors", "protocols", "training"))


def _warn(message: str) -> None:
    """Warn at the first caller outside this library's packages (the user's line)."""
    level, frame = 2, sys._getframe(1)
    while frame is not None and str(Path(frame.f_code.co_filename).resolve()).startswith(_PACKAGES):
        level, frame = level + 1, frame.f_back  # type: ignore[assignment]
    warnings.warn(message, PrecisionWarning, stacklevel=level)


def _fix(fp: FixedPoint) -> str:
    return (
        f"resolution {1 / fp.scale:.3g} at base {fp.base}, precision {fp.precision}; "
        "more fractional digits fix it, e.g. precision=16, base=2 (resolution 1.5e-05)"
    )


def check_values(values: torch.Tensor, fp: FixedPoint, what: str) -> None:
    """Warn if many nonzero ``values`` encode to zero at ``fp``."""
    if not values.is_floating_point() or values.numel() == 0:
        return
    nonzero = values != 0
    n = int(nonzero.sum())
    if n == 0:
        return
    lost = int((nonzero & (torch.round(values.to(torch.float64) * fp.scale) == 0)).sum())
    if lost >= LOST_SHARE * n:
        _warn(
            f"{what}: {lost} of its {n} nonzero values ({lost / n:.0%}) are below half the "
            f"fixed-point resolution and are shared as 0 ({_fix(fp)})"
        )


def smallest_moving_grad(lr: float, fp: FixedPoint) -> float:
    """The smallest |gradient| whose SGD step ``lr * grad`` does not round to zero."""
    return 0.5 / (fp.scale * lr) if lr > 0 else float("inf")


def check_learning_rate(lr: float, fp: FixedPoint, what: str, step: str = "|grad|") -> None:
    """Warn if ``lr * step`` rounds to zero for every step below 1 in magnitude (``step``
    names what the rate multiplies: the gradient for SGD, ``m/sqrt(v)`` for Adam)."""
    if lr <= 0:
        return
    g = smallest_moving_grad(lr, fp)
    if g > SMALLEST_MOVING_GRAD:
        _warn(
            f"{what}: lr {lr:g} moves a weight only where {step} >= {g:.3g}; smaller steps "
            f"round to 0 in fixed point ({_fix(fp)})"
        )


_ADAM_NOTED = False


def note_adam_eps(eps: float, effective: float) -> None:
    """Once per process: Adam on shares uses a larger eps than asked (its noise floor)."""
    global _ADAM_NOTED
    if _ADAM_NOTED:
        return
    _ADAM_NOTED = True
    _warn(
        f"Adam on shares uses eps {effective:.3g}, not {eps:g}: fixed point's rounding "
        "noise would otherwise become lr-sized steps on weights whose gradient is 0 "
        f"(training.optim.NOISE_FLOOR). Compare with torch.optim.Adam(eps={effective:.3g}), "
        "or pass noise_floor=0 for torch's eps (shown once; param_groups hold "
        "'effective_eps')"
    )
