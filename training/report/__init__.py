"""The communication-cost report as a library: measure (:mod:`.measure`), run a set of
measurements (:mod:`.engine`), render (:mod:`.render`)."""

from .engine import Config, Report, build, config
from .measure import LAN, WAN, Profile, Workload
from .render import PNGS, markdown, to_json, write

__all__ = [
    "LAN",
    "PNGS",
    "WAN",
    "Config",
    "Profile",
    "Report",
    "Workload",
    "build",
    "config",
    "markdown",
    "to_json",
    "write",
]
