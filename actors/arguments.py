"""The coordinator's argument checks: what a caller passes is refused with a typed error
before anything is queued (a value the wire cannot carry would fail a whole batch later)."""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterator, Sequence
from typing import Any

import msgspec
import torch
import trio

from protocols.layers import KEEP_UNITS
from protocols.params import Params
from protocols.reference import Tolerance

Shape = tuple[int, ...]


def require_trio(what: str) -> None:
    """Refuse, with the fix, to start outside a trio run (e.g. in an asyncio loop:
    Jupyter's top-level ``await``), where trio would fail with an obscure AttributeError."""
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        raise RuntimeError(
            f"{what} must run under trio (trio.run(main)); it was called outside a trio "
            "run, e.g. in an asyncio event loop (Jupyter's top-level await, asyncio.run). "
            "In a notebook or a plain script use training.sync.Session, which runs the "
            "cluster in a background trio thread and offers synchronous calls"
        ) from None


def int64s(values: Any, what: str, kind: str, bad_type: str) -> tuple[int, ...]:
    """Non-negative int64 values as the wire carries them, or TypeError/ValueError before
    anything is queued (a value the encoder refuses would fail the whole batch later)."""
    try:
        # map over a builtin: no Python frame per element (this runs for every operand of
        # every op issued)
        out = tuple(map(operator.index, values))
    except TypeError:
        raise TypeError(f"{what}: {bad_type}, got {values!r}") from None
    if out and (min(out) < 0 or max(out) >= 2**63):
        raise ValueError(f"{what}: {kind} must be non-negative int64 values, got {out}")
    return out


def ids(values: Any, what: str) -> tuple[int, ...]:
    return int64s(values, what, "tensor ids", "tensor ids are integers")


def sizes(shape: Any, what: str) -> Shape:
    return int64s(shape, what, "sizes", "a shape is a sequence of integers")


_SIZES: dict[Shape, Shape] = {}
"""torch.Size shapes already checked (a Size holds ints only; equal tuples hash alike)."""


def _size(s: Any, what: str) -> Shape:
    if type(s) is torch.Size:
        got = _SIZES.get(s)
        if got is None:
            got = sizes(s, what)
            if len(_SIZES) < 4096:
                _SIZES[got] = got
        return got
    return sizes(s, what)


def shape_list(shapes: Any, what: str) -> tuple[Shape, ...]:
    # a list or tuple (what the frontend passes) without the ABC checks, the rest with them
    if (
        type(shapes) is not list
        and type(shapes) is not tuple
        and (isinstance(shapes, str | bytes) or not isinstance(shapes, Sequence | Iterator))
    ):
        raise TypeError(f"{what}: expected a sequence of shapes, got {shapes!r}")
    return tuple([_size(s, what) for s in shapes])


ValueBound = float | str | None


def value_bound_of(bound: Any) -> ValueBound:
    """``"headroom"`` (the default), ``None`` (off) or a positive real bound."""
    if bound is None or bound == "headroom":
        return bound  # type: ignore[no-any-return]
    if isinstance(bound, bool) or not isinstance(bound, numbers.Real):
        raise TypeError(f'value_bound must be "headroom", None or a positive number, got {bound!r}')
    value = float(bound)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"value_bound must be a positive finite number, got {bound!r}")
    return value


def check_tolerance(check: Any) -> Tolerance | None:
    """``check=True`` (default tolerance), ``False`` or a :class:`Tolerance`."""
    if isinstance(check, Tolerance):
        return check
    if isinstance(check, bool):
        return Tolerance() if check else None
    raise TypeError(f"check must be True, False or a protocols.reference.Tolerance, got {check!r}")


_CHECKED: set[bytes] = set()
"""The wire encodings of params already checked: a training step issues the same few again
and again (the same divisor, the same transpose), so each distinct one is decoded and
checked once. Keyed by the encoding, not the struct, so ``d=True`` or ``d=1.0`` (equal to
``d=1`` in Python, refused on the wire) is never taken for a checked ``d=1``. Bounded in
count and in key size (a large public operand is checked every time, never stored)."""
_MAX_CHECKED = 4096
_MAX_KEY = 1024


def checked_params(params: Any, what: str) -> Params | None:
    """``params`` if every field has its declared type and the wire can carry it."""
    if params is None:
        return None
    if not isinstance(params, Params):
        raise TypeError(f"{what}: params must be a Params or None, got {type(params).__name__}")
    try:
        raw = msgspec.msgpack.encode(params)
        if raw in _CHECKED:
            return params
        checked = msgspec.msgpack.decode(raw, type=Params)
    except (msgspec.DecodeError, TypeError, OverflowError) as exc:
        raise ValueError(f"{what}: malformed params {params!r}: {exc}") from None
    if checked.d < 1:
        raise ValueError(f"{what}: the divisor must be a positive integer, got {checked.d}")
    if not 0 <= checked.keep <= KEEP_UNITS:
        raise ValueError(
            f"{what}: dropout's keep units are 1 to {KEEP_UNITS} (0 when unused), got {checked.keep}"
        )
    if checked.scale < 1:
        raise ValueError(
            f"{what}: the encoding scale must be a positive integer, got {checked.scale}"
        )
    if len(raw) <= _MAX_KEY and len(_CHECKED) < _MAX_CHECKED:
        _CHECKED.add(raw)
    return params
