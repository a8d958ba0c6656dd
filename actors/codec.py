"""The tensor codec: tensor records in a frame's body (no pickle).

A record is ``dtype(1) ndim(1) dims(4 each)`` followed by the data: int64 at 8 bytes an
element, bool packed 8 to a byte, uint8 as is. Malformed bodies raise ProtocolError.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from math import prod

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


def _head(code: int, shape: tuple[int, ...]) -> bytes:
    head = _HEADS.get((code, shape))
    if head is None:
        head = _REC.pack(code, len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
        if len(_HEADS) < _MAX_HEADS:
            _HEADS[(code, shape)] = head
    return head


def _records(tensors: Sequence[torch.Tensor]) -> tuple[list[tuple[bytes, np.ndarray]], int, int]:
    out = []
    size = payload = 0
    for t in tensors:
        code = _DTYPES.get(t.dtype)
        if code is None:
            raise ProtocolError(f"cannot send a tensor of dtype {t.dtype}")
        head = _head(code, tuple(t.shape))
        if t.requires_grad:
            t = t.detach()
        arr = t.contiguous().numpy().reshape(-1)
        data = np.packbits(arr) if code == 2 else arr.view(np.uint8)
        out.append((head, data))
        size += len(head) + data.nbytes
        payload += data.nbytes
    return out, size, payload


def encode_tensors(tensors: Sequence[torch.Tensor]) -> tuple[bytes, int]:
    """A tensor body on its own (what a frame carries after its header) and its payload
    bytes; for tests that build or tamper with envelopes."""
    records, _, payload = _records(tensors)
    return b"".join(h + d.tobytes() for h, d in records), payload


def decode_tensors(body: memoryview | bytes) -> tuple[torch.Tensor, ...]:
    """Tensor records back to tensors; malformed bodies raise ProtocolError."""
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
            elif n:
                # a writable copy of the record, viewed through numpy (cheaper per tensor
                # than torch.frombuffer + reshape; the same bytes)
                chunk = np.frombuffer(bytearray(view[pos : pos + size]), _NP[code])
                out.append(torch.from_numpy(chunk.reshape(shape)))
            else:
                out.append(torch.empty(shape, dtype=dtype))
            pos += size
    except (struct.error, KeyError, RuntimeError, ValueError) as exc:
        raise ProtocolError(f"malformed tensor body: {exc}") from None
    return tuple(out)
