"""The in-memory network hands envelopes over instead of frames: the same tag, tensors and
meters as a frame would give, and copies the receiver owns."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import trio

from actors.envelope import Phase
from actors.network import Network
from actors.wire import hand_over, pack_frame, unpack_frame
from protocols.errors import ProtocolError

CASES = [
    ("7/x", [torch.arange(5, dtype=torch.int64), torch.tensor([True, False, True])]),
    ("007/step", [torch.zeros((2, 0, 3), dtype=torch.int64)]),
    ("cmd/012", [torch.arange(9, dtype=torch.uint8).reshape(3, 3).t()]),
    ("setup/key", [torch.tensor(3, dtype=torch.int64)]),
    ("12/x0", [torch.arange(2, dtype=torch.int64)]),  # a zero, not a leading one
    ("cmd/0", [torch.arange(2, dtype=torch.int64)]),
    ("0x/y", [torch.arange(2, dtype=torch.int64)]),  # a literal tag
    ("8/x", [torch.arange(2, dtype=torch.int64)]),  # step "x" again: its length is cached
]


@pytest.mark.parametrize(("tag", "tensors"), CASES)
def test_hand_over_is_what_the_frame_would_give(tag: str, tensors: list[torch.Tensor]) -> None:
    frame, payload = pack_frame(tag, Phase.ONLINE, 4, tensors=tensors)
    framed = unpack_frame(frame, "alice", "bob")
    env = hand_over("alice", "bob", tag, Phase.ONLINE, 4, tensors=tensors)
    assert (env.tag, env.depth, env.phase) == (framed.tag, framed.depth, framed.phase)
    assert (env.payload_bytes, env.frame_bytes) == (payload, len(frame))
    for a, b in zip(env.tensors(), framed.tensors(), strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        assert a.is_contiguous()
    assert env.framed().body == framed.body


def test_hand_over_of_a_control_body() -> None:
    frame, payload = pack_frame("cmd/3", Phase.CONTROL, 0, control=b"\x93\x01\x02\x03")
    env = hand_over("alice", "bob", "cmd/3", Phase.CONTROL, 0, control=b"\x93\x01\x02\x03")
    assert env.body == unpack_frame(frame, "alice", "bob").body
    assert (env.payload_bytes, env.frame_bytes) == (payload, len(frame))


def test_hand_over_checks_as_the_frame_does() -> None:
    with pytest.raises(ProtocolError, match="dtype"):
        hand_over("a", "b", "1/x", Phase.ONLINE, 0, tensors=[torch.zeros(2)])
    with pytest.raises(ProtocolError, match="255"):
        hand_over("a", "b", "1/" + "x" * 256, Phase.ONLINE, 0, tensors=[])
    with pytest.raises(ProtocolError, match="does not fit"):
        hand_over("a", "b", "1/x", Phase.ONLINE, 2**32, tensors=[])
    # the step's checks are cached, the op's and the depth's run every time
    hand_over("a", "b", "1/y", Phase.ONLINE, 0, tensors=[])
    with pytest.raises(ProtocolError, match="does not fit"):
        hand_over("a", "b", f"{2**64}/y", Phase.ONLINE, 0, tensors=[])
    with pytest.raises(ProtocolError, match="does not fit"):
        hand_over("a", "b", "1/y", Phase.ONLINE, -1, tensors=[])
    for _ in range(2):  # a refused step is never cached
        with pytest.raises(ProtocolError, match="255"):
            hand_over("a", "b", "2/" + "z" * 256, Phase.ONLINE, 0, tensors=[])


async def test_the_receiver_owns_what_it_gets() -> None:
    net = Network(["alice", "bob"], timeout=5, heartbeats=False)
    t = torch.arange(4, dtype=torch.int64)
    w = torch.ones(3, dtype=torch.int64, requires_grad=False)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        sent = net.endpoints["alice"].send_nowait("bob", "1/x", Phase.ONLINE, tensors=[t, w])
        t.add_(100)  # the sender goes on mutating its own tensor
        env = await net.endpoints["bob"].mailbox.recv("alice", "1/x")
        got = env.tensors()
        assert torch.equal(got[0], torch.arange(4)) and got[0].data_ptr() != t.data_ptr()
        assert env.payload_bytes == sent == 7 * 8
        nursery.cancel_scope.cancel()
    a, b = net.endpoints["alice"].meter.snapshot(), net.endpoints["bob"].meter.snapshot()
    assert a.sent[Phase.ONLINE] == b.received[Phase.ONLINE] == 56


async def test_observers_see_the_frame_body() -> None:
    net = Network(["alice", "bob"], timeout=5, heartbeats=False)
    seen = []
    net.observe(lambda env: seen.append(env) or env)
    t = torch.arange(3, dtype=torch.int64)
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        net.endpoints["alice"].send_nowait("bob", "1/x", Phase.ONLINE, tensors=[t])
        await net.endpoints["bob"].mailbox.recv("alice", "1/x")
        nursery.cancel_scope.cancel()
    frame, _ = pack_frame("1/x", Phase.ONLINE, 0, tensors=[t])
    assert seen[0].held is None and seen[0].body == unpack_frame(frame, "alice", "bob").body


class _Layered(Network):
    """A network that carries every message itself (a subclass overriding ``carry``), so no
    send takes the immediate path: the layered path, for comparison."""

    def carry(self, sender: str, receiver: str, frame: Any) -> None:
        super().carry(sender, receiver, frame)


async def test_an_immediate_send_is_the_layered_one() -> None:
    """``Endpoint.send`` and ``send_nowait`` hand a message on an immediate link (no
    observer, chaos or delay) straight to the receiver: the same envelope and meters as
    the path through the network's carry, which they take again as soon as an observer is
    on the network."""
    t = torch.arange(6, dtype=torch.int64).reshape(2, 3)
    results = []
    for path in ("send", "send_nowait", "layered send", "observed send"):
        net = (_Layered if path == "layered send" else Network)(
            ["alice", "bob"], timeout=5, heartbeats=False
        )
        seen: list[object] = []
        if path == "observed send":
            net.observe(lambda env, seen=seen: seen.append(env) or env)
        a, b = net.endpoints["alice"], net.endpoints["bob"]
        assert (net.immediate("alice", "bob") is b) == (path in ("send", "send_nowait"))
        async with trio.open_nursery() as nursery:
            await nursery.start(net.run)
            if path == "send_nowait":
                n = a.send_nowait("bob", "5/x", Phase.ONLINE, 3, tensors=[t])
            else:
                n = await a.send("bob", "5/x", Phase.ONLINE, 3, tensors=[t])
            env = await b.mailbox.recv("alice", "5/x")
            nursery.cancel_scope.cancel()
        assert len(seen) == (path == "observed send")
        results.append(
            (n, env.tag, env.depth, env.frame_bytes, a.meter.snapshot(), b.meter.snapshot())
        )
        assert torch.equal(env.tensors()[0], t)
    assert results[0] == results[1] == results[2] == results[3], results


async def test_an_immediate_send_is_a_cancel_point() -> None:
    """A send on an immediate link made after its task was cancelled raises Cancelled and
    sends nothing, as the layered path's flow-control checkpoint did."""
    net = Network(["alice", "bob"], timeout=5, heartbeats=False)
    a, b = net.endpoints["alice"], net.endpoints["bob"]
    assert net.immediate("alice", "bob") is b
    with trio.CancelScope() as cs:
        cs.cancel()
        await a.send("bob", "1/x", Phase.ONLINE, tensors=[torch.arange(2, dtype=torch.int64)])
        raise AssertionError("the send went on after the cancel")
    assert cs.cancelled_caught
    assert a.meter.snapshot().sent[Phase.ONLINE] == 0 == b.meter.snapshot().received[Phase.ONLINE]
    assert b.mailbox.unclaimed() == []


async def test_a_network_that_carries_its_own_way_sees_every_send() -> None:
    """A Network subclass overriding ``carry`` (a test's reordering or dropping link) is
    never bypassed by the immediate path: every ``send`` goes through its ``carry``."""
    carried: list[str] = []

    class Counting(Network):
        def carry(self, sender: str, receiver: str, frame: Any) -> None:
            carried.append(frame.tag)
            super().carry(sender, receiver, frame)

    net = Counting(["alice", "bob"], timeout=5, heartbeats=False)
    assert net.immediate("alice", "bob") is None
    async with trio.open_nursery() as nursery:
        await nursery.start(net.run)
        await net.endpoints["alice"].send(
            "bob", "3/x", Phase.ONLINE, tensors=[torch.ones(1, dtype=torch.int64)]
        )
        await net.endpoints["bob"].mailbox.recv("alice", "3/x")
        nursery.cancel_scope.cancel()
    assert carried == ["3/x"]
