"""Peer workload (runs in CrypTen 0.4.1's venv, see scripts/peers.py): SGD steps of
pytorch/examples' MNIST Net (conv 1-32-3, ReLU, conv 32-64-3, ReLU, max-pool 2, dropout,
fc 9216-128, ReLU, dropout, fc 128-10; cross-entropy) on random 28x28 images, 2 parties
and a TTP. Prints the median step time and party 1's communicator counters.

usage: crypten_cnn.py BATCH STEPS
"""

import sys
import time

import crypten
import crypten.mpc as mpc
import torch
from crypten.config import cfg

BATCH = int(sys.argv[1])
STEPS = int(sys.argv[2])
cfg.mpc.provider = "TTP"
cfg.communicator.verbose = True


@mpc.run_multiprocess(world_size=2)
def train():
    torch.manual_seed(0)
    comm = crypten.communicator.get()
    nn = crypten.nn
    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, 1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, 1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(9216, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, 10),
    ).encrypt()
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    x = crypten.cryptensor(torch.rand(BATCH, 1, 28, 28), src=0)
    labels = torch.randint(0, 10, (BATCH,))
    y = crypten.cryptensor(torch.nn.functional.one_hot(labels, 10).float(), src=1)
    times = []
    for _ in range(STEPS):
        comm.reset_communication_stats()
        t0 = time.perf_counter()
        model.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        model.update_parameters(0.01)
        times.append(time.perf_counter() - t0)
    return {
        "rank": comm.get_rank(),
        "times": times,
        "rounds": comm.comm_rounds,
        "bytes": comm.comm_bytes,
    }


if __name__ == "__main__":
    for r in train():
        ts = sorted(r["times"])
        print(
            f"rank {r['rank']}: median step {ts[len(ts) // 2] * 1e3:.1f} ms, "
            f"last step rounds={r['rounds']} bytes={r['bytes']:.0f}"
        )
