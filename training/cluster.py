"""The user-facing cluster: the runtime (:class:`actors.Cluster`) plus sharing of tensors
and modules. Importing it is all a script needs::

    from training import Cluster
    async with Cluster.start(["alice", "bob"], provider="james") as cluster:
        x = cluster.share(data)
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

from actors import Cluster as Runtime
from protocols import FixedPoint
from protocols.errors import EncodingError

from .check import Origin, ShadowChecker
from .module import share_module
from .tensor import SharedTensor


def default_precision(base: int) -> int:
    """Fractional digits when none are given: 3 in base 10 (u = 0.001), and in another
    base about 16 bits' worth (base 2: 16, the encoding the smooth functions need)."""
    if not isinstance(base, int) or isinstance(base, bool) or base < 2:
        raise EncodingError(f"fixed-point base must be an integer >= 2, got {base!r}")
    return 3 if base == 10 else math.ceil(16 / math.log2(base))


class Cluster(Runtime):
    """A running cluster whose coordinator can share tensors and modules."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.checker = None if self.check is None else ShadowChecker(self.check, self.suite)
        """Check mode (``Cluster.start(check=True)``, see training.check), or None."""

    async def flush(self) -> None:
        """Wait until every op issued so far has finished at every party (in check mode,
        check them all first: ShadowMismatch names the first wrong one)."""
        if self.checker is not None:
            await self.checker.verify(self)
        await super().flush()

    def share(
        self,
        tensor: Any,
        precision: int | None = None,
        base: int = 10,
        *,
        requires_grad: bool = False,
    ) -> SharedTensor:
        """Secret-share a plaintext tensor among the parties; returns a SharedTensor.
        ``precision`` defaults to :func:`default_precision` of ``base`` (10: 3, 2: 16)."""
        if precision is None:
            precision = default_precision(base)
        return SharedTensor.from_plain(
            self, tensor, FixedPoint(base, precision), requires_grad=requires_grad
        )

    def share_from(
        self,
        owner: str,
        name: str,
        precision: int | None = None,
        base: int = 10,
        *,
        requires_grad: bool = False,
    ) -> SharedTensor:
        """Have party ``owner`` secret-share its local tensor ``name``; the plaintext never
        reaches this coordinator (see ``actors.Cluster.input_from``)."""
        if precision is None:
            precision = default_precision(base)
        fp = FixedPoint(base, precision)
        tid, shape = self.input_from(owner, name, fp.scale)
        out = SharedTensor(self, tid, shape, fp)
        out._origin = Origin(self.last_op, "input", self.current_label())
        out.requires_grad = bool(requires_grad)
        return out  # no shadow: check mode does not check what is computed from it

    def share_module(
        self,
        module: nn.Module,
        requires_grad: bool = True,
        precision: int | None = None,
        base: int = 10,
    ) -> nn.Module:
        """A copy of ``module`` whose parameters are SharedTensors (see training.module)."""
        if precision is None:
            precision = default_precision(base)
        return share_module(
            self, module, requires_grad=requires_grad, fp=FixedPoint(base, precision)
        )
