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

SGD with momentum; the learning rate follows a cosine from --lr down to 0 over the epochs.

Resuming: ``--resume PATH`` continues the run saved in PATH with the settings stored there
(model, BN, dataset, batch size, seed, optimizer, learning rate, momentum, schedule,
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
``--resume PATH --fold OUT`` on a finished run exports it without training.

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
from .progress import ProgressBar
from .tensor import Tensor, no_grad

CheckpointError = checkpoint.CheckpointError

__all__ = ["convnet", "mlp", "PRESETS", "DATASETS", "SETTINGS", "load_data", "evaluate",
           "train_step", "load_model", "TrainingInterrupted", "TrainingDiverged",
           "add_arguments", "run", "main"]


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
    "bn": Setting("--no-bn", True, lambda v: isinstance(v, bool), "true or false", FIXED),
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
    for key, setting in SETTINGS.items():
        if key not in config:
            raise CheckpointError(f"{path}: field 'extra.config.{key}' is missing")
        if not setting.valid(config[key]):
            bad(f"extra.config.{key}", setting.expected, config[key])
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
    model = PRESETS[config["model"]](DATASETS[config["dataset"]], NUM_CLASSES, bn=config["bn"])
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
    return {key: getattr(args, key) for key in SETTINGS
            if getattr(args, key, None) is not None}


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
        if key == "bn":
            raise ValueError(f"--no-bn: {path} holds a net trained with BN, which a resumed "
                             "run keeps (leave --no-bn out)")
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
    if config["bn"] and config["batch_size"] < 2:
        raise ValueError(f"--batch-size {config['batch_size']}: BatchNorm needs at least 2 "
                         "samples per batch for its statistics (use a larger --batch-size, "
                         "or --no-bn)")
    if dist:
        dist.check_batch(config["batch_size"])
    threads = args.threads
    if threads is None:  # digits' 8x8 layers are too small to gain from a parallel region
        threads = 1 if config["dataset"] == "digits" else "auto"
    if threads == "auto":  # the cores free to this process, shared among a node's ranks
        threads = auto_threads(dist.local_ranks if dist else 1)

    x_train, y_train, x_test, y_test = load_data(config["dataset"], config["data_dir"])
    if args.resume and extra["train_size"] != len(x_train):
        raise ValueError(f"{args.resume} was trained on {extra['train_size']} images; this "
                         f"data has {len(x_train)} (is --data-dir the same MNIST?)")
    _random.manual_seed(config["seed"])
    model = PRESETS[config["model"]](x_train.shape[1:], NUM_CLASSES, bn=config["bn"])
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
    say(f"training {config['model']} ({'with' if config['bn'] else 'without'} BN) on "
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
               / train_seconds if train_seconds else 0.0, "with_bn": config["bn"],
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
    parser.add_argument("--no-bn", dest="bn", action="store_const", const=False, default=None,
                        help="leave out Batch Normalization (layers get biases instead)")
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
                             "(default: 1 on digits, whose tiny layers run fastest serially; "
                             "auto otherwise; see docs/threads.md)")
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
