"""The public-operand policy: what a plaintext operand of a SharedTensor may be, and how
it is encoded.

A plaintext operand is public: its values go in clear to every party, encoded in the
command. Scalars are combined silently; a plaintext tensor with more than one element
raises :class:`PublicOperandWarning` when the user's code (not this library's own losses,
layers and optimizers) combines it with a SharedTensor, unless it is wrapped in
:class:`public` to say it is intentionally public. A plaintext tensor that requires grad
(a parameter of an unshared module) is refused: its gradient would never be computed on
shares. numpy arrays, complex values and other types are refused by name.

Encoding: a public real factor gets more fractional digits than the handle
(:func:`public_precision`) so that small factors such as learning rates keep their
significant digits; public integers (:func:`integral`) multiply without truncation.
"""

from __future__ import annotations

import math
import numbers
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from protocols import FixedPoint
from protocols.errors import EncodingError, UnsupportedOperation
from protocols.fixed_point import ENCODED_LIMIT_BITS

_INT_LIMIT = 2**31

_CORE = frozenset(
    {
        "training.operands",
        "training.handle",
        "training.shaping",
        "training.arithmetic",
        "training.tensor",
        "training.dispatch",
    }
)
"""The modules that implement SharedTensor's operators: their frames are skipped when
:func:`_from_library` looks for the code that issued an operation."""


class PublicOperandWarning(UserWarning):
    """A plaintext tensor (not a scalar) was combined with a SharedTensor: its values are
    public and go in clear to every party. Wrap it in :class:`public` to say so."""


class public:  # noqa: N801 - reads as a marker, like torch.no_grad
    """Marks a plaintext operand as intentionally public: ``x * public(mask)``. Its values
    are sent in clear to every party (encoded in the command)."""

    __slots__ = ("tensor",)

    def __init__(self, value: Any) -> None:
        self.tensor = value if isinstance(value, torch.Tensor) else torch.as_tensor(value)

    @classmethod
    def __torch_function__(
        cls, func: Any, types: Any, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        """``torch.eq(x, public(t))``: torch's argument parser accepts the marker only if it
        takes part in dispatch. It defers (NotImplemented), so torch calls the
        SharedTensor's entry next, which handles the call; without a SharedTensor among
        the arguments torch raises its TypeError."""
        return NotImplemented


def _issuer() -> tuple[bool, int]:
    """Whether the operation was issued by this library's own code (a loss, a layer, an
    optimizer combining shares with its constants), not by the user's, and the stack level
    of the issuing line (for the warning to name the user's line)."""
    frame = sys._getframe(2)
    level = 2  # (warnings.warn in as_public: 1 is as_public, 2 its caller)
    while frame is not None and frame.f_globals.get("__name__") in _CORE:
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    caller = str(frame.f_globals.get("__name__", "")) if frame is not None else ""
    return caller.startswith("training."), level


def as_public(v: Any) -> torch.Tensor:
    raw = v.tensor if isinstance(v, public) else v
    if isinstance(raw, torch.Tensor) and raw.requires_grad and torch.is_grad_enabled():
        raise UnsupportedOperation(
            f"a plaintext torch tensor of shape {tuple(raw.shape)} that requires grad (a "
            "parameter of an unshared nn.Module?) is combined with a SharedTensor: its "
            "gradient is never computed on shares, so torch.optim would leave it unchanged "
            "and the model would learn nothing. To train on shares, share the module "
            "(model = cluster.share_module(net, ...)) and use training.SGD/Adam; to run a "
            "plaintext model on shared inputs (its weights go in clear to the parties), call "
            "it under torch.no_grad(), or share it with requires_grad=False"
        )
    if isinstance(v, public):
        v = v.tensor
    elif isinstance(v, torch.Tensor) and v.numel() > 1:
        library, level = _issuer()
        if not library:
            warnings.warn(
                PublicOperandWarning(
                    f"a plaintext tensor of shape {tuple(v.shape)} is combined with a "
                    "SharedTensor: its values go in clear to every party; share it with "
                    "cluster.share(...) to keep it secret, or wrap it in training.public(...) "
                    "to say it is public"
                ),
                stacklevel=level,
            )
    if isinstance(v, torch.Tensor):
        if v.is_complex():
            raise EncodingError("complex public operands cannot be encoded in fixed point")
        return v.detach().to(torch.float64) if v.dtype == torch.bool else v.detach()
    if isinstance(v, np.ndarray):
        raise UnsupportedOperation(
            "cannot combine a SharedTensor with a numpy array; convert it with torch.as_tensor"
        )
    if isinstance(v, numbers.Number) and not isinstance(v, bool | complex):
        return torch.tensor(v, dtype=torch.float64)
    raise UnsupportedOperation(f"cannot combine a SharedTensor with {type(v).__name__}")


_PUBLIC_BITS = 20


def public_precision(fp: FixedPoint, pub: torch.Tensor) -> int:
    """Fractional digits for a public real factor: at least ``fp.precision``, and more
    while its encoding stays below 2**20, so small factors (1/3000, a learning rate) keep
    their significant digits instead of rounding to a few units or to zero."""
    n = pub.numel()
    top = abs(float(pub.item())) if n == 1 else float(pub.abs().max()) if n else 0.0
    if not math.isfinite(top):
        return fp.precision  # encode() will refuse it with a clear message
    extra = int(_PUBLIC_BITS / math.log2(fp.base))
    q = fp.precision
    cap = math.ceil(ENCODED_LIMIT_BITS / math.log2(fp.base)) - 1  # a valid FixedPoint
    while q < min(fp.precision + extra, cap) and top * fp.base ** (q + 1) < 2**_PUBLIC_BITS:
        q += 1
    return q


_INT_DTYPES = frozenset({torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8})


def integral(t: torch.Tensor) -> bool:
    if t.numel() == 1 and (t.dtype in _INT_DTYPES or t.is_floating_point()):
        # A scalar (a learning rate, a constant factor): the same tests on a Python
        # number, one conversion instead of ~8 small torch calls on the issuing path.
        v = t.item()
        ok = t.dtype in _INT_DTYPES or (math.isfinite(v) and v == math.floor(v))
        if ok and abs(v) >= _INT_LIMIT:
            raise _too_large(float(abs(v)))
        return ok
    if t.dtype in _INT_DTYPES:
        ok = True
    elif t.is_floating_point():
        finite = bool(torch.isfinite(t).all())
        ok = finite and bool((t == torch.round(t)).all())
    else:
        return False
    if ok and t.numel() and float(t.abs().max()) >= _INT_LIMIT:
        raise _too_large(float(t.abs().max()))
    return ok


def _too_large(v: float) -> EncodingError:
    return EncodingError(f"public integer factor {v:g} is too large (>= 2**31)")
