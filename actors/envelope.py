"""A message as an actor sees it: who sent it (as the transport vouches), its tag, phase and
depth, and its body. The bytes on the wire are a frame (:mod:`actors.wire`)."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import torch

from protocols.errors import ProtocolError

from .codec import decode_tensors, encode_tensors
from .messages import decode_control
from .phase import Phase, op_of

__all__ = ["Envelope", "Phase", "op_of"]

T = TypeVar("T")


class Envelope(msgspec.Struct, frozen=True):
    """One message on one link, as received (a frozen msgspec struct: built for every
    message, ~9x cheaper than a frozen dataclass; ``msgspec.structs.replace`` derives one)."""

    sender: str
    """Actor that sent it: set by the transport from the link, never read from the frame."""
    receiver: str
    tag: str
    """``"<op id>/<step>"`` for protocol messages, ``"cmd/<seq>"`` for command batches."""
    phase: Phase
    depth: int
    """Online dependency depth (outputs and barrier replies: the sender's depth so far)."""
    body: bytes
    """Tensor records or a msgpack control message."""
    payload_bytes: int
    """Bytes of tensor data (or the whole control body): what the metering tables count."""
    frame_bytes: int = 0
    """Length of the frame on the wire (header, tag, record headers and payload)."""
    held: tuple[torch.Tensor, ...] | None = None
    """The tensors themselves when an in-memory link handed them over instead of a body
    (:func:`actors.wire.hand_over`: copies the receiver owns); ``body`` is then empty."""

    @property
    def header_bytes(self) -> int:
        return self.frame_bytes - self.payload_bytes

    def tensors(self) -> tuple[torch.Tensor, ...]:
        if self.held is not None:
            return self.held
        return decode_tensors(self.body)

    def framed(self) -> Envelope:
        """This envelope with its tensors as a body of records (what observers see)."""
        if self.held is None:
            return self
        body, _ = encode_tensors(self.held)
        return msgspec.structs.replace(self, body=body, held=None)

    def control(self, kind: type[T] | None = None) -> Any:
        """The control body, validated as ``kind`` (or untyped msgpack)."""
        if kind is not None:
            return decode_control(self.body, kind, f"{self.tag!r} from {self.sender}")
        try:
            return msgspec.msgpack.decode(self.body)
        except msgspec.DecodeError as exc:
            raise ProtocolError(
                f"{self.tag!r} from {self.sender}: body is not msgpack: {exc}"
            ) from None
