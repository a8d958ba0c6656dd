"""The cache of public constants: a public operand (a max-pool's gather indices, a mask, a
constant) sent with its bytes once and afterwards by reference.

Training sends the same public tensors every step (the gathers of a max-pool, broadcast
constants of a loss): as bytes, they made the control traffic of a CNN step as large as
its online traffic. The coordinator keeps one :class:`PublicCache`, each party another;
both insert in command order and evict oldest-first at the same byte budget, so they hold
the same entries at every command without talking about it. A reference to an entry a
party does not hold is a ProtocolError naming it.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import msgspec

from protocols.errors import ProtocolError
from protocols.params import Params, Pub

MIN_BYTES = 256
"""Smaller public operands travel as bytes every time (a reference saves nothing)."""
CAPACITY = 1 << 30
"""Bytes of public constants each side keeps (oldest dropped first). A CNN step's gathers
are large: pytorch/examples' MNIST Net at batch 32 sends ~92 MB of them per party, so a
64 MB budget evicted them every step and resent them all (184 MB of control per step,
half the online bytes); 1 GiB, the same as a peer's mailbox budget, holds them."""


class PublicCache:
    """One side's cache (see the module doc)."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._entries: OrderedDict[int, Pub] = OrderedDict()
        self._by_digest: dict[bytes, int] = {}
        self._digests: dict[int, bytes] = {}
        self._bytes = 0
        self._next = 1

    def _insert(self, ref: int, pub: Pub, digest: bytes | None = None) -> None:
        """Store ``pub`` under ``ref``, dropping the oldest entries past the budget;
        ``digest``: its content key (the coordinator's side only looks up by content)."""
        self._entries[ref] = pub
        if digest is not None:
            self._by_digest[digest] = ref
            self._digests[ref] = digest
        self._bytes += len(pub.data)
        while self._bytes > self.capacity and len(self._entries) > 1:
            old, gone = self._entries.popitem(last=False)
            self._bytes -= len(gone.data)
            dropped = self._digests.pop(old, None)
            if dropped is not None:
                self._by_digest.pop(dropped, None)

    # -- the coordinator's side ---------------------------------------------------------------
    def outgoing(self, params: Params | None) -> Params | None:
        """``params`` as sent: a public operand seen before becomes a reference."""
        pub = params.pub if params is not None else None
        if pub is None or params is None or len(pub.data) < MIN_BYTES or pub.ref:
            return params
        digest = _digest(pub)
        ref = self._by_digest.get(digest)
        if ref is not None:
            return msgspec.structs.replace(params, pub=Pub(pub.shape, b"", ref))
        ref, self._next = self._next, self._next + 1
        self._insert(ref, pub, digest)
        return msgspec.structs.replace(params, pub=Pub(pub.shape, pub.data, ref))

    # -- a party's side -------------------------------------------------------------------------
    def incoming(self, params: Params | None, what: str) -> Params | None:
        """``params`` with a referenced public operand filled in (and a new one stored)."""
        pub = params.pub if params is not None else None
        if pub is None or params is None or not pub.ref:
            return params
        if pub.data:
            if pub.ref in self._entries:
                raise ProtocolError(f"{what}: public constant {pub.ref} is sent a second time")
            self._insert(pub.ref, Pub(pub.shape, pub.data))
            return msgspec.structs.replace(params, pub=Pub(pub.shape, pub.data))
        held = self._entries.get(pub.ref)
        if held is None:
            raise ProtocolError(f"{what}: names public constant {pub.ref}, which it does not hold")
        if held.shape != pub.shape:
            raise ProtocolError(
                f"{what}: public constant {pub.ref} is {held.shape}, the command says {pub.shape}"
            )
        return msgspec.structs.replace(params, pub=held)


def _digest(pub: Pub) -> bytes:
    """The content key of a public operand: SHA-256 of its shape and bytes (SHA-NI: 1.8
    GB/s here, against blake2b's 0.9; a CNN step hashes tens of MB of gathers)."""
    h = hashlib.sha256(repr(pub.shape).encode())
    h.update(pub.data)
    return h.digest()
