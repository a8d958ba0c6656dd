"""The pieces of a TLS link: the actor's SSL contexts and its own-certificate check, the
record framing on the stream (``<IB`` length and kind, then the bytes), the record kinds,
the peer's name from its certificate, and the link's errors."""

from __future__ import annotations

import ssl
import struct

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.oid import NameOID

from protocols.errors import ProtocolError, SmpcError

from .config import ClusterConfig, ConfigError

PREFIX = struct.Struct("<IB")
MAX_RECORD = 1 << 28
FRAME, ACCEPT, HELLO, READY, STATS_REQ, STATS, TRACK, FAIL, BYE = range(9)
NODE_ONLY = {READY, STATS}
COORDINATOR_ONLY = {HELLO, STATS_REQ, TRACK}


class PeerAuthError(ProtocolError):
    """A TLS peer is not who it must be: its certificate is not from the cluster CA, names
    another actor than the one dialled, names an actor that may not connect here, or the
    peer refused our certificate."""


class RemoteError(SmpcError):
    """A failure reported by another process (its type and message)."""


class SessionRefused(SmpcError):
    """A node refused the coordinator's session (e.g. a seeded session the node was not
    started to accept); the message names the node and why. Nothing was computed."""

    def __init__(self, actor: str, reason: str) -> None:
        super().__init__(f"{actor} refused the session: {reason}")
        self.actor = actor
        self.reason = reason


def peer_name(stream: trio.SSLStream[trio.SocketStream]) -> str:
    cert = stream.getpeercert()
    if not cert:
        raise PeerAuthError("the peer presented no certificate")
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise PeerAuthError("the peer's certificate has no common name")


class Records:
    """Length-prefixed records from a byte stream."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buf = bytearray()

    async def next(self) -> tuple[int, bytes] | None:
        while True:
            if len(self.buf) >= PREFIX.size:
                size, kind = PREFIX.unpack_from(self.buf, 0)
                if size > MAX_RECORD:
                    raise ProtocolError(f"record of {size} bytes is larger than {MAX_RECORD}")
                end = PREFIX.size + size
                if len(self.buf) >= end:
                    body = bytes(self.buf[PREFIX.size : end])
                    del self.buf[:end]
                    return kind, body
            chunk = await self.stream.receive_some(1 << 16)
            if not chunk:
                if self.buf:
                    raise ProtocolError("the stream ended inside a record")
                return None
            self.buf += chunk


def record(kind: int, body: bytes | bytearray) -> bytes:
    return PREFIX.pack(len(body), kind) + body


def ssl_context(config: ClusterConfig, name: str, server: bool) -> ssl.SSLContext:
    """The TLS 1.3 context of actor ``name`` (CA and own key pair), with file errors that
    name the file."""
    me = config.actors[name]
    for what, path in (("the CA certificate", config.ca), ("certificate", me.cert)):
        if not path.is_file():
            raise ConfigError(f"{name}: {what} {path} does not exist")
    if not me.key.is_file():
        raise ConfigError(f"{name}: key {me.key} does not exist")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # the actor name in the certificate is checked instead
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=str(config.ca))
    except ssl.SSLError as exc:
        raise ConfigError(f"{name}: {config.ca} is not a CA certificate: {exc}") from None
    try:
        ctx.load_cert_chain(str(me.cert), str(me.key))
    except ssl.SSLError as exc:
        raise ConfigError(
            f"{name}: key {me.key} does not match certificate {me.cert} "
            f"(or one of them is not PEM): {exc}"
        ) from None
    return ctx


def check_own_certificate(config: ClusterConfig, name: str) -> None:
    """The certificate this actor presents must name it and come from the cluster CA
    (else every peer would refuse it, with a less clear message)."""
    me = config.actors[name]
    try:
        cert = x509.load_pem_x509_certificate(me.cert.read_bytes())
        ca = x509.load_pem_x509_certificate(config.ca.read_bytes())
    except ValueError as exc:
        raise ConfigError(f"{name}: {me.cert} or {config.ca}: {exc}") from None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if [n.value for n in names] != [name]:
        raise ConfigError(
            f"{name}: certificate {me.cert} names {[n.value for n in names]}, not {name!r}"
        )
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise ConfigError(
            f"{name}: certificate {me.cert} is not signed by the cluster CA {config.ca}"
        ) from None
