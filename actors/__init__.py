"""Actors: parties, crypto provider, cluster, network, meter."""

from .cluster import Cluster
from .envelope import Envelope, Phase
from .log import configure_logging, get_logger
from .network import Mailbox, Network, NetworkProfile
from .stats import ActorStats, CommStats

__all__ = [
    "ActorStats",
    "Cluster",
    "CommStats",
    "Envelope",
    "Mailbox",
    "Network",
    "NetworkProfile",
    "Phase",
    "configure_logging",
    "get_logger",
]
