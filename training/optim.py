"""Optimisers on shares: SGD (momentum, Nesterov, weight decay), Adam and AdamW.

They subclass ``torch.optim.Optimizer`` (without its tensor checks) so that
``param_groups`` work as in torch and ``torch.optim.lr_scheduler`` schedulers drive them
(a scheduler only rewrites ``group["lr"]``, a public number). Hyper-parameters are public:
each multiplies a share as a public fixed-point factor (a local truncation with 2 parties,
one round with 3 or more).

Adam needs ``1 / (sqrt(v_hat) + eps)`` of a secret ``v_hat``: it is ``rsqrt(v_hat)``
(:func:`training.functional.rsqrt`, 5 rounds, on [2**-(f-2), 2**(f+8)) where f is the
number of fractional bits: below 2**-(f//2) v_hat itself has few significant bits, above
2**(30-f) the selected constant 2**(-k/2) has few) and ``eps`` is added to
the square root's square instead of the root (``rsqrt(v_hat + eps**2)``), which differs
from torch's ``1/(sqrt(v_hat) + eps)`` by a relative eps / sqrt(v_hat). Small gradients
would lose their digits when squared, so Adam keeps ``v`` for the gradient scaled by
``grad_scale`` (public, default 8: the moments of ``8 g``) and undoes the scale in the
update. With base 2 and 16 fractional bits (use that for Adam) the update is accurate to
about 1% for gradients in [0.008, 16]; smaller gradients (below the resolution of v) get
smaller updates than torch's, larger ones lose precision in 2**(-k/2).
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from typing import Any

import torch

from . import functional as Fn
from .tensor import SharedTensor, cat


def _check_number(name: str, v: Any, *, positive: bool = False, below_one: bool = False) -> float:
    if not isinstance(v, int | float) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    if positive and v == 0:
        raise ValueError(f"{name} must be > 0")
    if below_one and v >= 1:
        raise ValueError(f"{name} must be < 1, got {v!r}")
    return float(v)


class Optimizer(torch.optim.Optimizer):
    """Parameter groups over SharedTensors (see module doc)."""

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        # torch's __init__ insists on torch tensors; set up what it would, ourselves.
        self.defaults = defaults
        self.state: defaultdict[Any, Any] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []
        self._optimizer_step_pre_hooks: OrderedDict[int, Any] = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict[int, Any] = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict[int, Any] = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict[int, Any] = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict[int, Any] = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict[int, Any] = OrderedDict()
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        group = dict(param_group)
        ps = group["params"]
        ps = [ps] if isinstance(ps, SharedTensor) else list(ps)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(ps):
            if not isinstance(p, SharedTensor):
                raise TypeError(f"parameter {i} is a {type(p).__name__}, not a SharedTensor")
            if id(p) in seen:
                raise ValueError("some parameters appear in more than one parameter group")
        for k, v in self.defaults.items():
            group.setdefault(k, v)
        self._validate(group)
        for p in ps:
            for k, v in group.items():
                if k != "params" and isinstance(v, float):
                    p.fp.encode(torch.tensor(v))  # EncodingError now, not mid-step
        self._check_params(ps)
        group["params"] = ps
        self.param_groups.append(group)

    def _check_params(self, ps: list[SharedTensor]) -> None:
        """Refuse parameters this optimiser cannot update accurately (before any step)."""

    def _validate(self, group: dict[str, Any]) -> None:
        raise NotImplementedError

    @property
    def params(self) -> list[SharedTensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @property
    def lr(self) -> float:
        return float(self.param_groups[0]["lr"])

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    def _frozen(self, p: SharedTensor) -> bool:
        return not p.requires_grad or p.grad is None


class SGD(Optimizer):
    """``torch.optim.SGD`` semantics: weight decay added to the gradient, momentum buffer
    ``b = mu b + (1 - dampening) g`` (``b = g`` on the first step), Nesterov
    ``g + mu b``, then ``p - lr g``."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        maximize: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _validate(self, group: dict[str, Any]) -> None:
        group["lr"] = _check_number("lr", group["lr"], positive=True)
        for k in ("momentum", "dampening", "weight_decay"):
            group[k] = _check_number(k, group[k])
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")

    @property
    def momentum(self) -> float:
        return float(self.param_groups[0]["momentum"])

    @property
    def weight_decay(self) -> float:
        return float(self.param_groups[0]["weight_decay"])

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("closures are not supported on SharedTensor optimizers")
        with torch.no_grad():
            for group in self.param_groups:
                lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
                for p in group["params"]:
                    if self._frozen(p):
                        continue
                    g = p.grad
                    if group["maximize"]:
                        g = -g
                    if wd:
                        g = g + p * wd
                    if mu:
                        state = self.state[id(p)]
                        buf = state.get("momentum_buffer")
                        damp = 1.0 - group["dampening"]
                        if buf is None:
                            buf = g
                        else:
                            buf = buf * mu + (g * damp if damp != 1.0 else g)
                        state["momentum_buffer"] = buf
                        g = g + buf * mu if group["nesterov"] else buf
                    p._assign(p - g * lr)


class Adam(Optimizer):
    """``torch.optim.Adam`` (and, with ``decoupled=True``, ``AdamW``) on shares; see the
    module doc for the rsqrt and the gradient scale."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        grad_scale: float = 8.0,
    ) -> None:
        if amsgrad:
            raise NotImplementedError("amsgrad is not supported on SharedTensor")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "grad_scale": grad_scale,
        }
        super().__init__(params, defaults)

    decoupled = False

    def _check_params(self, ps: list[SharedTensor]) -> None:
        for p in ps:
            Fn.require_bits(p, type(self).__name__, base2=True)

    def _validate(self, group: dict[str, Any]) -> None:
        group["lr"] = _check_number("lr", group["lr"], positive=True)
        b1, b2 = group["betas"]
        group["betas"] = (
            _check_number("beta1", b1, below_one=True),
            _check_number("beta2", b2, below_one=True),
        )
        group["eps"] = _check_number("eps", group["eps"])
        group["weight_decay"] = _check_number("weight_decay", group["weight_decay"])
        group["grad_scale"] = _check_number("grad_scale", group["grad_scale"], positive=True)

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("closures are not supported on SharedTensor optimizers")
        pending: list[tuple[SharedTensor, SharedTensor, SharedTensor, float]] = []
        with torch.no_grad():
            for group in self.param_groups:
                lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
                wd, k = group["weight_decay"], group["grad_scale"]
                for p in group["params"]:
                    if self._frozen(p):
                        continue
                    g = -p.grad if group["maximize"] else p.grad
                    if wd and self.decoupled:
                        p._assign(p * (1.0 - lr * wd))
                    elif wd:
                        g = g + p * wd
                    state = self.state[id(p)]
                    t = state.get("step", 0) + 1
                    state["step"] = t
                    gs = g * k  # the scaled gradient (see module doc)
                    # m / (1 - b1) and v / (1 - b2) are kept: the small factors 1 - b
                    # would otherwise wipe v's digits before the bias correction
                    m, v = state.get("exp_avg"), state.get("exp_avg_sq")
                    m = gs if m is None else m * b1 + gs
                    v = gs**2 if v is None else v * b2 + gs**2
                    state["exp_avg"], state["exp_avg_sq"] = m, v
                    c1, c2 = (1 - b1) / (1 - b1**t), (1 - b2) / (1 - b2**t)
                    # m_hat / sqrt(v_hat): the scale k cancels between m and sqrt(v)
                    pending.append((p, m, v * c2 + (eps * k) ** 2, lr * c1))
            self._apply(pending)

    @staticmethod
    def _apply(pending: list[tuple[SharedTensor, SharedTensor, SharedTensor, float]]) -> None:
        """One rsqrt over every parameter's v_hat at once (flattened and concatenated:
        the same rounds and bytes, far fewer ops), then the updates."""
        if not pending:
            return
        flat = (
            cat([vh.reshape(-1) for _, _, vh, _ in pending])
            if len(pending) > 1
            else (pending[0][2].reshape(-1))
        )
        f = Fn.frac_bits(flat)
        r_all = Fn.rsqrt(flat, (-(f - 2), f + 8))
        offset = 0
        for p, m, vh, step in pending:
            n = vh.numel()
            r = (
                r_all[offset : offset + n].reshape(vh.shape)
                if len(pending) > 1
                else (r_all.reshape(vh.shape))
            )
            offset += n
            p._assign(p - (m * r) * step)


class AdamW(Adam):
    """``torch.optim.AdamW``: decoupled weight decay ``p *= 1 - lr wd`` (default 0.01)."""

    decoupled = True

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        grad_scale: float = 8.0,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            grad_scale=grad_scale,
        )
