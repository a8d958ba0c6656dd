"""A PyTorch user's habits on shares (issue 22): each idiom works or raises the library's
error saying what to write instead, and three public training loops run in their own
style with only the data-loading, model-sharing and ``await`` lines changed.

The ports (written here from the published loops, on tiny synthetic data):

* pytorch/examples ``mnist/main.py``: ``Net`` (two convolutions, max pooling, two
  dropouts, log-softmax) with its ``train`` / ``test`` loops, at 10x10 inputs and fewer
  channels. Changed: the loader yields shared images; ``loss.item()`` and ``.sum().item()``
  read ``(await reveal(...)).item()``; ``optim.Adadelta`` (which the library lacks, see
  :func:`test_torch_optimizers_on_shares_name_the_library_ones`) is ``training.Adam``.
* CrypTen ``examples/mpc_linear_svm``: ``train_linear_svm`` with the method forms
  (``w.matmul(features).add(b).sign()``, ``.mul``, ``.div``, ``features.new``). Changed:
  ``crypten.is_encrypted_tensor`` / ``get_plain_text()`` are ``isinstance(...,
  SharedTensor)`` / ``await accuracy.get()``; the rank-0 check before ``print`` is gone.
* d2l ``train_ch6`` with ``evaluate_accuracy_gpu``, ``accuracy`` and ``Accumulator`` on
  a LeNet (sigmoids, average pooling) at 12x12 inputs. Changed: the net is shared after
  ``net.to(device)``; ``torch.optim.SGD`` is ``training.SGD`` (same arguments); the
  values summed into the accumulator are revealed (``await``); the animator and timer
  (plotting) are left out.

Each loop also runs unchanged on plaintext torch (``reveal`` passes a torch tensor
through), which is the oracle: loss per step within 0.01 (tests/test_models.py: the
cross-entropy of the same logits is within 0.003, the rest is the parameters' drift over
these few steps), predictions counted alike, and for the SVM the weights within 1e-3
(8 epochs of ``lr (2**-17 + 2u) + 2u`` per weight, u = 2**-16, plus the initial
encoding).
"""

from __future__ import annotations

import copy
import re
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from protocols.errors import UnsupportedOperation
from training import SGD, Adam, SharedTensor, export_module
from training.errors import (
    ClusterMismatch,
    RevealRequired,
    UnsupportedAttribute,
    UnsupportedOptimizer,
)
from training.testing import start_cluster
from training.testing import value_of as reveal

FP: dict[str, Any] = {"precision": 16, "base": 2}


# -- the idioms ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adadelta"])
async def test_torch_optimizers_on_shares_name_the_library_ones(name: str) -> None:
    async with start_cluster(2, seed=1) as c:
        model = c.share_module(nn.Linear(3, 2))
        cls = getattr(torch.optim, name)
        want = f"training.{name}" if name != "Adadelta" else "training.SGD, training.Adam"
        for params in (
            model.parameters(),
            [{"params": model.parameters()}],
            [model.weight],
            model.named_parameters(),
        ):
            with pytest.raises(UnsupportedOptimizer, match=re.escape(want)):
                cls(params, lr=0.1)
        # every other isinstance check is as before; the library's optimizer takes them
        assert not isinstance(model.weight, torch.Tensor)
        assert isinstance(model.weight, SharedTensor)
        assert issubclass(UnsupportedOptimizer, TypeError)
        assert SGD(model.parameters(), lr=0.1).param_groups


async def test_plaintext_value_idioms_say_await_get() -> None:
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.tensor([1.5, -2.0]))
        s = x.sum()
        for call, hint in [
            (lambda: s.item(), "(await x.get()).item()"),
            (lambda: float(s), "float(await x.get())"),
            (lambda: int(s), "int(await x.get())"),
            (lambda: x.tolist(), "(await x.get()).tolist()"),
            (lambda: x.numpy(), "(await x.get()).numpy()"),
            (lambda: np.asarray(x), "(await x.get()).numpy()"),
            (lambda: bool(s), "bool(await x.get())"),
        ]:
            with pytest.raises(RevealRequired, match=re.escape(hint)):
                call()
        assert issubclass(RevealRequired, TypeError)
        assert float(await s.get()) == pytest.approx(-0.5, abs=1e-3)


async def test_data_detach_and_cpu_work_and_other_devices_say_where() -> None:
    async with start_cluster(2, seed=1) as c:
        x = c.share(torch.tensor([1.0, 2.0]), requires_grad=True)
        y = x * 3
        for same in (y.data, y.detach(), y.cpu(), y.to("cpu"), y.to(torch.device("cpu"))):
            assert isinstance(same, SharedTensor) and torch.equal(await same.get(), await y.get())
        assert not y.data.requires_grad and y.requires_grad
        assert y.device == torch.device("cpu")
        assert y.to("cpu", torch.float64).dtype == torch.float64
        assert y.type(torch.float64).dtype == torch.float64
        for move in (lambda: y.to("cuda"), lambda: y.cuda(), lambda: y.to("meta")):
            with pytest.raises(UnsupportedOperation, match="before sharing"):
                move()
        with pytest.raises(UnsupportedOperation, match=re.escape("await x.get(dtype=torch.int64)")):
            y.type(torch.int64)
        # p.data = q replaces a parameter's value: the manual update works
        model = c.share_module(nn.Linear(2, 1, bias=False))
        w0 = await model.weight.get()
        model(c.share(torch.tensor([[1.0, 1.0]]))).sum().backward()
        for p in model.parameters():
            p.data -= 0.5 * p.grad
        assert torch.allclose(await model.weight.get(), w0 - 0.5, atol=2e-3)
        assert model.weight.is_leaf and model.weight.requires_grad


async def test_adam_takes_a_public_gradient() -> None:
    """``model(x).sum().backward()`` leaves the bias a public gradient (ones): Adam shares
    it (it raised AttributeError) and steps like torch's Adam."""
    torch.manual_seed(2)
    net = nn.Linear(2, 1)
    ref = copy.deepcopy(net)
    x = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    ropt = torch.optim.Adam(ref.parameters(), lr=0.1, eps=2.0**-10)  # the noise floor's eps
    ref(x).sum().backward()
    ropt.step()
    async with start_cluster(2, seed=1) as c:
        model = c.share_module(net, **FP)
        opt = Adam(model.parameters(), lr=0.1)
        model(c.share(x, **FP)).sum().backward()
        assert isinstance(model.bias.grad, torch.Tensor)
        opt.step()
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            # a first Adam step is lr sign(g) (up to eps): 2% of lr, as tests/test_models.py
            assert torch.allclose(await p.get(), q.detach(), atol=0.02 * 0.1)


async def test_moving_or_converting_a_shared_module_says_to_do_it_before_sharing() -> None:
    async with start_cluster(2, seed=1) as c:
        model = c.share_module(nn.Linear(3, 2))
        for call in (
            lambda: model.to("cpu"),
            lambda: model.cpu(),
            lambda: model.double(),
            lambda: model.to(torch.device("cpu")),
        ):
            with pytest.raises(UnsupportedOperation, match=r"Net\(\)\.to\(device\)"):
                call()
        with pytest.raises(UnsupportedOperation, match="before sharing"):
            model.cuda()


async def test_method_forms_of_the_operators_match_torch() -> None:
    a, b = torch.tensor([[1.0, -2.0], [0.5, 3.0]]), torch.tensor([[2.0, 1.0], [-1.0, 0.25]])
    async with start_cluster(2, seed=1) as c:
        x, y = c.share(a, **FP), c.share(b, **FP)
        cases = [
            (x.add(y), a.add(b)),
            (x.add(y, alpha=2), a.add(b, alpha=2)),
            (x.add(1), a.add(1)),
            (x.sub(y), a.sub(b)),
            (x.subtract(y, alpha=0.5), a.subtract(b, alpha=0.5)),
            (x.mul(y), a.mul(b)),
            (x.multiply(3), a.multiply(3)),
            (x.div(4), a.div(4)),
            (x.div(y), a.div(b)),
            (x.true_divide(2.5), a.true_divide(2.5)),
            (x.matmul(y), a.matmul(b)),
            (x.mm(y), a.mm(b)),
            (x.neg(), a.neg()),
            (x.negative(), a.negative()),
            (x.sign(), a.sign()),
            (x.maximum(y), a.maximum(b)),
            (x.minimum(y), a.minimum(b)),
            (x.view_as(y.reshape(4)), a.view_as(b.reshape(4))),
            (x.sum(axis=1), a.sum(axis=1)),
            (x.argmax(axis=1), a.argmax(axis=1).double()),
        ]
        for got, want in cases:
            # products and divisions by shares: a few units of 2**-16 (reciprocal 2e-4)
            assert torch.allclose((await got.get()).double(), want.double(), atol=1e-3, rtol=3e-4)
        for name in ("new_zeros", "new_ones", "new_empty"):
            t = getattr(x, name)(2, 3)
            fill = 1.0 if name == "new_ones" else 0.0
            assert t.shape == (2, 3) and torch.equal(await t.get(), torch.full((2, 3), fill))
            assert (t.fp.base, t.fp.precision) == (2, 16)
        for made, want in [
            (x.new_zeros((3,)), torch.zeros(3)),
            (x.new_full((2,), 1.5), torch.full((2,), 1.5)),
            (x.new_tensor([1, 2]), torch.tensor([1.0, 2.0])),
            (x.new(torch.tensor([0.25])), torch.tensor([0.25])),
            (torch.zeros_like(x), torch.zeros(2, 2)),
            (torch.ones_like(x), torch.ones(2, 2)),
            (torch.full_like(x, 2.0), torch.full((2, 2), 2.0)),
        ]:
            assert isinstance(made, SharedTensor) and torch.equal(await made.get(), want)
        assert x.new_ones(2, requires_grad=True).requires_grad


async def test_unsupported_layers_are_named_by_the_layer() -> None:
    async with start_cluster(2, seed=1) as c:
        for layer, args, kind in [
            (nn.LSTM(3, 4), (torch.randn(2, 1, 3),), UnsupportedOperation),
            (nn.MultiheadAttention(4, 2), (torch.randn(2, 1, 4),) * 3, UnsupportedAttribute),
            (nn.Sequential(nn.Linear(3, 3), nn.Mish()), (torch.randn(2, 3),), None),
        ]:
            model = c.share_module(layer)
            name = "Mish" if isinstance(layer, nn.Sequential) else type(layer).__name__
            with pytest.raises(
                kind or UnsupportedOperation, match=rf"^nn\.{name} is not supported"
            ):
                model(*(c.share(a) for a in args))

        class Custom(nn.Module):
            def forward(self, x: Any) -> Any:
                return torch.erf(x)  # the user's own call: named by the function

        with pytest.raises(UnsupportedOperation, match="torch operation 'erf'"):
            c.share_module(Custom())(c.share(torch.ones(2)))


async def test_mixing_two_clusters_raises_one_library_error() -> None:
    async with (
        start_cluster(2, seed=1) as c,
        start_cluster(2, seed=2) as d,
    ):
        x, y = c.share(torch.ones(2)), d.share(torch.ones(2))
        for mix in (lambda: x + y, lambda: x * y, lambda: x @ y, lambda: torch.cat([x, y])):
            with pytest.raises(ClusterMismatch, match="two clusters"):
                mix()
        with pytest.raises(ClusterMismatch, match="another cluster"):
            x.data = y
        assert issubclass(ClusterMismatch, ValueError)


# -- port 1: pytorch/examples mnist/main.py -------------------------------------------------


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(72, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: Any) -> Any:
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


class MnistExample:
    """pytorch/examples' train and test loops (a namespace, so pytest does not collect
    ``test``)."""

    @staticmethod
    async def train(
        args: Any, model: Any, device: Any, train_loader: Any, optimizer: Any, epoch: int
    ) -> None:
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            if batch_idx % args.log_interval == 0:
                print(
                    "Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}".format(  # noqa: UP032 - as written
                        epoch,
                        batch_idx * len(data),
                        len(train_loader.dataset),
                        100.0 * batch_idx / len(train_loader),
                        (await reveal(loss)).item(),  # was loss.item()
                    )
                )
                if args.dry_run:
                    break

    @staticmethod
    async def test(model: Any, device: Any, test_loader: Any) -> None:
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                output = model(data)
                test_loss += (
                    await reveal(F.nll_loss(output, target, reduction="sum"))
                ).item()  # sum up batch loss
                pred = output.argmax(
                    dim=1, keepdim=True
                )  # get the index of the max log-probability
                correct += (await reveal(pred.eq(target.view_as(pred)).sum())).item()

        test_loss /= len(test_loader.dataset)

        print(
            f"\nTest set: Average loss: {test_loss:.4f}, Accuracy: {correct}/{len(test_loader.dataset)} ({100.0 * correct / len(test_loader.dataset):.0f}%)\n"
        )


class Loader(list[Any]):
    """A list of (data, target) batches with the ``dataset`` a DataLoader has."""

    def __init__(self, batches: list[Any], dataset: Any) -> None:
        super().__init__(batches)
        self.dataset = dataset


def blobs(n: int, classes: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is where a bright 3x3 blob sits (one corner per class)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, 1, size, size, generator=g) * 0.3
    for i, k in enumerate(y.tolist()):
        r, s = (1 if k in (0, 1) else size - 4), (1 if k in (0, 2) else size - 4)
        x[i, 0, r : r + 3, s : s + 3] += 1.0
    return x, y


def batches(x: torch.Tensor, y: torch.Tensor, size: int, share: Any) -> Loader:
    return Loader([(share(x[i : i + size]), y[i : i + size]) for i in range(0, len(x), size)], y)


def numbers(out: str, pattern: str) -> list[float]:
    return [float(v) for v in re.findall(pattern, out)]


@pytest.mark.filterwarnings("ignore::training.PublicOperandWarning")  # the labels are public
async def test_pytorch_examples_mnist_loops(capsys: pytest.CaptureFixture[str]) -> None:
    """Both loops run; ``test`` is torch's on the same weights, before training and after
    (on the exported model); ``train`` logs every batch and its Adam steps move every
    weight by about lr (a first Adam step is lr per weight; the dropout masks are the
    dealer's, not torch's, so the trained weights are not compared with torch's)."""

    class Args:
        log_interval = 1
        dry_run = False

    lr = 0.03
    x, y = blobs(16, 4, 10, seed=3)
    device = torch.device("cpu")
    torch.manual_seed(1)
    net = Net().to(device)
    initial = copy.deepcopy(net)
    plain_test = batches(x[:8], y[:8], 8, lambda t: t)

    await MnistExample.test(initial, device, plain_test)
    async with start_cluster(2, seed=4) as c:
        model = c.share_module(net, **FP)
        train_loader = batches(x, y, 8, lambda t: c.share(t, **FP))
        test_loader = batches(x[:8], y[:8], 8, lambda t: c.share(t, **FP))
        optimizer = Adam(model.parameters(), lr=lr)  # was optim.Adadelta(..., lr=args.lr)
        await MnistExample.test(model, device, test_loader)
        for epoch in range(1, 3):
            await MnistExample.train(Args(), model, device, train_loader, optimizer, epoch)
        await MnistExample.test(model, device, test_loader)
        trained = await export_module(model, dtype=torch.float64)
    await MnistExample.test(trained, device, batches(x[:8].double(), y[:8], 8, lambda t: t))
    out = capsys.readouterr().out
    (ref0, loss0, loss1, ref1) = numbers(out, r"Average loss: (-?[\d.]+)")
    (rcount0, count0, count1, rcount1) = numbers(out, r"Accuracy: ([\d.]+)/")  # shares: floats
    assert abs(loss0 - ref0) <= 0.01 and count0 == rcount0
    assert abs(loss1 - ref1) <= 0.01 and count1 == rcount1
    assert len(numbers(out, r"Loss: ([\d.]+)")) == 4  # every batch of both epochs logged
    moved = [
        float((p.double() - q.double()).abs().max())
        for p, q in zip(trained.parameters(), initial.parameters(), strict=True)
    ]
    assert min(moved) >= lr / 2, moved


# -- port 2: CrypTen examples/mpc_linear_svm ------------------------------------------------


async def train_linear_svm(features: Any, labels: Any, epochs: int = 50, lr: float = 0.5) -> Any:
    # Initialize random weights
    w = features.new(torch.randn(1, features.size(0)))
    b = features.new(torch.randn(1))

    for epoch in range(epochs):
        # Forward
        label_predictions = w.matmul(features).add(b).sign()

        # Compute accuracy
        correct = label_predictions.mul(labels)
        accuracy = correct.add(1).div(2).mean()
        if isinstance(accuracy, SharedTensor):  # was crypten.is_encrypted_tensor(accuracy)
            accuracy = await accuracy.get()  # was accuracy.get_plain_text()

        # Print Accuracy once
        print(f"Epoch {epoch} --- Training Accuracy %.2f%%" % (accuracy.item() * 100))

        # Backward
        loss_grad = -labels * (1 - correct) * 0.5  # Hinge loss
        b_grad = loss_grad.mean()
        w_grad = loss_grad.matmul(features.t()).div(loss_grad.size(1))

        # Update
        w -= w_grad * lr
        b -= b_grad * lr

    return w, b


async def test_crypten_linear_svm(capsys: pytest.CaptureFixture[str]) -> None:
    g = torch.Generator().manual_seed(5)
    features = torch.randn(6, 64, generator=g)
    w_true, b_true = torch.randn(1, 6, generator=g), torch.randn(1, generator=g)
    labels = w_true.matmul(features).add(b_true).sign()
    torch.manual_seed(7)
    w_ref, b_ref = await train_linear_svm(features, labels, epochs=8)
    ref_out = capsys.readouterr().out
    async with start_cluster(2, seed=8) as c:
        torch.manual_seed(7)  # the same initial weights (the cluster draws from its own PRG)
        w, b = await train_linear_svm(c.share(features, **FP), c.share(labels, **FP), epochs=8)
        w_got, b_got = await w.get(), await b.get()
    out = capsys.readouterr().out
    accuracies = numbers(out, r"Accuracy ([\d.]+)%")
    assert accuracies == numbers(ref_out, r"Accuracy ([\d.]+)%") and len(accuracies) == 8
    assert accuracies[-1] > accuracies[0]
    assert float((w_got - w_ref).abs().max()) <= 1e-3 and float((b_got - b_ref).abs().max()) <= 1e-3


# -- port 3: d2l train_ch6 -------------------------------------------------------------------


class Accumulator:
    """For accumulating sums over `n` variables."""

    def __init__(self, n: int) -> None:
        self.data = [0.0] * n

    def add(self, *args: Any) -> None:
        self.data = [a + float(b) for a, b in zip(self.data, args, strict=True)]

    def __getitem__(self, idx: int) -> float:
        return self.data[idx]


async def accuracy(y_hat: Any, y: Any) -> float:
    """Compute the number of correct predictions."""
    if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
        y_hat = y_hat.argmax(axis=1)
    cmp = (await reveal(y_hat)).type(y.dtype) == y  # was y_hat.type(y.dtype) == y
    return float(cmp.type(y.dtype).sum())


async def evaluate_accuracy_gpu(net: Any, data_iter: Any, device: Any = None) -> float:
    """Compute the accuracy for a model on a dataset using a GPU."""
    if isinstance(net, nn.Module):
        net.eval()  # Set the model to evaluation mode
        if not device:
            device = next(iter(net.parameters())).device
    # No. of correct predictions, no. of predictions
    metric = Accumulator(2)
    with torch.no_grad():
        for X, y in data_iter:
            if isinstance(X, list):
                X = [x.to(device) for x in X]
            else:
                X = X.to(device)
            y = y.to(device)
            metric.add(await accuracy(net(X), y), y.numel())
    return metric[0] / metric[1]


async def train_ch6(
    net: Any, train_iter: Any, test_iter: Any, num_epochs: int, lr: float, device: Any, env: Any
) -> list[float]:
    """Train a model with a GPU (defined in Chapter 6)."""

    def init_weights(m: Any) -> None:
        if type(m) is nn.Linear or type(m) is nn.Conv2d:
            nn.init.xavier_uniform_(m.weight)

    net.apply(init_weights)
    print("training on", device)
    net.to(device)
    net = env.share_module(net)  # added: the model goes to the parties
    optimizer = env.SGD(net.parameters(), lr=lr)  # was torch.optim.SGD
    loss = nn.CrossEntropyLoss()
    losses = []
    for _epoch in range(num_epochs):
        # Sum of training loss, sum of training accuracy, no. of examples
        metric = Accumulator(3)
        net.train()
        for _i, (X, y) in enumerate(train_iter):
            optimizer.zero_grad()
            X, y = X.to(device), y.to(device)
            y_hat = net(X)
            l = loss(y_hat, y)  # noqa: E741 - d2l's name
            l.backward()
            optimizer.step()
            with torch.no_grad():
                metric.add(await reveal(l * X.shape[0]), await accuracy(y_hat, y), X.shape[0])
            losses.append(float(await reveal(l.detach())))  # added: the test's record
            train_l = metric[0] / metric[2]
            train_acc = metric[1] / metric[2]
        test_acc = await evaluate_accuracy_gpu(net, test_iter)
    print(f"loss {train_l:.3f}, train acc {train_acc:.3f}, test acc {test_acc:.3f}")
    return losses


def lenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 2, kernel_size=5, padding=2),
        nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Conv2d(2, 4, kernel_size=5),
        nn.Sigmoid(),
        nn.AvgPool2d(kernel_size=2, stride=2),
        nn.Flatten(),
        nn.Linear(4, 12),
        nn.Sigmoid(),
        nn.Linear(12, 8),
        nn.Sigmoid(),
        nn.Linear(8, 4),
    )


async def test_d2l_train_ch6(capsys: pytest.CaptureFixture[str]) -> None:
    x, y = blobs(24, 4, 12, seed=9)

    class Plain:
        SGD = torch.optim.SGD

        @staticmethod
        def share_module(net: nn.Module) -> nn.Module:
            return net

    torch.manual_seed(10)
    ref_losses = await train_ch6(
        lenet(),
        batches(x, y, 8, lambda t: t),
        batches(x[:8], y[:8], 8, lambda t: t),
        2,
        0.9,
        torch.device("cpu"),
        Plain,
    )
    ref_out = capsys.readouterr().out
    async with start_cluster(2, seed=11) as c:

        class Secure:
            SGD = SGD

            @staticmethod
            def share_module(net: nn.Module) -> nn.Module:
                return c.share_module(net, **FP)

        torch.manual_seed(10)  # the same xavier initialisation
        losses = await train_ch6(
            lenet(),
            batches(x, y, 8, lambda t: c.share(t, **FP)),
            batches(x[:8], y[:8], 8, lambda t: c.share(t, **FP)),
            2,
            0.9,
            torch.device("cpu"),
            Secure,
        )
    out = capsys.readouterr().out
    assert len(losses) == len(ref_losses) == 6
    assert max(abs(a - b) for a, b in zip(losses, ref_losses, strict=True)) <= 0.01
    # the final line: loss within 0.01, the same accuracies (predictions counted alike)
    pattern = r"loss ([\d.]+), train acc ([\d.]+), test acc ([\d.]+)"
    (got,), (want,) = re.findall(pattern, out), re.findall(pattern, ref_out)
    assert abs(float(got[0]) - float(want[0])) <= 0.01 and got[1:] == want[1:]
