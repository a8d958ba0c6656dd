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
    twice cancels).

Every p-value is named (party, family, tensor, feature), so a failing feature is reported.
:class:`Report` applies Bonferroni over all of them. :func:`simulate` is the simulator of
the masked-opening protocols here (Beaver, truncation pairs, the comparison): from the
party's own view (inputs, material, what it sends) alone it produces openings that are
uniform and peer messages consistent with them; a real transcript must be
indistinguishable from it, with no secret chosen at all.

The evidence is statistical: a leak the features cannot express (a dependence only in
bits 4..59 of a single value, say) is not seen. Each feature family is shown to fail on a
realistic broken variant in ``tests/test_security_views.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy import special

from .testing import View

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


def _combine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a ^ b if a.dtype == torch.bool else a + b


def full_view(view: View, rank: int) -> FullView:
    """Build the full view from a :class:`protocols.testing.View`.

    An opening is identified by ``(op id, step, tensor index)``; the party's share is what
    it sent to its first peer (an opening sends the same share to every peer)."""
    out = FullView(rank, view.prg_key)
    out.own += [(f"in[{i}]", None, t) for i, t in enumerate(view.inputs)]
    out.own += [(f"op{op} {name}", op, t) for op, name, t in view.material]
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


def view_features(v: FullView) -> dict[str, Feature]:
    """Every named feature of one full view: families (a), (b) and (c) of the module doc."""
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
    for oname, op, o in v.opened:
        for wname, wop, w in v.own:
            if wop is not None and wop != op:
                continue
            feats = joint_features(o, w, marg[f"open {oname}"], marg[f"own {wname}"])
            for fname, f in feats.items():
                out[f"(b) joint open {oname} with own {wname}: {fname}"] = f
    for i, (n1, _, o1) in enumerate(v.opened):
        for n2, _, o2 in v.opened[i + 1 :]:
            feats = pair_features(o1, o2, marg[f"open {n1}"], marg[f"open {n2}"])
            for fname, f in feats.items():
                out[f"(c) pair open {n1} and open {n2}: {fname}"] = f
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


def g_test(a: Feature, b: Feature) -> tuple[float, int, float]:
    """G-test of homogeneity of two samples of one categorical feature; categories with
    fewer than :data:`MIN_CELL` observations in total are pooled into one."""
    k = max(a[1], b[1])
    ca = np.bincount(a[0], minlength=k).astype(np.float64)
    cb = np.bincount(b[0], minlength=k).astype(np.float64)
    rare = (ca + cb) < MIN_CELL
    if rare.any():
        ca = np.append(ca[~rare], ca[rare].sum())
        cb = np.append(cb[~rare], cb[rare].sum())
    keep = (ca + cb) > 0
    table = np.stack([ca[keep], cb[keep]])
    if table.shape[1] < 2:
        return 0.0, 0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0) / table.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(table > 0, table * np.log(table / expected), 0.0)
    g = float(2 * terms.sum())
    dof = table.shape[1] - 1
    return g, dof, float(special.chdtrc(dof, g))


def _merge(runs: Iterable[FullView]) -> dict[str, Feature]:
    parts: dict[str, list[np.ndarray]] = {}
    sizes: dict[str, int] = {}
    for v in runs:
        for name, (codes, k) in view_features(v).items():
            parts.setdefault(name, []).append(codes)
            sizes[name] = k
    return {name: (np.concatenate(p), sizes[name]) for name, p in parts.items()}


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
        for name in sorted(fa.keys() | fb.keys()):
            label = f"party {rank} {name}"
            if name not in fa or name not in fb:
                findings.append(Finding(label, float("inf"), 0, 0.0))
                continue
            findings.append(Finding(label, *g_test(fa[name], fb[name])))
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
    sim = FullView(real.rank, real.key, list(real.own), list(real.sent))
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


__all__ = [
    "Feature",
    "Finding",
    "FullView",
    "Report",
    "compare",
    "full_view",
    "g_test",
    "joint_features",
    "marginal_features",
    "pair_features",
    "simulate",
    "view_features",
]
