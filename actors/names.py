"""Actor names (they name files and certificates) and the configuration error."""

from __future__ import annotations

import re

from protocols.errors import SmpcError

NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
RESERVED = frozenset({"ca"})
"""Not an actor's name: ``ca.pem`` / ``ca.key`` are the cluster CA's files."""


class ConfigError(SmpcError, ValueError):
    """The cluster file (or a file it names) is missing something, unreadable, or
    contradicts itself; the message names the file or the entry."""


def check_name(name: object, what: str = "actor name") -> str:
    """An actor name: a letter, then letters, digits, '_' or '-' (it names files)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"{what} {name!r}: use a letter then letters, digits, '_' or '-' (at most 64)"
        )
    if name in RESERVED:
        raise ConfigError(f"{what} {name!r} is reserved (the CA's files are ca.pem and ca.key)")
    return name
