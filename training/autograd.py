"""Reverse-mode autograd over SharedTensors (micrograd style).

Each op records its parents and a backward rule next to its forward (see
:mod:`training.handle`). A gradient is either a SharedTensor or a public torch tensor
(the seed of ``loss.backward()`` is the public 1), and the helpers here do arithmetic on
either, so public gradients stay public and cost nothing until they meet a secret.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch

from .operands import PublicOperandWarning

if TYPE_CHECKING:
    from .handle import Handle

Value = Any  # SharedTensor | torch.Tensor


def unbroadcast(grad: Value, shape: tuple[int, ...]) -> Value:
    """Sum ``grad`` down to ``shape`` (the inverse of broadcasting)."""
    gshape = tuple(grad.shape)
    if gshape == shape:
        return grad
    lead = len(gshape) - len(shape)
    kept = [lead + i for i, n in enumerate(shape) if n == 1 and gshape[lead + i] != 1]
    if lead and not kept:  # only leading dims go (a bias's gradient): one sum, no reshape
        return grad.sum(dim=tuple(range(lead)))
    dims = list(range(lead)) + kept
    out = grad.sum(dim=tuple(dims), keepdim=True) if dims else grad
    return out.reshape(shape)


def one_value(t: torch.Tensor) -> bool:
    """A tensor of 2+ elements that is one value expanded (every stride of a dimension
    longer than 1 is 0: a sum's gradient)."""
    return t.numel() > 1 and all(
        st == 0 or n == 1 for st, n in zip(t.stride(), t.shape, strict=True)
    )


def twice(g: torch.Tensor) -> torch.Tensor:
    """``2 g`` for a public gradient, still one value expanded if ``g`` was (a loss's sum:
    the product with it is then one public scalar, not a tensor of them)."""
    if one_value(g):
        return (g[(0,) * g.dim()] * 2).expand(g.shape)
    return g * 2


def backward(root: Handle, gradient: Value | None = None) -> None:
    """Accumulate d(root)/d(leaf) into ``leaf.grad`` for every leaf that requires grad."""
    if not root.requires_grad:  # torch's error: nothing would get a gradient
        raise RuntimeError(
            "element 0 of tensors does not require grad and does not have a grad_fn (no "
            "input of this SharedTensor requires grad: share it with requires_grad=True, "
            "or call backward outside torch.no_grad())"
        )
    if gradient is None:
        if root.numel() != 1:
            raise RuntimeError("grad can be implicitly created only for scalar outputs")
        gradient = torch.ones(root.shape)
    order: list[Handle] = []
    seen: set[int] = set()
    stack: list[tuple[Handle, bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        if expanded:
            order.append(node)
            continue
        if id(node) in seen:
            continue
        seen.add(id(node))
        stack.append((node, True))
        for parent in node._parents:
            if parent.requires_grad and id(parent) not in seen:
                stack.append((parent, False))
    grads: dict[int, Value] = {id(root): gradient}

    # Backward rules combine gradients with public factors on purpose (a product's public
    # operand, a matmul's public matrix): those are public already, no warning.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", PublicOperandWarning)
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            rule = node._backward
            if rule is None:
                if node.requires_grad:
                    node.grad = g if node.grad is None else node.grad + g
                continue
            label = node._label or ""
            label = label.removeprefix("forward").removeprefix("/")
            with node.cluster.label(f"backward/{label}" if label else "backward"):
                parent_grads = rule(g)
            for parent, pg in zip(node._parents, parent_grads, strict=True):
                if pg is None or not parent.requires_grad:
                    continue
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            node._backward = None
            node._parents = ()
