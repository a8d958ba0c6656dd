"""What the coordinator and the crypto provider see during encrypted training.

Every envelope the network accepts is recorded through ``network.interceptor`` (it sees
every message, before metering and delivery) and filtered by receiver:

* the coordinator (the owner) receives only the shares of the values it reveals (the
  loss every iteration, the predictions only when asked) as OUTPUT messages, one per
  party per reveal, and CONTROL barrier replies; never an ONLINE (masked opening),
  OFFLINE (dealer material) or INPUT message;
* the provider receives only CONTROL dealer requests whose JSON holds op ids, kinds,
  shapes and divisors (keys op/k/s/d), and the same request sequence whatever the
  secret data and weights (same shapes), so it cannot learn anything about them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import msgspec
import pytest
import torch

from actors import Envelope, Phase
from actors.messages import Reply, Requests
from protocols import FixedPoint
from training import SGD, TrainingCoordinator
from training.testing import PARTIES, PROVIDER, Tap, start_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from seed_net import DATA, TARGET, loss_fn, make_net

COORDINATOR = "coordinator"


async def _run(
    n: int,
    data: torch.Tensor,
    target: torch.Tensor,
    net: torch.nn.Module,
    reveal_predictions: list[bool],
    seed: int,
):
    """Train with a tap on the network from right after start-up; returns the log and the
    iteration records."""
    async with start_cluster(n, seed=seed) as c:
        log = Tap(c).envelopes
        x, y = c.share(data), c.share(target)
        model = c.share_module(net, requires_grad=True)
        coord = TrainingCoordinator(c, model, SGD(model.parameters(), lr=0.1), loss_fn)
        records = [await coord.step(x, y, reveal_predictions=r) for r in reveal_predictions]
    return log, records


def _op(tag: str) -> int:
    head, _, _ = tag.partition("/")
    assert head.isdigit(), tag
    return int(head)


@pytest.mark.parametrize("n", [2, 3])
async def test_coordinator_sees_only_what_was_revealed(n: int) -> None:
    reveal_predictions = [False, True, False]
    log, records = await _run(n, DATA, TARGET, make_net(), reveal_predictions, seed=21)
    received = [e for e in log if e.receiver == COORDINATOR]
    assert received, "the tap saw nothing"

    # Only OUTPUT shares and CONTROL replies, and only from the parties.
    assert {e.phase for e in received} <= {Phase.OUTPUT, Phase.CONTROL}
    for forbidden in (Phase.ONLINE, Phase.OFFLINE, Phase.INPUT):
        assert not [e for e in received if e.phase == forbidden], forbidden.name
    assert {e.sender for e in received} <= set(PARTIES[n])

    # CONTROL: barrier replies only, carrying nothing but the depth the party reached.
    for e in received:
        if e.phase == Phase.CONTROL:
            assert e.tag.endswith("/done"), e.tag
            reply = e.control(Reply)
            assert reply.denied is None and reply.depth == e.control()[0] >= 0

    # OUTPUT: one share per party per reveal: the losses, and the predictions once.
    outputs = [e for e in received if e.phase == Phase.OUTPUT]
    reveals = len(records) + sum(reveal_predictions)
    assert len(outputs) == n * reveals
    by_op: dict[int, list[Envelope]] = {}
    for e in outputs:
        assert e.tag.endswith("/out"), e.tag
        by_op.setdefault(_op(e.tag), []).append(e)
    assert len(by_op) == reveals
    for envs in by_op.values():
        assert sorted(e.sender for e in envs) == sorted(PARTIES[n])
    fp = FixedPoint(10, 3)
    opened = []
    for op in sorted(by_op):
        shares = [e.tensors() for e in by_op[op]]
        assert all(len(s) == 1 and s[0].dtype == torch.int64 for s in shares)
        total = sum(s[0] for s in shares)
        # no single share is the value: each is masked by the others
        assert all(not torch.equal(s[0], total) for s in shares)
        opened.append((tuple(total.shape), fp.decode(total)))
    # in order: loss 0; loss 1, predictions 1; loss 2
    assert [shape for shape, _ in opened] == [(), (), (4, 1), ()]
    losses = [float(v) for shape, v in opened if shape == ()]
    assert losses == [r.loss for r in records]
    assert records[1].predictions is not None
    assert torch.equal(opened[2][1], records[1].predictions)
    assert records[0].predictions is None and records[2].predictions is None


def _provider_view(log: list[Envelope]) -> list[Envelope]:
    return [e for e in log if e.receiver == PROVIDER]


def _check_requests(view: list[Envelope]) -> int:
    """Every message is a CONTROL request batch from the coordinator holding only
    (op id, kind, shapes, divisor); returns the number of requests."""
    count = 0
    for e in view:
        assert e.sender == COORDINATOR, e.sender
        assert e.phase == Phase.CONTROL, e.phase.name
        assert e.tag.startswith("req/"), e.tag
        body = e.control(Requests).items
        assert body
        for req in body:
            assert set(msgspec.structs.asdict(req)) == {"op", "kind", "shapes", "out", "d", "keep"}
            assert all(dim >= 0 for shape in [*req.shapes, req.out] for dim in shape), req
            count += 1
    return count


@pytest.mark.parametrize("n", [2, 3])
async def test_provider_sees_only_metadata_independent_of_secrets(n: int) -> None:
    gen = torch.Generator().manual_seed(5)
    other_data = torch.randn(4, 2, generator=gen) * 3
    other_target = torch.randn(4, 1, generator=gen)
    other_net = make_net(random_init=True, seed=99)
    schedule = [False, True]
    log_a, rec_a = await _run(n, DATA, TARGET, make_net(), schedule, seed=31)
    log_b, rec_b = await _run(n, other_data, other_target, other_net, schedule, seed=32)
    # the two runs really computed on different secrets
    assert [r.loss for r in rec_a] != [r.loss for r in rec_b]

    view_a, view_b = _provider_view(log_a), _provider_view(log_b)
    assert _check_requests(view_a) > 0
    assert _check_requests(view_b) > 0
    # secret independence: byte-identical request sequences
    assert [(e.sender, e.tag, e.phase, e.body) for e in view_a] == [
        (e.sender, e.tag, e.phase, e.body) for e in view_b
    ]
    # and the provider never receives a share, masked value or output from anyone
    for log in (log_a, log_b):
        assert {e.phase for e in _provider_view(log)} == {Phase.CONTROL}
