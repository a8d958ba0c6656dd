"""The frontend's error types, and the naming of the layer an unsupported operation came
from.

Every error here is a :class:`protocols.errors.SmpcError` (most an
:class:`~protocols.errors.UnsupportedOperation`) and also the builtin error a PyTorch
user's code would expect at that place (``AttributeError`` for a missing attribute,
``TypeError`` for ``float(x)`` or a torch optimizer, ``ValueError`` for mixed clusters),
so existing ``except`` clauses keep working. Each message says what to write instead.

:func:`in_layer` serves the refusals of SharedTensor's generic paths (an attribute it does
not have, a torch function without a secure version): when the refused access happened
inside the ``forward`` of one of torch's own layers (``nn.LSTM`` reading
``input.device``, ``nn.MultiheadAttention`` reading ``query.is_nested``), the message
names the layer the user wrote, not the attribute torch touched inside it.
"""

from __future__ import annotations

import sys

from torch import nn

from protocols.errors import SmpcError, UnsupportedOperation


class UnsupportedAttribute(UnsupportedOperation, AttributeError):
    """A torch.Tensor attribute or method with no secure version (also an AttributeError,
    so ``hasattr`` stays False)."""


class NotCopyable(UnsupportedOperation, TypeError):
    """A SharedTensor (or a module holding them) was deep-copied or pickled."""


class RevealRequired(UnsupportedOperation, TypeError):
    """A SharedTensor was asked for its plaintext value (``.item()``, ``float(x)``,
    ``.tolist()``, ``.numpy()``, ``bool(x)``): the value is secret until revealed with
    ``await x.get()``."""


class UnsupportedOptimizer(UnsupportedOperation, TypeError):
    """A ``torch.optim`` optimizer was given SharedTensor parameters; the library's
    optimizers (``training.SGD``, ``Adam``, ``AdamW``) take the same arguments."""


class ClusterMismatch(SmpcError, ValueError):
    """SharedTensors of two clusters were combined: each cluster's parties hold their own
    shares, so no op can take operands from both."""


def _layer_of_forward() -> str | None:
    """``nn.<Layer>`` if the innermost ``forward`` on the call stack is one of torch's own
    layers; None when it is the user's module (whose code called the refused operation
    itself, which the message names already) or when no forward is running."""
    frame = sys._getframe(2)
    while frame is not None:
        module = frame.f_locals.get("self")
        if frame.f_code.co_name == "forward" and isinstance(module, nn.Module):
            cls = type(module)
            return f"nn.{cls.__name__}" if cls.__module__.startswith("torch.nn.") else None
        frame = frame.f_back  # type: ignore[assignment]
    return None


def in_layer(message: str, what: str) -> str:
    """``message``, led by the torch layer it happened in, if any (see module doc);
    ``what`` names the operation torch needed (``torch.Tensor.device``)."""
    layer = _layer_of_forward()
    if layer is None:
        return message
    return (
        f"{layer} is not supported on SharedTensor: its forward needs {what}, which has no "
        "secure version (docs/ops.md lists the supported layers; write the layer from "
        "supported operations, or run it on revealed values)"
    )
