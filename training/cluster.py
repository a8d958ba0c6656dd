"""The user-facing cluster: the runtime (:class:`actors.Cluster`) plus sharing of tensors
and modules. Importing it is all a script needs::

    from training import Cluster
    async with Cluster.start(["alice", "bob"], provider="james") as cluster:
        x = cluster.share(data)
"""

from __future__ import annotations

from typing import Any

from torch import nn

from actors import Cluster as Runtime
from protocols import FixedPoint

from .module import share_module
from .tensor import SharedTensor


class Cluster(Runtime):
    """A running cluster whose coordinator can share tensors and modules."""

    def share(
        self, tensor: Any, precision: int = 3, base: int = 10, *, requires_grad: bool = False
    ) -> SharedTensor:
        """Secret-share a plaintext tensor among the parties; returns a SharedTensor."""
        return SharedTensor.from_plain(
            self, tensor, FixedPoint(base, precision), requires_grad=requires_grad
        )

    def share_from(
        self,
        owner: str,
        name: str,
        precision: int = 3,
        base: int = 10,
        *,
        requires_grad: bool = False,
    ) -> SharedTensor:
        """Have party ``owner`` secret-share its local tensor ``name``; the plaintext never
        reaches this coordinator (see ``actors.Cluster.input_from``)."""
        fp = FixedPoint(base, precision)
        tid, shape = self.input_from(owner, name, fp.scale)
        out = SharedTensor(self, tid, shape, fp)
        out.requires_grad = bool(requires_grad)
        return out

    def share_module(
        self, module: nn.Module, requires_grad: bool = True, precision: int = 3, base: int = 10
    ) -> nn.Module:
        """A copy of ``module`` whose parameters are SharedTensors (see training.module)."""
        return share_module(
            self, module, requires_grad=requires_grad, fp=FixedPoint(base, precision)
        )
