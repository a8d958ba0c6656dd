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
    """The op id of a protocol tag ``"<op>/<step>"`` (ASCII digits only), else None.

    What ``_OP_TAG.fullmatch`` accepts (a non-empty step without a line break), by string
    methods: every message is parsed at delivery and again when claimed."""
    head, sep, step = tag.partition("/")
    if sep and step and head.isascii() and head.isdigit() and "\n" not in step:
        return int(head)
    return None
