"""Pytest set-up and fixtures; the helpers live in the library's testing kit,
:mod:`training.testing` (re-exported here for the modules that import them from conftest)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import structlog
import torch
from hypothesis import settings

from actors import configure_logging
from training import Cluster
from training.testing import (
    PARTIES,
    PROVIDER,
    Tap,
    envelope_metadata,
    envelope_view,
    start_cluster,
)

__all__ = [
    "PARTIES",
    "PROVIDER",
    "Tap",
    "envelope_metadata",
    "envelope_view",
]

# Property tests draw the same cases on every run, so a red build means a bug, not bad
# luck; HYPOTHESIS_PROFILE=explore draws fresh ones.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


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


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    """A running 2-party cluster with seed 1 (reproducible shares; INSECURE, tests only)."""
    async with start_cluster(2, seed=1) as c:
        yield c


@pytest.fixture
async def cluster3() -> AsyncIterator[Cluster]:
    """A running 3-party cluster with seed 1."""
    async with start_cluster(3, seed=1) as c:
        yield c
