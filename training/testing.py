"""Testing kit for code built on :class:`training.Cluster` (as :mod:`protocols.testing` is
for protocols and :mod:`actors.testing` for transports).

What almost every test of a cluster writes, written once:

- :func:`start_cluster`: a cluster of ``n`` parties (:data:`PARTIES`) and the provider
  :data:`PROVIDER`, with ``Cluster.start``'s own defaults for everything else;
- :func:`measure`: the cost of a block of ops, flushed on both sides so that work issued
  before it is not counted and work issued in it is (``async with measure(c) as m: ...``,
  then ``m.stats``);
- :func:`reveal`, :func:`value_of`, :func:`reveal_raw`: a result as float64, as it is, or
  as its ring integers;
- :func:`recorded`, :class:`Recording`, :class:`Tap`, :func:`envelope_view`, :func:`envelope_metadata`,
  :func:`analyse`: the recorded messages of a run turned into each party's view for the
  two-sample tests of :mod:`protocols.analysis`, and into the message pattern that must
  not depend on a secret.

``tests/conftest.py`` builds its pytest fixtures on these.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from actors import Envelope, Phase
from actors.messages import Batch
from actors.names import ConfigError
from actors.stats import CommStats
from protocols.analysis import FullView, Report, compare, full_view
from protocols.testing import View

from .cluster import Cluster
from .tensor import SharedTensor

PARTIES: dict[int, list[str]] = {2: ["alice", "bob"], 3: ["alice", "bob", "carol"]}
"""The party names of a 2- and a 3-party test cluster."""
PROVIDER = "james"
"""The crypto provider's name in every test cluster."""


def parties(n: int) -> list[str]:
    """The names of an ``n``-party test cluster (a fresh list: callers may change it)."""
    if n not in PARTIES:
        raise ConfigError(f"test clusters have 2 or 3 parties, got {n!r}")
    return list(PARTIES[n])


def start_cluster(
    n: int | Sequence[str] = 2,
    seed: int | None = None,
    *,
    provider: str = PROVIDER,
    **options: Any,
) -> AbstractAsyncContextManager[Cluster]:
    """``Cluster.start`` for a test: ``n`` parties by count (2 or 3) or by name, the
    provider :data:`PROVIDER`; ``seed`` and ``options`` (``protocols``, ``timeout``,
    ``data``, ``check``, ...) as ``Cluster.start`` takes them, with its defaults."""
    names = parties(n) if isinstance(n, int) else list(n)
    return Cluster.start(names, provider=provider, seed=seed, **options)


@dataclass
class Measurement:
    """The cost of the ops issued in a :func:`measure` block, known once it has exited."""

    before: CommStats
    _stats: CommStats | None = field(default=None, repr=False)

    @property
    def stats(self) -> CommStats:
        """The traffic and rounds between the block's start and end."""
        if self._stats is None:
            raise RuntimeError("the measured block has not finished")
        return self._stats


@asynccontextmanager
async def measure(cluster: Cluster) -> AsyncIterator[Measurement]:
    """Measure the ops issued inside the block: flush before (earlier work is not
    counted), flush after (every op issued inside has finished and is counted)."""
    await cluster.flush()
    m = Measurement(cluster.stats())
    yield m
    await cluster.flush()
    m._stats = cluster.stats() - m.before


async def cost(cluster: Cluster, make: Callable[[], Any]) -> tuple[Any, CommStats]:
    """``make()``'s result and the cost of the ops it issues (see :func:`measure`)."""
    async with measure(cluster) as m:
        result = make()
    return result, m.stats


async def reveal(v: Any) -> torch.Tensor:
    """A result as float64: a SharedTensor revealed, a public tensor or number as it is."""
    if isinstance(v, SharedTensor):
        return (await v.get()).double()
    if isinstance(v, torch.Tensor):
        return v.detach().double()
    if isinstance(v, int | float):
        return torch.as_tensor(v).double()
    raise TypeError(f"cannot reveal a {type(v).__name__}")


async def value_of(x: Any) -> Any:
    """A SharedTensor's value (``await x.get()``, its own dtype); anything else as it is."""
    return await x.get() if isinstance(x, SharedTensor) else x


async def reveal_raw(t: SharedTensor) -> torch.Tensor:
    """The revealed ring integers of ``t`` (no fixed-point decoding, no float rounding)."""
    return await t.cluster.reveal(t.tid, t.shape)


# -- recorded runs and their views --------------------------------------------------------


class Tap:
    """Records (and passes on) every envelope the network accepts from now on; ``drop``
    says which ones to lose instead of passing on."""

    def __init__(self, cluster: Cluster, drop: Callable[[Envelope], bool] | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self._drop = drop
        self.remove = cluster.network.observe(self)

    def __call__(self, env: Envelope) -> Envelope | None:
        self.envelopes.append(env)
        return None if self._drop is not None and self._drop(env) else env

    def commands(self, party: str = "alice") -> list[str]:
        """Kinds of the commands the coordinator sent to ``party``."""
        return [
            cmd.kind
            for env in self.envelopes
            if env.receiver == party and env.tag.startswith("cmd/")
            for cmd in env.control(Batch).ops
        ]


def envelope_metadata(envs: Iterable[Envelope]) -> list[tuple[Any, ...]]:
    """Everything but the payload values of the messages that are not commands, sorted:
    equal for two secrets when the message pattern does not depend on them."""
    rows = []
    for e in envs:
        if e.phase == Phase.CONTROL:
            continue
        shapes = tuple((tuple(t.shape), t.dtype) for t in e.tensors())
        rows.append((e.sender, e.receiver, e.tag, e.phase, e.depth, e.payload_bytes, shapes))
    return sorted(rows, key=repr)


def envelope_view(envs: Iterable[Envelope], party: str, parties: Sequence[str]) -> FullView:
    """``party``'s view of a recorded cluster run, for :mod:`protocols.analysis`: its input
    shares, the dealer's messages to it (its own material as far as the wire shows it),
    every online message it received and sent (its openings follow from them)."""
    rank = {p: i for i, p in enumerate(parties)}
    v = View()
    for e in envs:
        if e.phase not in (Phase.INPUT, Phase.ONLINE, Phase.OFFLINE):
            continue
        head, _, step = e.tag.partition("/")
        op = int(head)
        if e.receiver == party:
            if e.phase == Phase.INPUT:
                v.inputs += list(e.tensors())
            elif e.phase == Phase.OFFLINE:
                v.material += [(op, f"{step}[{i}]", t) for i, t in enumerate(e.tensors())]
            else:
                v.received.append((op, step, rank[e.sender], e.tensors()))
        elif e.sender == party and e.phase == Phase.ONLINE:
            v.sent.append((op, step, rank[e.receiver], e.tensors()))
    return full_view(v, rank[party])


@dataclass
class Recording:
    """The envelopes of (part of) a cluster run, and the cluster's party names."""

    envs: list[Envelope]
    parties: list[str]

    def received(self, actor: str, phases: Iterable[Phase] | None = None) -> list[Envelope]:
        """What ``actor`` received (in one of ``phases``, when given)."""
        wanted = None if phases is None else set(phases)
        return [
            e for e in self.envs if e.receiver == actor and (wanted is None or e.phase in wanted)
        ]

    def metadata(self) -> list[tuple[Any, ...]]:
        """See :func:`envelope_metadata`."""
        return envelope_metadata(self.envs)

    def views(self) -> list[FullView]:
        """Every party's view (see :func:`envelope_view`), in party order."""
        return [envelope_view(self.envs, p, self.parties) for p in self.parties]


@asynccontextmanager
async def recorded(cluster: Cluster) -> AsyncIterator[Recording]:
    """Record every envelope the network accepts inside the block (nothing after it)."""
    rec = Recording([], list(cluster.parties))
    tap = Tap(cluster)
    rec.envs = tap.envelopes
    try:
        yield rec
    finally:
        tap.remove()


def analyse(a: Recording, b: Recording) -> Report:
    """Every feature of every party's view, one run on secret A against one on B."""
    return compare([a.views()], [b.views()])
