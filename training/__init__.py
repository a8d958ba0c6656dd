"""Training frontend: SharedTensor handles, autograd, module sharing, SGD, coordinator."""

from .tensor import SharedTensor

__all__ = ["SharedTensor"]
