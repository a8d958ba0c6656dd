"""The TLS transport: :class:`actors.tlscarrier.TlsCarrier` plus the session between processes.

The links carry frames exactly as the in-memory network does (same frames and meters, so
rounds and bytes are too); this module adds the transport's own unmetered records, one
handler per kind (:meth:`TlsTransport._control`): the coordinator sends the session
(``HELLO``) and asks for meter snapshots (``STATS_REQ``, op tracking ``TRACK``); nodes
answer ``READY`` (their catalog, or why they refused the session) and ``STATS`` (a
:class:`~actors.messages.MeterReport`); anyone reports a failure (``FAIL``) naming the
actor to blame, so a node that fails tells the coordinator before it exits. Which side may
send which kind is checked before the handler runs (``COORDINATOR_ONLY``, ``NODE_ONLY``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec
import trio

from protocols.errors import PartyFailure, ProtocolError

from .config import ClusterConfig
from .endpoint import Endpoint
from .mailbox import Roles
from .messages import Failure, MeterReport, Ready, Session
from .stats import ActorStats
from .tlscarrier import TlsCarrier
from .tlslink import (
    COORDINATOR_ONLY,
    FAIL,
    HELLO,
    NODE_ONLY,
    READY,
    STATS,
    STATS_REQ,
    TRACK,
    PeerAuthError,
    RemoteError,
    SessionRefused,
)

__all__ = ["HELLO", "PeerAuthError", "SessionRefused", "TlsTransport"]

_ENC = msgspec.msgpack.Encoder()


class TlsTransport(TlsCarrier):
    """The TLS links of one actor and its side of the session (see the module doc)."""

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
        endpoint = Endpoint(name, self, timeout)
        if roles is not None:
            endpoint.mailbox.roles = roles
        super().__init__(endpoint, config, connect_timeout=connect_timeout)
        # node side
        self.session: Session | None = None
        self.session_event = trio.Event()
        self.catalog: dict[str, list[int]] = {}
        # coordinator side
        self.ready: dict[str, Ready] = {}
        self._ready_event = trio.Event()
        self._reports: dict[str, MeterReport] = {}
        self._report_event = trio.Event()
        self._pending_reports: set[str] = set()
        self._remote_ops: dict[int, list[int]] = {}
        self._remote: dict[str, ActorStats] = {}
        self._handlers: dict[int, Callable[[str, bytes], None]] = {
            HELLO: self._on_hello,
            READY: self._on_ready,
            STATS_REQ: self._on_stats_request,
            STATS: self._on_stats,
            TRACK: self._on_track,
            FAIL: self._on_fail,
        }

    def _wake(self) -> None:
        self._ready_event.set()
        self._report_event.set()

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

    # -- control records -----------------------------------------------------------------
    def _control(self, peer: str, kind: int, body: bytes) -> None:
        coordinator = self.config.coordinator
        try:
            if kind in COORDINATOR_ONLY and peer != coordinator:
                raise ProtocolError(f"{self.name}: only {coordinator} may send record kind {kind}")
            if kind in NODE_ONLY and self.name != coordinator:
                raise ProtocolError(
                    f"{self.name}: record kind {kind} from {peer} is for {coordinator}"
                )
            handler = self._handlers.get(kind)
            if handler is None:
                raise ProtocolError(f"{self.name}: unknown record kind {kind} from {peer}")
            handler(peer, body)
        except msgspec.DecodeError as exc:
            self.endpoint.mailbox.fail(
                ProtocolError(f"{self.name}: malformed record from {peer}: {exc}")
            )
        except ProtocolError as exc:
            self.endpoint.mailbox.fail(exc)
            self._fail(PartyFailure(peer, exc))

    def _on_hello(self, peer: str, body: bytes) -> None:
        if self.session is not None:
            raise ProtocolError(f"{self.name}: a second session from {peer}")
        self.session = msgspec.msgpack.decode(body, type=Session)
        self.session_event.set()

    def _on_ready(self, peer: str, body: bytes) -> None:
        self.ready[peer] = msgspec.msgpack.decode(body, type=Ready)
        if set(self.ready) >= set(self.dials):
            self._ready_event.set()

    def _on_stats_request(self, peer: str, body: bytes) -> None:
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

    def _on_stats(self, peer: str, body: bytes) -> None:
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

    def _on_track(self, peer: str, body: bytes) -> None:
        self.endpoint.meter.track_ops = True

    def _on_fail(self, peer: str, body: bytes) -> None:
        f = msgspec.msgpack.decode(body, type=Failure)
        self._fail(
            PartyFailure(f.actor, RemoteError(f"{f.kind}: {f.message} (reported by {peer})"))
        )

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
