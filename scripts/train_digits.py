"""Real data end to end: scikit-learn's handwritten digits (8x8, 10 classes), trained on
secret shares beside the same model in plaintext torch.

The features and one-hot labels are shared once; every mini-batch is a public-index
slice of the shared tensors (no new sharing per batch). After each epoch the encrypted
model classifies the encrypted test set (only the predicted classes are revealed to the
coordinator) and the plaintext model, trained from the same initialisation on the same
batches, classifies the plaintext test set. At the end: the model is revealed into a
plain ``nn.Module`` (``training.export_module``), and the plaintext model is run on the
encrypted test data (encrypted inference). Run with --help for the flags.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import torch
import torch.nn.functional as F
import trio
from torch import nn

from actors import configure_logging
from protocols.errors import NumericError
from protocols.suite import suite_arg
from training import SGD, Adam, Cluster, SharedTensor, export_module
from training.checkpoint import load_checkpoint, save_checkpoint
from training.coordinator import predict
from training.launch import (
    TRANSPORTS,
    add_check_args,
    add_encoding_args,
    check_options,
    check_script_args,
    open_cluster,
)
from training.progress import ProgressBar, ProgressOption

PARTY_NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]


class DigitsMLP(nn.Module):
    """64-32-10 with ReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class DigitsCNN(nn.Module):
    """LeNet-style on 1x8x8: conv3(pad 1)-relu-maxpool2, conv3(pad 1)-relu-maxpool2, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 12, 3, padding=1)
        self.fc = nn.Linear(12 * 2 * 2, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc(torch.flatten(x, 1))


def make_model(kind: str, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return DigitsMLP() if kind == "mlp" else DigitsCNN()


@dataclass
class Digits:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def load_digits(
    kind: str, *, test_size: float = 0.25, split_seed: int = 0, limit: int | None = None
) -> Digits:
    """The bundled digits (no download), pixels scaled to [0, 1], a fixed stratified split.

    ``limit`` keeps the first ``limit`` training and test samples (for tests)."""
    from sklearn.datasets import load_digits as sk_load
    from sklearn.model_selection import train_test_split

    data = sk_load()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.int64)
    idx = torch.arange(len(y))
    tr, te = train_test_split(
        idx.numpy(), test_size=test_size, random_state=split_seed, stratify=y.numpy()
    )
    tr_t, te_t = torch.as_tensor(tr), torch.as_tensor(te)
    if limit is not None:
        tr_t, te_t = tr_t[:limit], te_t[:limit]
    if kind == "cnn":
        x = x.reshape(-1, 1, 8, 8)
    return Digits(x[tr_t], y[tr_t], x[te_t], y[te_t])


def batches(n: int, batch_size: int, epoch: int, seed: int) -> list[torch.Tensor]:
    """This epoch's shuffled mini-batches (public indices, the same for both models)."""
    g = torch.Generator().manual_seed(seed * 1000 + epoch)
    perm = torch.randperm(n, generator=g)
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def make_optimizer(name: str, params: Any, lr: float, shared: bool) -> Any:
    if name == "sgd":
        return (SGD if shared else torch.optim.SGD)(params, lr=lr, momentum=0.9)
    return (Adam if shared else torch.optim.Adam)(params, lr=lr)


async def encrypted_predictions(
    model: nn.Module, x: SharedTensor, batch_size: int = 256, progress: ProgressOption = None
) -> torch.Tensor:
    """Classes predicted on shares (argmax on shares); only the classes are revealed."""
    classes = await predict(
        model, x, batch_size=batch_size, reveal=lambda y: y.argmax(dim=1), progress=progress
    )
    return classes.round().to(torch.int64)


def plaintext_predictions(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).argmax(dim=1)


@dataclass
class Result:
    kind: str
    encrypted_acc: list[float] = field(default_factory=list)
    plaintext_acc: list[float] = field(default_factory=list)
    encrypted_loss: list[float] = field(default_factory=list)
    plaintext_loss: list[float] = field(default_factory=list)
    encrypted_seconds: list[float] = field(default_factory=list)
    plaintext_seconds: list[float] = field(default_factory=list)
    revealed_acc: float = float("nan")
    inference_acc: float = float("nan")
    """The plaintext-trained model on the encrypted test data."""
    online_rounds: int = 0
    online_bytes: int = 0
    checker: Any = None
    """Check mode's checker (``--check``), read after the cluster closed."""


def epoch_batches(args: argparse.Namespace, n: int, epoch: int) -> list[torch.Tensor]:
    idx = batches(n, args.batch_size, epoch, args.seed)
    return idx[: args.max_batches] if args.max_batches else idx


def plain_epoch(
    plain: nn.Module,
    popt: Any,
    data: Digits,
    onehot: torch.Tensor,
    idx: list[torch.Tensor],
) -> list[float]:
    """One epoch of the plaintext reference on the same batches; the batch losses."""
    loss_fn = nn.CrossEntropyLoss()
    out = []
    for b in idx:
        popt.zero_grad()
        loss = loss_fn(plain(data.x_train[b]), onehot[b])
        loss.backward()
        popt.step()
        out.append(float(loss.detach()))
    return out


async def train(args: argparse.Namespace, cluster: Cluster | None = None) -> Result:
    data = load_digits(args.model, split_seed=args.split_seed, limit=args.limit)
    net = make_model(args.model, args.seed)
    plain = copy.deepcopy(net)
    popt = make_optimizer(args.optimizer, plain.parameters(), args.lr, shared=False)
    loss_fn = nn.CrossEntropyLoss()
    n = len(data.y_train)
    onehot_train = F.one_hot(data.y_train, 10).to(torch.float32)
    res = Result(args.model)
    fp = {"precision": args.precision, "base": args.base}
    names = PARTY_NAMES[: args.parties]
    progress: ProgressOption = False if args.quiet else None  # None: on a terminal only
    async with open_cluster(
        args.transport,
        names,
        "james",
        seed=args.insecure_seed,
        protocols=args.protocols,
        checkpoints=args.checkpoint,
        report=None if args.quiet else print,
        **check_options(args),
    ) as c:
        x_tr = c.share(data.x_train, **fp)
        y_tr = c.share(onehot_train, **fp)
        x_te = c.share(data.x_test, **fp)
        start_epoch = 0
        if args.resume:
            resumed = await load_checkpoint(
                c,
                args.checkpoint,
                net,
                lambda ps: make_optimizer(args.optimizer, ps, args.lr, shared=True),
            )
            model, opt = resumed.model, resumed.optimizer
            start_epoch = int(resumed.extra["epoch"])
            for epoch in range(start_epoch):  # the plaintext reference, replayed (ms)
                plain_epoch(plain, popt, data, onehot_train, epoch_batches(args, n, epoch))
            if not args.quiet:
                print(f"resumed from {args.checkpoint} after epoch {start_epoch}")
        else:
            model = c.share_module(net, **fp)
            opt = make_optimizer(args.optimizer, model.parameters(), args.lr, shared=True)
            # (load_checkpoint flushes and then continues the op ids where they were
            # saved: no op in between, so a seeded resume draws the original masks)
            await c.flush()
        start = c.stats()
        for epoch in range(start_epoch, args.epochs):
            idx = epoch_batches(args, n, epoch)
            bar = ProgressBar(
                len(idx),
                f"{args.model} epoch {epoch + 1}/{args.epochs}",
                progress,
                unit="batch",
            )
            t0 = time.perf_counter()
            losses = []
            for b in idx:
                opt.zero_grad()
                loss = loss_fn(model(x_tr[b]), y_tr[b])
                loss.backward()
                opt.step()
                losses.append(float((await loss.get()).reshape(-1)[0]))
                if bar.active:
                    s = c.stats() - start
                    info = {"loss": losses[-1], "online_rounds": s.online_rounds}
                    info["online_bytes"] = s.online_bytes
                    shown = {"loss": f"{losses[-1]:.3f}", "rounds": s.online_rounds}
                    shown["MB"] = f"{s.online_bytes / 1e6:.1f}"
                    bar.advance(1, info, shown=shown)
            await c.flush()
            res.encrypted_seconds.append(time.perf_counter() - t0)
            bar.close()
            t0 = time.perf_counter()
            plosses = plain_epoch(plain, popt, data, onehot_train, idx)
            res.plaintext_seconds.append(time.perf_counter() - t0)
            pred = await encrypted_predictions(model, x_te, progress=progress)
            res.encrypted_acc.append(float((pred == data.y_test).float().mean()))
            ppred = plaintext_predictions(plain, data.x_test)
            res.plaintext_acc.append(float((ppred == data.y_test).float().mean()))
            res.encrypted_loss.append(sum(losses) / len(losses))
            res.plaintext_loss.append(sum(plosses) / len(plosses))
            if not args.quiet:
                print(
                    f"epoch {epoch + 1}: loss encrypted {res.encrypted_loss[-1]:.4f} "
                    f"plaintext {res.plaintext_loss[-1]:.4f}; test accuracy encrypted "
                    f"{res.encrypted_acc[-1]:.4f} plaintext {res.plaintext_acc[-1]:.4f}; "
                    f"{res.encrypted_seconds[-1]:.1f} s (plaintext "
                    f"{res.plaintext_seconds[-1] * 1000:.1f} ms)"
                )
            if args.checkpoint is not None:
                await save_checkpoint(c, args.checkpoint, model, opt, extra={"epoch": epoch + 1})
        total = c.stats() - start
        res.online_rounds, res.online_bytes = total.online_rounds, total.online_bytes
        # Model out: a plain nn.Module with the trained weights.
        revealed = await export_module(model, progress=progress)
        res.revealed_acc = float(
            (plaintext_predictions(revealed, data.x_test) == data.y_test).float().mean()
        )
        # Encrypted inference of the plaintext-trained model on the encrypted test data.
        served = c.share_module(plain, requires_grad=False, **fp)
        pred = await encrypted_predictions(served, x_te, progress=progress)
        res.inference_acc = float((pred == data.y_test).float().mean())
        res.checker = c.checker
    return res


def summary(args: argparse.Namespace, r: Result) -> str:
    if not r.encrypted_acc:
        return f"{r.kind}: nothing left to train (resumed at the last epoch)"
    enc = sum(r.encrypted_seconds) / len(r.encrypted_seconds)
    pla = sum(r.plaintext_seconds) / len(r.plaintext_seconds)
    return (
        f"{r.kind} ({args.optimizer}, {args.epochs} epochs, batch {args.batch_size}, "
        f"{args.parties} parties, {args.protocols}"
        + (" over tcp, mutual TLS" if args.transport == "tcp" else "")
        + "): test accuracy  encrypted "
        f"{r.encrypted_acc[-1]:.4f}  plaintext {r.plaintext_acc[-1]:.4f}  "
        f"(gap {100 * (r.plaintext_acc[-1] - r.encrypted_acc[-1]):+.2f} points); "
        f"revealed model {r.revealed_acc:.4f}; plaintext-trained model on encrypted "
        f"test data {r.inference_acc:.4f}; per epoch {enc:.1f} s encrypted vs "
        f"{pla * 1000:.1f} ms plaintext; {r.online_rounds} online rounds, "
        f"{r.online_bytes / 1e6:.1f} MB online"
        + (f"\n{r.checker.summary()}" if r.checker is not None else "")
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0].replace("\n", " "))
    ap.add_argument("--model", choices=["mlp", "cnn", "both"], default="mlp")
    ap.add_argument("--optimizer", choices=["sgd", "adam"], default="sgd")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument(
        "--lr", type=float, default=None, help="default 0.1 (sgd, momentum 0.9), 0.02 (adam)"
    )
    ap.add_argument("--parties", type=int, default=2)
    ap.add_argument("--protocols", default="default", type=suite_arg)
    ap.add_argument(
        "--transport",
        choices=TRANSPORTS,
        default="memory",
        help="memory: every actor in this process; tcp: the parties and the provider as "
        "separate processes on 127.0.0.1 over mutual TLS (fresh certificates)",
    )
    add_encoding_args(ap, base=2)
    ap.add_argument("--seed", type=int, default=0, help="init and shuffling seed")
    ap.add_argument("--split-seed", type=int, default=0, help="train/test split seed")
    ap.add_argument("--insecure-seed", type=int, default=None, help="seed the PRGs (INSECURE)")
    ap.add_argument("--limit", type=int, default=None, help="first N train/test samples")
    ap.add_argument("--max-batches", type=int, default=None, help="batches per epoch")
    ap.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        metavar="DIR",
        help="after each epoch, each party writes its own shares to DIR/<party>.shares.pt "
        "and the coordinator public metadata to DIR/checkpoint.json (with --transport tcp "
        "the node processes write their files themselves, to the same DIR on this host)",
    )
    ap.add_argument("--resume", action="store_true", help="continue from --checkpoint DIR")
    add_check_args(ap)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    if not 2 <= args.parties <= len(PARTY_NAMES):
        ap.error(f"--parties must be between 2 and {len(PARTY_NAMES)}")
    if args.epochs < 1 or args.batch_size < 1:
        ap.error("--epochs and --batch-size must be >= 1")
    if args.resume and args.checkpoint is None:
        ap.error("--resume needs --checkpoint DIR")
    if args.checkpoint is not None:
        # the parties (node processes with --transport tcp) get this exact folder
        args.checkpoint = args.checkpoint.resolve()
    if args.lr is None:
        args.lr = 0.1 if args.optimizer == "sgd" else 0.02
    check_script_args(ap, args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging(level="warning")
    torch.set_num_threads(1)
    kinds = ["mlp", "cnn"] if args.model == "both" else [args.model]
    results = []
    for kind in kinds:
        a = copy.copy(args)
        a.model = kind
        try:
            results.append((a, trio.run(train, a)))
        except NumericError as exc:  # a wrapped or out-of-range value: no traceback
            print(f"train_digits.py: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
    for a, r in results:
        print(summary(a, r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
