"""A PyTorch training script runs on fastbn with its imports changed and nothing else.

The script is PyTorch's official MNIST example (pytorch/examples, mnist/main.py: a convnet
with Dropout, Adadelta, StepLR, ``torch.device``, ``.to(device)``, ``torch.flatten``,
``F.nll_loss``/``F.log_softmax``, ``argmax(dim=1, keepdim=True)``,
``.eq(target.view_as(pred)).sum().item()``, ``torch.save(model.state_dict(), ...)``) with
BatchNorm added, trained for two short epochs on the embedded 8x8 digits.  It runs under
``import fastbn as torch``-style imports and, when torch imports, under torch itself: both
must learn (not bitwise: their random streams differ)."""
import argparse

import numpy as np
import pytest

import fastbn

FASTBN_IMPORTS = """
import fastbn as torch
from fastbn import nn, optim
import fastbn.nn.functional as F
from fastbn.optim.lr_scheduler import StepLR
from fastbn.utils.data import DataLoader, TensorDataset
"""

TORCH_IMPORTS = """
import torch
from torch import nn, optim
import torch.nn.functional as F
from torch.optim.lr_scheduler import StepLR
from torch.utils.data import DataLoader, TensorDataset
"""

# below the imports: the example as published, with BN layers, 8x8 inputs (fc1 takes
# 64 * 2 * 2 features) and the digits in place of torchvision's MNIST
SCRIPT = """
from fastbn.data import load_digits   # the dataset, in place of torchvision.datasets.MNIST


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.bn1 = nn.BatchNorm2d(32)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.bn2 = nn.BatchNorm2d(64)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(256, 128)
        self.bn3 = nn.BatchNorm1d(128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(self.bn1(x))
        x = self.conv2(x)
        x = F.relu(self.bn2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(self.bn3(x))
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(args, model, device, train_loader, optimizer, epoch, log):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))
            if args.dry_run:
                break


def test(model, device, test_loader, log):
    model.eval()
    test_loss = 0
    correct = 0
    with torch.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()

    test_loss /= len(test_loader.dataset)

    log.append('\\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\\n'.format(
        test_loss, correct, len(test_loader.dataset),
        100. * correct / len(test_loader.dataset)))
    return test_loss, correct / len(test_loader.dataset)


def main(args, log):
    use_accel = not args.no_accel and torch.accelerator.is_available()

    torch.manual_seed(args.seed)

    if use_accel:
        device = torch.accelerator.current_accelerator()
    else:
        device = torch.device("cpu")

    train_kwargs = {'batch_size': args.batch_size, 'shuffle': True}
    test_kwargs = {'batch_size': args.test_batch_size}

    images, labels = load_digits()
    images = (torch.from_numpy(images) - 0.3) / 0.4
    labels = torch.from_numpy(labels)
    dataset1 = TensorDataset(images[:1437], labels[:1437])
    dataset2 = TensorDataset(images[1437:], labels[1437:])
    train_loader = DataLoader(dataset1, **train_kwargs)
    test_loader = DataLoader(dataset2, **test_kwargs)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)

    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    results = []
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch, log)
        results.append(test(model, device, test_loader, log))
        scheduler.step()

    if args.save_model:
        torch.save(model.state_dict(), args.save_path)
    return results, test_loader
"""


def _args(save_path):
    return argparse.Namespace(batch_size=64, test_batch_size=1000, epochs=2, lr=1.0, gamma=0.7,
                              no_accel=False, dry_run=False, seed=1, log_interval=10,
                              save_model=True, save_path=str(save_path))


def _run(imports, save_path):
    namespace = {"__name__": "mnist_example"}
    exec(compile(imports + SCRIPT, "mnist_example.py", "exec"), namespace)
    log = []
    # one thread: steps this small gain nothing from two, and lose much on a busy machine
    with fastbn.threads(1):
        results, test_loader = namespace["main"](_args(save_path), log)
    return namespace, results, log, test_loader


def _accuracy(namespace, state_dict, test_loader):
    """A fresh Net with the saved weights, evaluated as the script's test() does."""
    model = namespace["Net"]()
    model.load_state_dict(state_dict)
    loss, accuracy = namespace["test"](model, namespace["torch"].device("cpu"), test_loader, [])
    return accuracy


@pytest.fixture(scope="module")
def fastbn_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("fastbn") / "mnist_cnn.pt"
    return _run(FASTBN_IMPORTS, path), path


def test_script_trains_with_fastbn_imports(fastbn_run):
    (namespace, results, log, test_loader), path = fastbn_run
    assert "fastbn" in namespace["torch"].__name__
    (loss1, acc1), (loss2, acc2) = results
    assert acc2 > 0.85 and loss2 < 0.5, results
    assert loss2 < loss1 * 1.2
    assert any(line.startswith("Train Epoch: 2") for line in log)
    assert log[-1].startswith("\nTest set: Average loss")
    # the saved state_dict comes back with torch.load and reproduces the accuracy
    torch = namespace["torch"]
    state = torch.load(path)
    assert list(state) == list(namespace["Net"]().state_dict())
    assert _accuracy(namespace, state, test_loader) == acc2


def test_same_script_under_torch_learns_alike(fastbn_run, tmp_path):
    torch = pytest.importorskip("torch")
    (_, ours, _, _), _ = fastbn_run
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # its thread pool start costs more than these small steps
    try:
        namespace, theirs, log, test_loader = _run(TORCH_IMPORTS, tmp_path / "mnist_cnn.pt")
    finally:
        torch.set_num_threads(threads)
    assert namespace["torch"].__name__ == "torch"
    acc_ours, acc_theirs = ours[-1][1], theirs[-1][1]
    assert acc_theirs > 0.85
    assert abs(acc_ours - acc_theirs) < 0.06, (ours, theirs)
    # the state_dicts have the same keys and shapes: weights move both ways
    fnet = _fastbn_net()
    tstate = torch.load(tmp_path / "mnist_cnn.pt")
    fnet.load_state_dict({k: v.numpy() for k, v in tstate.items()})
    assert {k: v.shape for k, v in fnet.state_dict().items()} == \
        {k: tuple(v.shape) for k, v in tstate.items()}


def _fastbn_net():
    namespace = {"__name__": "mnist_example"}
    exec(compile(FASTBN_IMPORTS + SCRIPT, "mnist_example.py", "exec"), namespace)
    return namespace["Net"]()


def test_torch_weights_reproduce_torch_outputs_in_fastbn(tmp_path):
    """The example's net with torch's weights gives torch's outputs under fastbn (eval,
    float64)."""
    torch = pytest.importorskip("torch")
    namespace = {"__name__": "mnist_example"}
    exec(compile(TORCH_IMPORTS + SCRIPT, "mnist_example.py", "exec"), namespace)
    tnet = namespace["Net"]().double()
    with torch.no_grad():
        for m in tnet.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    tnet.eval()
    fnet = _fastbn_net().double().eval()
    fnet.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8))
    np.testing.assert_allclose(fnet(fastbn.tensor(x)).data,
                               tnet(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)
