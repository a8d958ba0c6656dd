"""The features of a full view: small categorical codes, one per independent instance.

A G-test needs small categorical samples; every tensor element of a run is one instance.
The families (named in every finding, so a failing feature is reported):

(a) ``marginal``: each tensor of the view alone: value mod 16, parity, top 4 bits and a
    magnitude bucket (sign, bit length / 4) for ring elements; groups of 4 bits for bits;
(b) ``joint``: each opened value *together with* each of the party's own same-size
    material or input shares, e.g. ``(opened mod 16, own mask share mod 16)``: an opened
    value may look uniform alone and still determine the secret with the party's share
    (a dealer giving every party the same key);
(c) ``pair``: pairs of openings in one transcript, within one op and across ops:
    ``(o1 - o2)`` and ``(o1 + o2)`` mod 16 and top bits, XOR of bit openings (a mask used
    twice cancels);
(d) ``cross``: what (b) and (c) cannot pair because the element counts or types differ.
    Every tensor is read as per-element records (:func:`element_record`): a DCF key
    ``(W, N)`` as W words per element, bit planes opened as bools ``(N, q)`` and dealt as
    packed ``WORDS`` as q bits per element. A single-column record (an opening, a mask)
    is paired with every column of the other (mod 16 with mod 16, top bits with top bits,
    bits with anything), two bit records of one width chunk by chunk: a DCF key's words
    against the opening of ``x + r``, a bit opening against a ring opening of the same op
    (the carry tree's last opening against ``c``).

:func:`view_features` gives every named feature of one view; :mod:`.gtest` compares them.
"""

from __future__ import annotations

import numpy as np
import torch

from ..material import Kind
from ..ring import unpack_words
from .views import FullView

Feature = tuple[np.ndarray, int]
"""Codes (one per sample) and the number of categories."""


def _u64(t: torch.Tensor) -> np.ndarray:
    return t.reshape(-1).numpy().astype(np.int64).view(np.uint64)


def low4(t: torch.Tensor) -> Feature:
    return (_u64(t) & np.uint64(15)).astype(np.int64), 16


def top4(t: torch.Tensor) -> Feature:
    return (_u64(t) >> np.uint64(60)).astype(np.int64), 16


def parity(t: torch.Tensor) -> Feature:
    return (_u64(t) & np.uint64(1)).astype(np.int64), 2


def magnitude(t: torch.Tensor) -> Feature:
    """Sign and bit length (of ``v`` or ``~v``, via float64) in steps of 4: 2 * 17 codes."""
    v = t.reshape(-1).numpy().astype(np.int64)
    neg = v < 0
    bitlen = np.frexp(np.where(neg, ~v, v).astype(np.float64))[1].astype(np.int64)
    return neg.astype(np.int64) * 17 + np.minimum(bitlen, 64) // 4, 34


def bit_chunks(t: torch.Tensor, width: int = 4) -> dict[str, Feature]:
    """Bits grouped by position along the last axis: one code per chunk of ``width``."""
    arr = t.numpy().astype(np.int64)
    arr = arr.reshape(-1, arr.shape[-1]) if arr.ndim >= 2 else arr.reshape(-1, 1)
    weights = 1 << np.arange(arr.shape[1]) % width
    coded = arr * weights
    out = {}
    for j in range(0, arr.shape[1], width):
        k = min(width, arr.shape[1] - j)
        name = "bit" if arr.shape[1] == 1 else f"bits[{j}:{j + k}]"
        out[name] = (coded[:, j : j + k].sum(axis=1), 2**k)
    return out


def marginal_features(t: torch.Tensor) -> dict[str, Feature]:
    if t.dtype == torch.bool:
        return bit_chunks(t)
    return {"mod16": low4(t), "parity": parity(t), "top4": top4(t), "magnitude": magnitude(t)}


def _joint(f: Feature, g: Feature) -> Feature:
    return f[0] * g[1] + g[0], f[1] * g[1]


def _small(t: torch.Tensor, marg: dict[str, Feature]) -> dict[str, Feature]:
    """Per-element features for joints: mod 16 and top bits, or the bit itself."""
    if t.dtype == torch.bool:
        return {"bit": (t.reshape(-1).numpy().astype(np.int64), 2)}
    return {"mod16": marg["mod16"], "top4": marg["top4"]}


def joint_features(
    opened: torch.Tensor,
    own: torch.Tensor,
    marg_opened: dict[str, Feature] | None = None,
    marg_own: dict[str, Feature] | None = None,
) -> dict[str, Feature]:
    """``(opened, own)`` feature pairs, element by element (same numel required); the
    marginal features may be passed in when already computed."""
    mo = marginal_features(opened) if marg_opened is None else marg_opened
    mw = marginal_features(own) if marg_own is None else marg_own
    if opened.dtype == torch.bool and own.dtype == torch.bool:
        if opened.shape != own.shape:
            return {}
        return {k: _joint(mo[k], mw[k]) for k in mo}
    if opened.numel() != own.numel():
        return {}
    out = {}
    for fa, a in _small(opened, mo).items():
        for fb, b in _small(own, mw).items():
            if fa == fb or "bit" in (fa, fb):
                out[f"({fa}, {fb})"] = _joint(a, b)
    return out


def pair_features(
    o1: torch.Tensor,
    o2: torch.Tensor,
    marg1: dict[str, Feature] | None = None,
    marg2: dict[str, Feature] | None = None,
) -> dict[str, Feature]:
    """Features of two openings together: differences, sums, XORs (of bit chunks)."""
    if o1.dtype == torch.bool and o2.dtype == torch.bool:
        if o1.shape != o2.shape:
            return {}
        m1 = bit_chunks(o1) if marg1 is None else marg1
        m2 = bit_chunks(o2) if marg2 is None else marg2
        return {f"xor {k}": (m1[k][0] ^ m2[k][0], m1[k][1]) for k in m1}
    if o1.dtype == torch.bool or o2.dtype == torch.bool or o1.numel() != o2.numel():
        return {}
    d, s = o1.reshape(-1) - o2.reshape(-1), o1.reshape(-1) + o2.reshape(-1)
    return {
        "diff mod16": low4(d),
        "diff top4": top4(d),
        "sum mod16": low4(s),
        "sum top4": top4(s),
    }


# ---------------------------------------------------------------------------------------
# Family (d): per-element records, across tensors of different layouts
# ---------------------------------------------------------------------------------------

Record = tuple[np.ndarray, bool]
"""Per-element columns ``(n, k)`` of one tensor, and whether they are bits."""


def element_record(t: torch.Tensor, n: int, kind: Kind | None = None) -> Record | None:
    """The tensor as ``n`` per-element records of ``k`` columns, or None if it has no such
    layout: ``n`` elements (k = 1); a KEY ``(W, n)`` (word-major: column j is word j of
    every element's key); bools ``(n, q)`` (bit planes opened as bools); ``WORDS`` planes
    ``(q, ceil(n/64))`` unpacked to ``q`` bits per element."""
    bits = t.dtype == torch.bool or kind is Kind.WORDS
    if kind is Kind.WORDS:
        if t.dim() == 0 or t.shape[-1] != (n + 63) // 64:
            return None
        planes = unpack_words(t.reshape(-1, t.shape[-1]), n)  # (q, n)
        return planes.numpy().T.astype(np.int64), True
    arr = t.numpy().astype(np.int64)
    if t.numel() == n:
        return arr.reshape(n, 1), bits
    if t.dim() >= 2 and t.shape[-1] == n:
        return arr.reshape(-1, n).T, bits
    if t.dim() >= 2 and t.shape[0] == n:
        return arr.reshape(n, -1), bits
    return None


def record_features(rec: Record) -> list[tuple[str, str, Feature]]:
    """``(column name, type, feature)``: mod 16 and top 4 bits of every ring column, every
    chunk of 4 bit columns (one bit for a single column)."""
    arr, bits = rec
    k = arr.shape[1]
    out: list[tuple[str, str, Feature]] = []
    if bits:
        for j in range(0, k, 4):
            w = min(4, k - j)
            code = (arr[:, j : j + w] << np.arange(w)).sum(axis=1)
            out.append(("bit" if k == 1 else f"bits[{j}:{j + w}]", "bits", (code, 2**w)))
        return out
    u = arr.view(np.uint64)
    for j in range(k):
        col = "" if k == 1 else f"[{j}] "
        out.append((f"{col}mod16", "mod16", ((u[:, j] & np.uint64(15)).astype(np.int64), 16)))
        out.append((f"{col}top4", "top4", ((u[:, j] >> np.uint64(60)).astype(np.int64), 16)))
    return out


def cross_features(
    a: list[tuple[str, str, Feature]], ka: int, b: list[tuple[str, str, Feature]], kb: int
) -> dict[str, Feature]:
    """Joint features of two records of the same elements: a single-column record with
    every column feature of the other (ring columns only type by type: mod 16 with mod 16,
    top bits with top bits; bits with anything); two bit records of equal width chunk by
    chunk. Wider pairs (a key against a key) are not tested."""
    out: dict[str, Feature] = {}
    if ka == 1 or kb == 1:
        for na, ta, fa in a:
            for nb, tb, fb in b:
                if "bits" in (ta, tb) or ta == tb:
                    out[f"({na}, {nb})"] = _joint(fa, fb)
    elif ka == kb and all(t == "bits" for _, t, _ in a + b):
        for (na, _, fa), (_, _, fb) in zip(a, b, strict=True):
            out[f"({na}, {na})"] = _joint(fa, fb)
    return out


def element_counts(v: FullView) -> set[int]:
    """The element counts of a view's per-element records: the inputs' sizes, the ring
    openings' sizes and the leading size of bit openings."""
    counts = {t.numel() for _name, op, t in v.own if op is None}
    counts |= {t.numel() for _, _, t in v.opened if t.dtype != torch.bool}
    counts |= {int(t.shape[0]) for _, _, t in v.opened if t.dtype == torch.bool and t.dim()}
    return counts


def view_features(v: FullView) -> dict[str, Feature]:
    """Every named feature of one full view: families (a) to (d) of the module doc."""
    out: dict[str, Feature] = {}
    marg: dict[str, dict[str, Feature]] = {}
    tensors = [
        *((f"own {n}", t) for n, _, t in v.own),
        *((f"recv {n}", t) for n, _, t in v.received),
        *((f"open {n}", t) for n, _, t in v.opened),
    ]
    for name, t in tensors:
        marg[name] = marginal_features(t)
        for fname, f in marg[name].items():
            out[f"(a) marginal {name}: {fname}"] = f
    counts = element_counts(v)
    recs: dict[tuple[str, int], tuple[list[tuple[str, str, Feature]], int] | None] = {}

    def record(name: str, t: torch.Tensor, n: int) -> tuple[list[tuple[str, str, Feature]], int]:
        if (name, n) not in recs:
            rec = element_record(t, n, v.kinds.get(name.split(" ", 1)[1]))
            recs[name, n] = None if rec is None else (record_features(rec), rec[0].shape[1])
        got = recs[name, n]
        return ([], 0) if got is None else got

    def cross(n1: str, t1: torch.Tensor, n2: str, t2: torch.Tensor, label: str) -> None:
        for n in sorted(counts):
            fa, ka = record(n1, t1, n)
            fb, kb = record(n2, t2, n)
            if ka and kb:
                for fname, f in cross_features(fa, ka, fb, kb).items():
                    out[f"(d) cross {label}: {fname}"] = f

    for oname, op, o in v.opened:
        for wname, wop, w in v.own:
            if wop is not None and wop != op:
                continue
            feats = joint_features(o, w, marg[f"open {oname}"], marg[f"own {wname}"])
            for fname, f in feats.items():
                out[f"(b) joint open {oname} with own {wname}: {fname}"] = f
            if not feats:
                cross(f"open {oname}", o, f"own {wname}", w, f"open {oname} with own {wname}")
    for i, (n1, op1, o1) in enumerate(v.opened):
        for n2, op2, o2 in v.opened[i + 1 :]:
            feats = pair_features(o1, o2, marg[f"open {n1}"], marg[f"open {n2}"])
            for fname, f in feats.items():
                out[f"(c) pair open {n1} and open {n2}: {fname}"] = f
            if not feats and op1 == op2:
                cross(f"open {n1}", o1, f"open {n2}", o2, f"open {n1} and open {n2}")
    return out
