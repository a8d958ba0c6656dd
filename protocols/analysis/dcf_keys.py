"""DCF keys: can a party rebuild the other party's key from public or own material?

The two keys of a DCF (:mod:`protocols.dcf`, BCG+21) share every correction word; they
differ only in the root seed (rows 0 and 1). A party that can produce the other party's
root seed therefore holds both keys, evaluates the comparison function everywhere and
learns alpha (the mask r) and with the opened x + r the secret x. The other root must be
unpredictable: not a constant, not derived from a fixed seed, not the party's own.

Whether a guessed root is the other party's is checked exactly at level 0, from the
construction as documented in :mod:`protocols.dcf` (not from its code): the seed
correction word is ``s_CW = s_0^lose ^ s_1^lose`` and the control-bit corrections are
``t_CW^L = t_0^L ^ t_1^L ^ alpha_0 ^ 1``, ``t_CW^R = t_0^R ^ t_1^R ^ alpha_0``, where
``(s^L, t^L)``, ``(s^R, t^R)`` are a seed's children under fixed-key AES (tweak 0 for L,
``h + 1`` for R, ``h = ceil(m/2)``; the control bit is the child's lowest bit, then
cleared). A wrong guess fits one element with probability about 2**-128.

:func:`dcf_rebuild` tries the party's own root and every :class:`RootGuesses` source
(:func:`public_seed_sources`); :func:`dcf_root_repeats` looks for roots that repeat over
keys and runs (a root from a fixed seed repeats whatever the seed); :func:`dcf_recover`
shows what a party holding both keys learns.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..dcf import dcf_eval, dcf_key_words
from ..prg import FIXED_AES_KEY, Prg, fixed_key_aes

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
