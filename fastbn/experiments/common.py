"""Shared pieces of the paper reproductions: data selection, the nets (the paper's sigmoid
MLP, a small convnet, VGG-style initialization), a step-counted SGD run that records test
accuracy (and one sigmoid input) as it goes and calls an experiment's hooks around each
step, the command-line options and their ``--quick`` settings, table helpers, and atomic
file writes."""
import argparse
import itertools
import math
import os
import time
import warnings
from typing import NamedTuple

import numpy as np

from .. import data, nn, optim
from .. import random as _random
from .._io import atomic_write
from .. import train as _train
from ..progress import ProgressBar
from ..tensor import Tensor, no_grad

__all__ = ["PERCENTILES", "SHARED_MNIST", "ExperimentData", "load_experiment_data",
           "as_images", "paper_mlp", "small_convnet", "vgg_init", "last_sigmoid_input",
           "record_schedule", "train_net", "step_costs", "reach", "reached_text", "write_atomic",
           "add_common_arguments", "add_run_arguments", "add_data_arguments",
           "add_quick_argument", "settle_quick"]

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


def as_images(x):
    """Flattened square single-channel images (N, side * side) as (N, 1, side, side)."""
    side = math.isqrt(x.shape[1])
    if side * side != x.shape[1]:
        raise ValueError(f"images of {x.shape[1]} pixels are not square: the convnets need "
                         "square single-channel images (MNIST or the digits)")
    return x.reshape(len(x), 1, side, side)


def vgg_init(model, seed=0, mode="fan_out"):
    """torchvision's VGG initialization, drawn from ``seed`` in layer order so that the
    variants of one net start from the same weights: every Conv2d weight
    N(0, 2 / fan_out) (He et al., 2015, fan-out mode; ``mode="fan_in"``: N(0, 2 /
    fan_in), which keeps the forward signal's scale where 1x1 convolutions reduce the
    channels, as Inception's do), every Linear weight N(0, 0.01^2), every bias 0;
    normalization layers keep their own (weight 1, bias 0).  Returns model."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    rng = np.random.default_rng(seed)
    for layer in model.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            w = layer.weight.data
            if isinstance(layer, nn.Conv2d):
                fans = nn.init._calculate_fan_in_and_fan_out(layer.weight)
                std = math.sqrt(2.0 / fans[mode == "fan_out"])
            else:
                std = 0.01
            w[...] = rng.normal(0.0, std, w.shape)
            if layer.bias is not None:
                layer.bias.data[...] = 0
    return model


def small_convnet(image_shape, bn, seed=0):
    """``fastbn.train.convnet``'s net (conv3x3 32 and 64 channels, each followed by BN+ReLU
    or ReLU and a 2x2 max-pool, then Linear), initialized by :func:`vgg_init` from
    ``seed``; with ``bn`` the convolutions have no bias (BN's beta replaces it)."""
    return vgg_init(_train.convnet(image_shape, num_classes=10, bn=bn), seed)


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
              on_record=None, desc="", progress=None, hook=None, extra_eval=None,
              momentum=0.0, weight_decay=0.0, gamma=None):
    """SGD on ``d.x_train`` for ``steps`` steps: plain by default; ``momentum`` and
    ``weight_decay`` as ``optim.SGD``'s, and with ``gamma`` the learning rate is
    multiplied by gamma after every step (``optim.lr_scheduler.ExponentialLR`` stepped
    per step).

    At step 0 and each step in ``record_steps`` it records the test accuracy, the mean
    training loss since the last record and the training time so far (the steps'
    forward, backward, update and batch gathering; not the evaluations).  With
    ``probe=(images, unit)`` it also records the last sigmoid input of that unit on those
    images (``activations``, records x images) and the 15/50/85th percentiles of every
    unit's (``unit_percentiles``, records x 3 x units); ``extra_eval={name: (images,
    labels)}`` adds the accuracy on those (``<name>_accuracy``); ``on_record(step,
    model)`` is called after each record.

    ``hook``: an object whose methods ``before_step(step, x, y)`` and
    ``after_backward(step, x, y)`` (either may be absent) run before each step's forward
    and between its backward and its update; their time is left out of the training time
    (it is in ``hook_seconds``).  The global generator (dropout) is seeded with ``seed``
    first, so that variants of a net see the same random draws as well as the same
    batches.  A non-finite loss ends the run (``diverged_at``).  Returns a dict of lists
    and the per-step times."""
    loader = data.DataLoader(data.TensorDataset(d.x_train, d.y_train), batch_size=batch_size,
                             shuffle=True, drop_last=True, seed=seed)
    if len(loader) == 0:
        raise ValueError(f"batch size {batch_size} is larger than the {len(d.x_train)} "
                         "training images")
    _random.manual_seed(seed)
    optimizer = optim.SGD(model.parameters(), lr=lr, momentum=momentum,
                          weight_decay=weight_decay)
    scheduler = None if gamma is None else optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    loss_fn = nn.CrossEntropyLoss()
    extra_eval = extra_eval or {}
    log = {"steps": [], "accuracy": [], "loss": [], "seconds": [], "activations": [],
           "unit_percentiles": [], "diverged_at": None,
           **{f"{name}_accuracy": [] for name in extra_eval}}
    step_seconds, pending = [], []
    before = getattr(hook, "before_step", None)
    after = getattr(hook, "after_backward", None)
    hook_seconds = 0.0

    def timed(fn, *args):
        nonlocal hook_seconds
        t0 = time.perf_counter()
        fn(*args)
        hook_seconds += time.perf_counter() - t0

    def record(step):
        log["steps"].append(step)
        log["accuracy"].append(_train.evaluate(model, d.x_test, d.y_test)[0])
        for name, (images, labels) in extra_eval.items():
            log[f"{name}_accuracy"].append(_train.evaluate(model, images, labels)[0])
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
        t0, hooks_before = time.perf_counter(), hook_seconds
        x, y = next(batches)
        if before is not None:
            timed(before, step, x, y)
        loss, _ = _train.train_step(
            model, x, y, loss_fn, optimizer,
            after_backward=None if after is None else lambda: timed(after, step, x, y))
        if scheduler is not None:
            scheduler.step()
        step_seconds.append(time.perf_counter() - t0 - (hook_seconds - hooks_before))
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
    log["hook_seconds"] = hook_seconds
    if probe is not None:
        log["activations"] = np.stack(log["activations"])
        log["unit_percentiles"] = np.stack(log["unit_percentiles"])
    return log


def step_costs(builders, x, y, lr, rounds=30):
    """Median milliseconds per training step (forward, backward, plain SGD update) of
    fresh nets, measured side by side: ``rounds`` rounds of one step of each net on the
    batch (x, y), the order rotating from round to round, so that changes in the
    machine's load reach them alike (one net's run at a time cannot give that on a
    shared machine).

    ``builders``: ``{key: callable returning a fresh model}``; x, y: a batch as Tensors.
    Returns ``{key: ms}``.  Draws from the global generator (dropout)."""
    loss_fn = nn.CrossEntropyLoss()
    nets = []
    for key, build in builders.items():
        model = build().train()
        optimizer = optim.SGD(model.parameters(), lr=lr)
        _train.train_step(model, x, y, loss_fn, optimizer)  # warm-up: allocator, caches
        nets.append((key, model, optimizer))
    times = {key: [] for key, _, _ in nets}
    for r in range(rounds):
        for key, model, optimizer in nets[r % len(nets):] + nets[:r % len(nets)]:
            t0 = time.perf_counter()
            _train.train_step(model, x, y, loss_fn, optimizer)
            times[key].append(time.perf_counter() - t0)
    return {key: 1e3 * float(np.median(t)) for key, t in times.items()}


def reach(log, target, key="accuracy"):
    """``(step, training seconds)`` of the first record at or above ``target`` accuracy
    (``log[key]``, the test accuracy by default), or ``(None, None)``."""
    for step, accuracy, seconds in zip(log["steps"], log[key], log["seconds"]):
        if accuracy >= target:
            return step, seconds
    return None, None


def reached_text(step, seconds):
    """A table cell for :func:`reach`'s answer: ``1200 (3.41 s)`` or ``not reached``."""
    if step is None:
        return "not reached"
    return f"{step} ({seconds:.{1 if seconds >= 10 else 2}f} s)"


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


def add_run_arguments(parser, batch_size=60):
    """The options every reproduction takes: --out, --batch-size (default
    ``batch_size``: the paper's 60 for MNIST), --seed, the data (--dataset, --data-dir),
    --threads and --quiet."""
    positive, count = _train._int(1), _train._int(0)
    parser.add_argument("--out", metavar="DIR", default="reproduction",
                        help="folder for the PNGs, results.json and results.md; the "
                             "experiments share results.json/.md (default: reproduction)")
    parser.add_argument("--batch-size", type=positive, default=batch_size,
                        help=f"mini-batch size (default: {batch_size}, as in the paper)")
    parser.add_argument("--seed", type=count, default=0,
                        help="seed of the initial weights and the data order, the same for "
                             "every net (default: 0)")
    add_data_arguments(parser)
    parser.add_argument("--threads", type=positive, default=1,
                        help="threads for the kernels and BLAS (default: 1: the layers are "
                             "too small to gain from more)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def add_data_arguments(parser):
    """--dataset and --data-dir (see :func:`load_experiment_data`)."""
    parser.add_argument("--dataset", choices=("auto", "mnist", "digits"), default="auto",
                        help="auto: MNIST from --data-dir, else ../shared/data/mnist beside "
                             "the repository, else the embedded digits (default: auto)")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the MNIST IDX files (train-* and t10k-*, gzipped or "
                             "not; with t10k alone it is split 8000/2000)")
    return parser


def add_common_arguments(parser, steps, eval_every, lr):
    """The options of figure1 and lr-sweep: :func:`add_run_arguments`' and --steps,
    --eval-every, --lr and --init-std; ``steps``, ``eval_every`` and ``lr`` are the
    experiment's defaults."""
    positive = _train._int(1)
    parser.add_argument("--steps", type=positive, default=steps,
                        help=f"SGD steps per net (default: {steps}; the paper ran 50000)")
    parser.add_argument("--eval-every", type=positive, default=eval_every,
                        help="measure test accuracy every this many steps "
                             f"(default: {eval_every or 'steps / 100'})")
    parser.add_argument("--lr", type=_positive_float, default=lr,
                        help=f"baseline SGD learning rate, no momentum (default: {lr})")
    parser.add_argument("--init-std", type=_positive_float, default=0.01,
                        help="std of the Gaussian initial weights (default: 0.01)")
    return add_run_arguments(parser)


def add_quick_argument(parser, settings):
    """``--quick``: smaller settings for the options in ``settings``, ``{dest: (default,
    quick)}``, whose argparse default must be None (:func:`settle_quick` fills them in;
    an option given on the command line wins)."""
    changes = ", ".join(f"--{dest.replace('_', '-')} {_show(q)}"
                        for dest, (_, q) in settings.items())
    parser.add_argument("--quick", action="store_true",
                        help=f"a run of about a minute: {changes}")
    return parser


def settle_quick(args, settings):
    """Fill the options of ``settings`` that the command line left unset (None) with
    their default or, with ``--quick``, their quick value; returns args."""
    for dest, (default, quick) in settings.items():
        if getattr(args, dest) is None:
            setattr(args, dest, quick if args.quick else default)
    return args


def _show(value):
    return " ".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
