"""The seed tutorial's network, data and deterministic initialisation, exactly as written."""

from __future__ import annotations

import _checkout  # noqa: F401  (this checkout's packages first on sys.path)
import torch
import torch.nn.functional as F
from torch import nn

DATA = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1.0]])
TARGET = torch.tensor([[0], [0], [1], [1.0]])

SEED_INIT = {
    "fc1.weight": [[0.0738, -0.2109], [-0.1579, 0.3174]],
    "fc1.bias": [0.0, 0.1],
    "fc2.weight": [[-0.5368, 0.7050]],
    "fc2.bias": [-0.0343],
}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(2, 2)
        self.fc2 = nn.Linear(2, 1)

    def forward(self, x):
        x = self.fc1(x)
        x = F.relu(x)
        x = self.fc2(x)
        return x


def make_net(random_init: bool = False, seed: int | None = None) -> Net:
    """The seed's Net: its deterministic init by default, else torch's default init."""
    if random_init:
        if seed is not None:
            torch.manual_seed(seed)
        return Net()
    net = Net()
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(torch.tensor(SEED_INIT[name]))
    return net


def loss_fn(pred, target):
    return ((pred - target) ** 2).sum()


def plaintext_losses(net: Net, iterations: int, lr: float) -> list[float]:
    """Plain float32 PyTorch training of a copy of ``net``: the oracle."""
    import copy

    model = copy.deepcopy(net)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    out = []
    for _ in range(iterations):
        opt.zero_grad()
        loss = loss_fn(model(DATA), TARGET)
        loss.backward()
        opt.step()
        out.append(float(loss.detach()))
    return out
