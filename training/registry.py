"""The frontend's one binding table: which implementation runs for a torch function
(``torch.abs``, ``F.conv2d``, ``torch.Tensor.__add__`` of a public tensor and a share) and
which SharedTensor methods the function modules add (``x.abs()``, ``abs(x)``).

A function is bound where it is written, once::

    @implements(torch.abs, methods=("abs", "__abs__"))
    def abs_(x: SharedTensor) -> SharedTensor: ...

:func:`implements` and :func:`bind` refuse a torch function or a method name bound twice
(naming both implementations), so two modules cannot silently shadow each other.
:func:`install_methods` (called once by :mod:`training.dispatch`, after every function
module is imported) puts the methods on the class and refuses one the class already
defines. ``SharedTensor.__torch_function__`` reads :data:`TORCH`; a function not in it
raises ``UnsupportedOperation`` naming it.

This module imports nothing of the frontend, so every module can bind through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

TORCH: dict[Any, Callable[..., Any]] = {}
"""torch function or ``torch.Tensor`` method -> its implementation on SharedTensors."""

METHODS: dict[str, Callable[..., Any]] = {}
"""SharedTensor method name -> its implementation (the tensor is the first argument)."""


def _name(fn: Any) -> str:
    """``torch.abs``, ``torch.Tensor.abs``, ``training.activations.abs_``."""
    qual = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)
    if qual.startswith("_VariableFunctionsClass."):
        return f"torch.{fn.__name__}"
    if qual.startswith(("TensorBase.", "Tensor.")):
        return f"torch.Tensor.{fn.__name__}"
    return f"{getattr(fn, '__module__', None) or '?'}.{qual}"


def bind(table: Mapping[Any, Callable[..., Any]]) -> None:
    """Bind each torch function of ``table`` to its implementation (refusing duplicates)."""
    for func, impl in table.items():
        old = TORCH.get(func)
        if old is not None and old is not impl:
            raise ValueError(f"{_name(func)} is bound twice: to {_name(old)} and to {_name(impl)}")
        TORCH[func] = impl


def implements(*torch_functions: Any, methods: Sequence[str] = ()) -> Callable[[F], F]:
    """Decorator: bind ``fn`` to ``torch_functions`` and to SharedTensor ``methods``."""

    def decorate(fn: F) -> F:
        bind(dict.fromkeys(torch_functions, fn))
        for name in methods:
            old = METHODS.get(name)
            if old is not None and old is not fn:
                raise ValueError(
                    f"SharedTensor.{name} is bound twice: to {_name(old)} and to {_name(fn)}"
                )
            METHODS[name] = fn
        return fn

    return decorate


def install_methods(cls: type) -> None:
    """Put every bound method on ``cls``; a name the class (or a base) already defines is an
    error, not an override."""
    for name, fn in METHODS.items():
        old = getattr(cls, name, None)
        if old is not None and old is not fn:
            raise ValueError(
                f"SharedTensor.{name} is defined by the class and bound to {_name(fn)}"
            )
        setattr(cls, name, fn)
