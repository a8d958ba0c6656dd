"""Statistical evidence that a party's view does not depend on the secrets.

Trust model (what the protocols here claim, and what these tests check)
-----------------------------------------------------------------------
* The parties and the crypto provider (the dealer) are **semi-honest**: they follow the
  protocol and try to learn from what they see. Security is claimed against one party
  alone, or against the provider alone; a provider **colluding** with a party learns
  everything (it knows every mask) and is out of scope.
* Today the coordinator is the data and model owner: it makes every input share and gets
  every output, so it is **fully trusted**. The data is protected from the parties and
  from the provider, not from the coordinator.
* Tampered values (a malicious party or provider sending wrong shares or wrong material)
  are **out of scope**: nothing here detects them.

What is analysed
----------------
A party's *full view* of one run (:class:`FullView`) is everything it holds or could compute
from: its ChaCha20 key with the provider and the material shares it draws from it (and the
corrections it receives), its input shares, every tensor it receives, and every value it
*opens* (its own share of a masked value plus the peers' shares). Semi-honest security
says the distribution of that view, given the party's own inputs and outputs, is the same
whatever the other secrets are; in particular for any two secrets A and B.

:func:`compare` applies a G-test of homogeneity (chi-square family, small categorical
features, rare categories pooled) to many independent runs on secret A and on secret B:

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

Every p-value is named (party, family, tensor, feature), so a failing feature is reported.
:class:`Report` applies Bonferroni over all of them; the G-tests carry Williams'
correction (measured calibrated at 1e-4 on 256-category tables). :func:`simulate` is the
simulator of the masked-opening protocols here (Beaver, truncation pairs, the comparison):
from the party's own view (inputs, material, what it sends) alone it produces openings that
are uniform and peer messages consistent with them; a real transcript must be
indistinguishable from it, with no secret chosen at all.

Programs (:class:`Program`, :func:`run_views`) run one or several ops in the harness of
:mod:`protocols.testing` with every protocol secret fresh and check their results;
:func:`a_vs_b` and :func:`real_vs_sim` vary the inputs, :func:`dealer_a_vs_b` the dealer's
secrets as well (masks ``r`` with fixed openings, dropout masks). The DCF key test
(:func:`dcf_rebuild`, :func:`dcf_root_repeats`) tries to rebuild the other party's key from
public constants, fixed seeds and the party's own key, and looks for roots that repeat.

The evidence is statistical: a leak the features cannot express (a dependence only in
bits 4..59 of a single value, say) is not seen. Each feature family is shown to fail on a
realistic broken variant in ``tests/test_security_views.py`` and ``tests/test_leaks.py``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from scipy import special

from .context import Share
from .fss import dcf_eval, dcf_key_words
from .material import Kind
from .prg import FIXED_AES_KEY, Prg, fixed_key_aes
from .ring import unpack_words
from .testing import (
    Board,
    FixedSecretsBoard,
    LocalContext,
    View,
    fresh_board,
    reveal,
    run_parties,
    share_inputs,
)

MIN_CELL = 10
"""Categories seen fewer times than this (A and B together) are pooled into one."""


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


def _combine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a ^ b if a.dtype == torch.bool else a + b


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
    for op, step, _peer, tensors in view.sent:
        for i, t in enumerate(tensors):
            key = (op, step, i)
            if key not in opened:
                opened[key] = t.clone()
                out.sent.append((f"op{op} {step}[{i}]", op, t))
    for op, step, peer, tensors in view.received:
        for i, t in enumerate(tensors):
            out.received.append((f"op{op} {step}[{i}] from {peer}", op, t))
            key = (op, step, i)
            opened[key] = _combine(opened[key], t) if key in opened else t.clone()
    out.opened = [(f"op{op} {step}[{i}]", op, t) for (op, step, i), t in opened.items()]
    # ops run concurrently in a cluster: order by op id (stable, so each op's steps stay in
    # protocol order) so that two runs name their pairs of openings alike
    for entries in (out.sent, out.received, out.opened):
        entries.sort(key=lambda e: e[1])
    return out


# ---------------------------------------------------------------------------------------
# Features: small categorical codes, one per independent instance (tensor element)
# ---------------------------------------------------------------------------------------

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


# ---------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One two-sample test: G statistic, degrees of freedom and p-value."""

    name: str
    statistic: float
    dof: int
    pvalue: float

    def __str__(self) -> str:
        return f"{self.name}: G={self.statistic:.1f}, dof={self.dof}, p={self.pvalue:.3g}"


def g_tests(ca: np.ndarray, cb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """G-tests of homogeneity, one per row of the count matrices ``(F, k)`` of two samples,
    with Williams' correction; in each row the categories seen fewer than
    :data:`MIN_CELL` times (A and B together) are pooled into one. Returns the statistics,
    degrees of freedom and p-values, each ``(F,)``."""
    ca, cb = np.atleast_2d(ca).astype(np.float64), np.atleast_2d(cb).astype(np.float64)
    rare = (ca + cb) < MIN_CELL
    ta = np.concatenate([np.where(rare, 0.0, ca), (ca * rare).sum(1, keepdims=True)], axis=1)
    tb = np.concatenate([np.where(rare, 0.0, cb), (cb * rare).sum(1, keepdims=True)], axis=1)
    cols = ta + tb
    used = cols > 0
    dof = used.sum(1) - 1
    ra, rb = ta.sum(1, keepdims=True), tb.sum(1, keepdims=True)
    total = ra + rb
    with np.errstate(divide="ignore", invalid="ignore"):
        ea, eb = ra * cols / total, rb * cols / total
        terms = np.where(ta > 0, ta * np.log(ta / ea), 0.0)
        terms += np.where(tb > 0, tb * np.log(tb / eb), 0.0)
        inv_cols = np.where(used, 1 / cols, 0.0).sum(1)
        inv_rows = (1 / ra + 1 / rb)[:, 0]
        tot = total[:, 0]
        # Williams' correction: uncorrected G is liberal on sparse tables (measured: 4x
        # too many p < 1e-4 with 256 categories and 3000 samples a side; corrected, 1x)
        q = 1 + (tot * inv_rows - 1) * (tot * inv_cols - 1) / (6 * tot * np.maximum(dof, 1))
        g = np.where(dof > 0, 2 * terms.sum(1) / q, 0.0)
    p = np.where(dof > 0, special.chdtrc(np.maximum(dof, 1), g), 1.0)
    return g, np.maximum(dof, 0), p


def counts(f: Feature) -> np.ndarray:
    """Category counts of one feature."""
    return np.bincount(f[0], minlength=f[1])


def g_test(a: Feature, b: Feature) -> tuple[float, int, float]:
    """:func:`g_tests` of one feature's two samples."""
    k = max(a[1], b[1])
    g, dof, p = g_tests(counts((a[0], k))[None], counts((b[0], k))[None])
    return float(g[0]), int(dof[0]), float(p[0])


def _merge(runs: Iterable[FullView]) -> dict[str, np.ndarray]:
    """Category counts of every feature, summed over the runs."""
    out: dict[str, np.ndarray] = {}
    for v in runs:
        for name, f in view_features(v).items():
            c = counts(f)
            if name in out and len(out[name]) == len(c):
                out[name] = out[name] + c
            else:
                out[name] = c
    return out


@dataclass
class Report:
    """Named p-values of one analysis, with Bonferroni over all of them."""

    findings: list[Finding]

    def __len__(self) -> int:
        return len(self.findings)

    def threshold(self, fwer: float) -> float:
        return fwer / max(1, len(self.findings))

    def rejected(self, fwer: float) -> list[Finding]:
        """The features whose p-value is below ``fwer`` / number of tests, worst first."""
        t = self.threshold(fwer)
        return sorted((f for f in self.findings if f.pvalue < t), key=lambda f: f.pvalue)

    def worst(self) -> Finding:
        return min(self.findings, key=lambda f: (f.pvalue, -f.statistic))

    def get(self, name: str) -> Finding:
        (f,) = (f for f in self.findings if f.name == name)
        return f

    def matching(self, *parts: str) -> list[Finding]:
        """Findings whose name contains every one of ``parts``, worst first."""
        got = [f for f in self.findings if all(p in f.name for p in parts)]
        return sorted(got, key=lambda f: (f.pvalue, -f.statistic))

    def summary(self, fwer: float, top: int = 5) -> str:
        bad = self.rejected(fwer)
        lines = [f"{len(self)} tests, threshold {self.threshold(fwer):.2g}, {len(bad)} rejected"]
        lines += [f"  {f}" for f in (bad or [self.worst()])[:top]]
        return "\n".join(lines)


def compare(runs_a: Sequence[Sequence[FullView]], runs_b: Sequence[Sequence[FullView]]) -> Report:
    """Two-sample tests of every feature of every party's view.

    ``runs_a[i][rank]`` is party ``rank``'s full view of the i-th independent run on
    secret A (likewise B). Features are pooled over runs, per party and name; a feature
    present for one secret only is a failure (the transcripts differ in shape)."""
    if not runs_a or not runs_b or len(runs_a[0]) != len(runs_b[0]):
        raise ValueError("need runs on both secrets, with the same number of parties")
    findings = []
    for rank in range(len(runs_a[0])):
        fa = _merge(r[rank] for r in runs_a)
        fb = _merge(r[rank] for r in runs_b)
        by_size: dict[int, list[str]] = {}
        for name in sorted(fa.keys() | fb.keys()):
            if name not in fa or name not in fb or len(fa[name]) != len(fb[name]):
                findings.append(Finding(f"party {rank} {name}", float("inf"), 0, 0.0))
                continue
            by_size.setdefault(len(fa[name]), []).append(name)
        for names in by_size.values():
            g, dof, p = g_tests(np.stack([fa[k] for k in names]), np.stack([fb[k] for k in names]))
            findings += [
                Finding(f"party {rank} {k}", float(g[i]), int(dof[i]), float(p[i]))
                for i, k in enumerate(names)
            ]
    findings.sort(key=lambda f: f.name)
    return Report(findings)


# ---------------------------------------------------------------------------------------
# Simulator
# ---------------------------------------------------------------------------------------


def _uniform_like(t: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    if t.dtype == torch.bool:
        return torch.from_numpy(rng.integers(0, 2, tuple(t.shape), dtype=np.uint8).astype(bool))
    raw = rng.integers(0, 2**64, tuple(t.shape), dtype=np.uint64, endpoint=False)
    return torch.from_numpy(raw.view(np.int64))


def simulate(real: FullView, rng: np.random.Generator) -> FullView:
    """The simulated view of a party in a masked-opening protocol, from its own view alone.

    Keeps the party's key, inputs, material and what it sends (all its own); replaces
    every opened value by a uniform one and the peers' messages by uniform shares that add
    up to ``opened - own share`` (XOR for bits). This is the standard simulator of
    Beaver products, dealer truncation pairs and masked comparison openings: it needs no
    secret, so a real view indistinguishable from it leaks nothing the features see."""
    sim = FullView(real.rank, real.key, list(real.own), list(real.sent), kinds=dict(real.kinds))
    own = {name: t for name, _, t in real.sent}
    peers: dict[str, list[tuple[str, int, torch.Tensor]]] = {}
    for name, op, t in real.received:
        opening = name.rsplit(" from ", 1)[0]
        peers.setdefault(opening, []).append((name, op, t))
    for name, op, t in real.opened:
        opened = _uniform_like(t, rng)
        sim.opened.append((name, op, opened))
        msgs = peers.get(name, [])
        mine = own.get(name, torch.zeros_like(t))
        rest = _combine(opened, mine) if t.dtype == torch.bool else opened - mine
        for i, (rname, rop, rt) in enumerate(msgs):
            if i == len(msgs) - 1:
                sim.received.append((rname, rop, rest))
            else:
                s = _uniform_like(rt, rng)
                sim.received.append((rname, rop, s))
                rest = _combine(rest, s) if t.dtype == torch.bool else rest - s
    order = {name: i for i, (name, _, _) in enumerate(real.received)}
    sim.received.sort(key=lambda r: order[r[0]])
    return sim


# ---------------------------------------------------------------------------------------
# DCF keys: can a party rebuild the other party's key?
# ---------------------------------------------------------------------------------------
#
# The two keys of a DCF (protocols/fss.py, BCG+21) share every correction word; they differ
# only in the root seed (rows 0 and 1). A party that can produce the other party's root
# seed therefore holds both keys, evaluates the comparison function everywhere and learns
# alpha (the mask r) and with the opened x + r the secret x. The other root must be
# unpredictable: not a constant, not derived from a fixed seed, not the party's own.
# Whether a guessed root is the other party's is checked exactly at level 0, from the
# construction as documented in protocols/fss.py (not from its code): the seed correction
# word is ``s_CW = s_0^lose ^ s_1^lose`` and the control-bit corrections are
# ``t_CW^L = t_0^L ^ t_1^L ^ alpha_0 ^ 1``, ``t_CW^R = t_0^R ^ t_1^R ^ alpha_0``, where
# ``(s^L, t^L)``, ``(s^R, t^R)`` are a seed's children under fixed-key AES (tweak 0 for L,
# ``h + 1`` for R, ``h = ceil(m/2)``; the control bit is the child's lowest bit, then
# cleared). A wrong guess fits one element with probability about 2**-128.

_U1 = np.uint64(1)


def _children(seeds: np.ndarray, m: int) -> tuple[np.ndarray, ...]:
    """``(s^L, t^L, s^R, t^R)`` of ``(..., 2)`` uint64 seeds."""
    h = (m + 1) // 2
    blocks = np.repeat(seeds[..., None, :], 2, axis=-2)
    blocks[..., 1, 0] ^= np.uint64(h + 1)
    out = fixed_key_aes(blocks)
    t = out[..., 0] & _U1
    out[..., 0] &= ~_U1
    return out[..., 0, :], t[..., 0], out[..., 1, :], t[..., 1]


def _key_words(key: torch.Tensor) -> np.ndarray:
    return key.detach().contiguous().numpy().view(np.uint64)


def _level0(key: torch.Tensor, n_bits: int, m: int) -> tuple[np.ndarray, ...]:
    """Own root ``(N, 2)``, ``s_CW`` of level 0 ``(N, 2)``, ``t_CW^L``, ``t_CW^R``."""
    k = _key_words(key)
    if k.shape[0] != dcf_key_words(n_bits, m):
        raise ValueError(
            f"a DCF key on {n_bits} bits, payload {m}, has "
            f"{dcf_key_words(n_bits, m)} words, got {k.shape[0]}"
        )
    trow = 2 + (2 + m) * n_bits
    return k[0:2].T.copy(), k[2:4].T.copy(), k[trow] & _U1, (k[trow] >> _U1) & _U1


def dcf_fits(key: torch.Tensor, other_root: np.ndarray, n_bits: int, m: int) -> np.ndarray:
    """Per element: does ``other_root`` (``(N, 2)`` uint64) fit the level-0 corrections of
    this party's ``key`` as the other party's root seed (see the section comment)?"""
    root, s_cw, t_l, t_r = _level0(key, n_bits, m)
    other = other_root.copy()
    other[:, 0] &= ~_U1
    sl0, tl0, sr0, tr0 = _children(root, m)
    sl1, tl1, sr1, tr1 = _children(other, m)
    lose_l = (s_cw == (sl0 ^ sl1)).all(1) & (t_l == tl0 ^ tl1) & (t_r == tr0 ^ tr1 ^ _U1)
    lose_r = (s_cw == (sr0 ^ sr1)).all(1) & (t_l == tl0 ^ tl1 ^ _U1) & (t_r == tr0 ^ tr1)
    return np.asarray(lose_l | lose_r)


def dcf_lose_children(keys: Sequence[torch.Tensor], n_bits: int, m: int) -> np.ndarray:
    """From this party's keys alone: per element, the two candidates ``s_CW ^ s_own^L``
    and ``s_CW ^ s_own^R``, one of which is the other party's lose-side child seed at
    level 0; ``(2 * total elements, 2)`` uint64."""
    out = []
    for key in keys:
        root, s_cw, _, _ = _level0(key, n_bits, m)
        sl, _, sr, _ = _children(root, m)
        out += [s_cw ^ sl, s_cw ^ sr]
    return np.concatenate(out)


def dcf_root_repeats(keys: Sequence[torch.Tensor], n_bits: int, m: int) -> int:
    """How many of :func:`dcf_lose_children` occur more than once, over all the keys given
    (one party's keys of several ops or independent runs). With fresh uniform roots these
    are 127-bit pseudorandom values: a repeat has probability below ``M**2 / 2**128`` for M
    candidates. A root seed derived from a fixed seed repeats in every run (and a constant
    one in every element), whatever the seed was: no guessing needed."""
    vals = dcf_lose_children(keys, n_bits, m)
    _, counts = np.unique(vals, axis=0, return_counts=True)
    return int(counts[counts > 1].sum())


def _prg_stream(prg: Prg, label: tuple[int, int], k: int) -> bytes:
    return prg.random_bytes(k, label)


def _numpy_stream(seed: int, k: int) -> bytes:
    return np.random.default_rng(seed).bytes(k)


def _legacy_stream(seed: int, k: int) -> bytes:
    return np.random.RandomState(seed).bytes(k)


def _python_stream(seed: int, k: int) -> bytes:
    return random.Random(seed).randbytes(k)


def _torch_stream(seed: int, k: int) -> bytes:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (k,), dtype=torch.uint8, generator=g).numpy().tobytes()


def public_seed_sources(
    own_key: bytes | None = None,
    labels: Sequence[tuple[int, int]] = ((0, 0),),
    seeds: Iterable[int] = range(16),
    purposes: Sequence[str] = (
        "dealer/own",
        "dealer/alice",
        "dealer/bob",
        "coordinator",
        "testing-dealer",
        "testing-input",
        "testing-party-0",
        "testing-party-1",
        "dcf",
        "fss",
    ),
) -> list[tuple[str, Callable[[int], bytes]]]:
    """Byte streams anyone (or the party, from ``own_key``) can produce: constants, the
    public fixed AES key, and the usual generators seeded with small integers (numpy,
    torch, Python's ``random``, :meth:`Prg.from_seed` with the purposes the code base
    uses, at each of ``labels`` and at the first unlabelled draw; the party's own PRG key
    at each of ``labels``). ``name, stream(nbytes)``."""
    out: list[tuple[str, Callable[[int], bytes]]] = [
        ("zeros", bytes),
        ("ones", lambda k: b"\xff" * k),
        ("the fixed AES key", lambda k: (FIXED_AES_KEY * (k // 16 + 1))[:k]),
    ]
    if own_key is not None:
        for label in labels:
            out.append((f"own PRG key at {label}", partial(_prg_stream, Prg(own_key), label)))
    for s in seeds:
        out += [
            (f"numpy default_rng({s})", partial(_numpy_stream, s)),
            (f"numpy RandomState({s})", partial(_legacy_stream, s)),
            (f"random.Random({s})", partial(_python_stream, s)),
            (f"torch manual_seed({s})", partial(_torch_stream, s)),
        ]
        for p in purposes:
            prg = Prg.from_seed(s, p)
            for label in labels:
                name = f"Prg.from_seed({s}, {p!r}) at {label}"
                out.append((name, partial(_prg_stream, prg, label)))
            out.append(
                (
                    f"Prg.from_seed({s}, {p!r}) unlabelled",
                    partial(_prg_stream, prg, (1, 0xFFFFFFFF)),
                )
            )
    return out


@dataclass(frozen=True)
class Rebuilt:
    """The other party's root seeds, found from a public source."""

    source: str
    root: np.ndarray
    """``(N, 2)`` uint64, one 128-bit root per element."""


class RootGuesses:
    """Candidate root seeds of ``N`` elements from byte sources, each at both places of a
    ``dcf_keygen`` seed: the other party's half (byte ``16 N``), or the start of a stream
    drawn for it alone. Their children are expanded once and reused for every key."""

    def __init__(self, sources: Sequence[tuple[str, Callable[[int], bytes]]], numel: int):
        names, roots = [], []
        for name, stream in sources:
            raw = stream(32 * numel)
            for off in (0, 16 * numel):
                names.append(f"{name}, byte {off}")
                roots.append(np.frombuffer(raw[off : off + 16 * numel], dtype=np.uint64))
        self.names = names
        self.roots = np.stack(roots).reshape(len(names), numel, 2) & np.array(
            [~_U1, ~np.uint64(0)], dtype=np.uint64
        )
        self._children: dict[int, tuple[np.ndarray, ...]] = {}

    def children(self, m: int) -> tuple[np.ndarray, ...]:
        h = (m + 1) // 2
        if h not in self._children:
            self._children[h] = _children(self.roots, m)
        return self._children[h]


def _fits(key: torch.Tensor, n_bits: int, m: int, kids: tuple[np.ndarray, ...]) -> np.ndarray:
    """:func:`dcf_fits` for the children ``kids`` of many guesses at once: ``(C, N)``. The
    low word of the seed correction is compared first (a wrong guess fails it with
    probability 1 - 2**-63), the rest only for the guesses that pass it somewhere."""
    root, s_cw, t_l, t_r = _level0(key, n_bits, m)
    sl0, tl0, sr0, tr0 = _children(root, m)
    sl1, tl1, sr1, tr1 = kids
    first = (s_cw[:, 0] == sl0[:, 0] ^ sl1[..., 0]) | (s_cw[:, 0] == sr0[:, 0] ^ sr1[..., 0])
    out = np.zeros(first.shape, dtype=bool)
    for c in np.flatnonzero(first.any(axis=1)):
        lose_l = (s_cw == (sl0 ^ sl1[c])).all(-1) & (t_l == tl0 ^ tl1[c])
        lose_l &= t_r == tr0 ^ tr1[c] ^ _U1
        lose_r = (s_cw == (sr0 ^ sr1[c])).all(-1) & (t_l == tl0 ^ tl1[c] ^ _U1)
        lose_r &= t_r == tr0 ^ tr1[c]
        out[c] = lose_l | lose_r
    return out


def dcf_rebuild(
    key: torch.Tensor, n_bits: int, m: int, *guesses: RootGuesses
) -> tuple[Rebuilt | None, float]:
    """Try to rebuild the other party's key from this party's ``key``: its own root (seed
    reuse), then every guess. Returns the rebuilt roots (None if no guess fits every
    element) and the largest fraction of elements any guess fitted (about 0 for a sound
    key: a wrong root fits an element with probability about 2**-128)."""
    root, _, _, _ = _level0(key, n_bits, m)
    own = dcf_fits(key, root, n_bits, m)
    if own.all():
        return Rebuilt("the party's own root", root), 1.0
    best = float(own.mean())
    for g in guesses:
        fit = _fits(key, n_bits, m, g.children(m))
        best = max(best, float(fit.mean(axis=1).max(initial=0.0)))
        full = np.flatnonzero(fit.all(axis=1))
        if len(full):
            return Rebuilt(g.names[full[0]], g.roots[full[0]].copy()), best
    return None, best


def dcf_recover(
    rank: int, key: torch.Tensor, other_root: np.ndarray, n_bits: int, m: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """With the other party's root: ``(alpha, beta)`` of every element, as a party holding
    both keys learns them. Walks alpha's path once: on it the two parties' control bits
    differ, off it they agree (``t_b = t_b^keep ^ t_b t_CW^keep``, ``s_b = s_b^keep ^ t_b
    s_CW``); beta is ``f(0)`` from both keys (valid where alpha > 0)."""
    k = _key_words(key)
    trow = 2 + (2 + m) * n_bits
    seeds = np.stack([k[0:2].T, other_root]).copy()  # (2, N, 2): this party, the other
    seeds[..., 0] &= ~_U1
    t = np.zeros(seeds.shape[:2], dtype=np.uint64)
    t[0], t[1] = rank, 1 - rank  # party b's control bit starts at b
    alpha = np.zeros(seeds.shape[1], dtype=np.uint64)
    for i in range(n_bits):
        s_cw = k[2 + 2 * i : 4 + 2 * i].T
        shift = np.uint64(2 * (i % 32))
        t_cw_l = (k[trow + i // 32] >> shift) & _U1
        t_cw_r = (k[trow + i // 32] >> (shift + _U1)) & _U1
        sl, tl, sr, tr = _children(seeds, m)
        on = (np.uint64(0) - t)[..., None]
        sl, sr = sl ^ (on & s_cw), sr ^ (on & s_cw)
        tl, tr = tl ^ (t & t_cw_l), tr ^ (t & t_cw_r)
        bit = tr[0] ^ tr[1]  # 1 where the path goes right
        alpha = (alpha << _U1) | bit
        right = bit.astype(bool)
        seeds = np.where(right[None, :, None], sr, sl)
        t = np.where(right[None], tr, tl)
    other = key.clone()
    other[0:2] = torch.from_numpy(seeds_root(other_root).T.copy().view(np.int64))
    zero = torch.zeros(key.shape[1], dtype=torch.int64)
    beta = dcf_eval(rank, key, zero, n_bits, m) + dcf_eval(1 - rank, other, zero, n_bits, m)
    return torch.from_numpy(alpha.view(np.int64)), beta


def seeds_root(root: np.ndarray) -> np.ndarray:
    """A root seed as a key stores it: bit 0 (the control bit's place) cleared."""
    out = root.copy()
    out[:, 0] &= ~_U1
    return out


# ---------------------------------------------------------------------------------------
# Programs: running one or several ops in the harness and collecting full views
# ---------------------------------------------------------------------------------------

Ctx = Callable[[int], Any]
"""``ctx(op_id)``: a party's context for one op (a new op id per protocol call)."""
Wrap = Callable[[Any], Any]
"""Wraps each party context, e.g. in a :class:`~protocols.testing.TamperContext`."""
BoardFactory = Callable[[int, int], Board]
"""``factory(n_parties, run index)``: the board of one run."""


@dataclass(frozen=True)
class Program:
    """One or several ops on shared inputs, with what they must compute.

    ``expect(inputs)`` gives the plaintext outputs (compared within ``tolerance``), or
    ``check(inputs, outputs)`` asserts on the revealed outputs itself (a dropout's output
    depends on the dealer's mask, which the check reads from the revealed mask)."""

    name: str
    shapes: tuple[tuple[int, ...], ...]
    body: Callable[[Ctx, list[Share]], Awaitable[Any]]
    expect: Callable[[list[torch.Tensor]], list[torch.Tensor]] | None = None
    tolerance: int = 0
    parties: tuple[int, ...] = (2, 3)
    check: Callable[[list[torch.Tensor], list[torch.Tensor]], None] | None = None


def outputs(res: Any) -> list[Share]:
    """Every :class:`Share` in a (nested) result, in order."""
    if isinstance(res, Share):
        return [res]
    out: list[Share] = []
    for r in res:
        out += outputs(r)
    return out


def _default_board(n: int, run: int) -> Board:
    return fresh_board(n)


def verify(program: Program, xs: list[torch.Tensor], per_party: list[list[Share]]) -> None:
    """AssertionError unless the revealed outputs are what ``program`` computes."""
    got = [reveal(list(s)) for s in zip(*per_party, strict=True)]
    if program.check is not None:
        program.check(xs, got)
        return
    if program.expect is None:
        raise AssertionError(f"{program.name}: neither expect nor check")
    want = program.expect(xs)
    if len(got) != len(want):
        raise AssertionError(f"{program.name}: {len(got)} outputs, expected {len(want)}")
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        err = int((g - w).abs().max().item())
        if err > program.tolerance:
            raise AssertionError(f"{program.name}: output {i} off by {err}")


async def run_views(
    program: Program,
    xs: list[torch.Tensor],
    n: int,
    *,
    board: Board | None = None,
    wrap: Wrap | None = None,
) -> list[FullView]:
    """Run ``program`` once on inputs ``xs`` (shared with a fresh generator) and return every
    party's full view, after checking the results. ``board`` defaults to
    :func:`~protocols.testing.fresh_board` (fresh keys); ``wrap`` wraps every context."""
    if len(xs) != len(program.shapes):
        raise ValueError(f"{program.name} takes {len(program.shapes)} inputs, got {len(xs)}")
    shares = share_inputs(xs, n, prg=Prg.fresh())
    used = fresh_board(n) if board is None else board

    async def body(rank: int, ctx_for: Callable[[int], LocalContext]) -> Any:
        ctx: Ctx = ctx_for if wrap is None else (lambda op: wrap(ctx_for(op)))
        return await program.body(ctx, shares[rank])

    results, used = await run_parties(n, body, board=used)
    verify(program, xs, [outputs(r) for r in results])
    for rank in range(n):
        used.views[rank].inputs = [s.value for s in shares[rank]]
    return [full_view(used.views[rank], rank) for rank in range(n)]


FIXED_A = (5, 3, -7, 9)
FIXED_B = (-(2**44) - 2, 2**33 + 8, 2**40 + 1, -4)
"""The fixed secrets: A and B differ in parity, low bits, magnitude and sign."""
RANDOM_BITS = 44
"""Random secrets are uniform in ``(-2**44, 2**44)`` (a truncation by the SecureML rule
fails with probability 2**-20 per element)."""


def program_inputs(kind: str, program: Program, run: int) -> list[torch.Tensor]:
    """Inputs of one run: ``"A"`` or ``"B"`` (every element the fixed value, input i the
    i-th of :data:`FIXED_A` / :data:`FIXED_B`) or ``"random"`` (a fixed seed per run: the
    test's sampling, not a protocol secret)."""
    shapes = program.shapes
    if kind == "random":
        g = torch.Generator().manual_seed(7919 * run + 1)
        lim = 2**RANDOM_BITS
        return [torch.randint(-lim, lim, s, dtype=torch.int64, generator=g) for s in shapes]
    if kind not in ("A", "B"):
        raise ValueError(f"secret kind is A, B or random, got {kind!r}")
    values = FIXED_A if kind == "A" else FIXED_B
    if len(shapes) > len(values):
        raise ValueError(f"{program.name}: at most {len(values)} fixed inputs")
    return [torch.full(s, v, dtype=torch.int64) for s, v in zip(shapes, values, strict=False)]


RUNS = 2
"""Independent runs per secret (each element of each run is one instance)."""


async def collect(
    program: Program,
    kind: str,
    n: int,
    *,
    runs: int = RUNS,
    first: int = 0,
    board: BoardFactory = _default_board,
    wrap: Wrap | None = None,
) -> list[list[FullView]]:
    """``runs`` independent runs on secrets of ``kind`` (runs ``first ..``)."""
    return [
        await run_views(program, program_inputs(kind, program, i), n, board=board(n, i), wrap=wrap)
        for i in range(first, first + runs)
    ]


async def a_vs_b(program: Program, n: int, b_kind: str, **kw: Any) -> Report:
    """Views on the fixed secret A against views on ``b_kind`` (``"B"`` or ``"random"``)."""
    return compare(
        await collect(program, "A", n, first=1000, **kw),
        await collect(program, b_kind, n, first=2000, **kw),
    )


async def real_vs_sim(program: Program, n: int, **kw: Any) -> Report:
    """Real views on the fixed secret A against :func:`simulate` run on the party's own view
    of independent runs (on random secrets; the simulator ignores their openings)."""
    real = await collect(program, "A", n, first=3000, **kw)
    other = await collect(program, "random", n, first=4000, **kw)
    rng = np.random.default_rng(5)
    return compare(real, [[simulate(v, rng) for v in run] for run in other])


DealerSecrets = Callable[[int], tuple[list[torch.Tensor], dict[tuple[int, str, str], torch.Tensor]]]
"""``secrets(run)``: the inputs and the dealer's secrets ``{(op id, spec kind, item):
plaintext}`` of one run (see :class:`~protocols.testing.FixedSecretsBoard`)."""


async def dealer_a_vs_b(
    program: Program,
    n: int,
    secrets_a: DealerSecrets,
    secrets_b: DealerSecrets,
    *,
    runs: int = RUNS,
    wrap: Wrap | None = None,
) -> Report:
    """Views when the *dealer's* secrets vary as well as the inputs: every run draws its
    shares and keys fresh but takes its masks (``r``, a dropout draw ``u``) from
    ``secrets_a`` / ``secrets_b``. Choosing ``x + r`` equal in A and B makes every opening
    the same, so a view that depends on x or r beyond what is opened differs; choosing a
    dropout mask all-keep in A and all-drop in B tests that no party learns the mask."""

    async def side(secrets: DealerSecrets, first: int) -> list[list[FullView]]:
        out = []
        for i in range(first, first + runs):
            xs, dealer = secrets(i)
            board = FixedSecretsBoard(n, dealer)
            out.append(await run_views(program, xs, n, board=board, wrap=wrap))
        return out

    return compare(await side(secrets_a, 0), await side(secrets_b, 1000))


def expect_secure(report: Report, fwer: float) -> Finding:
    """AssertionError if any feature is rejected at family-wise rate ``fwer``; else the
    worst finding (for the log)."""
    bad = report.rejected(fwer)
    if bad:
        raise AssertionError(report.summary(fwer))
    return report.worst()


def expect_caught(report: Report, fwer: float, *parts: str) -> Finding:
    """AssertionError unless a feature whose name holds every one of ``parts`` is rejected
    at family-wise rate ``fwer``; returns the strongest such finding."""
    hits = [f for f in report.rejected(fwer) if all(p in f.name for p in parts)]
    if not hits:
        raise AssertionError(f"not caught by {parts}:\n{report.summary(fwer)}")
    return hits[0]


__all__ = [
    "FIXED_A",
    "FIXED_B",
    "RUNS",
    "BoardFactory",
    "Ctx",
    "DealerSecrets",
    "Feature",
    "Finding",
    "FullView",
    "Program",
    "Rebuilt",
    "Record",
    "Report",
    "RootGuesses",
    "Wrap",
    "a_vs_b",
    "collect",
    "compare",
    "counts",
    "cross_features",
    "dcf_fits",
    "dcf_lose_children",
    "dcf_rebuild",
    "dcf_recover",
    "dcf_root_repeats",
    "dealer_a_vs_b",
    "element_counts",
    "element_record",
    "expect_caught",
    "expect_secure",
    "full_view",
    "g_test",
    "g_tests",
    "joint_features",
    "marginal_features",
    "outputs",
    "pair_features",
    "program_inputs",
    "public_seed_sources",
    "real_vs_sim",
    "record_features",
    "run_views",
    "simulate",
    "verify",
    "view_features",
]
