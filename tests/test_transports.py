"""Both transports pass the carrier conformance kit (actors.testing.check_carrier), and the
kit is evidence: a carrier that reorders frames or reports the wrong sender fails it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from actors.config import load_config, write_local_config
from actors.network import Network
from actors.testing import Ends, check_carrier
from actors.tls import TlsTransport


def _memory(network: type[Network] = Network):  # type: ignore[no-untyped-def]
    @asynccontextmanager
    async def open_ends() -> AsyncIterator[Ends]:
        net = network(["alice", "bob"], timeout=5)
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            yield net, net.endpoints["alice"], net, net.endpoints["bob"]
            nursery.cancel_scope.cancel()

    return open_ends


async def test_in_memory_network_conforms() -> None:
    await check_carrier(_memory())


async def test_tls_transport_conforms(tmp_path: Path) -> None:
    cfg = load_config(write_local_config(tmp_path, ["alice", "bob"]))

    @asynccontextmanager
    async def open_ends() -> AsyncIterator[Ends]:
        bob = TlsTransport("bob", cfg, timeout=5, connect_timeout=10)
        bob.dials = []
        alice = TlsTransport("alice", cfg, timeout=5, connect_timeout=10)
        alice.dials = ["bob"]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob.run)
            await nursery.start(alice.run)
            yield alice, alice.endpoint, bob, bob.endpoint
            nursery.cancel_scope.cancel()

    await check_carrier(open_ends)


class _Reordering(Network):
    """Delivers every third frame late: reorders within a link."""

    def carry(self, sender: str, receiver: str, frame: bytearray) -> None:
        self._n = getattr(self, "_n", 0) + 1
        if self._n % 3 == 0 and self._nursery is not None:
            self._nursery.start_soon(self._deliver_later, 0.01, sender, receiver, frame)
            return
        super().carry(sender, receiver, frame)


class _WrongSender(Network):
    """Vouches for the receiver as the sender (of frames: it takes no envelopes)."""

    hands_over = False

    def _deliver(self, sender: str, receiver: str, frame: bytearray) -> None:
        self.deliver_frame(self.endpoints[receiver], receiver, frame)


@pytest.mark.parametrize("leaky", [_Reordering, _WrongSender])
async def test_the_kit_rejects_a_broken_carrier(leaky: type[Network]) -> None:
    with pytest.raises(AssertionError):
        await check_carrier(_memory(leaky), patience=1.0)
