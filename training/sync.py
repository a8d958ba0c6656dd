"""Synchronous use, for scripts and notebooks: a cluster in a background trio thread.

The cluster is asynchronous (trio); a notebook runs an asyncio loop, where trio cannot
run (``Cluster.start`` refuses it with a pointer here). :class:`Session` starts the cluster
under ``trio.run`` in a thread of its own and runs your code there, synchronously::

    from training.sync import Session

    with Session(["alice", "bob"], seed=None) as s:
        x = s.share(data, base=2)                 # 16 fractional bits
        model = s.share_module(net, base=2)
        opt = s.run(lambda: SGD(model.parameters(), lr=0.1))

        def step():
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            return loss

        print(s.get(s.run(step)))                 # reveal to this coordinator

Every op on shares must be issued in the session's thread: pass it to :meth:`run` (a
function, sync or async, with its arguments); :meth:`get` reveals a SharedTensor.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any

import torch
import trio
from torch import nn

from .cluster import Cluster
from .tensor import SharedTensor


class Session:
    """A :class:`training.Cluster` running in a background trio thread (see module doc).

    Keyword arguments go to :meth:`Cluster.start` (``seed``, ``protocols``, ...)."""

    def __init__(
        self, parties: Sequence[str] = ("alice", "bob"), provider: str = "james", **start: Any
    ) -> None:
        self._parties = list(parties)
        self._provider = provider
        self._start = start
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._cluster: Cluster | None = None
        self._thread = threading.Thread(target=self._main, name="smpc-session", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    def _main(self) -> None:
        try:
            trio.run(self._serve)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        async with Cluster.start(self._parties, self._provider, **self._start) as cluster:
            self._cluster = cluster
            self._token = trio.lowlevel.current_trio_token()
            self._stop = trio.Event()
            self._ready.set()
            await self._stop.wait()

    @property
    def cluster(self) -> Cluster:
        """The running cluster (use it only inside :meth:`run`)."""
        if self._cluster is None:
            raise RuntimeError("this session is not running")
        return self._cluster

    def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` in the session's trio thread (awaited if it is async); its result."""
        if self._token is None or not self._thread.is_alive():
            raise RuntimeError("this session is closed") from self._error
        if threading.current_thread() is self._thread:
            raise RuntimeError("Session.run called from inside the session: call fn directly")

        async def call() -> Any:
            out = fn(*args)
            if inspect.isawaitable(out):
                out = await out
            return out

        try:
            return trio.from_thread.run(call, trio_token=self._token)
        except trio.RunFinishedError:
            raise RuntimeError("the session's cluster stopped") from self._error

    def share(self, tensor: Any, precision: int | None = None, base: int = 10) -> SharedTensor:
        return self.run(lambda: self.cluster.share(tensor, precision, base))  # type: ignore[no-any-return]

    def share_module(
        self,
        module: nn.Module,
        requires_grad: bool = True,
        precision: int | None = None,
        base: int = 10,
    ) -> nn.Module:
        return self.run(  # type: ignore[no-any-return]
            lambda: self.cluster.share_module(module, requires_grad, precision, base)
        )

    def get(self, value: SharedTensor) -> torch.Tensor:
        """Reveal ``value`` to this coordinator."""
        return self.run(value.get)  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stop the cluster and its thread; raises the cluster's error, if it failed."""
        if self._token is not None and self._stop is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
        self._thread.join()
        self._token = None
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
