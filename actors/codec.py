"""The tensor codec: tensor records in a frame's body (no pickle).

A record is ``dtype(1) ndim(1) dims(4 each)`` followed by the data: int64 at 8 bytes an
element, bool packed 8 to a byte, uint8 as is. Malformed bodies raise ProtocolError.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from math import prod
from typing import Any

import numpy as np
import torch

from protocols.errors import ProtocolError

_REC = struct.Struct("<BB")
_DTYPES: dict[torch.dtype, int] = {torch.int64: 1, torch.bool: 2, torch.uint8: 3}
_CODES = {v: k for k, v in _DTYPES.items()}
_NP = {1: np.int64, 3: np.uint8}
"""numpy's dtype of each byte-aligned record code."""


_HEADS: dict[tuple[int, tuple[int, ...]], bytes] = {}
"""Record headers by (dtype code, shape): a training step sends the same few shapes again
and again, so each header is packed once (bounded: past the bound a new shape's header is
packed every time, never stored)."""
_MAX_HEADS = 4096
_DIMS = [struct.Struct(f"<{n}I") for n in range(256)]
"""The dims of a record of each rank (a record's ndim is one byte): one compiled struct per
rank instead of a format string built for every record read."""


def _head(code: int, shape: tuple[int, ...]) -> bytes:
    head = _HEADS.get((code, shape))
    if head is None:
        head = _REC.pack(code, len(shape)) + _DIMS[len(shape)].pack(*shape)
        if len(_HEADS) < _MAX_HEADS:
            _HEADS[(code, shape)] = head
    return head


def _records(tensors: Sequence[torch.Tensor]) -> tuple[list[Any], int, int]:
    """Each tensor's record header and data (numpy arrays the frame is joined from, one
    copy of the bytes), the records' total size and their payload bytes."""
    out: list[Any] = []  # bytes and numpy arrays: buffers (numpy's stubs do not say so)
    size = payload = 0
    for t in tensors:
        code = _DTYPES.get(t.dtype)
        if code is None:
            raise ProtocolError(f"cannot send a tensor of dtype {t.dtype}")
        head = _head(code, tuple(t.shape))
        if t.requires_grad:
            t = t.detach()
        if not t.is_contiguous():
            t = t.contiguous()
        arr = t.numpy()
        data = np.packbits(arr.reshape(-1)) if code == 2 else arr
        out.append(head)
        out.append(data)
        size += len(head) + data.nbytes
        payload += data.nbytes
    return out, size, payload


def hand_over(tensors: Sequence[torch.Tensor]) -> tuple[tuple[torch.Tensor, ...], int, int]:
    """What an in-memory link passes instead of records: one contiguous copy of each tensor
    (the receiver owns it, the sender may go on mutating its own), with the size and payload
    bytes the records would have had (checked as :func:`_records` checks them)."""
    out = []
    size = payload = 0
    for t in tensors:
        code = _DTYPES.get(t.dtype)
        if code is None:
            raise ProtocolError(f"cannot send a tensor of dtype {t.dtype}")
        shape = tuple(t.shape)
        n = t.numel()
        data = n * 8 if code == 1 else ((n + 7) // 8 if code == 2 else n)
        size += len(_head(code, shape)) + data
        payload += data
        if t.requires_grad:
            t = t.detach()
        out.append(t.clone() if t.is_contiguous() else t.contiguous())
    return tuple(out), size, payload


def record_heads(body: memoryview | bytes) -> Iterator[tuple[int, tuple[int, ...], int, int]]:
    """``(code, shape, start, size)`` of each record of a tensor body as its header claims
    it, *not* checked against the body's end (a header cut short raises struct.error)."""
    pos = 0
    end = len(body)
    head = _REC.size
    while pos < end:
        code, ndim = _REC.unpack_from(body, pos)
        dims = _DIMS[ndim]
        shape = dims.unpack_from(body, pos + head)
        pos += head + dims.size
        n = prod(shape)
        size = (n + 7) // 8 if code == 2 else n * (8 if code == 1 else 1)
        yield code, shape, pos, size
        pos += size


def record_spans(body: memoryview | bytes) -> list[tuple[int, tuple[int, ...], int, int]]:
    """``(code, shape, start, size)`` of every record of a tensor body, read once (the
    receiver meters the payload and decodes the tensors from the same spans); a record
    that claims more bytes than follow raises ProtocolError, other malformed bodies
    struct.error or KeyError (the callers name them)."""
    spans = []
    end = len(body)
    for code, shape, pos, size in record_heads(body):
        if size > end - pos:
            raise ProtocolError(
                f"tensor record claims shape {tuple(shape)} but only {end - pos} bytes follow"
            )
        spans.append((code, shape, pos, size))
    return spans


def encode_tensors(tensors: Sequence[torch.Tensor]) -> tuple[bytes, int]:
    """A tensor body on its own (what a frame carries after its header) and its payload
    bytes; for tests that build or tamper with envelopes."""
    records, _, payload = _records(tensors)
    return b"".join(records), payload


def decode_tensors(body: memoryview | bytes) -> tuple[torch.Tensor, ...]:
    """Tensor records back to tensors; malformed bodies raise ProtocolError."""
    out: list[torch.Tensor] = []
    try:
        spans = record_spans(body)
        # one writable copy of the body, each record viewed through numpy at its offset
        # (cheaper per tensor than torch.frombuffer + reshape; the same bytes)
        buf = bytearray(body) if spans else b""
        for code, shape, pos, size in spans:
            dtype = _CODES[code]
            n = prod(shape)
            if dtype == torch.bool:
                raw = np.frombuffer(buf, np.uint8, size, pos)
                bits = np.unpackbits(raw)[:n].astype(np.bool_)
                out.append(torch.from_numpy(bits).reshape(shape))
            elif n:
                chunk = np.frombuffer(buf, _NP[code], n, pos)
                out.append(torch.from_numpy(chunk.reshape(shape)))
            else:
                out.append(torch.empty(shape, dtype=dtype))
    except (struct.error, KeyError, RuntimeError, ValueError) as exc:
        raise ProtocolError(f"malformed tensor body: {exc}") from None
    return tuple(out)
