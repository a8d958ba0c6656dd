"""A party's full view of one run (:class:`FullView`), built from the harness's record.

A view analysis judges everything a party holds or could compute from: its PRG key
with the provider and the material shares it draws from it (and the corrections it
receives), its input shares, every tensor it receives, and every value it *opens* (its
own share of a masked value plus the peers' shares). :func:`full_view` assembles that
from a :class:`protocols.testing.View` (what the in-memory harness records) and names
every tensor by op id and step, so two runs of one program name their tensors alike and
the features of :mod:`.features` can be compared run against run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..material import Kind
from ..ring import bytes_to_words, unpack_words
from ..testing import View


@dataclass
class FullView:
    """One party's full view of one run; tensors keep their protocol shapes."""

    rank: int
    key: bytes | None
    own: list[tuple[str, int | None, torch.Tensor]] = field(default_factory=list)
    """``(name, op id or None for inputs, tensor)``: input shares and material shares."""
    sent: list[tuple[str, int, torch.Tensor]] = field(default_factory=list)
    """``(opening name, op id, tensor)``: the party's own share of each opened value."""
    received: list[tuple[str, int, torch.Tensor]] = field(default_factory=list)
    """``(name, op id, tensor)``: every tensor received from a peer."""
    opened: list[tuple[str, int, torch.Tensor]] = field(default_factory=list)
    """``(opening name, op id, tensor)``: own share plus every peer's share."""
    kinds: dict[str, Kind] = field(default_factory=dict)
    """Kind of each material tensor of ``own``, by name (``WORDS`` are unpacked to
    per-element bits for the family (d) features)."""


def combine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Two shares added: XOR for bits, ring addition otherwise."""
    return a ^ b if a.dtype == torch.bool else a + b


def _as_bools(t: torch.Tensor, numel: int | None) -> torch.Tensor:
    """A bit-plane opening sent as bytes (uint8 ``(q, ceil(n/8))`` or ``(ceil(n/8),)``,
    :func:`protocols.ring.words_to_bytes`) as per-element bools ``(n, q)`` or ``(n,)``, the
    layout the features read; every other tensor as it is."""
    if t.dtype != torch.uint8 or numel is None or t.dim() == 0:
        return t
    out = unpack_words(bytes_to_words(t, numel), numel)
    return out.reshape(numel) if t.dim() == 1 else out.reshape(-1, numel).t().contiguous()


def _op_numels(view: View) -> dict[int, int]:
    """Each op's element count, read from its first ring opening (a comparison's ``c``)."""
    out: dict[int, int] = {}
    for op, _step, _peer, tensors in view.sent:
        for t in tensors:
            if t.dtype == torch.int64 and op not in out:
                out[op] = t.numel()
    return out


def full_view(view: View, rank: int) -> FullView:
    """Build the full view from a :class:`protocols.testing.View`.

    An opening is identified by ``(op id, step, tensor index)``; the party's share is what
    it sent to its first peer (an opening sends the same share to every peer)."""
    out = FullView(rank, view.prg_key)
    out.own += [(f"in[{i}]", None, t) for i, t in enumerate(view.inputs)]
    seen: set[str] = set()
    for op, name, t in view.material:
        label = f"op{op} {name}"
        while label in seen:  # two specs of one op may name an item alike (dropout's b)
            label += "'"
        seen.add(label)
        out.own.append((label, op, t))
        kind = view.kinds.get((op, name))
        if kind is not None:
            out.kinds[label] = kind
    opened: dict[tuple[int, str, int], torch.Tensor] = {}
    numels = _op_numels(view)
    for op, step, _peer, tensors in view.sent:
        for i, t in enumerate(tensors):
            t = _as_bools(t, numels.get(op))
            key = (op, step, i)
            if key not in opened:
                opened[key] = t.clone()
                out.sent.append((f"op{op} {step}[{i}]", op, t))
    for op, step, peer, tensors in view.received:
        for i, t in enumerate(tensors):
            t = _as_bools(t, numels.get(op))
            out.received.append((f"op{op} {step}[{i}] from {peer}", op, t))
            key = (op, step, i)
            opened[key] = combine(opened[key], t) if key in opened else t.clone()
    out.opened = [(f"op{op} {step}[{i}]", op, t) for (op, step, i), t in opened.items()]
    # ops run concurrently in a cluster: order by op id (stable, so each op's steps stay in
    # protocol order) so that two runs name their pairs of openings alike
    for entries in (out.sent, out.received, out.opened):
        entries.sort(key=lambda e: e[1])
    return out
