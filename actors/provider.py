"""The crypto provider (dealer): deals correlated randomness, learns only metadata.

At start it draws one AES-256 (CTR) PRG key per party (from the OS, or from the seed in the
insecure deterministic mode) and sends it to that party (32 offline bytes each). After
that it receives only dealer requests ``(op id, kind, shapes, divisor, keep units)`` from the
coordinator, builds the op's material specs from the cluster's protocol suite, and sends
each party what it must receive (:func:`protocols.material.dealer_messages`: corrections
to the last party, per-party keys to everyone). It never receives anything computed from
secret data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import aclosing

import torch
import trio

from protocols import Prg, dealer_messages
from protocols.suite import Suite

from .actor import failures_named, malformed, request_batches
from .endpoint import Endpoint
from .envelope import Phase
from .holdings import OpReused
from .log import get_logger
from .messages import Requests


class CryptoProvider:
    """The dealer actor."""

    def __init__(
        self,
        name: str,
        parties: Sequence[str],
        coordinator: str,
        endpoint: Endpoint,
        seed: int | None,
        suite: Suite,
    ) -> None:
        self.name = name
        self.parties = list(parties)
        self.coordinator = coordinator
        self.endpoint = endpoint
        self.mailbox = endpoint.mailbox
        self.suite = suite
        self.prgs = [
            Prg.fresh() if seed is None else Prg.from_seed(seed, f"dealer/{p}") for p in parties
        ]
        self.own_prg = Prg.fresh() if seed is None else Prg.from_seed(seed, "dealer/own")
        """The dealer's private randomness (key generation), shared with nobody."""
        self._busy = 0
        self.compute_seconds = 0.0
        """Wall time spent building material (key generation, PRG draws): the offline
        computation, which benchmarks report apart from the step."""
        self._served: set[int] = set()
        endpoint.busy = lambda: self._busy
        self._log = get_logger(actor=name)

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with failures_named(self.name):
            for party, prg in zip(self.parties, self.prgs, strict=True):
                key = torch.frombuffer(bytearray(prg.key), dtype=torch.uint8)
                await self.endpoint.send(party, "setup/key", Phase.OFFLINE, tensors=[key])
            task_status.started()
            n = len(self.parties)
            async with aclosing(request_batches(self.mailbox, self.coordinator)) as batches:
                async for batch in batches:
                    await self._serve(batch, n)

    async def _serve(self, batch: Requests, n: int) -> None:
        """Build and send the material of one batch of requests."""
        for req in batch.items:
            if req.op in self._served:
                raise OpReused(
                    f"{self.name}: dealer request for operation id {req.op}, which is not new "
                    "in this session"
                )
            self._served.add(req.op)
            with malformed(self.name, "dealer request", req):
                if any(s < 0 for shape in [*req.shapes, req.out] for s in shape):
                    raise ValueError(f"negative size in {req.shapes} -> {req.out}")
                if req.d < 1:
                    raise ValueError(f"divisor {req.d} is not a positive integer")
                if req.keep < 0:
                    raise ValueError(f"dropout keep units {req.keep} are negative")
                param = self.suite.kind(req.kind, n).param(req.params())
                specs = self.suite.specs(req.kind, req.shapes, req.out, param, n)
            self._busy += 1
            try:
                for spec in specs:
                    t0 = time.perf_counter()
                    messages = dealer_messages(spec, self.prgs, req.op, self.own_prg)
                    self.compute_seconds += time.perf_counter() - t0
                    for party, tensors in zip(self.parties, messages, strict=True):
                        if tensors:
                            await self.endpoint.send(
                                party,
                                f"{req.op}/{spec.step()}",
                                Phase.OFFLINE,
                                tensors=tensors,
                            )
            finally:
                self._busy -= 1
