"""SecureNN's and Falcon's networks A-D for the communication report: one training
iteration of each, measured from the op log (:func:`measure_network`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .measure import Workload, measure_iterations, mse_sum
from .projection import Profile


# -- (e) SecureNN's and Falcon's networks A-D, one training iteration -----------------------------
@dataclass(frozen=True, slots=True)
class NetworkDef:
    """One of the networks SecureNN (Wagh, Gupta, Chandran, PETS 2019) and Falcon (Wagh et
    al., PETS 2021) train on MNIST; ``build`` is our nn.Module for it."""

    name: str
    layers: str
    """What we train."""
    source: str
    """Where the architecture was checked."""
    differs: str
    """Where ours differs from the papers' code."""
    build: Callable[[], nn.Module]


def _network_a() -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
        nn.Linear(128, 10),
    )  # fmt: skip


def _network_b() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 16, 5), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 100), nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


def _network_c() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(20, 50, 5), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
    )  # fmt: skip


def _network_d() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 5, 5, stride=2, padding=2), nn.ReLU(), nn.Flatten(), nn.Linear(980, 100),
        nn.ReLU(), nn.Linear(100, 10),
    )  # fmt: skip


_FALCON = "snwagh/falcon-public src/secondary.cpp selectNetwork"
_SECURENN = "snwagh/securenn-public src/main.cpp"
_ORDER = (
    "ReLU before max-pool (Falcon's code pools first, then ReLU: the same function, "
    "ReLU on 4x fewer elements there)"
)
NETWORKS: dict[str, NetworkDef] = {
    "A": NetworkDef(
        "A",
        "FC 784-128, ReLU, FC 128-128, ReLU, FC 128-10 (SecureML)",
        f"{_FALCON} 'SecureML'; {_SECURENN} 'SecureML'",
        "no ReLU after the last layer (Falcon's code has one)",
        _network_a,
    ),
    "B": NetworkDef(
        "B",
        "conv 1-16 5x5, ReLU, maxpool 2x2, conv 16-16 5x5, ReLU, maxpool 2x2, "
        "FC 256-100, ReLU, FC 100-10 (MiniONN; Gazelle's Network D)",
        f"{_FALCON} 'MiniONN'; {_SECURENN} 'MiniONN/GAZELLE-D'",
        f"{_ORDER}; no ReLU after the last layer",
        _network_b,
    ),
    "C": NetworkDef(
        "C",
        "conv 1-20 5x5, ReLU, maxpool 2x2, conv 20-50 5x5, ReLU, maxpool 2x2, "
        "FC 800-500, ReLU, FC 500-10 (LeNet)",
        f"{_FALCON} 'LeNet'; {_SECURENN} 'LeNet'",
        f"{_ORDER}; no ReLU after the last layer",
        _network_c,
    ),
    "D": NetworkDef(
        "D",
        "conv 1-5 5x5 stride 2 padding 2, ReLU, FC 980-100, ReLU, FC 100-10 (Chameleon / 'Sarda')",
        f"{_SECURENN} 'Sarda' (ChameleonCNNConfig 5 filters 5x5 stride 2); {_FALCON} 'Sarda'",
        "Falcon's code uses a 2x2 kernel, stride 2, no padding (also 5x14x14 = 980 outputs; "
        "fewer conv multiplications); padding 2 is ours, to get 14x14 from a 5x5 kernel",
        _network_d,
    ),
}
"""The letters follow the brief's A-D; the papers' own lettering was not confirmed (see the
report)."""


def network_workload(name: str, batch: int) -> Workload:
    """Network ``name`` on ``batch`` random MNIST-shaped images (1x28x28 in [0, 1)), one-hot
    targets of 10 classes, sum-of-squares loss, SGD lr 0.01."""
    gen = torch.Generator().manual_seed(batch)
    data = torch.rand(batch, 1, 28, 28, generator=gen)
    target = F.one_hot(torch.randint(0, 10, (batch,), generator=gen), 10).float()

    def model() -> nn.Module:
        torch.manual_seed(0)
        return NETWORKS[name].build()

    return Workload(f"Network {name} batch {batch}", model, data, target, mse_sum, 0.01)


@dataclass(frozen=True, slots=True)
class NetworkCost:
    """One training iteration of a network, measured (meter and op log), and its checks."""

    network: str
    suite: str
    parties: int
    batch: int
    rounds: int
    online: int
    """All parties' online bytes."""
    busiest_party_online: int
    dealer: int
    seconds: float
    """Wall time of the iteration without delays (this run): the projection's compute."""
    closed_rounds: int
    closed_online: int
    closed_dealer: int
    checks: dict[str, bool]

    def project(self, p: Profile) -> float:
        return p.project(self.rounds, self.busiest_party_online, self.seconds)

    @property
    def ok(self) -> bool:
        return all(self.checks.values()) and (self.rounds, self.online, self.dealer) == (
            self.closed_rounds,
            self.closed_online,
            self.closed_dealer,
        )


async def measure_network(name: str, suite: str, n: int, batch: int) -> NetworkCost:
    """One iteration (the first: a CNN at batch 128 takes about a minute here), analysed as
    train_xor's; its wall time includes the first iteration's warm-up."""
    (it,) = await measure_iterations(network_workload(name, batch), suite, n, 1)
    r = it.record
    return NetworkCost(
        name, suite, n, batch, r.online_rounds, r.online_bytes, it.busiest_party_online,
        r.offline_bytes, r.seconds, it.closed_rounds,
        sum(lab.closed_online for lab in it.labels), sum(lab.closed_dealer for lab in it.labels),
        it.checks,
    )  # fmt: skip
