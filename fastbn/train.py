"""The trainer behind ``python -m fastbn train``: a small net on the embedded digits (or
MNIST), with checkpoints that resume exactly.

Five models (``--model``, fastbn.models), each with or without Batch Normalization
(``--no-bn`` leaves the BatchNorm layers out and gives the layers before them a bias):

- ``convnet`` (the default): [conv3x3 -> BN+ReLU (fused) -> maxpool2] with 32 then 64
  channels, then Linear;
- ``mlp``: Flatten -> [Linear(256) -> BN+ReLU (fused)] x 2 -> Linear;
- ``resnet20``: the CIFAR ResNet-20 (0.27M parameters); ``resnet18``: the CIFAR
  ResNet-18 (11.2M); ``inception``: the BN paper's BN-Inception scaled down for 28x28
  images (fastbn.models.inception_bn).

The defaults (8 epochs, lr 0.05, batch 64) suit all five on the digits.  Every model
takes both datasets: the ResNets and the Inception net end in a global average pool, so
an 8x8 digit simply reaches their last stage smaller (ResNet-20 at 2x2, ResNet-18 and
the Inception net at 1x1).

``--norm`` swaps the normalization of any preset by converting the built model
(:func:`convert_norm`): every BatchNorm (and fused BatchNorm+ReLU) becomes the chosen layer
(and a ReLU):

- ``batch``: BatchNorm (the default); ``none``: no normalization (``--no-bn``);
- ``group``: GroupNorm with 32 groups where the channels allow (Wu and He's default; at
  least 2 values a group);
- ``layer``: GroupNorm with one group, Layer Normalization over all of a sample's
  channels and positions with per-channel parameters (Wu and He's LN; on (N, C) input it
  is nn.LayerNorm(C));
- ``renorm``: Batch Renormalization with Ioffe's schedule over the run's steps: BatchNorm
  (r_max 1, d_max 0) for the first 5%, then r_max rising to 3 by 30% and d_max to 5 by 20%;
- ``ghost``: Ghost BatchNorm, ghost batches of 16 samples (BatchNorm for batches of at
  most 16).

``--recalibrate`` recomputes, after training, the running statistics of every BatchNorm
layer (batch, renorm, ghost) from one pass over the training images in batches of 500, as
torch.optim.swa_utils.update_bn (fastbn.nn.utils.update_bn), and saves them with the last
checkpoint; GroupNorm, LayerNorm and none have no running statistics, so it has nothing to
do there and says so.

SGD with momentum; the learning rate follows a cosine from --lr down to 0 over the epochs.

Resuming: ``--resume PATH`` continues the run saved in PATH with the settings stored there
(model, normalization, dataset, batch size, seed, optimizer, learning rate, momentum, schedule,
epochs) and goes on saving to PATH (or to --checkpoint).  Flags given beside it:

- ``--epochs N`` (at least the epochs done) makes the run N epochs long: the cosine then
  spans N epochs, so the next epoch trains at the rate an N-epoch run has there (a
  finished run, whose rate had reached 0, picks up again at that rate);
- ``--lr`` and ``--momentum`` apply from the next epoch, and the run says so;
- ``--data-dir`` says where the same MNIST files are now;
- the other settings cannot change mid-run: another value is refused.

A run stops early on Ctrl-C (exit status 130; the line printed says how to resume) and
when the loss diverges (exit status 1): a loss that is not finite, or above 1000 times
the loss of a uniform guess, ln(10).  The checkpoint of the last finished epoch is kept.
Every file a run will write is checked before it starts.

``--fold PATH`` writes the trained model with every BatchNorm folded into the layer before
it (fastbn.nn.utils.fold_batch_norm), for inference, in the checkpoint format
(fastbn.train.load_model reads it), and prints its held-out accuracy beside the unfolded
one.
``--resume PATH --fold OUT`` on a finished run exports it without training (and
``--resume PATH --recalibrate`` recalibrates it).

``--distributed`` (under ``mpiexec -n R``): data-parallel over R MPI ranks; each takes
``batch_size / R`` samples of every step from its DistributedSampler shard, BatchNorm
becomes SyncBatchNorm, gradients are averaged; only rank 0 prints and writes files.
"""
import argparse
import contextlib
import json
import math
import os
import shlex
import signal
import sys
import threading
import time
from typing import Callable, NamedTuple

import numpy as np

from . import checkpoint, data, models, nn, optim
from . import random as _random
from ._config import auto_threads, threads as _threads
from ._io import atomic_write, check_writable
from .models import convnet, mlp
from .nn.batchnorm import _BatchNorm
from .progress import ProgressBar
from .tensor import Tensor, no_grad

CheckpointError = checkpoint.CheckpointError

__all__ = ["convnet", "mlp", "PRESETS", "DATASETS", "NORMS", "SETTINGS", "convert_norm",
           "build_model", "load_data", "evaluate", "train_step", "load_model",
           "TrainingInterrupted", "TrainingDiverged", "add_arguments", "run", "main"]


def _by_channels(build):
    """A trainer preset, (image_shape, num_classes=10, bn=True) -> model, from a
    fastbn.models constructor that takes in_channels (its image size is free)."""
    def preset(image_shape, num_classes=10, bn=True):
        return build(in_channels=image_shape[0], num_classes=num_classes, bn=bn)
    preset.__name__ = build.__name__
    preset.__doc__ = build.__doc__
    return preset


# name -> builder(image_shape, num_classes, bn) of a network
PRESETS = {"convnet": convnet, "mlp": mlp, "resnet20": _by_channels(models.resnet20),
           "resnet18": _by_channels(models.resnet18),
           "inception": _by_channels(models.inception_bn)}
# name -> the shape of one image
DATASETS = {"digits": (1, 8, 8), "mnist": (1, 28, 28)}
NUM_CLASSES = 10
DIVERGED = 1000 * math.log(NUM_CLASSES)  # a loss above this stops the run

# --norm: name -> what the run's line calls it
NORMS = {"batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm",
         "renorm": "Batch Renormalization", "ghost": "Ghost BatchNorm", "none": "no normalization"}
NORM_GROUPS = 32     # GroupNorm's groups where the channels allow (Wu and He's default)
GHOST_BATCH = 16     # samples per ghost batch of --norm ghost
# --norm renorm's limits, Ioffe's schedule in fractions of the run's steps (the paper's
# ImageNet run: 5k, 25k and 40k steps): BatchNorm (r_max 1, d_max 0) until RENORM_HOLD,
# then linear to r_max 3 at RENORM_R_FULL and d_max 5 at RENORM_D_FULL
RENORM_HOLD, RENORM_R_FULL, RENORM_D_FULL = 0.05, 0.30, 0.20


class _Ramp:
    """step -> lo until step `start`, then linear to hi at step `end`, hi after."""

    def __init__(self, lo, hi, start, end):
        self.lo, self.hi, self.start, self.end = lo, hi, start, max(end, start + 1)

    def __call__(self, step):
        t = min(max((step - self.start) / (self.end - self.start), 0.0), 1.0)
        return self.lo + (self.hi - self.lo) * t

    def __repr__(self):
        return f"ramp({self.lo:g} -> {self.hi:g}, steps {self.start}-{self.end})"


def _groups(channels, spatial):
    """GroupNorm's groups for a layer of `channels`: the most up to NORM_GROUPS that divide
    them, with at least 2 values a group on (N, C) input (not `spatial`)."""
    most = NORM_GROUPS if spatial else min(NORM_GROUPS, channels // 2)
    return max(g for g in range(1, max(most, 1) + 1) if channels % g == 0)


def _replacement(bn, norm, total_steps):
    """The layer (and ReLU) that takes BatchNorm bn's place under --norm norm."""
    C, dims = bn.num_features, bn._input_ndims
    dtype = bn.weight.dtype if bn.weight is not None else bn.running_mean.dtype
    spatial = dims == nn.BatchNorm2d._input_ndims
    if norm == "group":
        layer = nn.GroupNorm(_groups(C, spatial), C, eps=bn.eps, dtype=dtype)
    elif norm == "layer":
        layer = nn.GroupNorm(1, C, eps=bn.eps, dtype=dtype)
    elif dims not in (nn.BatchNorm1d._input_ndims, nn.BatchNorm2d._input_ndims):
        raise ValueError(f"--norm {norm}: {NORMS[norm]} has no layer for the model's "
                         f"{type(bn).__name__}")
    elif norm == "renorm":
        hold = int(RENORM_HOLD * total_steps)
        layer = (nn.BatchRenorm2d if spatial else nn.BatchRenorm1d)(
            C, bn.eps, bn.momentum, dtype=dtype,
            r_max=_Ramp(1.0, 3.0, hold, int(RENORM_R_FULL * total_steps)),
            d_max=_Ramp(0.0, 5.0, hold, int(RENORM_D_FULL * total_steps)))
    else:
        layer = (nn.GhostBatchNorm2d if spatial else nn.GhostBatchNorm1d)(
            C, GHOST_BATCH, bn.eps, bn.momentum, dtype=dtype)
    return nn.Sequential(layer, nn.ReLU()) if bn._relu else layer


def convert_norm(model, norm, total_steps=1):
    """model with every BatchNorm1d/2d and BatchNormReLU1d/2d replaced as ``--norm norm``
    says (the module docstring lists them), a BatchNormReLU by the new layer and a ReLU
    (an nn.Sequential of the two); the new layers are freshly initialized.  Like
    nn.SyncBatchNorm.convert_sync_batchnorm it changes model in place and returns it (the
    new root when model itself is a BatchNorm), so it applies to any model.

    Parameters
    ----------
    model : Module
    norm : str
        A key of NORMS; "batch" and "none" leave model as it is.
    total_steps : int
        The run's optimizer steps, for renorm's schedule.

    Returns
    -------
    Module
    """
    if norm not in NORMS:
        raise ValueError(f"unknown normalization {norm!r} (choose one of {', '.join(NORMS)})")
    if norm in ("batch", "none"):
        return model
    if isinstance(model, _BatchNorm) and type(model).forward is _BatchNorm.forward:
        return _replacement(model, norm, total_steps)
    for name, child in list(model.named_children()):
        converted = convert_norm(child, norm, total_steps)
        if converted is not child:
            model.add_module(name, converted)
    return model


def build_model(config, image_shape, steps_per_epoch):
    """The network a run's settings describe: its preset (``bn=False`` for --norm none),
    converted to its normalization; freshly initialized from fastbn's random state.

    Parameters
    ----------
    config : dict
        The run's settings (keys of SETTINGS; "model", "norm" and "epochs" are read).
    image_shape : tuple of int
        (channels, height, width) of the dataset's images.
    steps_per_epoch : int
        Optimizer steps an epoch, for renorm's schedule.

    Returns
    -------
    Module
    """
    norm = config["norm"]
    model = PRESETS[config["model"]](image_shape, NUM_CLASSES, bn=norm != "none")
    return convert_norm(model, norm, config["epochs"] * steps_per_epoch)

# What a flag given beside --resume may do to a stored setting.
FIXED = "fixed"              # refused unless it is the stored value
LENGTH = "length"            # the run's epochs: at least those done
NEXT_EPOCH = "next epoch"    # applied from the next epoch, and said so
LOCATION = "location"        # where the same thing is now


class Setting(NamedTuple):
    """A setting of a run, stored in its checkpoints."""
    flag: str                       # the flag that sets it ("" when none does)
    default: object
    valid: Callable[[object], bool]  # whether a stored value is one
    expected: str                    # what valid accepts, for error messages
    on_resume: str


def _is_int(value, lo):
    return isinstance(value, int) and not isinstance(value, bool) and value >= lo


def _is_number(value, lo, hi=math.inf):
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and lo <= value < hi)


SETTINGS = {
    "model": Setting("--model", "convnet", lambda v: isinstance(v, str) and v in PRESETS,
                     f"one of {sorted(PRESETS)}", FIXED),
    "norm": Setting("--norm", "batch", lambda v: isinstance(v, str) and v in NORMS,
                    f"one of {sorted(NORMS)}", FIXED),
    "dataset": Setting("--dataset", "digits", lambda v: isinstance(v, str) and v in DATASETS,
                       f"one of {sorted(DATASETS)}", FIXED),
    "data_dir": Setting("--data-dir", None, lambda v: v is None or isinstance(v, str),
                        "a folder name or null", LOCATION),
    "batch_size": Setting("--batch-size", 64, lambda v: _is_int(v, 1), "an int >= 1", FIXED),
    "seed": Setting("--seed", 0, lambda v: _is_int(v, 0), "an int >= 0", FIXED),
    "epochs": Setting("--epochs", 8, lambda v: _is_int(v, 1), "an int >= 1", LENGTH),
    "optimizer": Setting("", "sgd", lambda v: isinstance(v, str) and v == "sgd", "'sgd'",
                         FIXED),
    "lr": Setting("--lr", 0.05, lambda v: _is_number(v, 0), "a number >= 0", NEXT_EPOCH),
    "momentum": Setting("--momentum", 0.9, lambda v: _is_number(v, 0, 1),
                        "a number in [0, 1)", NEXT_EPOCH),
    "schedule": Setting("", "cosine", lambda v: isinstance(v, str) and v == "cosine",
                        "'cosine'", FIXED),
    "world_size": Setting("", 1, lambda v: _is_int(v, 1), "an int >= 1", FIXED),
}


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the run; ``message`` is the line that says where and how to resume
    (empty on the ranks but the first of a distributed run)."""

    def __init__(self, message):
        super().__init__(message)
        self.message = message


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite, or exploded past ``DIVERGED``."""


def load_data(dataset, data_dir=None):
    """``(x_train, y_train, x_test, y_test)``, images standardized with the training set's
    mean and std.  digits: a fixed 80/20 split.  mnist: the train/t10k files when both are
    in data_dir, else a fixed 8,000/2,000 split of t10k (downloaded into the cache when no
    data_dir is given).  Errors give command-line advice (``--data-dir``)."""
    if dataset == "digits":
        if data_dir is not None:
            raise ValueError("--data-dir names MNIST files; it cannot be used with the digits "
                             "(--dataset digits, built in)")
        x_train, x_test, y_train, y_test = data.train_test_split(*data.load_digits(),
                                                                 test_size=0.2, seed=0)
    elif dataset == "mnist":
        cache = os.path.join(data.default_cache_dir(), "mnist")
        directory = data_dir or cache
        if data_dir is not None and not os.path.isdir(data_dir):
            raise FileNotFoundError(f"--data-dir {data_dir}: no such folder")
        try:
            x_train, y_train = data.load_mnist(directory, "train")
            x_test, y_test = data.load_mnist(directory, "t10k")
        except FileNotFoundError:  # only the test set here (a broken file is an error)
            try:
                x, y = data.load_mnist(directory, "t10k", download=data_dir is None)
            except FileNotFoundError:
                raise FileNotFoundError(
                    f"--data-dir {data_dir}: no MNIST t10k-images-idx3-ubyte and "
                    "t10k-labels-idx1-ubyte files there (gzipped or not); leave --data-dir "
                    f"out to download them into {cache}") from None
            except OSError as exc:
                raise OSError(f"{exc}; without a network, put the MNIST IDX files in a "
                              "folder and give it with --data-dir") from None
            x_train, x_test, y_train, y_test = data.train_test_split(x, y, test_size=2000, seed=0)
    else:
        raise ValueError(f"unknown dataset {dataset!r} (choose digits or mnist)")
    mean, std = float(x_train.mean()), float(x_train.std())
    return data.normalize(x_train, mean, std), y_train, data.normalize(x_test, mean, std), y_test


def evaluate(model, images, labels, batch_size=500):
    """``(accuracy, mean loss)`` of model in eval mode (restores its previous mode)."""
    was_training = model.training
    model.eval()
    correct, total_loss = 0, 0.0
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    with no_grad():
        for start in range(0, len(images), batch_size):
            x = Tensor(images[start:start + batch_size])
            y = labels[start:start + batch_size]
            logits = model(x)
            total_loss += loss_fn(logits, Tensor(y)).item()
            correct += int((logits.data.argmax(axis=1) == y).sum())
    model.train(was_training)
    return correct / len(images), total_loss / len(images)


@contextlib.contextmanager
def _blas_threads(n):
    """Limit BLAS to n threads too when threadpoolctl is installed (it is optional)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=n, user_api="blas"):
        yield


@contextlib.contextmanager
def _ctrl_c_deferred():
    """Ctrl-C waits until the block is done (a checkpoint save and the line announcing it),
    then interrupts.  Only the main thread receives signals; elsewhere nothing changes."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is None):
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _recalibrate(model, images, labels, batch_size=500):
    """nn.utils.update_bn over the images in batches of batch_size; returns how many
    layers had their running statistics recomputed."""
    layers = sum(isinstance(m, nn.utils.stats._BATCH_STATISTICS) and m.track_running_stats
                 for m in model.modules())
    if layers:
        nn.utils.update_bn(data.DataLoader(data.TensorDataset(images, labels),
                                           batch_size=batch_size), model)
    return layers


def train_step(model, x, y, loss_fn, optimizer, after_backward=None):
    """One optimizer step on the batch (x, y); returns ``(loss as a float, logits)``.
    ``after_backward``: called between backward and step (gradient sync)."""
    logits = model(x)
    loss = loss_fn(logits, y)
    optimizer.zero_grad()
    loss.backward()
    if after_backward is not None:
        after_backward()
    optimizer.step()
    return loss.item(), logits


class _Diverged(Exception):
    def __init__(self, step, loss):
        super().__init__(step, loss)
        self.step, self.loss = step, loss


def _train_epoch(model, loader, loss_fn, optimizer, bar, after_backward=None):
    """One pass over loader; returns the per-step losses and the number of correct
    predictions.  ``after_backward``: called between backward and step (gradient sync).
    Raises _Diverged at the first step whose loss diverged (see DIVERGED)."""
    model.train()
    losses, correct, seen = [], 0, 0
    start = time.perf_counter()
    for x, y in loader:
        loss, logits = train_step(model, x, y, loss_fn, optimizer, after_backward)
        if not loss <= DIVERGED:  # NaN too
            raise _Diverged(len(losses) + 1, loss)
        losses.append(loss)
        correct += int((logits.data.argmax(axis=1) == y.data).sum())
        seen += len(y)
        bar.update(1, loss=f"{np.mean(losses):.4f}", **{
            "train acc": f"{100 * correct / seen:.1f}%",
            "samples/s": f"{seen / (time.perf_counter() - start):.0f}"})
    return losses, correct


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


def _article(name):
    """'an mlp', 'a convnet', 'an inception'."""
    initialism = not any(c in "aeiou" for c in name.lower())
    return "an" if name[:1].lower() in ("fhlmnrsx" if initialism else "aeiou") else "a"


def _stored_run(state, path):
    """``(config, extra)`` of a loaded training checkpoint, every field the trainer uses
    checked: CheckpointError naming path and the field."""
    def bad(field, expected, value):
        raise CheckpointError.bad_field(path, field, expected, value)

    extra = state.get("extra") if isinstance(state, dict) else None
    if not isinstance(extra, dict):
        bad("extra", "a dict", extra)
    config = extra.get("config")
    if not isinstance(config, dict):
        bad("extra.config", "a dict of the run's settings", config)
    if "norm" not in config and isinstance(config.get("bn"), bool):
        # written before --norm: "bn" said BatchNorm or none
        config = {**config, "norm": "batch" if config.pop("bn") else "none"}
    for key, setting in SETTINGS.items():
        if key not in config:
            raise CheckpointError(f"{path}: field 'extra.config.{key}' is missing")
        if not setting.valid(config[key]):
            bad(f"extra.config.{key}", setting.expected, config[key])
    if config["dataset"] == "digits" and config["data_dir"] is not None:  # built in
        bad("extra.config.data_dir", "null with the digits", config["data_dir"])
    epoch = state.get("epoch")
    if not (_is_int(epoch, 0) and epoch <= config["epochs"]):
        bad("epoch", f"an int in [0, {config['epochs']}]", epoch)
    if extra.get("folded") is not True:
        losses = extra.get("losses")
        if not (isinstance(losses, np.ndarray) and losses.ndim == 1
                and losses.dtype == np.float64):
            bad("extra.losses", "an array of float64 losses", losses)
        if not (_is_int(extra.get("steps"), 0) and extra["steps"] == len(losses)):
            bad("extra.steps", f"the number of losses, {len(losses)}", extra.get("steps"))
        if not _is_number(extra.get("train_seconds"), 0):
            bad("extra.train_seconds", "a number >= 0", extra.get("train_seconds"))
        if not _is_int(extra.get("train_size"), 1):
            bad("extra.train_size", "an int >= 1", extra.get("train_size"))
    return config, extra


def load_model(path):
    """The model a training checkpoint (``--checkpoint``) or a folded inference model
    (``--fold``) holds, built from the settings stored with it, in eval mode.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    fastbn.nn.Module

    Raises
    ------
    FileNotFoundError, CheckpointError
    """
    path = os.fspath(path)
    state = checkpoint.load_checkpoint(path)
    config, extra = _stored_run(state, path)
    steps = extra["train_size"] // config["batch_size"] if "train_size" in extra else 1
    model = build_model(config, DATASETS[config["dataset"]], steps)
    if extra.get("folded") is True:
        model = nn.utils.fold_batch_norm(model)
    weights = state.get("model")
    try:
        model.load_state_dict(weights if isinstance(weights, dict) else {})
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: field 'model' does not match: {exc}") from None
    return model.eval()


def _given(args):
    """The settings the command line gives explicitly (flags left out are None)."""
    given = {key: getattr(args, key) for key in SETTINGS
             if getattr(args, key, None) is not None}
    if getattr(args, "no_bn", False):
        if given.get("norm", "none") != "none":
            raise ValueError(f"--no-bn and --norm {given['norm']} contradict each other "
                             "(--no-bn is --norm none)")
        given["norm"] = "none"
    return given


def _norm_flag(args, value):
    """How the command line asked for normalization `value`: --no-bn or --norm VALUE."""
    return "--no-bn" if getattr(args, "no_bn", False) else f"--norm {value}"


def _value(value):
    return f"{value:g}" if isinstance(value, float) else value


def _configure(args, world, path=None, stored=None, done=0):
    """The run's settings: the defaults, or those stored in the checkpoint at path (after
    ``done`` epochs), with the flags given; a flag that may not change a stored setting is
    refused with one line naming it and both values.  Returns ``(config, notes)``, the
    notes saying what the flags changed in a resumed run."""
    given = dict(_given(args), world_size=world)
    if stored is None:
        return {**{k: s.default for k, s in SETTINGS.items()}, **given}, []
    config, notes = dict(stored), []
    for key, value in given.items():
        old, setting = stored[key], SETTINGS[key]
        if value == old:
            continue
        if key == "model":
            raise ValueError(f"{path} holds {_article(old)} {old} checkpoint; this run builds "
                             f"{_article(value)} {value} (leave --model out to resume it)")
        if key == "world_size":
            where = f"under mpiexec -n {old} with --distributed" if old > 1 else \
                "without --distributed"
            raise ValueError(f"{path} was trained on {_plural(old, 'MPI rank')}, this run has "
                             f"{value}: resume it {where}")
        if key == "norm":
            flag = _norm_flag(args, value)
            raise ValueError(f"{flag}: {path} holds a net trained with "
                             f"{'BN' if old == 'batch' else NORMS[old]} (--norm {old}), which a "
                             f"resumed run keeps (leave {flag.split()[0]} out)")
        if setting.on_resume == FIXED:
            raise ValueError(f"{setting.flag} {_value(value)}: {path} was trained with "
                             f"{setting.flag} {_value(old)}, which a resumed run keeps (leave "
                             f"{setting.flag} out)")
        if setting.on_resume == LENGTH:
            if value < done:
                raise ValueError(f"--epochs {value}: {path} has already trained "
                                 f"{_plural(done, 'epoch')}")
            notes.append(f"--epochs {value}: the run now has {_plural(value, 'epoch')} (it "
                         f"had {old}); the cosine schedule spans them all")
        elif setting.on_resume == NEXT_EPOCH:
            notes.append(f"{setting.flag} {_value(value)} applies from epoch {done + 1} (the "
                         f"run had {_value(old)})")
        config[key] = value
    return config, notes


def _retune(optimizer, scheduler, config):
    """Give a restored optimizer and scheduler the config's learning rate, momentum and
    epochs: the cosine from the new base rate over the new length, at the same epoch."""
    for group in optimizer.param_groups:
        group["initial_lr"], group["momentum"] = config["lr"], config["momentum"]
    state = scheduler.state_dict()
    state.update(T_max=config["epochs"], base_lrs=[config["lr"]] * len(optimizer.param_groups))
    scheduler.load_state_dict(state)


def _check_outputs(args):
    """Every file the run will write can be written, before any work: ValueError naming
    the flag and the path otherwise."""
    outputs = [("--checkpoint" if args.checkpoint else "--resume",
                args.checkpoint or args.resume), ("--metrics-json", args.metrics_json),
               ("--fold", args.fold)]
    outputs = [(flag, path) for flag, path in outputs if path is not None]
    for flag, path in outputs:
        try:
            check_writable(path)
        except OSError as exc:
            hint = (" (a resumed run goes on saving there; --checkpoint PATH saves "
                    "elsewhere)" if flag == "--resume" else "")
            raise ValueError(f"{flag} {path}: {exc.strerror}{hint}") from None
    real = {}
    for flag, path in outputs:
        other = real.setdefault(os.path.realpath(path), flag)
        if other != flag:
            raise ValueError(f"{other} and {flag} name the same file, {path}")


def _resume_command(path, world):
    command = f"python -m fastbn train --resume {shlex.quote(path)}"
    return f"mpiexec -n {world} {command} --distributed" if world > 1 else command


def _diverged_message(exc, epoch, optimizer, config, saved, world):
    what = f"became {exc.loss}" if not math.isfinite(exc.loss) else f"reached {exc.loss:.3g}"
    smaller = f"--lr {config['lr'] / 10:.4g}"
    message = (f"the training loss {what} at epoch {epoch}, step {exc.step} (learning rate "
               f"{optimizer.param_groups[0]['lr']:.4g}): the run diverged; try a smaller --lr")
    if saved:
        return message + (f"; {saved[0]} keeps epoch {saved[1]}: "
                          f"{_resume_command(saved[0], world)} {smaller}")
    return message + f", e.g. {smaller}"


def run(args, out=None):
    """Train as the parsed command-line ``args`` say; returns the metrics dict (the JSON
    keys plus ``losses``, every training step's loss).

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C (a KeyboardInterrupt), with the line saying how to resume.
    TrainingDiverged
        When the loss diverges (see ``DIVERGED``).
    ValueError, OSError
        A bad setting, data file or checkpoint, or an output that cannot be written,
        found before training.
    """
    out = sys.stdout if out is None else out
    t_start = time.perf_counter()
    dist = _Distributed() if args.distributed else None
    world = dist.world if dist else 1
    lead = dist is None or dist.rank == 0   # the rank that prints and writes files
    quiet = args.quiet or not lead
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=out, flush=True))

    state, stored, extra, done = None, None, {}, 0
    if args.resume:
        if not os.path.isfile(args.resume):
            raise FileNotFoundError(f"--resume {args.resume}: no such file")
        state = checkpoint.load_checkpoint(args.resume)
        stored, extra = _stored_run(state, args.resume)
        if extra.get("folded") is True:
            raise CheckpointError(f"{args.resume} holds a folded inference model (written by "
                                  "--fold), not a training run: resume from its --checkpoint")
        done = state["epoch"]
    config, notes = _configure(args, world, args.resume, stored, done)
    checkpoint_path = args.checkpoint or args.resume
    if lead:
        _check_outputs(args)
    norm, batch = config["norm"], config["batch_size"]
    if norm in ("batch", "renorm", "ghost") and batch < 2:
        raise ValueError(f"--batch-size {batch}: {NORMS[norm]} needs at least 2 samples per "
                         "batch for its statistics (use a larger --batch-size, or --norm "
                         "group, layer or none)")
    if norm == "ghost" and batch > GHOST_BATCH and batch % GHOST_BATCH == 1:
        raise ValueError(f"--batch-size {batch}: --norm ghost would leave a ghost batch of 1 "
                         f"sample (ghost batches of {GHOST_BATCH}); choose a batch size that "
                         "leaves none or at least 2")
    if dist:
        dist.check_batch(config["batch_size"])
    threads = args.threads
    if threads is None or threads == "auto":  # the cores this process may use, shared
        # among a node's ranks: on a quiet machine 2 threads were faster than 1 on every
        # preset (the digits' convnet too), with every core busy elsewhere as fast (threads.md)
        threads = auto_threads(dist.local_ranks if dist else 1)

    x_train, y_train, x_test, y_test = load_data(config["dataset"], config["data_dir"])
    if args.resume and extra["train_size"] != len(x_train):
        raise ValueError(f"{args.resume} was trained on {extra['train_size']} images; this "
                         f"data has {len(x_train)} (is --data-dir the same MNIST?)")
    _random.manual_seed(config["seed"])
    model = build_model(config, x_train.shape[1:], len(x_train) // config["batch_size"])
    optimizer = optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"])
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["epochs"])
    loss_fn = nn.CrossEntropyLoss()
    loader = data.DataLoader(data.TensorDataset(x_train, y_train),
                             batch_size=config["batch_size"], shuffle=True, drop_last=True,
                             seed=config["seed"])
    after_backward = None
    if dist:
        model, loader, after_backward = dist.wrap(model, loader)
    if len(loader) == 0:
        raise ValueError(f"--batch-size {config['batch_size']} is larger than the "
                         f"{len(x_train)} training samples")

    epoch, losses, train_seconds = 0, [], 0.0
    if args.resume:
        checkpoint.restore(state, model, optimizer, scheduler, path=args.resume)
        if notes:
            _retune(optimizer, scheduler, config)
        epoch, losses = done, extra["losses"].tolist()
        train_seconds = extra["train_seconds"]
        say(f"resumed from {args.resume} after epoch {epoch}")
        if notes and epoch < config["epochs"]:
            notes.append(f"epoch {epoch + 1} trains at lr {optimizer.param_groups[0]['lr']:.4g}")
        for note in notes if lead else ():  # --quiet too: what a flag changed is never silent
            print(note, file=out, flush=True)

    epochs = config["epochs"]
    say(f"training {config['model']} ("
        + {"none": "without BN", "batch": "with BN"}.get(norm, f"with {NORMS[norm]}") + ") on "
        f"{config['dataset']}: {len(x_train)} train / {len(x_test)} held-out images, "
        f"{_plural(epochs, 'epoch')}, batch {config['batch_size']}, {threads} thread(s)"
        + (f" per rank, {world} ranks" if dist else ""))
    session_seconds, bar = 0.0, None
    saved = (args.resume, done) if args.resume else None   # (file, epoch) to resume from
    try:
        with _threads(threads), _blas_threads(threads):
            while epoch < epochs:
                loader.set_epoch(epoch)
                bar = ProgressBar(len(loader), f"epoch {epoch + 1}/{epochs}",
                                  enabled=None if not quiet else False)
                t0 = time.perf_counter()
                try:
                    epoch_losses, correct = _train_epoch(model, loader, loss_fn, optimizer,
                                                         bar, after_backward)
                except _Diverged as exc:
                    raise TrainingDiverged(_diverged_message(exc, epoch + 1, optimizer, config,
                                                             saved, world)) from None
                if dist:
                    epoch_losses, correct = dist.reduce_epoch(epoch_losses, correct)
                seconds = time.perf_counter() - t0
                with _ctrl_c_deferred():  # the checkpoint and the line that announces it
                    scheduler.step()
                    epoch += 1
                    losses += epoch_losses
                    session_seconds += seconds
                    train_seconds += seconds
                    if checkpoint_path and lead:
                        checkpoint.save(checkpoint_path, model, optimizer, scheduler, epoch,
                                        config=config, losses=np.array(losses),
                                        steps=len(losses), train_seconds=train_seconds,
                                        train_size=len(x_train))
                        saved = (checkpoint_path, epoch)
                    bar.close()
                    drawn, bar = bar.enabled, None
                    n = len(epoch_losses) * config["batch_size"]
                    if not drawn:  # the bar's last state says the same
                        say(f"epoch {epoch}/{epochs}  loss {np.mean(epoch_losses):.4f}  "
                            f"train acc {100 * correct / n:.1f}%  {n / seconds:.0f} "
                            f"samples/s  {seconds:.1f} s")
            recalibrated = None
            if args.recalibrate:
                recalibrated = _recalibrate(model, x_train, y_train)
                if recalibrated and checkpoint_path and lead and epoch:
                    with _ctrl_c_deferred():  # the statistics go with the last epoch
                        checkpoint.save(checkpoint_path, model, optimizer, scheduler, epoch,
                                        config=config, losses=np.array(losses),
                                        steps=len(losses), train_seconds=train_seconds,
                                        train_size=len(x_train))
                say(f"recalibrated the running statistics of {_plural(recalibrated, 'layer')} "
                    f"over the {len(x_train)} training images" if recalibrated else
                    f"--recalibrate: {NORMS[norm]} keeps no running statistics; nothing to "
                    "recalibrate")
            accuracy, test_loss = evaluate(model, x_test, y_test)
            folded = nn.utils.fold_batch_norm(model) if args.fold else None
            folded_accuracy = evaluate(folded, x_test, y_test)[0] if args.fold else None
    except KeyboardInterrupt:
        if bar is not None:
            bar.close()
        if saved:
            message = (f"interrupted after epoch {saved[1]}; resume with: "
                       + _resume_command(saved[0], world))
        else:
            message = (f"interrupted {f'after epoch {epoch}' if epoch else 'in epoch 1'}; "
                       "nothing saved to resume from (--checkpoint PATH saves every epoch)")
        raise TrainingInterrupted(message if lead else "") from None

    metrics = {"test_accuracy": accuracy, "test_loss": test_loss, "train_seconds": train_seconds,
               "steps": len(losses), "samples_per_second": len(losses) * config["batch_size"]
               / train_seconds if train_seconds else 0.0, "with_bn": norm != "none",
               "norm": norm, "recalibrated": bool(recalibrated),
               "model": config["model"], "dataset": config["dataset"], "epochs": epoch,
               "threads": threads, "seed": config["seed"], "world_size": world,
               "losses": losses}
    if args.fold:
        metrics["folded_test_accuracy"] = folded_accuracy
    if not lead:
        return metrics
    if args.fold:
        checkpoint.save(args.fold, folded, epoch=epoch, config=config, folded=True)
    earlier = train_seconds - session_seconds
    print(f"held-out accuracy {100 * accuracy:.2f}% ({len(x_test)} images)  training "
          f"{session_seconds:.1f} s"
          + (f" ({train_seconds:.1f} s over all {_plural(epoch, 'epoch')})" if earlier else "")
          + f"  total {time.perf_counter() - t_start:.1f} s", file=out, flush=True)
    if args.fold:
        print(f"folded inference model written to {args.fold}: held-out accuracy "
              f"{100 * folded_accuracy:.2f}% (unfolded {100 * accuracy:.2f}%)", file=out,
              flush=True)
    if args.metrics_json:
        with atomic_write(args.metrics_json, "w") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")
    return metrics


class _Distributed:
    """What ``--distributed`` changes: the communicator, this rank's shard of each epoch,
    SyncBatchNorm and gradient averaging."""

    def __init__(self):
        from . import distributed
        self.comm = distributed.init_process_group()
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        self.local_ranks = self.comm.Split_type(distributed._mpi().COMM_TYPE_SHARED).Get_size()

    def check_batch(self, batch_size):
        if batch_size % self.world:
            raise ValueError(f"--batch-size {batch_size} must be divisible by the "
                             f"{self.world} ranks (it is the global batch)")
        self.local_batch = batch_size // self.world

    def wrap(self, model, loader):
        """``(model, loader, after_backward)`` for this rank: model keeps its state_dict
        keys (checkpoints stay plain); the loader reads this rank's shard."""
        from . import distributed
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        ddp = distributed.DistributedDataParallel(model, self.comm, broadcast_buffers=False)
        sampler = distributed.DistributedSampler(loader.dataset, self.world, self.rank,
                                                 shuffle=True, seed=loader.seed)
        return model, data.DataLoader(loader.dataset, self.local_batch, drop_last=True,
                                      sampler=sampler), ddp.allreduce_gradients

    def reduce_epoch(self, losses, correct):
        """Every rank's step losses averaged (equal local batches), correct summed."""
        from . import distributed
        MPI = distributed._mpi()
        total = np.array([*losses, correct], dtype=np.float64)
        self.comm.Allreduce(MPI.IN_PLACE, total, op=MPI.SUM)
        return list(total[:-1] / self.world), int(total[-1])


def _int(lo):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}")
        return value
    return parse


def _threads_arg(text):
    if text == "auto":
        return text
    try:
        return _int(1)(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected auto or an integer >= 1, got {text!r}") from None


def _number(lo, hi=None):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (value >= lo and (hi is None or value < hi)) or not math.isfinite(value):
            raise argparse.ArgumentTypeError(
                f"expected a number >= {lo}" + (f" and < {hi}" if hi is not None else "")
                + f", got {text!r}")
        return value
    return parse


def add_arguments(parser):
    """The ``train`` options.  Every setting of a run defaults to None: left out, it is
    the stored value of a resumed run, else ``SETTINGS[key].default``."""
    d = {key: s.default for key, s in SETTINGS.items()}
    parser.add_argument("--model", choices=sorted(PRESETS), default=None,
                        help=f"network, from fastbn.models (default: {d['model']})")
    parser.add_argument("--norm", choices=list(NORMS), default=None,
                        help="what takes the place of the preset's BatchNorm layers: batch "
                             "(BatchNorm), group (GroupNorm, 32 groups), layer (LayerNorm), "
                             "renorm (Batch Renormalization), ghost (Ghost BatchNorm, ghost "
                             "batches of 16) or none (default: "
                             f"{d['norm']})")
    parser.add_argument("--no-bn", action="store_true",
                        help="leave out Batch Normalization (layers get biases instead): "
                             "--norm none")
    parser.add_argument("--recalibrate", action="store_true",
                        help="after training, recompute the BatchNorm layers' running "
                             "statistics over the training images (nn.utils.update_bn)")
    parser.add_argument("--lr", type=_number(0.0), default=None,
                        help="SGD learning rate, cosine-annealed per epoch; with --resume, "
                             f"from the next epoch (default: {d['lr']})")
    parser.add_argument("--momentum", type=_number(0.0, 1.0), default=None,
                        help="SGD momentum; with --resume, from the next epoch (default: "
                             f"{d['momentum']})")
    parser.add_argument("--epochs", type=_int(1), default=None,
                        help=f"total epochs, counting those of a resumed run (default: "
                             f"{d['epochs']})")
    parser.add_argument("--batch-size", type=_int(1), default=None,
                        help=f"(default: {d['batch_size']})")
    parser.add_argument("--threads", type=_threads_arg, default=None,
                        help="threads for the kernels and BLAS, or auto: the cores this process "
                             "may use, divided among the ranks on a machine with --distributed "
                             "(default: auto; see docs/threads.md)")
    parser.add_argument("--seed", type=_int(0), default=None,
                        help=f"seed for init and shuffling (default: {d['seed']})")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default=None,
                        help="digits: embedded UCI digits; mnist: IDX files in --data-dir "
                             f"(default: {d['dataset']})")
    parser.add_argument("--data-dir", default=None,
                        help="folder of the MNIST IDX files, with --dataset mnist (default: "
                             "download into the cache)")
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="save a checkpoint here after every epoch (default with --resume: "
                             "the resumed file)")
    parser.add_argument("--resume", metavar="PATH", default=None,
                        help="continue the run saved in this checkpoint, with its settings")
    parser.add_argument("--fold", metavar="PATH", default=None,
                        help="after training, write the model with BatchNorm folded into its "
                             "layers here, for inference")
    parser.add_argument("--quiet", action="store_true", help="print only the final result")
    parser.add_argument("--metrics-json", metavar="PATH", default=None,
                        help="write the final metrics to this JSON file")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over MPI ranks (start with mpiexec -n R): the "
                             "batch is split over the ranks, BN synchronized; needs mpi4py")
    return parser


def error_line(exc):
    """exc as one line for the command line: an OSError as 'PATH: reason'."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return str(exc)


def main(args):
    """Run; returns the exit status: 0, 1 (a bad setting, data file or checkpoint, an
    unwritable output, a diverged loss: one line on stderr), 130 (Ctrl-C: one line that
    says how to resume)."""
    try:
        run(args)
        return 0
    except TrainingInterrupted as exc:
        if exc.message:  # the lead rank's
            print(exc.message, file=sys.stderr, flush=True)
        status = 130
    except BrokenPipeError:  # stdout's reader left: python -m fastbn's to handle
        raise
    except (ValueError, OSError, ImportError, TrainingDiverged) as exc:
        print(f"fastbn train: error: {error_line(exc)}", file=sys.stderr, flush=True)
        status = 1
    if args.distributed:  # a rank that stops alone would leave the others waiting
        from . import distributed
        distributed.abort(status)
    return status
