"""Op kinds for the layers, losses and smooth functions users bring (conv, pooling,
exp/log/reciprocal, ...). Each is registered here once; :mod:`protocols.suite` merges
:data:`LAYER_KINDS` into every built-in suite."""

from __future__ import annotations

from .opkind import Builder, OpKind

LAYER_KINDS: dict[str, Builder | OpKind] = {}
