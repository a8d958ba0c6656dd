"""Real data end to end (scripts/train_digits.py) in a few batches; model out
(export_module), refused copies, encrypted inference; checkpoints (each party writes only
its own shares) and an exact resume in the seeded mode; the same over tcp (node
processes, mutual TLS)."""

from __future__ import annotations

import copy
import io
import json
import pickle
import re
import subprocess
from pathlib import Path

import pytest
import structlog
import torch
import train_digits as td
import trio
from torch import nn

from protocols.errors import UnsupportedOperation
from training import SGD, Cluster, export_module, launch, reveal_module
from training.checkpoint import load_checkpoint, save_checkpoint
from training.errors import NotCopyable
from training.testing import reveal, start_cluster

FP = {"precision": 16, "base": 2}


def args(*extra: str) -> object:
    return td.parse_args(["--quiet", "--limit", "96", "--batch-size", "32", *extra])


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
async def test_digits_few_batches_track_plaintext(kind: str) -> None:
    a = args("--model", kind, "--epochs", "1", "--max-batches", "2", "--insecure-seed", "3")
    r = await td.train(a)  # type: ignore[arg-type]
    # same init, same batches: the batch losses agree within the cross-entropy bound
    assert abs(r.encrypted_loss[0] - r.plaintext_loss[0]) <= 0.01
    # predictions of the encrypted model on encrypted data vs torch on plaintext: the
    # logits differ by ~1e-3, so at most a near-tie or two of the 96 test images differ
    assert abs(r.encrypted_acc[0] - r.plaintext_acc[0]) <= 2 / 96
    # the revealed plain module reproduces the encrypted model's predictions likewise
    assert abs(r.revealed_acc - r.encrypted_acc[0]) <= 2 / 96


async def test_export_module_plain_copy_and_encrypted_inference() -> None:
    torch.manual_seed(0)
    net = td.DigitsMLP()
    data = td.load_digits("mlp", limit=64)
    async with start_cluster(2, seed=1) as c:
        model = c.share_module(net, **FP)
        with pytest.raises(NotCopyable, match="save_checkpoint"):
            copy.deepcopy(model)
        with pytest.raises(NotCopyable, match="export_module"):
            torch.save(model, io.BytesIO())
        with pytest.raises(TypeError):
            pickle.dumps(model.state_dict())
        plain = await export_module(model)
        assert type(plain) is td.DigitsMLP
        for (name, p), (_, q) in zip(plain.named_parameters(), net.named_parameters(), strict=True):
            assert isinstance(p, nn.Parameter) and p.dtype == q.dtype
            assert float((p - q).detach().abs().max()) <= 2**-16, name
        torch.save(plain, io.BytesIO())  # an ordinary module again
        # encrypted inference of a plaintext model on encrypted inputs
        served = c.share_module(net, requires_grad=False, **FP)
        pred = await td.encrypted_predictions(served, c.share(data.x_test, **FP))
        want = td.plaintext_predictions(net, data.x_test)
        logits = net(data.x_test).detach()
        top2 = logits.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-2  # not a near-tie
        assert bool((pred[clear] == want[clear]).all())


def _adam(params: object) -> object:
    return td.make_optimizer("adam", params, 0.01, shared=True)


async def _train_steps(c: Cluster, model: nn.Module, opt: object, x: object, y: object) -> None:
    loss_fn = nn.CrossEntropyLoss()
    for i in range(2):
        opt.zero_grad()  # type: ignore[attr-defined]
        loss = loss_fn(model(x[i * 8 : (i + 1) * 8]), y[i * 8 : (i + 1) * 8])  # type: ignore[index]
        loss.backward()
        opt.step()  # type: ignore[attr-defined]
    await c.flush()


async def test_checkpoint_files_and_exact_resume(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = td.DigitsMLP()
    data = td.load_digits("mlp", limit=32)
    onehot = torch.nn.functional.one_hot(data.y_train, 10).float()

    async def run(resume_from: Path | None) -> dict[str, torch.Tensor]:
        async with start_cluster(2, seed=11) as c:
            x, y = c.share(data.x_train, **FP), c.share(onehot, **FP)
            if resume_from is None:
                model = c.share_module(net, **FP)
                opt = _adam(model.parameters())
                await _train_steps(c, model, opt, x, y)
                await save_checkpoint(c, tmp_path, model, opt, extra={"epoch": 1})
            else:
                r = await load_checkpoint(c, resume_from, net, _adam)
                model, opt = r.model, r.optimizer
                assert r.extra == {"epoch": 1}
            await _train_steps(c, model, opt, x, y)
            return await reveal_module(model)

    straight = await run(None)
    # each party's file holds its own shares only; the metadata no tensor at all
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["alice.shares.pt", "bob.shares.pt", "checkpoint.json"]
    meta = json.loads((tmp_path / "checkpoint.json").read_text())
    assert "shares" not in json.dumps(meta)
    a = torch.load(tmp_path / "alice.shares.pt", weights_only=True)
    b = torch.load(tmp_path / "bob.shares.pt", weights_only=True)
    assert a["party"] == "alice" and b["party"] == "bob"
    # the two shares add up to the encoded weight; either alone is not it
    w = net.net[0].weight
    enc = torch.round(w.double() * 2**16).to(torch.int64)
    assert not torch.equal(a["shares"][0], enc) and not torch.equal(b["shares"][0], enc)
    assert meta["tensors"][0]["name"] == "net.0.weight"
    # adam state (m, v per parameter) went to the shares files too
    assert len(a["shares"]) == 4 + 2 * 4
    resumed = await run(tmp_path)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name


async def test_checkpoint_refuses_other_parties(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    async with start_cluster(2) as c:
        await save_checkpoint(c, tmp_path, c.share_module(net, **FP))
    async with start_cluster(3) as c:
        with pytest.raises(ValueError, match="parties"):
            await load_checkpoint(c, tmp_path, net)


def test_unsupported_is_still_the_family() -> None:
    assert issubclass(NotCopyable, UnsupportedOperation)


# -- over tcp: the parties and the provider as node processes (mutual TLS, 127.0.0.1) ----

tls = pytest.mark.tls
START = 90.0  # node processes import torch: slow on a loaded machine


@pytest.fixture
def spawned(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every node process training.launch starts (to check that none is left)."""
    procs: list[subprocess.Popen[bytes]] = []
    spawn = launch.spawn_nodes

    def recording(*a: object, **kw: object) -> dict[str, subprocess.Popen[bytes]]:
        started = spawn(*a, **kw)  # type: ignore[arg-type]
        procs.extend(started.values())
        return started

    monkeypatch.setattr(launch, "spawn_nodes", recording)
    return procs


def _no_node_left(procs: list[subprocess.Popen[bytes]], runs: int) -> None:
    assert len(procs) == 3 * runs  # alice, bob, james per run
    assert [p.poll() for p in procs] == [0] * len(procs)  # all exited, cleanly


@tls
def test_digits_over_tcp_prints_both_accuracies(
    spawned: list[subprocess.Popen[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    saved = structlog.get_config()  # main() reconfigures logging for the whole process
    try:
        argv = ["--quiet", "--transport", "tcp", "--limit", "64", "--batch-size", "32"]
        assert td.main([*argv, "--epochs", "1", "--max-batches", "1"]) == 0
    finally:
        structlog.configure(**saved)
    out = capsys.readouterr().out
    assert re.search(
        r"^mlp \(sgd, 1 epochs, batch 32, 2 parties, default over tcp, mutual TLS\): "
        r"test accuracy  encrypted [01]\.\d{4}  plaintext [01]\.\d{4}  \(gap ",
        out,
        re.M,
    ), out
    assert "node exit codes" not in out
    _no_node_left(spawned, 1)


@tls
async def test_digits_checkpoint_and_resume_over_tcp(
    spawned: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    """The node processes write their own shares files to the named folder; a resumed tcp
    run continues exactly like an uninterrupted run (seeded mode, here in memory: the
    transports are bit-for-bit equal, tests/test_tcp.py)."""
    seeded = ["--insecure-seed", "5", "--limit", "32", "--batch-size", "16"]
    tcp_dir, memory_dir = tmp_path / "tcp", tmp_path / "memory"
    ck = ["--transport", "tcp", "--checkpoint", str(tcp_dir), *seeded]
    with trio.fail_after(START):
        first = await td.train(args(*ck, "--epochs", "1"))  # type: ignore[arg-type]
    files = sorted(p.name for p in tcp_dir.iterdir())
    assert files == ["alice.shares.pt", "bob.shares.pt", "checkpoint.json"]
    for party in ("alice", "bob"):
        saved = torch.load(tcp_dir / f"{party}.shares.pt", weights_only=True)
        assert saved["party"] == party and len(saved["shares"]) == 4 + 4  # weights, momenta
    with trio.fail_after(START):
        resumed = await td.train(args(*ck, "--epochs", "2", "--resume"))  # type: ignore[arg-type]
    _no_node_left(spawned, 2)
    # uninterrupted, with the same checkpoint ops (op ids: the same masks and material)
    straight = await td.train(args(*seeded, "--epochs", "2", "--checkpoint", str(memory_dir)))  # type: ignore[arg-type]
    assert first.encrypted_loss == straight.encrypted_loss[:1]
    assert resumed.encrypted_loss == straight.encrypted_loss[1:]
    assert resumed.encrypted_acc == straight.encrypted_acc[1:]
    assert resumed.plaintext_loss == straight.plaintext_loss[1:]
    assert resumed.revealed_acc == straight.revealed_acc


async def test_checkpoint_keeps_plaintext_buffers_for_batch_norm_momentum_none(
    tmp_path: Path,
) -> None:
    """BatchNorm with momentum=None averages its running statistics over
    num_batches_tracked, a plaintext buffer: the checkpoint dropped it, so a resumed
    model weighted its next batch as the first (running_mean off after 2 + 2 steps)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, momentum=None))
    x = torch.randn(4, 8, 4)

    async def steps(c, model, opt, xs, first: int) -> None:  # type: ignore[no-untyped-def]
        for i in range(first, first + 2):
            opt.zero_grad()
            model(xs[i]).pow(2).sum().backward()
            opt.step()

    async def run(resume_from: Path | None) -> tuple[torch.Tensor, int]:
        async with start_cluster(2, seed=5) as c:
            xs = [c.share(x[i], **FP) for i in range(4)]
            if resume_from is None:
                model = c.share_module(copy.deepcopy(net), **FP)
                opt = SGD(model.parameters(), lr=0.01)
                await steps(c, model, opt, xs, 0)
                await save_checkpoint(c, tmp_path, model, opt)
            else:
                r = await load_checkpoint(c, resume_from, net, lambda p: SGD(p, lr=0.01))
                model, opt = r.model, r.optimizer
            await steps(c, model, opt, xs, 2)
            bn = model[1]
            return await reveal(bn.running_mean), int(bn.num_batches_tracked)

    straight_mean, straight_count = await run(None)
    resumed_mean, resumed_count = await run(tmp_path)
    assert straight_count == resumed_count == 4
    assert torch.equal(straight_mean, resumed_mean)
