"""Actors: parties, crypto provider, cluster, network, meter."""

from .cluster import Cluster
from .envelope import Envelope, Phase
from .log import configure_logging, get_logger
from .network import Chaos, InjectedCrash, Mailbox, Network, NetworkProfile
from .stats import ActorStats, CommStats

__all__ = [
    "ActorStats",
    "Chaos",
    "Cluster",
    "CommStats",
    "Envelope",
    "InjectedCrash",
    "Mailbox",
    "Network",
    "NetworkProfile",
    "Phase",
    "configure_logging",
    "get_logger",
]
