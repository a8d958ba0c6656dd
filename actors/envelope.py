"""Messages between actors and their wire format.

An :class:`Envelope` carries a header (sender, receiver, tag, phase, depth) and a body of
bytes. Tensor bodies are a sequence of records ``dtype(1) ndim(1) dims(4 each) data``,
where int64 data is 8 bytes per element and bool data travels packed, 8 bits per byte.
Control bodies are UTF-8 JSON. Nothing is pickled (pickle runs code on load), and because
every body is encoded by the sender and decoded by the receiver, payloads never alias
between actors. The in-memory network and a future socket transport carry the same bytes,
so the meter counts the same thing for both.
"""

from __future__ import annotations

import enum
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np
import torch

from protocols.errors import ProtocolError


class Phase(enum.IntEnum):
    """What a message is for; the meter keeps each apart."""

    INPUT = 0
    """Coordinator -> party: shares of a value being shared."""
    ONLINE = 1
    """Party <-> party: masked values during a protocol; the only phase that adds rounds."""
    OFFLINE = 2
    """Provider -> party: keys and correlated randomness (dealer material)."""
    OUTPUT = 3
    """Party -> coordinator: a share of a value being revealed to its owner."""
    CONTROL = 4
    """Commands, dealer requests, barriers, refusals: public metadata only."""


_DTYPES: dict[torch.dtype, int] = {torch.int64: 1, torch.bool: 2, torch.uint8: 3}
_CODES = {v: k for k, v in _DTYPES.items()}
_REC = struct.Struct("<BB")
_HEADER = struct.Struct("<BIHHH")


@dataclass(frozen=True, slots=True)
class Envelope:
    """One message on one link."""

    sender: str
    """Actor that sent it (set by the network from the link, not by the sender's say-so)."""
    receiver: str
    """Actor it is addressed to."""
    tag: str
    """``"<op id>/<step>"`` for protocol messages, ``"cmd/<seq>"`` for command batches."""
    phase: Phase
    """Which meter bucket its bytes go to."""
    depth: int
    """Online dependency depth of the values it carries (0 outside the online phase)."""
    body: bytes
    """Encoded payload (tensor records or JSON)."""
    payload_bytes: int
    """Bytes of tensor data (or JSON for control): what the metering tables count."""

    @property
    def header_bytes(self) -> int:
        """Bytes of this envelope's header plus the tensor record headers in its body."""
        names = len(self.sender) + len(self.receiver) + len(self.tag.encode())
        return _HEADER.size + names + (len(self.body) - self.payload_bytes)

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return decode_tensors(self.body)

    def control(self) -> Any:
        """The JSON body of a control message; ProtocolError when it is not JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(
                f"{self.tag!r} from {self.sender}: body is not JSON: {exc}"
            ) from None


_OP_TAG = re.compile(r"([0-9]+)/.+")


def op_of(tag: str) -> int | None:
    """The op id of a protocol tag ``"<op>/<step>"`` (ASCII digits only), else None."""
    m = _OP_TAG.fullmatch(tag)
    return int(m.group(1)) if m else None


def encode_tensors(tensors: Sequence[torch.Tensor]) -> tuple[bytes, int]:
    """Encode tensors into a body; returns ``(body, payload_bytes)``."""
    parts: list[bytes] = []
    payload = 0
    for t in tensors:
        code = _DTYPES.get(t.dtype)
        if code is None:
            raise ProtocolError(f"cannot send a tensor of dtype {t.dtype}")
        shape = tuple(t.shape)
        parts.append(_REC.pack(code, len(shape)) + struct.pack(f"<{len(shape)}I", *shape))
        arr = t.detach().contiguous().numpy()
        data = np.packbits(arr.reshape(-1)).tobytes() if t.dtype == torch.bool else arr.tobytes()
        payload += len(data)
        parts.append(data)
    return b"".join(parts), payload


def decode_tensors(body: bytes) -> tuple[torch.Tensor, ...]:
    """Inverse of :func:`encode_tensors`; malformed bodies raise ProtocolError."""
    out: list[torch.Tensor] = []
    view = memoryview(body)
    pos = 0
    try:
        while pos < len(view):
            code, ndim = _REC.unpack_from(view, pos)
            pos += _REC.size
            shape = struct.unpack_from(f"<{ndim}I", view, pos)
            pos += 4 * ndim
            dtype = _CODES[code]
            n = prod(shape)
            size = (n + 7) // 8 if dtype == torch.bool else n * (8 if dtype == torch.int64 else 1)
            if size > len(view) - pos:
                raise ProtocolError(
                    f"tensor record claims shape {tuple(shape)} but only {len(view) - pos} bytes follow"
                )
            if dtype == torch.bool:
                raw = np.frombuffer(view[pos : pos + size], np.uint8)
                bits = np.unpackbits(raw)[:n].astype(np.bool_)
                out.append(torch.from_numpy(bits).reshape(shape))
            else:
                chunk = bytearray(view[pos : pos + size])
                out.append(
                    torch.frombuffer(chunk, dtype=dtype).reshape(shape)
                    if n
                    else torch.empty(shape, dtype=dtype)
                )
            pos += size
    except (struct.error, KeyError, RuntimeError, ValueError) as exc:
        raise ProtocolError(f"malformed tensor body: {exc}") from None
    return tuple(out)


def encode_control(obj: Any) -> tuple[bytes, int]:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return body, len(body)
