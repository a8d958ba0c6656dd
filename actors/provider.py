"""The crypto provider (dealer): deals correlated randomness, learns only metadata.

At start it draws one ChaCha20 key per party (from the OS, or from the seed in the
insecure deterministic mode) and sends it to that party (32 offline bytes each). After
that it receives only dealer requests ``(op id, kind, shapes, divisor)`` from the
coordinator and sends the last party the corrections of the derived items
(:mod:`protocols.material`). It never receives anything computed from secret data.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import trio

from protocols import Prg, dealer_messages, dealer_specs

from .actor import control_batches, failures_named, malformed
from .envelope import Envelope, Phase, encode_tensors
from .log import get_logger
from .network import Network


class CryptoProvider:
    """The dealer actor."""

    def __init__(
        self,
        name: str,
        parties: Sequence[str],
        coordinator: str,
        network: Network,
        seed: int | None,
    ) -> None:
        self.name = name
        self.parties = list(parties)
        self.coordinator = coordinator
        self.network = network
        self.mailbox = network.mailboxes[name]
        self.prgs = [
            Prg.fresh() if seed is None else Prg.from_seed(seed, f"dealer/{p}") for p in parties
        ]
        self.own_prg = Prg.fresh() if seed is None else Prg.from_seed(seed, "dealer/own")
        """The dealer's private randomness (key generation), shared with nobody."""
        self._log = get_logger(actor=name)

    def _send(self, to: str, tag: str, tensors: list[torch.Tensor]) -> None:
        body, n = encode_tensors(tensors)
        self.network.send(Envelope(self.name, to, tag, Phase.OFFLINE, 0, body, n))

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with failures_named(self.name):
            for party, prg in zip(self.parties, self.prgs, strict=True):
                key = torch.frombuffer(bytearray(prg.key), dtype=torch.uint8)
                self._send(party, "setup/key", [key])
            task_status.started()
            async for batch in control_batches(self.mailbox, self.coordinator, "req"):
                for req in batch:
                    with malformed(self.name, "dealer request", req):
                        op = int(req["op"])
                        shapes = [tuple(int(n) for n in s) for s in req["s"]]
                        if any(n < 0 for s in shapes for n in s):
                            raise ValueError(f"negative size in {shapes}")
                        specs = dealer_specs(
                            str(req["k"]), shapes, int(req["d"]), len(self.parties)
                        )
                    for spec in specs:
                        messages = dealer_messages(spec, self.prgs, op, self.own_prg)
                        for party, tensors in zip(self.parties, messages, strict=True):
                            if tensors:
                                self._send(party, f"{op}/{spec.step()}", tensors)
