"""Share an ordinary ``torch.nn.Module`` so that its unmodified ``forward`` runs on shares."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from protocols import FixedPoint
from protocols.errors import UnsupportedOperation

from .progress import ProgressBar, ProgressOption
from .tensor import SharedTensor


def share_module(
    cluster: Any, module: nn.Module, *, requires_grad: bool = True, fp: FixedPoint
) -> nn.Module:
    """A deep copy of ``module`` whose parameters are SharedTensors.

    The copy's ``forward`` is the user's, unchanged: ``F.linear``, ``F.relu`` and the
    operators dispatch to SharedTensor through ``__torch_function__``. ``parameters()``,
    ``zero_grad()`` and attribute access work as usual. Parameters with
    ``requires_grad=False`` stay frozen (their shares do not require grad, so optimisers
    skip them). Floating-point buffers (BatchNorm running statistics) are shared too;
    other buffers are refused by name.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"share_module expects a torch.nn.Module, got {type(module).__name__}")
    for name, buf in module.named_buffers():
        if buf is not None and buf.is_floating_point():
            continue  # BatchNorm running statistics: shared below
        if buf is not None and name.endswith("num_batches_tracked"):
            continue  # a public step counter
        raise UnsupportedOperation(
            f"module buffer {name!r} cannot be shared (only floating-point buffers such as "
            "BatchNorm running statistics are supported)"
        )
    shared = copy.deepcopy(module)
    for prefix, sub in shared.named_modules():
        for pname, p in list(sub._parameters.items()):
            if p is None:
                continue
            sub._parameters[pname] = SharedTensor.from_plain(  # type: ignore[assignment]
                cluster,
                p.detach(),
                fp,
                requires_grad=requires_grad and p.requires_grad,
                what=f"parameter {prefix + '.' if prefix else ''}{pname}",
            )
        for bname, b in list(sub._buffers.items()):
            if b is not None and b.is_floating_point():
                sub._buffers[bname] = SharedTensor.from_plain(  # type: ignore[assignment]
                    cluster, b.detach(), fp
                )
    return shared


async def reveal_module(
    module: nn.Module, *, progress: ProgressOption = None
) -> dict[str, torch.Tensor]:
    """Reveal every shared parameter and buffer to the coordinator (the owner), by name
    (a state dict of plaintext tensors; :func:`export_module` gives a plain module).

    One reveal per tensor: ``progress`` (see ``training.progress.ProgressBar``) counts
    them; the bar appears only on a terminal and after a second, so small models show
    nothing; a callable gets one event per tensor, with its name."""
    named: list[tuple[str, SharedTensor]] = []
    for name, t in (*module.named_parameters(), *module.named_buffers()):
        if isinstance(t, SharedTensor):
            named.append((name, t))
    out: dict[str, torch.Tensor] = {}
    with ProgressBar(len(named), "export", progress, unit="tensor", delay=1.0) as bar:
        for name, shared in named:
            out[name] = await shared.get()
            bar.advance(1, {"name": name})
    return out


async def export_module(
    module: nn.Module, dtype: torch.dtype | None = None, *, progress: ProgressOption = None
) -> nn.Module:
    """A plain ``nn.Module`` with the trained weights: every shared parameter and buffer is
    revealed to the coordinator (the model's owner) and put back as a torch tensor.

    The shared module is left untouched (it can keep training); the result is an ordinary
    module of the same class, ready for ``torch.save``, ``copy.deepcopy`` or plaintext
    inference. Revealing the weights is the point: call it only where the owner may learn
    them (``torch.save`` of the shared model itself is refused, see
    ``training.checkpoint`` to save shares without revealing them). Floating-point
    values come back as ``dtype`` (default: torch's default dtype). ``progress``: as for
    :func:`reveal_module` (one event per revealed tensor).
    """
    dtype = torch.get_default_dtype() if dtype is None else dtype
    revealed = await reveal_module(module, progress=progress)
    values = {k: v.to(dtype) for k, v in revealed.items()}
    shared = [
        t
        for t in (*module.parameters(), *module.buffers())
        if isinstance(t, SharedTensor)  # type: ignore[redundant-expr]
    ]
    # Copy everything but the SharedTensors (mapped to None in the memo), then fill in.
    memo: dict[int, Any] = {id(t): None for t in shared}
    plain = copy.deepcopy(module, memo)
    for name, value in values.items():
        *path, leaf = name.split(".")
        sub = plain.get_submodule(".".join(path))
        if leaf in sub._parameters:
            old = module.get_submodule(".".join(path))._parameters[leaf]
            sub._parameters[leaf] = nn.Parameter(
                value, requires_grad=bool(old is not None and old.requires_grad)
            )
        else:
            sub._buffers[leaf] = value
    return plain
