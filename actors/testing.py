"""Testing kit for transports (as ``trio.testing.check_two_way_stream`` is for streams).

:func:`check_carrier` checks what every :class:`actors.endpoint.Carrier` must do, given a
factory that opens two actors' ends (``a`` and ``b``) of a running transport: the in-memory
:class:`actors.network.Network` holds both ends; two :class:`actors.tls.TlsTransport`
hold one each. A new transport passes it before anything else is built on it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import torch
import trio

from protocols.errors import ProtocolError

from .endpoint import Carrier, Endpoint
from .envelope import Envelope, Phase

Ends = tuple[Carrier, Endpoint, Carrier, Endpoint]
"""``a``'s carrier and endpoint, ``b``'s carrier and endpoint (the same carrier twice for a
transport that holds every actor)."""


async def check_carrier(
    open_ends: Callable[[], AbstractAsyncContextManager[Ends]], patience: float = 10.0
) -> None:
    """Raise AssertionError unless the carrier delivers frames intact, in order per link,
    with the link's sender, both ways; refuses a link it does not have; and turns a
    malformed frame into a failed mailbox, not a crash. ``patience``: how long a frame may
    take to arrive."""
    try:
        async with open_ends() as (ca, ea, cb, eb):
            await _in_order_intact(ea, eb, patience)
            await _in_order_intact(eb, ea, patience)
            _refuses_unknown_link(ca, ea.name)
            _refuses_unknown_link(cb, eb.name)
            await _malformed_frame_fails_the_mailbox(ca, ea, eb)
    except BaseExceptionGroup as group:  # the factory's nursery wraps what failed
        failed = group.subgroup(AssertionError)
        if failed is None:
            raise
        first: BaseException = failed
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None


async def _recv(dst: Endpoint, sender: str, tag: str, patience: float) -> Envelope:
    with trio.move_on_after(patience):
        return await dst.mailbox.recv(sender, tag, timeout=None)
    raise AssertionError(f"{tag!r} from {sender} did not reach {dst.name} in {patience} s")


async def _in_order_intact(src: Endpoint, dst: Endpoint, patience: float) -> None:
    sizes = [0, 1, 7, 1000, 1 << 17, 3]
    sent = []
    for i, n in enumerate(sizes):
        t = torch.randint(-(2**62), 2**62, (n,), dtype=torch.int64)
        bits = torch.rand(n + 5) < 0.5
        src.send_nowait(dst.name, f"{i}/x", Phase.ONLINE, i, tensors=[t, bits])
        sent.append((t, bits))
    for i, (t, bits) in enumerate(sent):
        env = await _recv(dst, src.name, f"{i}/x", patience)
        assert env.sender == src.name, (env.sender, src.name)
        assert env.depth == i
        got = env.tensors()
        assert torch.equal(got[0], t) and torch.equal(got[1], bits), f"frame {i} changed"
    # order per link: a later frame never overtakes an earlier one on the same link
    arrivals: list[str] = []
    observer = dst.mailbox  # record the order in which frames are filed
    filed = observer.deliver

    def deliver(env: Envelope) -> None:
        arrivals.append(env.tag)
        filed(env)

    observer.deliver = deliver  # type: ignore[method-assign]
    try:
        for i in range(20):
            tensor = torch.zeros(1 + 1000 * (i % 2), dtype=torch.int64)
            src.send_nowait(dst.name, f"{100 + i}/y", Phase.ONLINE, tensors=[tensor])
        for i in range(20):
            await _recv(dst, src.name, f"{100 + i}/y", patience)
    finally:
        observer.deliver = filed  # type: ignore[method-assign]
    assert arrivals == [f"{100 + i}/y" for i in range(20)], "frames overtook each other"


def _refuses_unknown_link(carrier: Carrier, sender: str) -> None:
    try:
        carrier.carry(sender, "nobody-at-all", bytearray(b"x"))
    except ProtocolError:
        return
    raise AssertionError("a frame for a link the carrier does not have was accepted")


async def _malformed_frame_fails_the_mailbox(ca: Carrier, ea: Endpoint, eb: Endpoint) -> None:
    ca.carry(ea.name, eb.name, bytearray(b"\x00" * 7))  # shorter than any header
    try:
        with trio.fail_after(10):
            await eb.mailbox.recv(ea.name, "999/never", timeout=None)
    except ProtocolError:
        return
    raise AssertionError("a malformed frame did not fail the receiver's mailbox")
