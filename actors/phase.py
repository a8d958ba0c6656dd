"""What a message is for (its phase, metered apart) and which op a tag names."""

from __future__ import annotations

import enum
import re


class Phase(enum.IntEnum):
    """What a message is for; the meter keeps each apart."""

    INPUT = 0
    """Coordinator -> party: shares of a value being shared."""
    ONLINE = 1
    """Party <-> party: masked values during a protocol; the only phase that adds rounds."""
    OFFLINE = 2
    """Provider -> party: keys and correlated randomness (dealer material)."""
    OUTPUT = 3
    """Party -> coordinator: a share of a value being revealed to its owner."""
    CONTROL = 4
    """Commands, dealer requests, barriers, refusals: public metadata only."""
    HEARTBEAT = 5
    """Liveness and wait state between transports; metered apart from everything else."""


_OP_TAG = re.compile(r"([0-9]+)/.+")


def op_of(tag: str) -> int | None:
    """The op id of a protocol tag ``"<op>/<step>"`` (ASCII digits only), else None."""
    m = _OP_TAG.fullmatch(tag)
    return int(m.group(1)) if m else None
