"""Training frontend: SharedTensor handles, autograd, module sharing, SGD, coordinator."""

from .cluster import Cluster
from .coordinator import IterationRecord, PhaseCost, TrainingCoordinator
from .module import reveal_module, share_module
from .optim import SGD
from .tensor import PublicOperandWarning, SharedTensor, public

__all__ = [
    "SGD",
    "Cluster",
    "IterationRecord",
    "PhaseCost",
    "PublicOperandWarning",
    "SharedTensor",
    "TrainingCoordinator",
    "public",
    "reveal_module",
    "share_module",
]
