"""structlog, configured in one place.

Console output for people; unconfigured (a library imported into someone's program) only
warnings and errors, ``configure_logging()`` for ``info`` (a line per training step,
cluster start and close); JSON lines with
``configure_logging(json_path=...)``, which also records the ``debug`` events: one
``protocol_run`` per op per party (op id, kind, shapes, rounds, bytes). The communication
report is computed from those lines. Actor, op id and iteration are bound through
contextvars.
"""

from __future__ import annotations

import logging
import sys
from typing import IO, Any, TextIO

import structlog

_configured = False
_sink: IO[str] | None = None
_debug = False
_info = True


def configure_logging(
    *, json_path: str | None = None, level: str = "info", stream: TextIO | None = None
) -> None:
    """(Re)configure structlog for the whole process."""
    global _configured, _sink, _debug, _info
    if _sink is not None:
        _sink.close()
        _sink = None
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if json_path is not None:
        _sink = open(json_path, "w", encoding="utf-8")  # noqa: SIM115 - lives until reconfigured
        processors.append(structlog.processors.JSONRenderer())
        factory: Any = structlog.WriteLoggerFactory(file=_sink)
        level = "debug" if level == "info" else level
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=False))
        factory = structlog.WriteLoggerFactory(file=stream or sys.stderr)
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    _configured = True
    _debug = logging.getLevelName(level.upper()) <= logging.DEBUG
    _info = logging.getLevelName(level.upper()) <= logging.INFO


def debug_enabled() -> bool:
    """Whether ``debug`` events are recorded (JSON logs or ``level="debug"``)."""
    return _debug


def info_enabled() -> bool:
    """Whether ``info`` events are recorded (a per-step event's fields are built only then)."""
    return _info


def get_logger(**bind: Any) -> Any:
    if not _configured:  # a library's default: quiet until the program asks for more
        configure_logging(level="warning")
    return structlog.get_logger().bind(**bind)
