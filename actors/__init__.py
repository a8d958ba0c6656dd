"""Actors: parties, crypto provider, cluster, network, meter."""

from .cluster import Cluster, OpRecord
from .endpoint import Endpoint
from .envelope import Envelope, Phase
from .log import configure_logging, get_logger
from .mailbox import Mailbox
from .network import Chaos, InjectedCrash, Network, NetworkProfile
from .stats import ActorStats, CommStats

__all__ = [
    "ActorStats",
    "Chaos",
    "Cluster",
    "CommStats",
    "Endpoint",
    "Envelope",
    "InjectedCrash",
    "Mailbox",
    "Network",
    "NetworkProfile",
    "OpRecord",
    "Phase",
    "configure_logging",
    "get_logger",
]
