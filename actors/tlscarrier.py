"""The TLS carrier: one local actor's links to its peers over TCP with mutual TLS.

:class:`TlsCarrier` carries frames for ONE actor (its endpoint is the only one in
``endpoints``): :meth:`~TlsCarrier.carry` queues a frame for the peer's writer task; a
reader task per peer reads records and hands frames to the endpoint with the sender taken
from the peer's certificate (never from the frame); ``before_send``, ``capacity``,
``observers`` and chaos behave as in the in-memory network (:class:`Middleware`), and
heartbeats are frames like any other. The other record kinds go to :meth:`_control`,
which :class:`actors.tls.TlsTransport` implements (sessions, readiness, meters).

**Links.** One TLS 1.3 connection per unordered pair: a node dials every node after it in
the cluster file, the coordinator dials every node. Both ends present a certificate of the
cluster CA (:mod:`actors.certs`); the dialler checks that the certificate names the actor
it dialled, the acceptor that the name is an actor allowed to dial it and not already
connected (at most :data:`MAX_HANDSHAKES` handshakes at once). Records are framed by
:mod:`actors.tlslink`.

**Failures.** End of stream or a reset without a goodbye is reported at once as
:class:`PartyFailure` naming the peer (no waiting for the heartbeat bound); a peer that
stops reading is named once :data:`MAX_QUEUED_BYTES` are queued for it.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Callable
from functools import partial

import trio

from protocols.errors import PartyFailure, ProtocolError

from .actor import first_error
from .config import ClusterConfig
from .endpoint import Endpoint
from .log import get_logger
from .mailbox import Mailbox
from .network import Middleware
from .tlslink import (
    ACCEPT,
    BYE,
    FAIL,
    FRAME,
    PeerAuthError,
    Records,
    check_own_certificate,
    peer_name,
    record,
    ssl_context,
)

HANDSHAKE_SECONDS = 10.0
MAX_HANDSHAKES = 16
"""Connections in their TLS handshake at once; more are closed at once, unread."""
MAX_QUEUED_BYTES = 2 << 30
"""Default budget of bytes queued for one peer: a peer that stops reading is named, not
buffered for without limit."""
LOGGED_REFUSALS = 5
"""Refused connections logged one by one; after that one line per 100."""


class TlsCarrier(Middleware):
    """The TLS links of one actor (see the module doc); control records go to
    :meth:`_control`, which a subclass implements."""

    def __init__(
        self, endpoint: Endpoint, config: ClusterConfig, *, connect_timeout: float = 60.0
    ) -> None:
        name = endpoint.name
        self.name = name
        self.config = config
        self.endpoint = endpoint
        self.endpoints = {name: endpoint}
        super().__init__()
        self.connect_timeout = connect_timeout
        self.dials = config.dials(name)
        self.accepts = [] if name == config.coordinator else config.accepts(name)
        self.peers = [*self.accepts, *self.dials]
        self._out = {p: trio.open_memory_channel[bytes](math.inf) for p in self.peers}
        self._queued: dict[str, int] = {}
        self.max_queued_bytes = MAX_QUEUED_BYTES
        """Bytes queued for one peer and not yet written (then: PartyFailure naming it)."""
        self._streams: dict[str, trio.SSLStream[trio.SocketStream]] = {}
        self._up = {p: trio.Event() for p in self.peers}
        self._byes: set[str] = set()
        self.closing = False
        self.failure: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        """If set, a lost peer or a reported failure is passed here; else the reader raises."""
        self._nursery: trio.Nursery | None = None
        self.bye_event = trio.Event()
        """Set when the coordinator says goodbye (node side)."""
        self._log = get_logger(actor=name)
        self._server_ctx = ssl_context(config, name, server=True)
        self._client_ctx = ssl_context(config, name, server=False)
        check_own_certificate(config, name)
        self._handshakes = trio.CapacityLimiter(MAX_HANDSHAKES)
        self.refused = 0
        """Incoming connections refused so far (logged one by one only at first)."""

    def _control(self, peer: str, kind: int, body: bytes) -> None:
        """A record that is neither a frame nor a goodbye."""
        raise ProtocolError(f"{self.name}: unknown record kind {kind} from {peer}")

    def _wake(self) -> None:
        """Called once on the first failure: wake whatever waits on the peers."""

    # -- the Network interface ------------------------------------------------------------
    @property
    def mailboxes(self) -> dict[str, Mailbox]:
        return {self.name: self.endpoint.mailbox}

    def carry(self, sender: str, receiver: str, frame: bytearray) -> None:
        if sender != self.name:
            raise ProtocolError(f"{self.name}'s transport cannot send as {sender!r}")
        if receiver not in self._out:
            raise ProtocolError(f"no link from {sender!r} to {receiver!r}")
        delay = self.chaos_delay() if self._nursery is not None else None
        if delay is not None and self._nursery is not None:
            self._nursery.start_soon(self._send_later, delay, receiver, frame)
            return
        self._send(receiver, FRAME, frame)

    async def _send_later(self, delay: float, receiver: str, frame: bytearray) -> None:
        await trio.sleep(delay)
        self._send(receiver, FRAME, frame)

    def _send(self, receiver: str, kind: int, body: bytes | bytearray) -> None:
        rec = record(kind, body)
        queued = self._queued[receiver] = self._queued.get(receiver, 0) + len(rec)
        if queued > self.max_queued_bytes and not self.closing:
            self._queued[receiver] -= len(rec)
            self._fail(
                PartyFailure(
                    receiver,
                    ProtocolError(
                        f"{self.name} has {queued} bytes queued for {receiver}, over its budget "
                        f"of {self.max_queued_bytes}: {receiver} is not reading"
                    ),
                )
            )
            return
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._out[receiver][0].send_nowait(rec)

    # -- running ---------------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen (nodes), dial, and serve every link until cancelled; started once every
        peer this actor dials is connected."""
        try:
            await self._run(task_status)
        except BaseExceptionGroup as group:
            raise first_error(group) from None

    async def _run(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            me = self.config.actors[self.name]
            if self.name != self.config.coordinator:
                serve = partial(trio.serve_tcp, host=me.listen or me.host)
                await nursery.start(serve, self._accept, me.port)
            for peer in self.dials:
                nursery.start_soon(self._dial, peer)
            for peer in self.dials:
                await self._up[peer].wait()
            task_status.started()
            await trio.sleep_forever()

    def start_heartbeats(self, peers: list[str] | None = None) -> None:
        assert self._nursery is not None
        self._nursery.start_soon(self.endpoint.run_heartbeats, peers or self.peers)

    async def wait_connected(self, seconds: float) -> None:
        """Wait until every peer link is up (nodes: those that dial us, too)."""
        with trio.move_on_after(seconds):
            for ev in self._up.values():
                await ev.wait()
            return
        missing = [p for p, ev in self._up.items() if not ev.is_set()]
        raise PartyFailure(
            missing[0], ConnectionError(f"{self.name}: no connection from {missing}")
        )

    async def _dial(self, peer: str) -> None:
        addr = self.config.actors[peer]
        deadline = trio.current_time() + self.connect_timeout
        while True:
            try:
                tcp = await trio.open_tcp_stream(addr.host, addr.port)
                break
            except OSError as exc:
                if trio.current_time() > deadline:
                    raise PartyFailure(
                        peer,
                        ConnectionError(f"cannot reach {peer} at {addr.host}:{addr.port}: {exc}"),
                    ) from None
                await trio.sleep(0.05)
        stream = trio.SSLStream(tcp, self._client_ctx, server_hostname=peer)
        records = Records(stream)
        try:
            with trio.fail_after(HANDSHAKE_SECONDS):
                await stream.do_handshake()
                name = peer_name(stream)
                if name != peer:
                    raise PeerAuthError(
                        f"{addr.host}:{addr.port} presented a certificate for {name!r}, "
                        f"expected {peer!r}"
                    )
                first = await records.next()
            if first is None or first[0] != ACCEPT:
                why = first[1].decode(errors="replace") if first and first[0] == FAIL else ""
                raise PeerAuthError(f"{peer} did not accept {self.name}'s connection {why}".strip())
        except (trio.BrokenResourceError, ssl.SSLError, trio.TooSlowError) as exc:
            await trio.aclose_forcefully(stream)
            raise PeerAuthError(
                f"TLS with {peer} at {addr.host}:{addr.port} failed: {exc!r}"
            ) from None
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        await self._serve_link(peer, stream, records)

    def _note_refusal(self, reason: str) -> None:
        self.refused += 1
        n = self.refused
        if n <= LOGGED_REFUSALS or n % 100 == 0:
            self._log.warning("connection_refused", reason=reason, refused_so_far=n)

    async def _accept(self, tcp: trio.SocketStream) -> None:
        try:
            self._handshakes.acquire_nowait()
        except trio.WouldBlock:
            self._note_refusal(f"more than {MAX_HANDSHAKES} handshakes at once")
            await trio.aclose_forcefully(tcp)
            return
        try:
            stream = await self._handshake(tcp)
        finally:
            self._handshakes.release()
        if stream is not None:
            await self._serve_link(*stream)

    async def _handshake(
        self, tcp: trio.SocketStream
    ) -> tuple[str, trio.SSLStream[trio.SocketStream], Records] | None:
        stream = trio.SSLStream(tcp, self._server_ctx, server_side=True)
        try:
            with trio.fail_after(HANDSHAKE_SECONDS):
                await stream.do_handshake()
                peer = peer_name(stream)
                if peer not in self.accepts:
                    raise PeerAuthError(f"{peer!r} may not connect to {self.name}")
                if peer in self._streams or self._up[peer].is_set():
                    raise PeerAuthError(f"{peer!r} is already connected to {self.name}")
        except (trio.BrokenResourceError, ssl.SSLError, trio.TooSlowError, PeerAuthError) as exc:
            self._note_refusal(repr(exc))
            if isinstance(exc, PeerAuthError):
                with trio.move_on_after(1):
                    with contextlib.suppress(trio.BrokenResourceError):
                        await stream.send_all(record(FAIL, str(exc).encode()))
            await trio.aclose_forcefully(stream)
            return None
        await stream.send_all(record(ACCEPT, b""))
        return peer, stream, Records(stream)

    async def _serve_link(
        self, peer: str, stream: trio.SSLStream[trio.SocketStream], records: Records
    ) -> None:
        self._streams[peer] = stream
        self._up[peer].set()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, peer, stream)
                await self._reader(peer, records)
                nursery.cancel_scope.cancel()
        finally:
            self._streams.pop(peer, None)
            await trio.aclose_forcefully(stream)

    async def _writer(self, peer: str, stream: trio.SSLStream[trio.SocketStream]) -> None:
        recv = self._out[peer][1]
        try:
            async for first in recv:
                chunks = [first]
                size = len(first)
                while size < 1 << 20:
                    try:
                        item = recv.receive_nowait()
                    except trio.WouldBlock:
                        break
                    chunks.append(item)
                    size += len(item)
                await stream.send_all(b"".join(chunks) if len(chunks) > 1 else first)
                self._queued[peer] -= size
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            self._lost(peer, f"sending failed: {exc!r}")

    async def flush_writers(self, seconds: float = 1.0) -> None:
        """Wait (at most ``seconds``) until every queued record has been written."""
        with trio.move_on_after(seconds):
            while any(
                ch[0].statistics().current_buffer_used and p in self._streams
                for p, ch in self._out.items()
            ):
                await trio.sleep(0.005)
            await trio.sleep(0.01)

    async def _reader(self, peer: str, records: Records) -> None:
        while True:
            try:
                item = await records.next()
            except (trio.BrokenResourceError, trio.ClosedResourceError, ProtocolError) as exc:
                if peer not in self._byes:  # after a goodbye, an abrupt end is no failure
                    self._lost(peer, repr(exc))
                return
            if item is None:
                if peer not in self._byes:
                    self._lost(peer, "connection closed")
                return
            kind, body = item
            if kind == FRAME:
                self._deliver(peer, body)
            elif kind == BYE:
                self._byes.add(peer)
                if peer == self.config.coordinator:
                    self.bye_event.set()
                elif self.name == self.config.coordinator and not self.closing:
                    self._lost(peer, "it left the session")
            else:
                self._control(peer, kind, body)

    def _lost(self, peer: str, why: str) -> None:
        if self.closing:
            return
        err = PartyFailure(peer, ConnectionError(f"{self.name} lost its link to {peer}: {why}"))
        self._fail(err)

    def _fail(self, err: BaseException) -> None:
        if self.failure is not None or self.closing:
            return
        self.failure = err
        self._wake()
        if self.on_failure is not None:
            self.on_failure(err)
        else:
            raise err

    def _deliver(self, peer: str, frame: bytes) -> None:
        self.deliver_frame(self.endpoint, peer, frame)

    async def close(self, seconds: float = 1.0) -> None:
        """Say goodbye to every peer, let the writers drain (bounded), stop reporting."""
        self.closing = True
        for p in self.peers:
            if p in self._streams:
                self._send(p, BYE, b"")
        await self.flush_writers(seconds)
