"""The wire: the binary frame every message travels in, on every transport.

**Frame.** Every message on every transport is one frame::

    header  <BBBBIQI  version, phase, tag form, step length, depth, op, body length  (20 B)
    step    UTF-8, at most 255 bytes
    body    tensor records, or a msgpack control message

A tensor record is ``dtype(1) ndim(1) dims(4 each)`` followed by the data: int64 at 8 bytes
an element, bool packed 8 to a byte, uint8 as is. The frame names neither sender nor
receiver: the transport knows the link a frame came over and sets the sender from it (the
TLS transport from the peer's certificate), so a message cannot claim to be from someone
else. The meter counts the frame's length as sent: payload bytes (tensor data, or the
whole control body) and header bytes (the rest) are both measured, not estimated.

A control body is a msgspec struct encoded as msgpack (:mod:`actors.messages`, where every
control message is defined); nothing is pickled.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import torch

from protocols.errors import ProtocolError

from .codec import _records, record_heads
from .codec import hand_over as _hand_over
from .envelope import Envelope, Phase

VERSION = 1
HEADER = struct.Struct("<BBBBIQI")
_PHASES = tuple(Phase)
"""Phases by wire code (``Phase(code)`` costs an enum call per frame)."""

# Tag forms: "<op>/<step>" (protocol messages), "<step>/<seq>" (command and request
# batches), or a literal tag such as "setup/key".
_OP_TAG, _SEQ_TAG, _LITERAL = 0, 1, 2
_SEQ_STEPS = frozenset({"cmd", "req"})


# -- frames -------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[int, int, str]:
    head, sep, rest = tag.partition("/")
    if sep and head.isascii() and head.isdigit():
        return _OP_TAG, int(head), rest
    if sep and head in _SEQ_STEPS and rest.isascii() and rest.isdigit():
        return _SEQ_TAG, int(rest), head
    return _LITERAL, 0, tag


def _join_tag(form: int, op: int, step: str) -> str:
    if form == _OP_TAG:
        return f"{op}/{step}"
    if form == _SEQ_TAG:
        return f"{step}/{op}"
    return step


def _tag_head(tag: str, depth: int) -> tuple[int, int, str, bytes]:
    """The tag's form, op, step and encoded step, checked to fit the frame header."""
    form, op, step = _split_tag(tag)
    try:
        step_b = step.encode()
    except UnicodeEncodeError as exc:
        raise ProtocolError(f"tag {tag!r} is not UTF-8: {exc}") from None
    if len(step_b) > 255:
        raise ProtocolError(f"tag step {step!r} is longer than 255 bytes")
    if not 0 <= op < 2**64 or not 0 <= depth < 2**32:
        raise ProtocolError(f"op {op} or depth {depth} does not fit the frame header")
    return form, op, step, step_b


def pack_frame(
    tag: str,
    phase: Phase,
    depth: int,
    *,
    tensors: Sequence[torch.Tensor] | None = None,
    control: bytes | None = None,
) -> tuple[bytearray, int]:
    """One frame, built with a single copy of each tensor's bytes; returns ``(frame,
    payload bytes)``."""
    form, op, _, step_b = _tag_head(tag, depth)
    if control is not None:
        parts: list[Any] = [control]
        size = payload = len(control)
    else:
        parts, size, payload = _records(tensors or ())
    # one copy of every piece into the frame (bytearray.join takes numpy's buffers)
    head = HEADER.pack(VERSION, int(phase), form, len(step_b), depth, op, size)
    return bytearray().join([head, step_b, *parts]), payload


_STEP_BYTES: dict[str, int] = {}
"""The encoded length of each tag step :func:`hand_over` has checked (a session sends a few
dozen distinct steps; bounded: past the bound a step is checked every time)."""
_MAX_STEPS = 4096


def _step_bytes(tag: str, step: str, op: int, depth: int) -> int:
    """What :func:`_tag_head` checks, the step's own checks once per distinct step."""
    n = _STEP_BYTES.get(step)
    if n is None:
        n = len(_tag_head(tag, depth)[3])
        if len(_STEP_BYTES) < _MAX_STEPS:
            _STEP_BYTES[step] = n
    if not 0 <= op < 2**64 or not 0 <= depth < 2**32:
        raise ProtocolError(f"op {op} or depth {depth} does not fit the frame header")
    return n


def hand_over(
    sender: str,
    receiver: str,
    tag: str,
    phase: Phase,
    depth: int,
    *,
    tensors: Sequence[torch.Tensor] | None = None,
    control: bytes | None = None,
) -> Envelope:
    """The envelope :func:`unpack_frame` would make of :func:`pack_frame`'s frame, without
    the frame (an in-memory link): the tag as the frame would carry it (the given string
    itself unless a number in it has a leading zero), the tensors as one copy the receiver
    owns, and the frame's exact length and payload bytes for the meters."""
    form, op, step = _split_tag(tag)
    nstep = _step_bytes(tag, step, op, depth)
    if control is not None:
        held = None
        body = bytes(control)
        size = payload = len(body)
    else:
        held, size, payload = _hand_over(tensors or ())
        body = b""
    frame = HEADER.size + nstep + size
    if tag[:1] == "0" or "/0" in tag:  # a number with a leading zero: as the frame has it
        tag = _join_tag(form, op, step)
    return Envelope(sender, receiver, tag, phase, depth, body, payload, frame, held)


def unpack_frame(frame: bytes | bytearray, sender: str, receiver: str) -> Envelope:
    """The envelope a frame carries, with the sender the transport vouches for."""
    if len(frame) < HEADER.size:
        raise ProtocolError(f"frame from {sender} is {len(frame)} bytes, shorter than a header")
    version, phase, form, step_len, depth, op, size = HEADER.unpack_from(frame, 0)
    if version != VERSION:
        raise ProtocolError(f"frame from {sender} has version {version}, expected {VERSION}")
    start = HEADER.size + step_len
    if len(frame) != start + size:
        raise ProtocolError(
            f"frame from {sender} is {len(frame)} bytes, its header says {start + size}"
        )
    try:
        ph = _PHASES[phase]
        step = frame[HEADER.size : start].decode()
    except (IndexError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"frame from {sender} has a bad header: {exc}") from None
    if form not in (_OP_TAG, _SEQ_TAG, _LITERAL):
        raise ProtocolError(f"frame from {sender} has an unknown tag form {form}")
    body = bytes(memoryview(frame)[start:])
    return Envelope(
        sender,
        receiver,
        _join_tag(form, op, step),
        ph,
        depth,
        body,
        _payload(ph, body),
        frame_bytes=len(frame),
    )


def _payload(phase: Phase, body: bytes) -> int:
    """The tensor data bytes of a body (what it claims, cut at its end: a malformed body
    is metered as far as it goes and refused when decoded)."""
    if phase is Phase.CONTROL or phase is Phase.HEARTBEAT:
        return len(body)
    total = 0
    end = len(body)
    try:
        for _, _, pos, size in record_heads(body):
            total += min(size, end - pos)
    except struct.error:
        pass
    return total
