"""Shared test helpers (imported by the test modules): party names and an envelope tap."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import pytest
import structlog
import torch
from hypothesis import settings

from actors import Envelope, Phase, configure_logging
from actors.messages import Batch
from protocols.analysis import FullView, full_view
from protocols.testing import View

# Property tests draw the same cases on every run, so a red build means a bug, not bad
# luck; HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


PARTIES: dict[int, list[str]] = {2: ["alice", "bob"], 3: ["alice", "bob", "carol"]}
PROVIDER = "james"


class Tap:
    """Records (and passes on) every envelope the network accepts from now on."""

    def __init__(self, cluster: object, drop: Callable[[Envelope], bool] | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self._drop = drop
        self.remove = cluster.network.observe(self)  # type: ignore[attr-defined]

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


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread() -> Iterator[None]:
    """The tensors here are small: torch's thread pool only adds contention when other
    processes share the CPUs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """A test that runs a script's main() reconfigures structlog for the process, possibly
    onto its captured stderr, which pytest closes after the test: put it back."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


@pytest.fixture(scope="module")
def quiet_logs() -> Iterator[None]:
    """No per-cluster log summaries from modules that start hundreds of clusters."""
    configure_logging(level="critical")
    yield
    configure_logging()


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


def envelope_view(envs: Iterable[Envelope], party: str, parties: list[str]) -> FullView:
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
