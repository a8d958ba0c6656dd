"""The simulator of the masked-opening protocols: a party's view from its own view alone.

Semi-honest security says a party's view can be produced from its own inputs and outputs;
for Beaver products, dealer truncation pairs and the masked comparison openings that
simulator is simple: every opened value is uniform, and the peers' messages are uniform
shares consistent with it. :func:`simulate` builds that view with no secret at all;
:func:`protocols.analysis.programs.real_vs_sim` tests a real transcript against it.
"""

from __future__ import annotations

import numpy as np
import torch

from .views import FullView, combine


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
        rest = combine(opened, mine) if t.dtype == torch.bool else opened - mine
        for i, (rname, rop, rt) in enumerate(msgs):
            if i == len(msgs) - 1:
                sim.received.append((rname, rop, rest))
            else:
                s = _uniform_like(rt, rng)
                sim.received.append((rname, rop, s))
                rest = combine(rest, s) if t.dtype == torch.bool else rest - s
    order = {name: i for i, (name, _, _) in enumerate(real.received)}
    sim.received.sort(key=lambda r: order[r[0]])
    return sim
