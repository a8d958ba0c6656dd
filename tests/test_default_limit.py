"""The ``default`` suite's FSS limit (issue 19): the element count up to which a comparison
uses FSS (1 round, ~3 KB of dealer keys and ~20 us per element) rather than the carry tree
(7 rounds, ~28 B of dealer material), picked by the cluster from its links' latency.

What is checked: the limit formula's clamps and monotony, the names ``default@N`` (and
that a bad one is refused naming the form), which suite ``Cluster.start`` and
``Cluster.connect`` pick for ``"default"``, that the pick is logged, and that ops on
either side of the limit really take one round or seven with exact results (in memory and
over loopback TLS, where the nodes must resolve the same limit from the session's name or
the dealer's material would not match what the parties run).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import trio
from structlog.testing import capture_logs

from actors import NetworkProfile, configure_logging
from actors.cluster import _loopback
from actors.config import ClusterConfig, load_config, write_local_config
from protocols.suite import (
    DEFAULT,
    FSS_MAX_NUMEL,
    FSS_MIN_NUMEL,
    default_suite,
    describe,
    fss_limit,
    fss_limit_of,
    get_suite,
)
from training import launch
from training.testing import cost, start_cluster

IN_MEMORY = fss_limit(0.0)


def test_limit_grows_with_latency_within_its_clamps() -> None:
    lats = [0.0, 1e-4, 1e-3, 1e-2, 3e-2, 4e-2, 1.0]
    limits = [fss_limit(t) for t in lats]
    assert limits == sorted(limits)
    assert FSS_MIN_NUMEL <= IN_MEMORY < 256 < fss_limit(1e-3) < fss_limit(1e-2) < FSS_MAX_NUMEL
    assert fss_limit(4e-2) == fss_limit(1.0) == FSS_MAX_NUMEL  # a 40 ms WAN: the WAN form
    for bad in (-1e-3, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="latency must be a finite number"):
            fss_limit(bad)


def test_names_resolve_to_the_same_suite() -> None:
    assert get_suite("default") is DEFAULT is get_suite("default@10000") is default_suite()
    s = get_suite("default@300")
    assert s is default_suite(300) and s.name == "default@300" and fss_limit_of(s) == 300
    assert fss_limit_of(get_suite("carry")) is None and describe(get_suite("carry")) == "carry"
    assert describe(DEFAULT) == (
        "default (FSS comparison up to 10,000 elements per op, carry tree above)"
    )
    for bad in ("default@", "default@-1", "default@01", "default@1e3", "default@x"):
        with pytest.raises(ValueError, match="default@N"):
            get_suite(bad)
    with pytest.raises(ValueError, match="element count"):
        default_suite(-1)


async def _rounds_at(c: object, numel: int) -> int:
    x = torch.linspace(-3, 3, numel)
    y, stats = await cost(c, lambda: c.share(x).relu())  # type: ignore[attr-defined]
    err = ((await y.get()).double() - torch.relu(x.double())).abs().max()
    assert float(err) <= 0.5e-3 + 2.0**-20, numel  # x's encoding (base 10, 3 digits)
    return stats.online_rounds


@pytest.fixture
def debug_logs() -> Iterator[None]:
    configure_logging(level="debug")  # the pick is a debug event: start stays quiet
    yield
    configure_logging()


async def test_start_picks_the_limit_from_the_party_links(debug_logs: None) -> None:
    with capture_logs() as logs:
        async with start_cluster(2, seed=1) as c:
            assert c.suite is default_suite(IN_MEMORY)
            assert [await _rounds_at(c, n) for n in (IN_MEMORY, IN_MEMORY + 1)] == [1, 7]
    (event,) = [e for e in logs if e["event"] == "protocol_suite"]
    assert event["suite"] == f"default@{IN_MEMORY}"
    assert f"FSS comparison up to {IN_MEMORY} elements" in event["protocols"]
    wan = NetworkProfile(latency=0.04)
    async with start_cluster(2, seed=1, links={("alice", "bob"): wan}) as c:
        assert c.suite is DEFAULT  # the slowest party link decides
    async with start_cluster(2, seed=1, links={("alice", "james"): wan}) as c:
        assert c.suite is default_suite(IN_MEMORY)  # the dealer's link is offline traffic
    for named in ("default@10000", DEFAULT):
        async with start_cluster(2, seed=1, protocols=named) as c:
            assert c.suite is DEFAULT and await _rounds_at(c, IN_MEMORY + 1) == 1


def test_connect_takes_the_in_memory_limit_on_loopback_only(tmp_path: Path) -> None:
    """Over TLS the coordinator cannot see the party links' latency: nodes on loopback
    addresses cross over as one process does (measured, protocols/suite.py), any other
    host gets the WAN form."""
    local = load_config(write_local_config(tmp_path, ["alice", "bob"]))
    assert _loopback(local)
    for host in ("::1", "localhost", "127.0.0.2"):
        assert _loopback(_with_host(local, "bob", host)), host
    for host in ("10.0.0.2", "bob.example.org", "0.0.0.0"):
        assert not _loopback(_with_host(local, "bob", host)), host


def _with_host(cfg: ClusterConfig, name: str, host: str) -> ClusterConfig:
    actors = {**cfg.actors, name: replace(cfg.actors[name], host=host)}
    return replace(cfg, actors=actors)


@pytest.mark.tls
async def test_loopback_tls_nodes_run_the_limit_the_coordinator_names() -> None:
    with trio.fail_after(120):
        async with launch.open_cluster("tcp", ["alice", "bob"], seed=1) as c:
            assert c.suite is default_suite(IN_MEMORY)
            assert [await _rounds_at(c, n) for n in (IN_MEMORY, IN_MEMORY + 1)] == [1, 7]


def test_scripts_take_default_at_n_and_name_unknown_suites() -> None:
    """--protocols / --suites accept every name the cluster does (default@N too) and
    refuse an unknown one with the list of known suites, not argparse's bare 'invalid'."""
    import argparse

    from protocols.suite import suite_arg

    assert suite_arg("default@500") == "default@500"
    assert suite_arg("carry") == "carry"
    for bad in ("nope", "default@", "default@-3", "default@07"):
        with pytest.raises(argparse.ArgumentTypeError, match="known suites: carry, default"):
            suite_arg(bad)
