"""The TLS transport: one local actor's links to its peers over TCP with mutual TLS.

It has the duties of :class:`actors.network.Network` for ONE actor (its endpoint is the
only one in ``endpoints``): :meth:`carry` queues a frame for the peer's writer task; a
reader task per peer reads frames and hands them to the endpoint with the sender taken
from the peer's certificate (never from the frame); ``before_send``, ``capacity``,
``observers`` and chaos behave as in the in-memory network, and heartbeats are frames
like any other. Frames and meters are the same as in memory, so rounds and bytes are too.

**Links.** One TLS 1.3 connection per unordered pair: a node dials every node after it in
the cluster file, the coordinator dials every node. Both ends present a certificate of the
cluster CA (:mod:`actors.certs`); the dialler checks that the certificate names the actor
it dialled, the acceptor that the name is an actor allowed to dial it and not already
connected. On the stream each record is ``<IB`` (length, kind) and the bytes: kind 0 is a
frame; the others are the transport's own unmetered messages (acceptance, the session,
readiness, meter snapshots, failure reports, goodbye).

**Failures.** End of stream or a reset without a goodbye is reported at once as
:class:`PartyFailure` naming the peer (no waiting for the heartbeat bound); a node that
fails reports the actor to blame to the coordinator before it exits.
"""

from __future__ import annotations

import contextlib
import math
import ssl
from collections.abc import Callable, Mapping
from functools import partial

import msgspec
import trio

from protocols.errors import PartyFailure, ProtocolError

from .actor import first_error
from .config import ClusterConfig
from .endpoint import Endpoint
from .log import get_logger
from .mailbox import Mailbox, Roles
from .messages import Failure, MeterReport, Ready, Session
from .network import Middleware
from .stats import ActorStats
from .tlslink import (
    ACCEPT,
    BYE,
    COORDINATOR_ONLY,
    FAIL,
    FRAME,
    HELLO,
    NODE_ONLY,
    READY,
    STATS,
    STATS_REQ,
    TRACK,
    PeerAuthError,
    Records,
    RemoteError,
    SessionRefused,
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

_ENC = msgspec.msgpack.Encoder()


class TlsTransport(Middleware):
    """The TLS links of one actor (see the module doc)."""

    def __init__(
        self,
        name: str,
        config: ClusterConfig,
        *,
        timeout: float,
        roles: Roles | None = None,
        connect_timeout: float = 60.0,
    ) -> None:
        if name not in config.actors:
            raise ValueError(f"{name!r} is not an actor of the cluster file")
        self.name = name
        self.config = config
        self.endpoint = Endpoint(name, self, timeout)
        self.endpoints = {name: self.endpoint}
        if roles is not None:
            self.endpoint.mailbox.roles = roles
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
        self._log = get_logger(actor=name)
        # node side
        self.session: Session | None = None
        self.session_event = trio.Event()
        self.bye_event = trio.Event()
        self.catalog: dict[str, list[int]] = {}
        # coordinator side
        self.ready: dict[str, Ready] = {}
        self._ready_event = trio.Event()
        self._reports: dict[str, MeterReport] = {}
        self._report_event = trio.Event()
        self._pending_reports: set[str] = set()
        self._remote_ops: dict[int, list[int]] = {}
        self._remote: dict[str, ActorStats] = {}
        self._server_ctx = ssl_context(config, name, server=True)
        self._client_ctx = ssl_context(config, name, server=False)
        check_own_certificate(config, name)
        self._handshakes = trio.CapacityLimiter(MAX_HANDSHAKES)
        self.refused = 0
        """Incoming connections refused so far (logged one by one only at first)."""

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

    def actor_stats(self) -> dict[str, ActorStats]:
        """This actor's meter and the last snapshot of every remote one (see settle)."""
        return {**self._remote, self.name: self.endpoint.meter.snapshot()}

    async def settle(self) -> None:
        """Collect every node's meter (after a barrier: settled figures)."""
        nodes = [p for p in self.dials if p in self._streams]
        if self.name != self.config.coordinator or not nodes:
            return
        self._pending_reports = set(nodes)
        self._report_event = trio.Event()
        for p in nodes:
            self._send(p, STATS_REQ, b"")
        await self._report_event.wait()

    def track_ops(self) -> None:
        self.endpoint.meter.track_ops = True
        for p in self.dials:
            self._send(p, TRACK, b"")

    def take_ops(self) -> list[dict[int, list[int]]]:
        remote, self._remote_ops = self._remote_ops, {}
        return [self.endpoint.meter.take_ops(), remote]

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
        self._ready_event.set()
        self._report_event.set()
        if self.on_failure is not None:
            self.on_failure(err)
        else:
            raise err

    def _deliver(self, peer: str, frame: bytes) -> None:
        self.deliver_frame(self.endpoint, peer, frame)

    def _control(self, peer: str, kind: int, body: bytes) -> None:
        coordinator = self.config.coordinator
        try:
            if kind in COORDINATOR_ONLY and peer != coordinator:
                raise ProtocolError(f"{self.name}: only {coordinator} may send record kind {kind}")
            if kind in NODE_ONLY and self.name != coordinator:
                raise ProtocolError(
                    f"{self.name}: record kind {kind} from {peer} is for {coordinator}"
                )
            if kind == HELLO:
                if self.session is not None:
                    raise ProtocolError(f"{self.name}: a second session from {peer}")
                self.session = msgspec.msgpack.decode(body, type=Session)
                self.session_event.set()
            elif kind == READY:
                self.ready[peer] = msgspec.msgpack.decode(body, type=Ready)
                if set(self.ready) >= set(self.dials):
                    self._ready_event.set()
            elif kind == STATS_REQ:
                m = self.endpoint.meter
                snap = m.snapshot()
                rep = MeterReport(
                    {int(k): v for k, v in snap.sent.items()},
                    {int(k): v for k, v in snap.received.items()},
                    snap.messages_sent,
                    snap.messages_received,
                    snap.online_depth,
                    snap.header_bytes,
                    snap.heartbeat_bytes,
                    snap.online_messages,
                    m.take_ops() if m.track_ops else {},
                )
                self._send(peer, STATS, _ENC.encode(rep))
            elif kind == STATS:
                rep = msgspec.msgpack.decode(body, type=MeterReport)
                self._remote[peer] = rep.stats()
                for op, (on, off, depth) in rep.ops.items():
                    cur = self._remote_ops.setdefault(op, [0, 0, 0])
                    cur[0] += on
                    cur[1] += off
                    cur[2] = max(cur[2], depth)
                self._pending_reports.discard(peer)
                if not self._pending_reports:
                    self._report_event.set()
            elif kind == TRACK:
                self.endpoint.meter.track_ops = True
            elif kind == FAIL:
                f = msgspec.msgpack.decode(body, type=Failure)
                self._fail(
                    PartyFailure(
                        f.actor, RemoteError(f"{f.kind}: {f.message} (reported by {peer})")
                    )
                )
            else:
                raise ProtocolError(f"{self.name}: unknown record kind {kind} from {peer}")
        except msgspec.DecodeError as exc:
            self.endpoint.mailbox.fail(
                ProtocolError(f"{self.name}: malformed record from {peer}: {exc}")
            )
        except ProtocolError as exc:
            self.endpoint.mailbox.fail(exc)
            self._fail(PartyFailure(peer, exc))

    # -- sessions ---------------------------------------------------------------------------
    async def open_session(self, session: Session) -> dict[str, Ready]:
        """Coordinator: send the session to every node and wait until all are ready."""
        seeded = session.seed is not None or session.seeded
        to_parties = _ENC.encode(msgspec.structs.replace(session, seed=None, seeded=seeded))
        to_provider = _ENC.encode(msgspec.structs.replace(session, seeded=seeded))
        for p in self.dials:
            self._send(p, HELLO, to_provider if p == self.config.provider else to_parties)
        await self._ready_event.wait()
        if self.failure is not None:
            raise self.failure
        for p, r in self.ready.items():
            if r.session != session.id:
                raise PartyFailure(p, ProtocolError(f"{p} answered for session {r.session!r}"))
        for p, r in self.ready.items():
            if r.refused is not None:
                raise SessionRefused(p, r.refused)
        return dict(self.ready)

    def send_ready(self, catalog: Mapping[str, list[int]], refused: str | None = None) -> None:
        assert self.session is not None
        ready = Ready(self.session.id, dict(catalog), refused)
        self._send(self.config.coordinator, READY, _ENC.encode(ready))

    def report_failure(self, actor: str, exc: BaseException) -> None:
        body = _ENC.encode(Failure(actor, type(exc).__name__, str(exc)))
        for p in self.peers:
            if p in self._streams:
                self._send(p, FAIL, body)

    async def close(self, seconds: float = 1.0) -> None:
        """Say goodbye to every peer, let the writers drain (bounded), stop reporting."""
        self.closing = True
        for p in self.peers:
            if p in self._streams:
                self._send(p, BYE, b"")
        await self.flush_writers(seconds)
