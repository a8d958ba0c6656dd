"""The communication-cost report as a library: measure (:mod:`.measure`), run a set of
measurements (:mod:`.engine`), render (:mod:`.render`: markdown :mod:`.sections`, PNG
:mod:`.plots`, JSON)."""

from .engine import Config, Report, build, build_networks, config
from .measure import Workload
from .networks import NETWORKS
from .projection import LAN, WAN, Profile
from .render import PNGS, markdown, to_json, write, write_networks

__all__ = [
    "LAN",
    "NETWORKS",
    "PNGS",
    "WAN",
    "Config",
    "Profile",
    "Report",
    "Workload",
    "build",
    "build_networks",
    "config",
    "markdown",
    "to_json",
    "write",
    "write_networks",
]
