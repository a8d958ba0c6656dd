"""The TLS transport (issue 11): actors as separate processes over TCP with mutual TLS.

Same frames and meters as in memory (bytes and rounds identical, asserted); a killed
process is named within 2 s and no process is left behind; a reused op id, a wrong
certificate and a message claiming another sender are refused with typed errors (owners
and reveal rules: tests/test_trust.py); a party can share data the coordinator never sees. Every node process
is killed in a ``finally``; every wait is bounded.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
import trio
from seed_net import DATA, TARGET, loss_fn, make_net

from actors import Chaos, Phase
from actors.certs import write_certs
from actors.config import ActorAddress, ClusterConfig, load_config, write_local_config
from actors.holdings import OpReused
from actors.mailbox import Roles
from actors.messages import Batch, Command, DealerRequest, encode_control
from actors.node import save_tensors, spawn_nodes, stop_nodes
from actors.tls import PeerAuthError, TlsTransport
from actors.wire import pack_frame
from protocols.errors import PartyFailure, ProtocolError
from training import SGD, Cluster, TrainingCoordinator
from training.testing import PARTIES, Tap, start_cluster

SEED = 11
TWO = PARTIES[2]
NODES = [*TWO, "james"]
START = 90.0  # node processes import torch: slow on a loaded machine
tls = pytest.mark.tls


@contextmanager
def local_nodes(
    tmp: Path,
    data: dict[str, dict[str, torch.Tensor]] | None = None,
    parties: list[str] = TWO,
    *,
    seeded: bool = False,
    reveal: dict[str, dict[str, dict[str, int]]] | None = None,
) -> Iterator[tuple[Path, dict[str, subprocess.Popen[bytes]]]]:
    """Node processes on 127.0.0.1; ``seeded``: started with --allow-insecure-seed;
    ``reveal``: each party's own rules, written into its table of the cluster file."""
    files = {}
    for owner, tensors in (data or {}).items():
        files[owner] = tmp / f"{owner}.npz"
        save_tensors(files[owner], tensors)
    config = write_local_config(tmp, parties, data=files, idle_timeout=20.0, reveal=reveal)
    procs = spawn_nodes(config, [*parties, "james"], log_dir=tmp, allow_insecure_seed=seeded)
    try:
        yield config, procs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


async def _train(cluster: Cluster, steps: int, owners: list[str] | None = None) -> list:
    if owners:
        x, y = cluster.share_from(owners[0], "features"), cluster.share_from(owners[1], "targets")
    else:
        x, y = cluster.share(DATA), cluster.share(TARGET)
    model = cluster.share_module(make_net())
    coord = TrainingCoordinator(cluster, model, SGD(model.parameters(), lr=0.1), loss_fn)
    return [await coord.step(x, y) for _ in range(steps)]


def _figures(records: list) -> list[tuple]:
    return [(r.loss, r.online_rounds, r.online_bytes, r.offline_bytes) for r in records]


_TOTALS = (
    "online_rounds",
    "online_bytes",
    "offline_bytes",
    "input_bytes",
    "output_bytes",
    "control_bytes",
    "header_bytes",
    "messages",
    "online_messages",
)


@tls
async def test_same_losses_bytes_and_rounds_over_tls(tmp_path: Path) -> None:
    """Same seed: the same losses, bit for bit, and the same rounds and bytes per
    iteration and in total, whether the actors share a process or talk over TLS."""
    async with start_cluster(2, seed=SEED) as c:
        expected = _figures(await _train(c, 3))
        await c.flush()
        total = c.stats()
    with local_nodes(tmp_path, seeded=True) as (config, procs), trio.fail_after(START):
        async with Cluster.connect(config, seed=SEED) as c:
            got = _figures(await _train(c, 3))
            await c.flush()
            tcp_total = c.stats()
            assert c.session is not None and len(c.session) == 32
        codes = stop_nodes(procs, grace=5)
    assert got == expected
    for field in _TOTALS:
        assert getattr(tcp_total, field) == getattr(total, field), field
    assert set(tcp_total.per_actor) == set(total.per_actor)
    assert codes == dict.fromkeys(NODES, 0)


@tls
async def test_three_parties_in_check_mode_over_tls(tmp_path: Path) -> None:
    """Three parties over TLS, with check mode on (every op revealed to the coordinator and
    compared with plaintext torch): the same losses, rounds and bytes as in memory."""
    async with start_cluster(3, seed=SEED, check=True) as c:
        expected = _figures(await _train(c, 2))
        await c.flush()
        total = c.stats()
    with (
        local_nodes(tmp_path, parties=PARTIES[3], seeded=True) as (config, procs),
        trio.fail_after(START),
    ):
        async with Cluster.connect(config, seed=SEED, check=True) as c:
            assert c.checker is not None
            got = _figures(await _train(c, 2))
            await c.flush()
            tcp_total = c.stats()
        codes = stop_nodes(procs, grace=5)
    assert got == expected
    assert tcp_total.online_rounds == total.online_rounds
    assert tcp_total.online_bytes == total.online_bytes
    assert tcp_total.output_bytes == total.output_bytes > 0
    assert codes == {**dict.fromkeys(PARTIES[3], 0), "james": 0}


@tls
async def test_data_owners_train_like_one_owner(tmp_path: Path) -> None:
    """alice holds the data, bob the targets; the coordinator never sees either, and the
    losses match the coordinator-owned run within the fixed-point tolerance."""
    async with start_cluster(2) as c:
        one_owner = [r.loss for r in await _train(c, 3)]
    data = {"alice": {"features": DATA}, "bob": {"targets": TARGET}}
    losses_only = {"coordinator": {"max_elements": 1}}
    reveal = {"alice": losses_only, "bob": losses_only}
    with local_nodes(tmp_path, data, reveal=reveal) as (config, procs), trio.fail_after(START):
        async with Cluster.connect(config) as c:
            assert c.catalog["alice"] == {"features": (4, 2)}
            records = await _train(c, 3, ["alice", "bob"])
            # the coordinator shared only the model's 9 values, 2 shares of 8 bytes each
            assert c._endpoint.meter.snapshot().sent[Phase.INPUT] == 2 * 8 * 9
        stop_nodes(procs, grace=5)
    for got, want in zip([r.loss for r in records], one_owner, strict=True):
        assert abs(got - want) < 0.02


@tls
@pytest.mark.parametrize("victim", ["bob", pytest.param("james", marks=pytest.mark.full)])
async def test_kill_9_is_named_within_2s_and_leaves_no_process(victim: str, tmp_path: Path) -> None:
    """kill -9 of a party or the provider mid-step: the error names it within 2 s and
    every other node exits by itself."""
    with local_nodes(tmp_path) as (config, procs):
        killed_at = 0.0
        with trio.fail_after(START), pytest.raises(PartyFailure) as info:
            async with Cluster.connect(config) as c:
                x, y = c.share(DATA), c.share(TARGET)
                model = c.share_module(make_net())
                opt = SGD(model.parameters(), lr=0.1)
                coord = TrainingCoordinator(c, model, opt, loss_fn)
                await coord.step(x, y)

                async def kill_soon() -> None:
                    nonlocal killed_at
                    await trio.sleep(0.02)
                    killed_at = time.perf_counter()
                    os.kill(procs[victim].pid, signal.SIGKILL)

                assert c._nursery is not None
                c._nursery.start_soon(kill_soon)
                for _ in range(100):
                    await coord.step(x, y)
        seconds = time.perf_counter() - killed_at
        assert info.value.actor == victim, info.value
        assert killed_at and seconds < 2.0, seconds
        deadline = time.monotonic() + 5
        for p in procs.values():
            p.wait(max(0.1, deadline - time.monotonic()))
        print(f"\nkill -9 {victim}: PartyFailure({info.value.actor!r}) after {seconds:.3f} s")


_COORDINATOR = """
import sys, trio
from actors import Cluster
async def main():
    async with Cluster.connect(sys.argv[1]):
        print("connected", flush=True)
        await trio.sleep(120)
trio.run(main)
"""


@tls
def test_nodes_exit_when_the_coordinator_is_killed(tmp_path: Path) -> None:
    with local_nodes(tmp_path) as (config, procs):
        env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
        coord = subprocess.Popen(
            [sys.executable, "-c", _COORDINATOR, str(config)], env=env, stdout=subprocess.PIPE
        )
        try:
            ready, _, _ = select.select([coord.stdout], [], [], START)
            assert ready and coord.stdout is not None
            assert coord.stdout.readline().strip() == b"connected"
            os.kill(coord.pid, signal.SIGKILL)
            t0 = time.monotonic()
            for p in procs.values():
                p.wait(max(0.1, t0 + 5 - time.monotonic()))
            codes = {n: p.returncode for n, p in procs.items()}
            assert codes == dict.fromkeys(NODES, 2), codes  # 2: coordinator lost
        finally:
            if coord.poll() is None:
                coord.kill()
            coord.wait()


@tls
@pytest.mark.parametrize("crash", [("bob", 4), pytest.param(("james", 3), marks=pytest.mark.full)])
async def test_chaos_crash_over_tls_names_the_actor(crash: tuple[str, int], tmp_path: Path) -> None:
    """A subset of the chaos tests, over TLS: the crash happens inside the node process."""
    chaos = Chaos(seed=1, crash=crash)
    with (
        local_nodes(tmp_path, seeded=True),
        trio.fail_after(START),
        pytest.raises(PartyFailure) as info,
    ):
        async with Cluster.connect(tmp_path / "cluster.toml", seed=SEED, chaos=chaos) as c:
            await _train(c, 2)
    assert info.value.actor == crash[0]
    assert "chaos" in str(info.value)


# -- refusals, in one process (real TLS links on 127.0.0.1) ------------------------------


def _config(tmp: Path) -> ClusterConfig:
    return load_config(write_local_config(tmp, TWO))


async def test_certificate_from_another_ca_is_refused(tmp_path: Path) -> None:
    cfg = _config(tmp_path / "good")
    rogue_paths = write_certs(tmp_path / "rogue", ["coordinator"], ca_name="rogue CA")
    actors = dict(cfg.actors)
    actors["coordinator"] = ActorAddress(
        "coordinator", rogue_paths["coordinator"].cert, rogue_paths["coordinator"].key
    )
    rogue = ClusterConfig(
        cfg.parties, cfg.provider, cfg.coordinator, rogue_paths["ca"].cert, actors
    )
    alice = TlsTransport("alice", cfg, timeout=5, connect_timeout=5)
    alice.dials = []
    coordinator = TlsTransport("coordinator", rogue, timeout=5, connect_timeout=5)
    coordinator.dials = ["alice"]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(alice.run)
            with pytest.raises(PeerAuthError, match="alice"):
                await coordinator.run()
            assert "coordinator" not in alice._streams
            nursery.cancel_scope.cancel()


async def test_right_ca_wrong_actor_is_refused(tmp_path: Path) -> None:
    """bob's valid certificate cannot dial alice (only the coordinator may)."""
    cfg = _config(tmp_path)
    alice = TlsTransport("alice", cfg, timeout=5, connect_timeout=5)
    alice.dials = []
    bob = TlsTransport("bob", cfg, timeout=5, connect_timeout=5)
    bob.dials = ["alice"]
    bob._up["alice"] = trio.Event()
    bob._out["alice"] = trio.open_memory_channel(100)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(alice.run)
            with pytest.raises(PeerAuthError, match="did not accept"):
                await bob.run()
            nursery.cancel_scope.cancel()


async def test_message_claiming_another_sender_is_refused(tmp_path: Path) -> None:
    """The sender is the certificate's name: a command batch sent by alice (only the
    coordinator may send one) is refused by bob's mailbox, naming alice."""
    cfg = _config(tmp_path)
    roles = Roles("coordinator", "james", frozenset(TWO))
    bob = TlsTransport("bob", cfg, timeout=5, roles=roles, connect_timeout=5)
    bob.dials = []
    alice = TlsTransport("alice", cfg, timeout=5, roles=roles, connect_timeout=5)
    alice.dials = ["bob"]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bob.run)
            await nursery.start(alice.run)
            frame, _ = pack_frame("cmd/0", Phase.CONTROL, 0, control=encode_control(Batch(0, [])))
            with pytest.raises(ProtocolError, match="as 'coordinator'"):
                alice.carry("coordinator", "bob", frame)  # a transport sends as itself only
            alice.carry("alice", "bob", frame)
            with pytest.raises(ProtocolError, match=r"'cmd/0' from alice: only \['coordinator'\]"):
                await bob.endpoint.mailbox.recv("coordinator", "cmd/0")
            nursery.cancel_scope.cancel()


# -- op ids and reveal policy (the same Party code runs in every node) --------------------


async def test_reused_op_id_is_refused_before_anything_is_sent() -> None:
    with trio.fail_after(30), pytest.raises(PartyFailure) as info:
        async with start_cluster(2, seed=SEED) as c:
            x, y = c.share(DATA), c.share(DATA)
            z = x * y
            await c.flush()
            mul_op = c._next_op - 2  # the mul, then the barrier
            tap = Tap(c)
            c._command(Command("mul", mul_op, (x.tid, y.tid), (c.new_tid(),)))
            await c.flush()
            del z
    assert isinstance(info.value.cause, OpReused)
    assert not [e for e in tap.envelopes if e.phase == Phase.ONLINE]


async def test_reused_dealer_op_id_is_refused() -> None:
    with trio.fail_after(30), pytest.raises(PartyFailure) as info:
        async with start_cluster(2, seed=SEED) as c:
            x = c.share(DATA)
            _ = x * x
            await c.flush()
            c._reqs.append(DealerRequest(c._next_op - 2, "mul", [(4, 2), (4, 2)], (4, 2)))
            c._send_pending()
            await c.flush()
    assert info.value.actor == "james"
    assert isinstance(info.value.cause, OpReused)
