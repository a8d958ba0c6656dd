"""Trust enforced by the parties (issue 18): owners propagate, each party's policy is its
own, seeds are refused, checkpoints keep owners and stay private.

In memory (fast) the parties run the same code as in node processes; the ``tls`` tests at
the end run real node processes over mutual TLS, where the coordinator is not trusted with
the parties' data.
"""

from __future__ import annotations

import re
import stat
import subprocess
from pathlib import Path

import msgspec
import pytest
import torch
import trio
from seed_net import DATA, TARGET, loss_fn, make_net
from torch import nn

from actors import Phase
from actors.config import ConfigError, check_name, parse_config, write_local_config
from actors.messages import Session
from actors.node import EXIT_REFUSED, save_tensors, spawn_nodes, stop_nodes
from actors.policy import RevealLedger, RevealPolicy, RevealRefused, RevealRule, parse_rule
from actors.tls import SessionRefused
from protocols.errors import PartyFailure
from training import SGD, Cluster, TrainingCoordinator, export_module, public
from training.checkpoint import load_checkpoint, save_checkpoint
from training.testing import PARTIES, PROVIDER, Tap, start_cluster

TWO = PARTIES[2]
ALICE = {"alice": {"features": DATA}}
LOSSES_ONLY = RevealPolicy({"coordinator": RevealRule(max_elements=1)})

# Every way a value derived from alice's input reached the coordinator before (issue 18).
DERIVED = {
    "x * 1": lambda x: x * 1,
    "x + 0": lambda x: x + 0,
    "x[0]": lambda x: x[0],
    "x.reshape(-1)": lambda x: x.reshape(-1),
    "x.clone()": lambda x: x.clone(),
    "x.sum()": lambda x: x.sum(),
    "x * x (interactive)": lambda x: x * x,
    "relu(x) @ w": lambda x: torch.relu(x) @ public(torch.ones(2, 1)),
}


def _outputs(tap: Tap) -> list:
    return [e for e in tap.envelopes if e.phase == Phase.OUTPUT]


@pytest.mark.parametrize("what", list(DERIVED))
async def test_values_derived_from_a_party_input_are_refused(what: str) -> None:
    """Owners propagate through local and interactive ops; the refusal names the owner
    and its rule, and no share leaves any party (no OUTPUT message at all)."""
    async with start_cluster(2, data=ALICE) as c:
        x = c.share_from("alice", "features")
        y = DERIVED[what](x)
        await c.flush()
        tap = Tap(c)
        with pytest.raises(RevealRefused, match=r"derived from alice's data.*allows nothing"):
            await y.get()
        assert not _outputs(tap)
        mine = c.share(torch.tensor([1.5]))  # the coordinator's own value: still revealed
        assert float(await (mine * 2).get()) == 3.0


async def test_one_element_rule_lets_the_loss_through_not_a_batch() -> None:
    policies = {"alice": RevealPolicy({"coordinator": RevealRule(max_elements=1, max_total=2)})}
    async with start_cluster(2, data=ALICE, reveal_policy=policies) as c:
        x = c.share_from("alice", "features")
        total = float(await x.sum().get())
        assert total == pytest.approx(float(DATA.sum()), abs=0.01)
        with pytest.raises(RevealRefused, match=r"\(8 elements\).*at most 1 elements per reveal"):
            await (x * 1).get()
        await x[0, 1].get()  # second element of the budget of 2
        with pytest.raises(RevealRefused, match="at most 2 elements in all; 2 already revealed"):
            await x.sum().get()


async def test_every_owner_must_allow() -> None:
    """A value from alice's and bob's inputs needs both rules: alice's alone is not enough;
    the refusal names bob."""
    data = {"alice": {"features": DATA}, "bob": {"targets": TARGET}}
    policies = {"alice": LOSSES_ONLY}
    async with start_cluster(2, data=data, reveal_policy=policies) as c:
        x, y = c.share_from("alice", "features"), c.share_from("bob", "targets")
        with pytest.raises(RevealRefused, match="bob's own reveal policy allows nothing"):
            await (x[:, :1] * y).sum().get()
        assert float(await x.sum().get()) == pytest.approx(float(DATA.sum()), abs=0.01)


async def test_seed_training_with_owners_reveals_losses_only() -> None:
    """The seed's network trained on alice's features and bob's targets: each allows the
    coordinator 1-element values, so the losses come through and track the plaintext run;
    the trained model (derived from both) does not."""
    data = {"alice": {"features": DATA}, "bob": {"targets": TARGET}}
    policies = {"alice": LOSSES_ONLY, "bob": LOSSES_ONLY}
    async with start_cluster(2) as c:
        model = c.share_module(make_net())
        coord = TrainingCoordinator(c, model, SGD(model.parameters(), lr=0.1), loss_fn)
        x, y = c.share(DATA), c.share(TARGET)
        expected = [(await coord.step(x, y)).loss for _ in range(3)]
    async with start_cluster(2, data=data, reveal_policy=policies) as c:
        model = c.share_module(make_net())
        coord = TrainingCoordinator(c, model, SGD(model.parameters(), lr=0.1), loss_fn)
        x, y = c.share_from("alice", "features"), c.share_from("bob", "targets")
        got = [(await coord.step(x, y)).loss for _ in range(3)]
        with pytest.raises(RevealRefused):
            await export_module(model)
    assert got == pytest.approx(expected, abs=0.01)


async def test_checkpoint_keeps_owners_and_files_are_private(tmp_path: Path) -> None:
    """A save/load round trip does not launder alice's data: the loaded weights are still
    hers. Each party's file is 0600 in a 0700 folder, also when it existed before."""
    folder = tmp_path / "ck"
    folder.mkdir(mode=0o755)
    (folder / "alice.shares.pt").write_bytes(b"old")
    (folder / "alice.shares.pt").chmod(0o644)
    async with start_cluster(2, data=ALICE) as c:
        x = c.share_from("alice", "features")
        net = nn.Linear(2, 1)
        model = c.share_module(net)
        opt = SGD(model.parameters(), lr=0.1)
        model(x).sum().backward()
        opt.step()
        await save_checkpoint(c, folder, model)
        resumed = await load_checkpoint(c, folder, nn.Linear(2, 1))
        with pytest.raises(RevealRefused, match="alice"):
            await export_module(resumed.model)
    for party in TWO:
        mode = stat.S_IMODE((folder / f"{party}.shares.pt").stat().st_mode)
        assert mode == 0o600, (party, oct(mode))
        saved = torch.load(folder / f"{party}.shares.pt", weights_only=True)
        # the weight's gradient is x-weighted; the bias's (a count of rows) is not
        assert saved["owners"] == [["alice"], []]
    sub = tmp_path / "new" / "deeper"
    async with start_cluster(2) as c:
        await save_checkpoint(c, sub, c.share_module(nn.Linear(2, 1)))
    assert stat.S_IMODE((sub / "bob.shares.pt").stat().st_mode) == 0o600


async def test_a_seeded_cluster_refuses_party_inputs() -> None:
    with pytest.raises(PartyFailure, match="seeded"):
        async with start_cluster(2, seed=3, data=ALICE) as c:
            c.share_from("alice", "features")
            await c.flush()


async def test_nothing_is_revealed_to_the_provider() -> None:
    """Even the coordinator's own value: a reveal command naming the provider (as a
    coordinator that skipped its own check would send) is refused at every party."""
    from actors.cluster import access_denied
    from actors.messages import Command, Recipient
    from protocols.params import Params

    async with start_cluster(2) as c:
        x = c.share(torch.tensor([3.0]))
        await c.flush()
        tap = Tap(c)
        op = c._op_id()
        c._command(Command("reveal", op, (x.tid,), (), Params(shape=(1,)), Recipient(PROVIDER)))
        await c.flush()
        for party in TWO:
            env = await c._mailbox.recv(party, f"{op}/out")
            with pytest.raises(RevealRefused, match="only the coordinator and parties"):
                raise access_denied(env)
        assert not _outputs(tap)


# -- the pieces: rules, names, config ----------------------------------------------------


def test_ledger_rules() -> None:
    ledger = RevealLedger(
        {"alice": RevealPolicy({"coordinator": RevealRule(2, 3)}), "bob": RevealPolicy()}
    )
    assert ledger.refusal(frozenset(), "coordinator", 10**6) is None  # nobody's data
    assert ledger.refusal(frozenset({"bob"}), "bob", 10) is None  # its only owner
    assert "bob's own reveal policy" in str(ledger.refusal(frozenset({"bob"}), "alice", 1))
    assert ledger.refusal(frozenset({"alice"}), "coordinator", 2) is None
    assert "already revealed" in str(ledger.refusal(frozenset({"alice"}), "coordinator", 2))
    assert ledger.refusal(frozenset({"alice"}), "coordinator", 1) is None
    with pytest.raises(ValueError, match="max_elements must be >= 1"):
        RevealPolicy({"coordinator": RevealRule(max_elements=0)})


def test_parse_rule() -> None:
    assert parse_rule("coordinator") == ("coordinator", RevealRule())
    assert parse_rule("coordinator:1") == ("coordinator", RevealRule(1))
    assert parse_rule("coordinator::50") == ("coordinator", RevealRule(None, 50))
    for bad in ("", ":1", "coordinator:x", "a:1:2:3"):
        with pytest.raises(ValueError, match="allow-reveal"):
            parse_rule(bad)


@pytest.mark.parametrize("name", ["ca", "../x", "a/b", "", "1abc", "x" * 65, "al ice"])
def test_bad_actor_names_are_refused(name: str) -> None:
    with pytest.raises(ConfigError):
        check_name(name)


def _raw(**alice: object) -> dict:
    actor = {"host": "127.0.0.1", "port": 7000, "cert": "c.pem", "key": "c.key"}
    return {
        "parties": ["alice", "bob"],
        "provider": "james",
        "ca": "ca.pem",
        "actors": {
            "alice": {**actor, **alice},
            "bob": dict(actor),
            "james": dict(actor),
            "coordinator": {"cert": "c.pem", "key": "c.key"},
        },
    }


def test_config_reads_each_partys_rules_and_checkpoint_folder(tmp_path: Path) -> None:
    cfg = parse_config(
        _raw(reveal={"coordinator": {"max_elements": 1}}, checkpoints="ck"), tmp_path
    )
    assert cfg.actors["alice"].reveal == LOSSES_ONLY
    assert cfg.actors["bob"].reveal == RevealPolicy()
    assert cfg.actors["alice"].checkpoints == tmp_path / "ck"
    assert cfg.actors["bob"].checkpoints == tmp_path / "checkpoints"
    with pytest.raises(ConfigError, match=r"\[actors.alice.reveal\]"):
        parse_config(_raw(reveal={"coordinator": {"max_elemnts": 1}}), tmp_path)
    with pytest.raises(ConfigError, match="actor name 'ca' is reserved"):
        raw = _raw()
        raw["provider"] = "ca"
        raw["actors"]["ca"] = raw["actors"].pop("james")
        parse_config(raw, tmp_path)


def test_connect_takes_no_policy_from_the_coordinator() -> None:
    async def go() -> None:
        async with Cluster.connect("nowhere.toml", reveal_policy={"alice": ["coordinator"]}):
            pass

    with pytest.raises(TypeError, match="each party sets its own"):
        trio.run(go)


# -- real node processes over TLS ------------------------------------------------------------

tls = pytest.mark.tls
START = 90.0


class ForgedSession(Session, frozen=True):
    """A session message carrying what the old nodes adopted: a reveal policy."""

    reveal_policy: dict[str, list[str]] = msgspec.field(
        default_factory=lambda: {"alice": ["coordinator"]}
    )


def _nodes(tmp: Path, **kw: object) -> tuple[Path, dict[str, subprocess.Popen[bytes]]]:
    save_tensors(tmp / "alice.npz", {"features": DATA})
    config = write_local_config(tmp, TWO, data={"alice": tmp / "alice.npz"}, **kw)  # type: ignore[arg-type]
    return config, spawn_nodes(config, [*TWO, "james"], log_dir=tmp)


def _kill(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.kill()
        p.wait()


@tls
async def test_over_tls_nothing_derived_from_alice_reaches_the_coordinator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nodes with no reveal rule, a coordinator that puts a reveal policy into its
    session message (ignored): every derived value, a checkpoint round trip, the exported
    model and check mode's shadow are refused; the coordinator's own values still come
    back; and the checkpoint files go only inside the node's folder."""
    import actors.tls

    monkeypatch.setattr(actors.tls, "Session", ForgedSession)
    config, procs = _nodes(tmp_path)
    folder = tmp_path / "checkpoints" / "ck"
    try:
        with (
            trio.fail_after(START),
            pytest.warns(UserWarning, match="never saw"),
            pytest.raises(PartyFailure) as info,
        ):
            async with Cluster.connect(config, check=True) as c:
                x = c.share_from("alice", "features")
                for f in DERIVED.values():
                    with pytest.raises(RevealRefused, match="alice's own reveal policy"):
                        await f(x).get()
                model = c.share_module(nn.Linear(2, 1))
                opt = SGD(model.parameters(), lr=0.1)
                model(x).sum().backward()
                opt.step()
                with pytest.raises(RevealRefused):
                    await export_module(model)
                await save_checkpoint(c, folder, model)
                resumed = await load_checkpoint(c, folder, nn.Linear(2, 1))
                with pytest.raises(RevealRefused):
                    await export_module(resumed.model)
                mine = c.share(torch.tensor([2.0]))
                assert float(await (mine * 3).get()) == 6.0
                await save_checkpoint(c, tmp_path / "elsewhere", model)  # fails the session
                await c.flush()
        # the refusing nodes name it (their report can race their link closing)
        logs = "".join((tmp_path / f"{p}.log").read_text() for p in TWO)
        assert "CheckpointRefused" in str(info.value) or "outside its checkpoint root" in logs
        assert not (tmp_path / "elsewhere" / "alice.shares.pt").exists()
        assert stat.S_IMODE((folder / "alice.shares.pt").stat().st_mode) == 0o600
    finally:
        _kill(procs)


@tls
async def test_over_tls_a_seed_is_refused_and_never_reaches_a_party(tmp_path: Path) -> None:
    """Nodes not started with --allow-insecure-seed refuse a seeded session (typed error
    naming the node) and exit with code 4; the seed is sent to the provider only."""
    captured: list[bytes] = []
    from actors.tls import HELLO, TlsTransport

    send = TlsTransport._send

    def spy(self: TlsTransport, receiver: str, kind: int, body: bytes | bytearray) -> None:
        if kind == HELLO:
            captured.append(bytes(body))
            session = msgspec.msgpack.decode(body, type=Session)
            assert (session.seed is None) == (receiver != "james"), receiver
            assert session.seeded
        send(self, receiver, kind, body)

    # one set of nodes for both claims (node processes are slow to start)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(TlsTransport, "_send", spy)
        config, procs = _nodes(tmp_path)
        try:
            with trio.fail_after(START), pytest.raises(SessionRefused, match="seeded"):
                async with Cluster.connect(config, seed=5):
                    pass
            assert stop_nodes(procs, grace=20) == dict.fromkeys([*TWO, "james"], EXIT_REFUSED)
        finally:
            _kill(procs)
    assert len(captured) == 3


@tls
@pytest.mark.parametrize("replay", [False, True])
def test_train_xor_with_data_owners_over_tls_prints_losses(
    capsys: pytest.CaptureFixture[str], replay: bool
) -> None:
    """The README's ``--transport tcp --data-owners alice,bob``: the owners' nodes allow the
    coordinator 1-element values, so the losses print and track plaintext; the predictions
    (4 elements) are not revealed, and the run says why. With ``--replay`` the replayed
    steps' reveals are decided by the owners' rules alike."""
    import train_xor

    argv = ["--transport", "tcp", "--data-owners", "alice,bob", "--iterations", "4", "--quiet"]
    assert train_xor.main(argv + (["--replay"] if replay else [])) == 0
    out = capsys.readouterr().out
    if replay:
        assert re.search(r"^replay\s+2 of 4 steps replayed, 2 recorded$", out, re.M), out
    final = re.search(r"^final loss\s+([\d.]+) \(plaintext ([\d.]+)\)", out, re.M)
    assert final is not None, out
    assert abs(float(final[1]) - float(final[2])) < 0.01
    assert "predictions       not revealed: alice and bob allow" in out
    assert "node exit codes" not in out
    # each step's counts come from the nodes' meters, the same as in memory
    assert "992 online bytes, 33456 offline bytes" in out, out


def test_train_xor_refuses_a_seed_with_data_owners(capsys: pytest.CaptureFixture[str]) -> None:
    import train_xor

    with pytest.raises(SystemExit):
        train_xor.main(["--data-owners", "alice,bob", "--insecure-seed", "3"])
    assert "--insecure-seed and --data-owners together are refused" in capsys.readouterr().err
