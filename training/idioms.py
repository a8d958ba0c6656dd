"""PyTorch habits on a SharedTensor: the ones that have a meaning on shares work, the
others raise an error that says what to write instead.

What works, as in torch:

* ``x.to(dtype)``, ``x.double()``: the same shares, revealed as that dtype; ``x.cpu()``,
  ``x.to("cpu")``, ``x.to(device, dtype)``, ``x.device``: the shares live in the parties'
  CPU memory already, so a move to the CPU is a no-op (as torch's for a CPU tensor).
* ``x.data`` is ``x.detach()`` (the value without autograd history); ``p.data = q``
  replaces a parameter's value by another SharedTensor of the same shape (the manual
  update ``p.data -= lr * p.grad`` works).
* ``x.new(t)``, ``x.new_tensor(t)``, ``x.new_zeros(shape)``, ``x.new_ones``,
  ``x.new_full``, ``x.new_empty``: a new SharedTensor in the same cluster and encoding,
  shared by the coordinator (``new_empty`` gives zeros; ``x.new(2, 3)`` too).

What is refused, by name and with the replacement:

* the plaintext value: ``x.item()``, ``float(x)``, ``int(x)``, ``x.tolist()``,
  ``x.numpy()``, ``np.asarray(x)`` raise :class:`~training.errors.RevealRequired`
  (reveal first: ``(await x.get()).item()``);
* another device (``x.cuda()``, ``x.to("cuda")``): the parties compute on CPU; move the
  plaintext before sharing or the revealed value after;
* ``torch.optim.<Optimizer>(model.parameters(), ...)`` on shared parameters raises
  :class:`~training.errors.UnsupportedOptimizer` naming ``training.SGD`` / ``Adam`` /
  ``AdamW`` (same arguments) instead of torch's bare TypeError. torch tests each parameter
  with ``isinstance``, which reads ``__class__``; the property below answers torch.optim's
  constructor with that error and everyone else as usual.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import FrameType
from typing import Any, Self

import torch

from protocols.errors import UnsupportedOperation

from .errors import ClusterMismatch, RevealRequired, UnsupportedOptimizer
from .handle import Handle

_LIBRARY_OPTIMIZERS = ("SGD", "Adam", "AdamW")


def _refuse_torch_optimizer(frame: FrameType | None) -> None:
    """Raise :class:`UnsupportedOptimizer` if ``frame`` is torch.optim's constructor
    checking its parameters."""
    if frame is None or frame.f_globals.get("__name__") != "torch.optim.optimizer":
        return
    if frame.f_code.co_name not in ("__init__", "add_param_group"):
        return
    name = type(frame.f_locals.get("self")).__name__
    if name in _LIBRARY_OPTIMIZERS:
        use = f"use training.{name}(model.parameters(), ...), which takes the same arguments"
    else:
        use = (
            "the library has training.SGD, training.Adam and training.AdamW, e.g. "
            "training.Adam(model.parameters(), lr=1e-3)"
        )
    raise UnsupportedOptimizer(
        f"torch.optim.{name} cannot update SharedTensor parameters (their values exist "
        f"only as shares at the parties, updated by secure ops); {use}"
    )


def _device_type(device: Any) -> str:
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as exc:
        raise UnsupportedOperation(f"SharedTensor.to: {exc}") from None


def _refuse_device(device: Any) -> None:
    raise UnsupportedOperation(
        f"a SharedTensor cannot move to {device!r}: its shares live in the parties' CPU "
        "memory and the protocols run there. Move the plaintext before sharing (`x = "
        "t.to(device)`, then cluster.share(x)) or the revealed value after (`(await "
        "x.get()).to(device)`); `.to('cpu')` is a no-op"
    )


def _reveal_first(what: str, how: str) -> RevealRequired:
    return RevealRequired(
        f"{what}: the value of a SharedTensor is secret (it exists only as shares at the "
        f"parties); reveal it first: `{how}`"
    )


class Idioms(Handle):
    """PyTorch habits on a SharedTensor (see module doc)."""

    __slots__ = ()

    @property  # type: ignore[misc]  # read-only on purpose: torch.optim reads it
    def __class__(self) -> type[Any]:
        _refuse_torch_optimizer(sys._getframe(1))
        return type(self)

    # -- dtype and device ---------------------------------------------------------------
    def to(self, *args: Any, **kwargs: Any) -> Self:
        """``x.to(torch.float64)``, ``x.to(device, dtype)``, ``x.to(other)``: the same
        shares, revealed as the dtype (no op is issued; the gradient passes through). The
        CPU is where the shares are (a no-op); other devices are refused."""
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        for flag in ("non_blocking", "copy"):
            kwargs.pop(flag, None)
        if kwargs:
            raise UnsupportedOperation(f"SharedTensor.to: unsupported arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, torch.dtype):
                dtype = a
            elif isinstance(a, str | torch.device):
                device = a
            elif isinstance(a, Handle):
                dtype = a.dtype
            elif isinstance(a, torch.Tensor):
                dtype, device = a.dtype, a.device
            elif a is not None and not isinstance(a, bool):  # Module.to passes (None, ...)
                raise UnsupportedOperation(
                    f"SharedTensor.to takes a dtype or a device, got {type(a).__name__}"
                )
        if device is not None and _device_type(device) != "cpu":
            _refuse_device(device)
        if dtype is None:
            return self
        if not dtype.is_floating_point:
            raise UnsupportedOperation(
                f"SharedTensor.to({dtype}): shares hold fixed-point reals; reveal and convert "
                f"instead: `await x.get(dtype={dtype})`"
            )
        if dtype == self.dtype:
            return self
        out = self.detach()
        out.dtype = dtype
        return self._record(out, [self], lambda g: (g,))

    def cpu(self, memory_format: Any = None) -> Self:
        """The shares are in the parties' CPU memory already: this handle."""
        return self

    def cuda(self, *args: Any, **kwargs: Any) -> Self:
        _refuse_device("cuda")
        return self

    @property
    def device(self) -> torch.device:
        """Where the shares are: the parties' CPUs (public tensors made ``like`` this one
        with ``device=x.device`` combine with it)."""
        return torch.device("cpu")

    # -- the plaintext value: refused ---------------------------------------------------
    def item(self) -> Any:
        raise _reveal_first("SharedTensor.item()", "(await x.get()).item()")

    def tolist(self) -> Any:
        raise _reveal_first("SharedTensor.tolist()", "(await x.get()).tolist()")

    def numpy(self, *, force: bool = False) -> Any:
        raise _reveal_first("SharedTensor.numpy()", "(await x.get()).numpy()")

    def __array__(self, *args: Any, **kwargs: Any) -> Any:
        raise _reveal_first("numpy conversion of a SharedTensor", "(await x.get()).numpy()")

    def __float__(self) -> float:
        raise _reveal_first("float(SharedTensor)", "float(await x.get())")

    def __int__(self) -> int:
        raise _reveal_first("int(SharedTensor)", "int(await x.get())")

    def __bool__(self) -> bool:
        raise _reveal_first("the truth value of a SharedTensor", "bool(await x.get())")

    # -- .data ----------------------------------------------------------------------------
    @property
    def data(self) -> Self:
        """``x.detach()``: the same shared value without autograd history."""
        return self.detach()

    @data.setter
    def data(self, value: Any) -> None:
        """``p.data = q``: this handle takes ``q``'s shares (a SharedTensor of the same
        shape, same cluster), keeping its own autograd role (a parameter stays a leaf)."""
        if not isinstance(value, Handle):
            raise UnsupportedOperation(
                f"SharedTensor.data = {type(value).__name__}: assign a SharedTensor (share "
                "a plaintext value first: `p.data = cluster.share(t)`)"
            )
        if value.cluster is not self.cluster:
            raise ClusterMismatch(
                "SharedTensor.data = a SharedTensor of another cluster; reveal it (`await "
                "q.get()`) and share it with this one"
            )
        self._assign(value)

    # -- new tensors like this one ---------------------------------------------------------
    def _share_like(self, t: torch.Tensor, requires_grad: bool) -> Self:
        return type(self).from_plain(
            self.cluster, t, self.fp, requires_grad=requires_grad, what="a tensor made by new_*"
        )

    def _new_filled(self, size: Sequence[Any], value: float, dtype: Any, rg: bool) -> Self:
        shape = tuple(size[0]) if len(size) == 1 and isinstance(size[0], Sequence) else size
        dtype = self.dtype if dtype is None else dtype
        return self._share_like(torch.full(tuple(int(s) for s in shape), value, dtype=dtype), rg)

    def new(self, *args: Any) -> Self:
        """``x.new(data)``: ``data`` shared like x (CrypTen's ``new``); ``x.new(2, 3)``:
        zeros of that shape (torch's are uninitialised)."""
        if args and all(isinstance(a, int) for a in args):
            return self._new_filled(args, 0.0, None, False)
        if len(args) != 1:
            raise UnsupportedOperation("SharedTensor.new takes one tensor or a shape")
        return self.new_tensor(args[0])

    def new_tensor(self, data: Any, *, dtype: Any = None, requires_grad: bool = False) -> Self:
        if isinstance(data, Handle):
            raise UnsupportedOperation("new_tensor of a SharedTensor: use x.detach()")
        t = torch.as_tensor(data, dtype=dtype)
        if dtype is None and not t.is_floating_point():
            t = t.to(self.dtype)
        return self._share_like(t, requires_grad)

    def new_zeros(self, *size: Any, dtype: Any = None, requires_grad: bool = False) -> Self:
        return self._new_filled(size, 0.0, dtype, requires_grad)

    def new_ones(self, *size: Any, dtype: Any = None, requires_grad: bool = False) -> Self:
        return self._new_filled(size, 1.0, dtype, requires_grad)

    def new_empty(self, *size: Any, dtype: Any = None, requires_grad: bool = False) -> Self:
        return self._new_filled(size, 0.0, dtype, requires_grad)

    def new_full(
        self,
        size: Sequence[int],
        fill_value: float,
        *,
        dtype: Any = None,
        requires_grad: bool = False,
    ) -> Self:
        return self._new_filled((size,), float(fill_value), dtype, requires_grad)
