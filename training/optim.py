"""Optimisers on shares: SGD (momentum, Nesterov, weight decay), Adam and AdamW.

They subclass ``torch.optim.Optimizer`` (without its tensor checks) so that
``param_groups`` work as in torch and ``torch.optim.lr_scheduler`` schedulers drive them
(a scheduler only rewrites ``group["lr"]``, a public number). Hyper-parameters are public:
each multiplies a share as a public fixed-point factor (a local truncation with 2 parties,
one round with 3 or more).

Adam needs ``1 / (sqrt(v_hat) + eps)`` of a secret ``v_hat``, over a range of ~2**40
(gradients from 1e-4 to 10, squared). :class:`Adam` keeps ``v`` as the sum of the squared
*integer encodings* of the gradients (the square truncated by a public power of two that
follows the bias correction's sum of weights, not by ``2**f``), so a gradient of 1e-4
(6 units at 16 bits) still has ~40 units in ``v``; the first moment keeps ``f/4`` extra
bits; ``rsqrt`` (:func:`training.range_reduction.rsqrt`, 5 rounds, over [2**-f, 2**(f+8)))
returns ``2**(f/4) / sqrt`` so that large ``v`` keep their significant bits, and the bias
corrections are public factors of the update. ``eps`` enters as torch's does,
``1 / (sqrt(v_hat) + eps)``: ``r = rsqrt(v_hat + eps**2)`` times a polynomial
``c(eps r)`` (:func:`training.range_reduction.sqrt_plus_correction`, 3 rounds; ``r`` alone is up to sqrt(2) times
torch's step where sqrt(v_hat) is near eps), beside a floor of about ``2**-(f-1)`` in
gradient units (1.5e-5 at 16 bits: one unit of the gradient's encoding) under the root
that acts as eps when eps is smaller. With base 2 and 16 fractional bits (required) each step is within ~0.5% of lr
of torch's for gradients of 1.5e-4 to 10 (tests/test_optim.py); decays by ``beta`` are
products by small integers and a truncation (see :func:`_decay`) so the truncated
products stay below ~2**43 for gradients up to 1 (failure probability ``2**-20`` per
element and step there, protocols/truncate.py's bound; smaller for smaller gradients).
"""

from __future__ import annotations

import math
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import torch

from protocols.params import Params

from .approximation import frac_bits, require_bits
from .normalisation import lower
from .precision import check_learning_rate, note_adam_eps
from .range_reduction import rsqrt, sqrt_plus_correction
from .tensor import SharedTensor, cat
from .updates import minus_scaled


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
        coarsest = min(ps, key=lambda p: p.scale)
        check_learning_rate(
            group["lr"],
            coarsest.fp.with_precision(coarsest.prec),
            type(self).__name__,
            self._step_name,
        )
        group["params"] = ps
        self.param_groups.append(group)

    _step_name = "|grad|"
    """What the learning rate multiplies (for the PrecisionWarning)."""

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

    replayable = True
    """Its step's ops follow from ``param_groups`` and the state's presence alone (the
    momentum buffer's first step differs, and is recorded apart): see training.replay."""

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
                ps, gs = [], []
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
                    ps.append(p)
                    gs.append(g)
                # every parameter's p - lr g in one command (training.updates.minus_scaled)
                for p, new in zip(ps, minus_scaled(ps, gs, lr), strict=True):
                    p._assign(new)


NOISE_FLOOR = 64.0
"""Adam's eps is at least this many units of the gradient's last place (2**-f): 1e-3 at 16
bits. Fixed-point gradients carry about one unit of rounding noise (truncation), also where
the true gradient is 0 (weights on always-zero pixels, dead units); Adam divides by
``sqrt(v)``, so with torch's eps of 1e-8 that noise becomes steps of ~lr in random
directions. Measured (scripts/adam_noise.py: plaintext torch with one unit of gradient noise
and weights rounded to 2**-16, CNN on digits, 3 seeds x 4 noise draws): the test accuracy
falls 1.0-3.3 points (median per seed) below exact torch Adam with eps 1e-8; 0.3-1.1 points
with eps 1e-3. True gradients below ~eps are damped by about ``g / (g + eps)``; pass
``noise_floor=0`` for torch's eps (steps within ~1% of torch's down to gradients of
~1.5e-4, tests/test_optim.py) where gradients are never exactly zero."""


def _decay(x: SharedTensor, beta: float) -> SharedTensor:
    """``beta * x`` as ``x - (n * x) / d`` with ``n / d`` the fraction nearest ``1 - beta``
    (denominator <= 4096; exact for 0.9, 0.99, 0.999...): a product by a small integer
    and a truncation by ``d``, instead of a 20-bit public factor, keeps the truncated
    product ~10 bits smaller (its failure probability is proportional to it)."""
    q = Fraction(1.0 - beta).limit_denominator(4096)
    if q.numerator == 0:
        return x
    nx = x if q.numerator == 1 else x * q.numerator
    return x - nx / q.denominator


class Adam(Optimizer):
    """``torch.optim.Adam`` (and, with ``decoupled=True``, ``AdamW``) on shares.

    State, for a gradient at ``f`` fractional bits (base 2): ``exp_avg`` holds
    ``M = m / (1 - beta1)`` (the sum ``sum_i beta1**i g_i``) and ``exp_avg_sq`` holds
    ``V = 2**(f - e_t) sum_i beta2**i g_i**2``: the squares of the gradients' integer
    encodings, kept whole (the square is truncated by ``2**e_t`` instead of ``2**f``),
    where ``2**e_t`` is the largest power of two not above the bias correction's sum of
    weights ``S_t = (1 - beta2**t) / (1 - beta2)``; ``V`` is halved whenever ``e_t`` grows.
    So ``V`` stays below ``2 * 2**f * max g**2`` and ``v_hat = V * rho_t * 2**-f`` with the
    public ``rho_t = 2**e_t / S_t`` in (1/2, 1]: a gradient of 1e-4 keeps ~2**-10 of
    ``V`` (~40 units) instead of vanishing below the last place. The update is
    ``lr c1 M rsqrt(V + eps**2 2**f / rho_t + 2**-(f-2)) 2**(f/2) / sqrt(rho_t)``: the
    rsqrt's input needs no public rescaling (its range covers ``V``) and its lower end
    ``2**-(f-2)`` acts as an eps of ``2**-(f-1) sqrt(rho_t)`` (~3e-5 at 16 bits, two units
    of the gradient's encoding) when ``eps`` is smaller."""

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
        noise_floor: float = NOISE_FLOOR,
    ) -> None:
        if amsgrad:
            raise NotImplementedError("amsgrad is not supported on SharedTensor")
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "maximize": maximize,
            "noise_floor": noise_floor,
        }
        super().__init__(params, defaults)
        for group in self.param_groups:
            f = min(p.prec for p in group["params"])  # fractional bits (base 2, checked)
            group["effective_eps"] = self._effective_eps(group, f)
        raised = [g for g in self.param_groups if g["effective_eps"] > g["eps"]]
        if raised:
            note_adam_eps(raised[0]["eps"], raised[0]["effective_eps"])

    decoupled = False
    _step_name = "|m / sqrt(v)|"

    def _check_params(self, ps: list[SharedTensor]) -> None:
        for p in ps:
            require_bits(p, type(self).__name__, base2=True)

    def _validate(self, group: dict[str, Any]) -> None:
        group["lr"] = _check_number("lr", group["lr"], positive=True)
        b1, b2 = group["betas"]
        group["betas"] = (
            _check_number("beta1", b1, below_one=True),
            _check_number("beta2", b2, below_one=True),
        )
        group["eps"] = _check_number("eps", group["eps"])
        group["weight_decay"] = _check_number("weight_decay", group["weight_decay"])
        group["noise_floor"] = _check_number("noise_floor", group["noise_floor"])

    @staticmethod
    def _effective_eps(group: dict[str, Any], f: int) -> float:
        """eps, raised to ``noise_floor`` units of the last place of an f-bit gradient."""
        return max(group["eps"], group["noise_floor"] * 2.0**-f)

    @staticmethod
    def _exponent(b2: float, t: int) -> int:
        """e_t: floor(log2 S_t), S_t = 1 + b2 + ... + b2**(t-1) (public)."""
        return math.floor(math.log2((1.0 - b2**t) / (1.0 - b2)) + 1e-12) if t > 1 else 0

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("closures are not supported on SharedTensor optimizers")
        pending: list[tuple[SharedTensor, SharedTensor, SharedTensor, float, float]] = []
        with torch.no_grad():
            for group in self.param_groups:
                lr, (b1, b2) = group["lr"], group["betas"]
                wd = group["weight_decay"]
                for p in group["params"]:
                    if self._frozen(p):
                        continue
                    g = p.grad
                    if not isinstance(g, SharedTensor):  # public, e.g. a bias under .sum()
                        g = SharedTensor.from_plain(p.cluster, g, p.fp, what="a public gradient")
                    g = -g if group["maximize"] else g
                    if wd and self.decoupled:
                        p._assign(p * (1.0 - lr * wd))
                    elif wd:
                        g = g + p * wd
                    f = g.prec  # fractional bits of the gradient (base 2, checked)
                    state = self.state[id(p)]
                    t = state.get("step", 0) + 1
                    state["step"] = t
                    e, e_prev = self._exponent(b2, t), self._exponent(b2, t - 1)
                    # g**2 * 2**(f - e): the encodings' square truncated by 2**e only
                    sq = g._op("square", [], g.shape, Params(d=2**e), prec=f)
                    a = f // 4  # M keeps a more bits: its truncations are 2**-(f+a)
                    ga = g * 2**a
                    m, v = state.get("exp_avg"), state.get("exp_avg_sq")
                    m = ga if m is None else _decay(m, b1) + ga
                    if v is None:
                        v = sq
                    else:
                        v = _decay(v, b2)
                        if e > e_prev:
                            v = v / 2 ** (e - e_prev)
                        v = v + sq
                    state["exp_avg"], state["exp_avg_sq"] = m, v
                    s_t = (1.0 - b2**t) / (1.0 - b2)
                    rho = 2.0**e / s_t
                    c1 = (1 - b1) / (1 - b1**t)
                    eps_f = self._effective_eps(group, f)
                    floor = eps_f**2 * 2.0**f / rho + 2.0**-f
                    eps_v = eps_f * 2.0 ** (f / 2) / math.sqrt(rho)  # eps in V's units
                    pending.append((p, m, v + floor, lr * c1 / math.sqrt(rho) / 2**a, eps_v))
            self._apply(pending)

    @staticmethod
    def _apply(
        pending: list[tuple[SharedTensor, SharedTensor, SharedTensor, float, float]],
    ) -> None:
        """One rsqrt over every parameter's ``V + floor`` at once (flattened and
        concatenated: the same rounds and bytes, far fewer ops), torch's denominator from
        it (:func:`training.range_reduction.sqrt_plus_correction`), then the updates."""
        if not pending:
            return
        xs = [x.reshape(-1) for _, _, x, _, _ in pending]
        flat = cat(xs) if len(pending) > 1 else xs[0]
        f = frac_bits(flat)
        s = f // 4  # 2**s / sqrt(V): relative precision for V up to the domain's top
        r_all = rsqrt(flat, (-f, f + 8), scale_bits=s)
        # u = E / sqrt(V + floor) in (0, 1), E eps in V's units (floor = E**2 + 2**-f):
        # one public factor per parameter
        ks = [e / 2**s for *_, e in pending]
        if all(k == ks[0] for k in ks):
            u = r_all * ks[0]
        else:
            u = cat([r * k for r, k in zip(_slices(r_all, pending), ks, strict=True)])
        c_all = lower(sqrt_plus_correction(u), _C_BITS)
        for (p, m, _x, step, _), r, c in zip(
            pending, _slices(r_all, pending), _slices(c_all, pending), strict=True
        ):
            # M r 2**(f/2 - s) = M rsqrt(V) 2**(f/2): the product truncated by 2**(f-h)
            h = f // 2 - s
            mr = m._op("mul", [r], m.shape, Params(d=2 ** (r.prec - h)), prec=m.prec)
            mr = mr._op("mul", [c], m.shape, Params(d=2**_C_BITS), prec=m.prec)
            p._assign(p - mr * (step * 2.0 ** (f / 2 - s - h)))


_C_BITS = 10
"""torch's denominator's correction is applied at 10 bits (2**-10 relative: a tenth of its
fit's error), which keeps the product with ``M rsqrt(V)`` small in the ring."""


def _slices(flat: SharedTensor, pending: list[Any]) -> list[SharedTensor]:
    """``flat`` cut back into each pending parameter's shape."""
    out, offset = [], 0
    for _, _, x, _, _ in pending:
        n = x.numel()
        out.append(
            flat[offset : offset + n].reshape(x.shape)
            if len(pending) > 1
            else flat.reshape(x.shape)
        )
        offset += n
    return out


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
        noise_floor: float = NOISE_FLOOR,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            noise_floor=noise_floor,
        )
