"""How much test accuracy fixed point's rounding noise alone costs Adam, in plaintext torch.

Trains the digits model of ``train_digits.py`` (same split, initialisation and batches)
twice per seed in plain float32 torch: once exactly, with torch's Adam (eps 1e-8), and
``--draws`` times *perturbed* the way fixed point perturbs it: every gradient gets uniform
noise of up to one unit of the last place (2**-bits), and every weight is rounded to a
multiple of 2**-bits (stochastically) after each step. The perturbed runs use Adam with
each eps of ``--eps``. Prints, per eps, the median accuracy gap (exact minus perturbed, in
points) for each seed. It isolates what the encoding costs from what the protocols cost:
if the perturbed plaintext falls behind, so will any fixed-point implementation.

Usage: ``python scripts/adam_noise.py --eps 1e-8,3e-5,1e-3``.
"""

from __future__ import annotations

import argparse
import statistics

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import torch
import torch.nn.functional as F
from torch import nn
from train_digits import batches, load_digits, make_model


def accuracy(
    seed: int, eps: float, draw: int | None, *, model: str, lr: float, epochs: int, bits: int
) -> float:
    """Test accuracy after training; ``draw`` None: exact, else the noise draw's seed."""
    data = load_digits(model)
    net = make_model(model, seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr, eps=eps)
    ulp = 2.0**-bits
    gen = torch.Generator().manual_seed(1000 + (draw or 0))
    onehot = F.one_hot(data.y_train, 10).float()
    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        for b in batches(len(data.y_train), 64, epoch, seed):
            opt.zero_grad()
            loss_fn(net(data.x_train[b]), onehot[b]).backward()
            if draw is not None:
                for p in net.parameters():
                    assert p.grad is not None
                    p.grad += (2 * torch.rand(p.grad.shape, generator=gen) - 1) * ulp
            opt.step()
            if draw is not None:
                with torch.no_grad():
                    for p in net.parameters():
                        p.copy_(torch.floor(p / ulp + torch.rand(p.shape, generator=gen)) * ulp)
    with torch.no_grad():
        return float((net(data.x_test).argmax(1) == data.y_test).float().mean())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["mlp", "cnn"], default="cnn")
    ap.add_argument("--eps", default="1e-8,3e-5,1e-3", help="Adam eps of the perturbed runs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--draws", type=int, default=4, help="noise draws per seed")
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--bits", type=int, default=16, help="fractional bits (base 2)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    kw = {"model": args.model, "lr": args.lr, "epochs": args.epochs, "bits": args.bits}
    exact = [accuracy(s, 1e-8, None, **kw) for s in range(args.seeds)]
    print(f"{args.model}, Adam lr {args.lr}, {args.epochs} epochs, {args.bits} bits")
    print("exact torch (eps 1e-8) accuracy: " + " ".join(f"{a:.4f}" for a in exact))
    for eps in [float(e) for e in args.eps.split(",")]:
        gaps = [
            statistics.median(
                100 * (exact[s] - accuracy(s, eps, d, **kw)) for d in range(args.draws)
            )
            for s in range(args.seeds)
        ]
        print(
            f"perturbed, eps {eps:g}: median gap (points) per seed "
            + " ".join(f"{g:+.2f}" for g in gaps)
            + f"   median {statistics.median(gaps):+.2f}"
        )


if __name__ == "__main__":
    main()
