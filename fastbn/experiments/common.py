"""Shared pieces of the paper reproductions: data selection, the paper's sigmoid MLP, a
step-counted SGD run that records test accuracy (and one sigmoid input) as it goes, and
atomic file writes."""
import argparse
import itertools
import math
import os
import time
import warnings
from typing import NamedTuple

import numpy as np

from .. import data, nn, optim
from .._io import atomic_write
from .. import train as _train
from ..progress import ProgressBar
from ..tensor import Tensor, no_grad

__all__ = ["PERCENTILES", "SHARED_MNIST", "ExperimentData", "load_experiment_data",
           "paper_mlp", "last_sigmoid_input", "record_schedule", "train_net", "reach",
           "write_atomic", "add_common_arguments"]

PERCENTILES = (15, 50, 85)
# The project's shared data folder sits beside the repository (absent in an installed copy).
SHARED_MNIST = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                             "..", "..", "..", "shared", "data", "mnist"))
_TRAIN_IMAGES = "train-images-idx3-ubyte"


class ExperimentData(NamedTuple):
    """Flattened, standardized images (N, D) float32 with int64 labels, and a sentence
    saying where they came from."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def _mnist(directory):
    x_train, y_train, x_test, y_test = _train.load_data("mnist", directory)
    full = any(os.path.exists(os.path.join(directory, _TRAIN_IMAGES + ext))
               for ext in ("", ".gz"))
    how = (f"its train and t10k files, {len(x_train)} train / {len(x_test)} test images"
           if full else
           f"its t10k file split {len(x_train)} train / {len(x_test)} test images (seed 0)")
    return x_train, y_train, x_test, y_test, f"MNIST from {directory}: {how}"


def load_experiment_data(dataset="auto", data_dir=None):
    """The data of the reproductions, in the issue's order of preference.

    ``dataset="auto"``: MNIST from ``data_dir`` when given, else the t10k file in the
    shared data folder beside the repository (split 8,000/2,000), else the embedded digits
    with a warning.  ``"mnist"``: the same without the digits fallback.  ``"digits"``: the
    embedded digits (80/20 split)."""
    if dataset not in ("auto", "mnist", "digits"):
        raise ValueError(f"dataset must be 'auto', 'mnist' or 'digits', got {dataset!r}")
    if dataset == "digits":
        if data_dir is not None:
            raise ValueError("--data-dir names MNIST files; it cannot be used with the digits")
        parts = _train.load_data("digits")
        source = (f"the embedded UCI digits (8x8): {len(parts[0])} train / {len(parts[2])} "
                  "test images")
    elif data_dir is not None:
        if not os.path.isdir(data_dir):
            raise ValueError(f"--data-dir {data_dir}: no such directory")
        *parts, source = _mnist(data_dir)
    else:
        try:
            *parts, source = _mnist(SHARED_MNIST)
        except FileNotFoundError:
            if dataset == "mnist":
                raise ValueError(f"no MNIST files: pass --data-dir (looked in {SHARED_MNIST})") from None
            warnings.warn(f"no MNIST found (give --data-dir; looked in {SHARED_MNIST}): using "
                          "the embedded 8x8 digits, a much easier and smaller task than the "
                          "paper's", stacklevel=2)
            return load_experiment_data("digits")
    x_train, y_train, x_test, y_test = parts
    return ExperimentData(x_train.reshape(len(x_train), -1), y_train,
                          x_test.reshape(len(x_test), -1), y_test, source)


def paper_mlp(in_features, bn, init_std=0.01, seed=0, hidden=100, depth=3, num_classes=10):
    """Section 4.1's net: ``depth`` fully connected hidden layers of ``hidden`` sigmoid
    units, then a Linear classifier.  With ``bn``, BatchNorm1d sits between each hidden
    layer's Wx and its sigmoid and the hidden layers have no bias (BN's beta replaces it).
    Weights are N(0, init_std^2) drawn from ``seed`` in layer order, biases zero, so the
    nets with and without BN start from the same weights."""
    if not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std!r}")
    layers, features = [], in_features
    for _ in range(depth):
        layers.append(nn.Linear(features, hidden, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(hidden))
        layers.append(nn.Sigmoid())
        features = hidden
    layers.append(nn.Linear(features, num_classes))
    rng = np.random.default_rng(seed)
    for layer in layers:
        if isinstance(layer, nn.Linear):
            layer.weight.data[...] = rng.normal(0.0, init_std, layer.weight.shape)
            if layer.bias is not None:
                layer.bias.data[...] = 0
    return nn.Sequential(*layers)


def last_sigmoid_input(model, images):
    """What the last Sigmoid of model receives on images, shape (N, units), computed in
    eval mode (BN uses its running statistics, as at test time)."""
    layers = list(model)
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, nn.Sigmoid))
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            h = Tensor(images)
            for layer in layers[:last]:
                h = layer(h)
    finally:
        model.train(was_training)
    return h.numpy()


def record_schedule(steps, every):
    """The steps at which a run records: 0, every multiple of ``every``, the round
    numbers 100, 200, 500, 1000, ... below ``steps`` (the table's rows), and ``steps``."""
    if every < 1:
        raise ValueError(f"the record interval must be >= 1, got {every}")
    rounds = (m * 10 ** k for k in range(2, 12) for m in (1, 2, 5))
    return sorted(set(range(0, steps + 1, every)) | {m for m in rounds if m < steps} | {steps})


def _batches(loader):
    """The loader's batches, epoch after epoch; the order depends only on its seed."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def train_net(model, d, lr, steps, batch_size=60, seed=0, record_steps=(), probe=None,
              on_record=None, desc="", progress=None):
    """Plain SGD on ``d.x_train`` for ``steps`` steps.

    At step 0 and each step in ``record_steps`` it records the test accuracy, the mean
    training loss since the last record and the training time so far (the steps'
    forward, backward, update and batch gathering; not the evaluations).  With
    ``probe=(images, unit)`` it also records the last sigmoid input of that unit on those
    images (``activations``, records x images) and the 15/50/85th percentiles of every
    unit's (``unit_percentiles``, records x 3 x units); ``on_record(step, model)`` is
    called after each record.  A non-finite loss
    ends the run (``diverged_at``).  Returns a dict of lists and the per-step times."""
    loader = data.DataLoader(data.TensorDataset(d.x_train, d.y_train), batch_size=batch_size,
                             shuffle=True, drop_last=True, seed=seed)
    if len(loader) == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {len(d.x_train)} "
                         "training images")
    optimizer = optim.SGD(model.parameters(), lr=lr)
    loss_fn = nn.CrossEntropyLoss()
    log = {"steps": [], "accuracy": [], "loss": [], "seconds": [], "activations": [],
           "unit_percentiles": [], "diverged_at": None}
    step_seconds, pending = [], []

    def record(step):
        log["steps"].append(step)
        log["accuracy"].append(_train.evaluate(model, d.x_test, d.y_test)[0])
        log["loss"].append(float(np.mean(pending)) if pending else None)
        log["seconds"].append(float(np.sum(step_seconds)))
        if probe is not None:
            images, unit = probe
            h = last_sigmoid_input(model, images)
            log["activations"].append(h[:, unit].copy())
            log["unit_percentiles"].append(np.percentile(h, PERCENTILES, axis=0))
        pending.clear()
        if on_record is not None:
            on_record(step, model)

    wanted = set(record_steps)
    bar = ProgressBar(steps, desc, enabled=progress)
    batches = _batches(loader)
    model.train()
    record(0)
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        x, y = next(batches)
        loss, _ = _train.train_step(model, x, y, loss_fn, optimizer)
        step_seconds.append(time.perf_counter() - t0)
        pending.append(loss)
        bar.update(1)
        if not math.isfinite(loss):
            log["diverged_at"] = step
            record(step)
            break
        if step in wanted or step == steps:
            record(step)
    bar.close()
    log["step_seconds"] = np.asarray(step_seconds)
    if probe is not None:
        log["activations"] = np.stack(log["activations"])
        log["unit_percentiles"] = np.stack(log["unit_percentiles"])
    return log


def reach(log, target):
    """``(step, training seconds)`` of the first record at or above ``target`` test
    accuracy, or ``(None, None)``."""
    for step, accuracy, seconds in zip(log["steps"], log["accuracy"], log["seconds"]):
        if accuracy >= target:
            return step, seconds
    return None, None


def write_atomic(path, content):
    """Write str or bytes to path atomically."""
    with atomic_write(path) as f:
        f.write(content.encode() if isinstance(content, str) else content)


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_common_arguments(parser, steps, eval_every, lr):
    """The options both reproductions take; ``steps``, ``eval_every`` and ``lr`` are the
    experiment's defaults."""
    positive, count = _train._int(1), _train._int(0)
    parser.add_argument("--out", metavar="DIR", default="reproduction",
                        help="folder for the PNGs, results.json and results.md; both "
                             "experiments share results.json/.md (default: reproduction)")
    parser.add_argument("--steps", type=positive, default=steps,
                        help=f"SGD steps per net (default: {steps}; the paper ran 50000)")
    parser.add_argument("--eval-every", type=positive, default=eval_every,
                        help="measure test accuracy every this many steps "
                             f"(default: {eval_every or 'steps / 100'})")
    parser.add_argument("--lr", type=_positive_float, default=lr,
                        help=f"baseline SGD learning rate, no momentum (default: {lr})")
    parser.add_argument("--batch-size", type=positive, default=60,
                        help="mini-batch size (default: 60, as in the paper)")
    parser.add_argument("--init-std", type=_positive_float, default=0.01,
                        help="std of the Gaussian initial weights (default: 0.01)")
    parser.add_argument("--seed", type=count, default=0,
                        help="seed of the initial weights and the data order, the same for "
                             "every net (default: 0)")
    parser.add_argument("--dataset", choices=("auto", "mnist", "digits"), default="auto",
                        help="auto: MNIST from --data-dir, else ../shared/data/mnist beside "
                             "the repository, else the embedded digits (default: auto)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the MNIST IDX files (train-* and t10k-*, gzipped or "
                             "not; with t10k alone it is split 8000/2000)")
    parser.add_argument("--threads", type=positive, default=1,
                        help="threads for the kernels and BLAS (default: 1: the layers are "
                             "too small to gain from more)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser
