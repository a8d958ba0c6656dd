"""One actor's end of the transport: frames out, envelopes in, its own meter, liveness.

An :class:`Endpoint` packs what its actor sends into frames (:mod:`actors.wire`), meters
them (each actor meters what it sends and receives; the coordinator combines the meters)
and hands them to the transport (:class:`Transport`: the in-memory
:class:`actors.network.Network` or :class:`actors.tls.TlsTransport`), which delivers
frames to the receiver's endpoint; that one unpacks them with the sender *the link* vouches
for and files them in its :class:`actors.mailbox.Mailbox`.

Liveness: every endpoint sends each peer a small heartbeat (metered apart) every quarter
of the timeout, carrying whether its actor is busy and whom it is blocked on. A wait that
runs past its bound blames the awaited peer only if that peer really stopped: nothing at
all heard from it (not even a heartbeat), or it is idle, or every actor it waits on is
stuck too, or it closes a cycle of waits that have each lasted a whole bound; a peer that
is computing, or waiting on one that is, gets more time. No endpoint ever reads another
actor's mailbox: what it knows of a peer is what the peer's heartbeats said.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from itertools import pairwise
from typing import Protocol

import msgspec
import torch
import trio

from protocols.errors import ProtocolError

from .envelope import Envelope, Phase
from .mailbox import Mailbox
from .messages import Heartbeat
from .stats import ActorStats, Meter
from .wire import hand_over, pack_frame

_HB_DEC = msgspec.msgpack.Decoder(Heartbeat)
_HB_ENC = msgspec.msgpack.Encoder()


Observer = Callable[[Envelope], Envelope | None]
"""Middleware: sees each envelope before delivery; returns it (maybe changed) or None."""


class Carrier(Protocol):
    """What moves frames: the one part a transport implements itself (a few members, as
    trio's ``abc.Stream``). ``carry`` queues one frame on the link ``sender -> receiver``
    without blocking (ProtocolError for a link it does not have); the frame reaches the
    receiver's endpoint, through ``Middleware.deliver_frame``, with the sender the link
    vouches for, intact and in order per link. ``run`` serves the links until cancelled.
    :func:`actors.testing.check_carrier` is the conformance kit both transports pass."""

    endpoints: dict[str, Endpoint]

    def carry(self, sender: str, receiver: str, frame: bytearray) -> None: ...

    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None: ...


class Metered(Protocol):
    """The meters a transport gathers for the coordinator (every actor's, after a barrier)."""

    def actor_stats(self) -> dict[str, ActorStats]: ...

    async def settle(self) -> None: ...

    def track_ops(self) -> None: ...

    def take_ops(self) -> list[dict[int, list[int]]]: ...


class Transport(Carrier, Metered, Protocol):
    """What endpoints and the coordinator need of a transport: a carrier, its meters, and
    the middleware around it (:class:`actors.network.Middleware`: observers, fault
    injection, flow control). Implemented by :class:`actors.network.Network` (every actor
    in memory) and :class:`actors.tls.TlsTransport` (one actor, TLS links)."""

    observers: list[Observer]
    hands_over: bool

    @property
    def mailboxes(self) -> dict[str, Mailbox]: ...

    def observe(self, observer: Observer) -> Callable[[], None]: ...

    def before_send(self, sender: str) -> None: ...

    async def capacity(self, sender: str, receiver: str) -> None: ...

    def immediate(self, sender: str, receiver: str) -> Endpoint | None: ...


class Endpoint:
    """One actor's end of the transport: frames out, envelopes in, its own meter."""

    def __init__(self, name: str, network: Transport, timeout: float) -> None:
        self.name = name
        self.network = network
        self.timeout = timeout
        self.mailbox = Mailbox(name, timeout)
        self.mailbox.judge = self._judge
        self.mailbox.stalled = self._note_stall
        self.meter = Meter(name)
        self.busy: Callable[[], int] = lambda: 0
        """Set by the actor: how many operations it is running."""
        self._heard: dict[str, float] = {}
        self._states: dict[str, Heartbeat] = {}
        self._state_at: dict[str, float] = {}
        """When each peer's last heartbeat arrived (a verdict needs states from during the
        wait: an older one may describe a wait that has long ended)."""
        self._stalled_at = -math.inf
        """When this process was last seen stalled (a long computation blocked its loop)."""

    # -- sending ---------------------------------------------------------------------------
    def send_nowait(
        self,
        receiver: str,
        tag: str,
        phase: Phase,
        depth: int = 0,
        *,
        tensors: Sequence[torch.Tensor] | None = None,
        control: bytes | None = None,
    ) -> int:
        """Frame, meter and hand over one message; returns its payload bytes. An in-memory
        transport without observers (``hands_over``) takes the envelope itself, with the
        frame's length (:func:`actors.wire.hand_over`); on a link with nothing on the way
        (:meth:`Network.immediate`) the envelope goes straight to the receiver's endpoint:
        the same meters and checks, without the carry and delay layers that are not there."""
        net = self.network
        to = net.immediate(self.name, receiver) if net.hands_over else None
        return self._send(to, receiver, tag, phase, depth, tensors, control)

    def _send(
        self,
        to: Endpoint | None,
        receiver: str,
        tag: str,
        phase: Phase,
        depth: int,
        tensors: Sequence[torch.Tensor] | None,
        control: bytes | None,
    ) -> int:
        net = self.network
        msg: bytearray | Envelope
        if net.hands_over and not net.observers:
            msg = hand_over(
                self.name, receiver, tag, phase, depth, tensors=tensors, control=control
            )
            payload, size = msg.payload_bytes, msg.frame_bytes
        else:
            msg, payload = pack_frame(tag, phase, depth, tensors=tensors, control=control)
            size = len(msg)
        if to is None and phase != Phase.HEARTBEAT:
            net.before_send(self.name)  # (an immediate link has no chaos to inject)
        self.meter.sent(phase, payload, size, depth, tag)
        if to is not None:
            to.receive(msg)  # type: ignore[arg-type]
        else:
            net.carry(self.name, receiver, msg)  # type: ignore[arg-type]
        return payload

    async def send(
        self,
        receiver: str,
        tag: str,
        phase: Phase,
        depth: int = 0,
        *,
        tensors: Sequence[torch.Tensor] | None = None,
        control: bytes | None = None,
    ) -> int:
        """As :meth:`send_nowait`, waiting while the link is full (back-pressure; an
        immediate link has no flow control to wait for, 3-4% of a seed step alternated in
        one process, and only checks for cancellation)."""
        net = self.network
        to = net.immediate(self.name, receiver) if net.hands_over else None
        if to is None:
            await net.capacity(self.name, receiver)
        else:
            await trio.lowlevel.checkpoint_if_cancelled()  # a send is a cancel point
        return self._send(to, receiver, tag, phase, depth, tensors, control)

    # -- receiving -------------------------------------------------------------------------
    def receive(self, env: Envelope) -> None:
        """Called by the transport with an envelope whose sender it vouches for."""
        self._heard[env.sender] = trio.current_time()
        if env.phase == Phase.HEARTBEAT:
            try:
                hb = _HB_DEC.decode(env.body)
            except msgspec.DecodeError:
                hb = None
            if hb is None or len(hb.waited) != len(hb.waiting):
                self.mailbox.fail(
                    ProtocolError(f"{self.name}: malformed heartbeat from {env.sender}")
                )
            else:
                self._states[env.sender] = hb
                self._state_at[env.sender] = trio.current_time()
            return
        self.meter.received(env.phase, env.payload_bytes, env.frame_bytes)
        self.mailbox.deliver(env)

    # -- liveness --------------------------------------------------------------------------
    def _note_stall(self) -> None:
        self._stalled_at = trio.current_time()

    def heartbeat(self) -> bytes:
        waiting, waited = self.mailbox.waits()
        return _HB_ENC.encode(Heartbeat(self.busy(), waiting, self.mailbox.stray_senders(), waited))

    async def run_heartbeats(self, peers: Sequence[str]) -> None:
        interval = self.timeout / 4
        while True:
            body = self.heartbeat()
            for p in peers:
                self.send_nowait(p, "hb", Phase.HEARTBEAT, control=body)
            due = trio.current_time() + interval
            await trio.sleep_until(due)
            if trio.current_time() - due > interval:
                # The loop was blocked (a long computation here or, in one process, in any
                # actor): silence measured across the stall proves nothing.
                self._note_stall()

    def _silent(self, peer: str, waited: float) -> bool:
        heard = self._heard.get(peer)
        now = trio.current_time()
        return (heard is None and waited >= self.timeout) or (
            heard is not None and now - heard > self.timeout
        )

    def _judge(self, sender: str, waited: float) -> tuple[str, ...] | None:
        """The wait chain to blame after waiting ``waited`` s for ``sender``, or None if
        ``sender`` (or whoever it waits for) is still working."""
        if trio.current_time() - self._stalled_at < self.timeout:
            return None
        return self._stuck([self.name, sender], trio.current_time() - waited, waited)

    def _stuck(self, chain: list[str], since: float, waited: float) -> tuple[str, ...] | None:
        """The chain to blame if ``chain[-1]`` cannot progress, else None. It cannot if it
        is silent, or idle, or *every* actor it waits on cannot (an actor blocked on two
        peers progresses through either), or a wait of it closes a cycle and has lasted a
        whole bound (younger cycles are the normal state of a multi-round exchange)."""
        peer = chain[-1]
        if self._silent(peer, waited):
            return tuple(chain)
        st = self._states.get(peer)
        if st is None or self._state_at.get(peer, -math.inf) < since:
            return None  # no state from during this wait yet: give it time
        if not st.waiting:
            return None if st.busy else tuple(chain)
        blame: tuple[str, ...] | None = None
        found: tuple[str, ...] | None
        for nxt, age in zip(st.waiting, st.waited, strict=True):
            if nxt == self.name or nxt in chain:
                if age < self.timeout:
                    return None
                found = self._cycle_blame(chain, nxt)
            else:
                found = self._stuck([*chain, nxt], since, waited)
                if found is None:
                    return None
            blame = blame or found
        return blame

    def _cycle_blame(self, chain: list[str], nxt: str) -> tuple[str, ...]:
        """Whom to blame for the old cycle that ``chain[-1]``'s wait on ``nxt`` closes."""
        cycle = [*chain[chain.index(nxt) :], nxt] if nxt in chain else [*chain, nxt]
        for waiter, awaited in pairwise(cycle):
            wst = self._states.get(waiter)
            if wst is not None and awaited in wst.stray:
                return (*chain[: chain.index(waiter) + 1], awaited)
        # No one in the cycle sent something unasked to its waiter: an actor outside it
        # that did (a message went to the wrong place) is to blame.
        for waiter in cycle[:-1]:
            wst = self._states.get(waiter)
            if wst is not None and wst.stray and waiter in chain:
                return (*chain[: chain.index(waiter) + 1], wst.stray[0])
        return tuple(chain)
