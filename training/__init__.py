"""Training frontend: SharedTensor handles, autograd, module sharing, optimisers (SGD,
Adam, AdamW), smooth functions, losses and layers (see docs/ops.md), coordinator."""

from . import dispatch as _dispatch  # noqa: F401  (fills the torch dispatch table)
from .clipping import clip_grad_norm_, clip_grad_value_
from .cluster import Cluster
from .coordinator import IterationRecord, PhaseCost, TrainingCoordinator
from .module import export_module, reveal_module, share_module
from .operands import PublicOperandWarning, public
from .optim import SGD, Adam, AdamW, Optimizer
from .tensor import SharedTensor

__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Cluster",
    "IterationRecord",
    "Optimizer",
    "PhaseCost",
    "PublicOperandWarning",
    "SharedTensor",
    "TrainingCoordinator",
    "clip_grad_norm_",
    "clip_grad_value_",
    "export_module",
    "public",
    "reveal_module",
    "share_module",
]
