"""The trainer behind ``python -m fastbn train``: a small net on the embedded digits (or
MNIST), with checkpoints that resume exactly.

Two presets, each with or without Batch Normalization (``--no-bn`` gives the convolutions
and hidden Linear layers a bias instead):

- ``convnet``: [conv3x3 -> BN+ReLU (fused) -> maxpool2] with 32 then 64 channels, then Linear;
- ``mlp``: Flatten -> [Linear(256) -> BN+ReLU (fused)] x 2 -> Linear.

``--distributed`` (under ``mpiexec -n R``): data-parallel over R MPI ranks; each takes
``batch_size / R`` samples of every step from its DistributedSampler shard, BatchNorm
becomes SyncBatchNorm, gradients are averaged; only rank 0 prints and writes files.
"""
import argparse
import contextlib
import json
import os
import sys
import time

import numpy as np

from . import checkpoint, data, nn, optim
from . import random as _random
from ._config import auto_threads, threads as _threads
from ._io import atomic_write
from .progress import ProgressBar
from .tensor import Tensor, no_grad

__all__ = ["convnet", "mlp", "PRESETS", "load_data", "evaluate", "train_step", "add_arguments",
           "run", "main"]

DEFAULTS = dict(model="convnet", lr=0.05, momentum=0.9, epochs=8, batch_size=64, seed=0,
                dataset="digits")
_CONFIG_KEYS = ("model", "bn", "dataset", "batch_size", "seed", "epochs",
                "world_size")  # must match on resume


def convnet(image_shape, num_classes=10, bn=True):
    """Two conv blocks (32 and 64 channels, each halving the image) and a Linear head."""
    channels, height, width = image_shape
    layers = []
    for cin, cout in ((channels, 32), (32, 64)):
        layers.append(nn.Conv2d(cin, cout, 3, padding=1, bias=not bn))
        layers += [nn.BatchNormReLU2d(cout) if bn else nn.ReLU(), nn.MaxPool2d(2)]
    features = 64 * (height // 4) * (width // 4)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(features, num_classes))


def mlp(image_shape, num_classes=10, bn=True, hidden=256):
    """Two hidden layers of ``hidden`` units."""
    layers, features = [nn.Flatten()], int(np.prod(image_shape))
    for _ in range(2):
        layers.append(nn.Linear(features, hidden, bias=not bn))
        layers.append(nn.BatchNormReLU1d(hidden) if bn else nn.ReLU())
        features = hidden
    return nn.Sequential(*layers, nn.Linear(features, num_classes))


PRESETS = {"convnet": convnet, "mlp": mlp}


def load_data(dataset, data_dir=None):
    """``(x_train, y_train, x_test, y_test)``, images standardized with the training set's
    mean and std.  digits: a fixed 80/20 split.  mnist: the train/t10k files when both are
    in data_dir, else a fixed 8,000/2,000 split of t10k."""
    if dataset == "digits":
        x_train, x_test, y_train, y_test = data.train_test_split(*data.load_digits(),
                                                                 test_size=0.2, seed=0)
    elif dataset == "mnist":
        directory = data_dir or os.path.join(data.default_cache_dir(), "mnist")
        try:
            x_train, y_train = data.load_mnist(directory, "train")
            x_test, y_test = data.load_mnist(directory, "t10k")
        except FileNotFoundError:  # only the test set here (a broken file is an error)
            x, y = data.load_mnist(directory, "t10k", download=data_dir is None)
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


def _train_epoch(model, loader, loss_fn, optimizer, bar, after_backward=None):
    """One pass over loader; returns the per-step losses and the number of correct
    predictions.  ``after_backward``: called between backward and step (gradient sync)."""
    model.train()
    losses, correct, seen = [], 0, 0
    start = time.perf_counter()
    for x, y in loader:
        loss, logits = train_step(model, x, y, loss_fn, optimizer, after_backward)
        losses.append(loss)
        correct += int((logits.data.argmax(axis=1) == y.data).sum())
        seen += len(y)
        bar.update(1, loss=f"{np.mean(losses):.4f}", acc=f"{100 * correct / seen:.1f}%",
                   **{"samples/s": f"{seen / (time.perf_counter() - start):.0f}"})
    return losses, correct


def run(args, out=None):
    """Train as the parsed command-line ``args`` say; returns the metrics dict (the JSON
    keys plus ``losses``, every training step's loss)."""
    out = sys.stdout if out is None else out
    dist = _Distributed(args.batch_size) if args.distributed else None
    lead = dist is None or dist.rank == 0   # the rank that prints and writes files
    quiet = args.quiet or not lead
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, file=out, flush=True))
    threads = args.threads
    if threads == "auto":  # the cores free to this process, shared among a node's ranks
        threads = auto_threads(dist.local_ranks if dist else 1)
    config = {"model": args.model, "bn": not args.no_bn, "dataset": args.dataset,
              "batch_size": args.batch_size, "seed": args.seed, "epochs": args.epochs,
              "world_size": dist.world if dist else 1}

    t_start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_data(args.dataset, args.data_dir)
    _random.manual_seed(args.seed)
    model = PRESETS[args.model](x_train.shape[1:], num_classes=10, bn=not args.no_bn)
    optimizer = optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    loss_fn = nn.CrossEntropyLoss()
    loader = data.DataLoader(data.TensorDataset(x_train, y_train), batch_size=args.batch_size,
                             shuffle=True, drop_last=True, seed=args.seed)
    after_backward = None
    if dist:
        model, loader, after_backward = dist.wrap(model, loader)
    if len(loader) == 0:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the "
                         f"{len(x_train)} training samples")

    epoch, losses, train_seconds, steps = 0, [], 0.0, 0
    if args.resume:
        state = checkpoint.load(args.resume, model, optimizer, scheduler)
        saved = state["extra"].get("config", {})
        for key in _CONFIG_KEYS:
            if saved.get(key, 1 if key == "world_size" else None) != config[key]:
                raise checkpoint.CheckpointError(
                    f"{args.resume}: checkpoint was written with {key}={saved.get(key)!r}, "
                    f"this run has {key}={config[key]!r}")
        epoch, losses = state["epoch"], list(state["extra"]["losses"])
        train_seconds, steps = state["extra"]["train_seconds"], state["extra"]["steps"]
        say(f"resumed from {args.resume} after epoch {epoch}")

    say(f"training {args.model} ({'with' if config['bn'] else 'without'} BN) on "
        f"{args.dataset}: {len(x_train)} train / {len(x_test)} held-out images, "
        f"{args.epochs} epochs, batch {args.batch_size}, {threads} thread(s)"
        + (f" per rank, {dist.world} ranks" if dist else ""))
    with _threads(threads), _blas_threads(threads):
        while epoch < args.epochs:
            loader.set_epoch(epoch)
            bar = ProgressBar(len(loader), f"epoch {epoch + 1}/{args.epochs}",
                              enabled=None if not quiet else False)
            t0 = time.perf_counter()
            epoch_losses, correct = _train_epoch(model, loader, loss_fn, optimizer, bar,
                                                 after_backward)
            if dist:
                epoch_losses, correct = dist.reduce_epoch(epoch_losses, correct)
            seconds = time.perf_counter() - t0
            bar.close()
            scheduler.step()
            epoch += 1
            losses += epoch_losses
            steps += len(epoch_losses)
            train_seconds += seconds
            n = len(epoch_losses) * args.batch_size
            if not bar.enabled:
                say(f"epoch {epoch}/{args.epochs}  loss {np.mean(epoch_losses):.4f}  "
                    f"acc {100 * correct / n:.1f}%  {n / seconds:.0f} samples/s  {seconds:.1f} s")
            if args.checkpoint and lead:
                checkpoint.save(args.checkpoint, model, optimizer, scheduler, epoch,
                                config=config, losses=losses, train_seconds=train_seconds,
                                steps=steps)
        accuracy, test_loss = evaluate(model, x_test, y_test)

    total = time.perf_counter() - t_start
    metrics = {"test_accuracy": accuracy, "test_loss": test_loss, "train_seconds": train_seconds,
               "steps": steps, "samples_per_second": steps * args.batch_size / train_seconds
               if train_seconds else 0.0, "with_bn": config["bn"], "model": args.model,
               "dataset": args.dataset, "epochs": epoch, "threads": threads, "seed": args.seed,
               "world_size": config["world_size"], "losses": losses}
    if not lead:
        return metrics
    print(f"held-out accuracy {100 * accuracy:.2f}% ({len(x_test)} images)  "
          f"training {train_seconds:.1f} s  total {total:.1f} s", file=out, flush=True)
    if args.metrics_json:
        with atomic_write(args.metrics_json, "w") as f:
            json.dump(metrics, f, indent=2)
            f.write("\n")
    return metrics


class _Distributed:
    """What ``--distributed`` changes: the communicator, this rank's shard of each epoch,
    SyncBatchNorm and gradient averaging."""

    def __init__(self, batch_size):
        from . import distributed
        self.comm = distributed.init_process_group()
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        self.local_ranks = self.comm.Split_type(distributed._mpi().COMM_TYPE_SHARED).Get_size()
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
        if not (value >= lo and (hi is None or value < hi)):
            raise argparse.ArgumentTypeError(
                f"expected a number >= {lo}" + (f" and < {hi}" if hi is not None else "")
                + f", got {text!r}")
        return value
    return parse


def add_arguments(parser):
    d = DEFAULTS
    parser.add_argument("--model", choices=sorted(PRESETS), default=d["model"],
                        help=f"network preset (default: {d['model']})")
    parser.add_argument("--no-bn", action="store_true",
                        help="leave out Batch Normalization (layers get biases instead)")
    parser.add_argument("--lr", type=_number(0.0), default=d["lr"],
                        help=f"SGD learning rate, cosine-annealed per epoch (default: {d['lr']})")
    parser.add_argument("--momentum", type=_number(0.0, 1.0), default=d["momentum"],
                        help=f"SGD momentum (default: {d['momentum']})")
    parser.add_argument("--epochs", type=_int(1), default=d["epochs"],
                        help=f"total epochs, counting those of a resumed run (default: {d['epochs']})")
    parser.add_argument("--batch-size", type=_int(1), default=d["batch_size"],
                        help=f"(default: {d['batch_size']})")
    parser.add_argument("--threads", type=_threads_arg, default="auto",
                        help="threads for the kernels and BLAS, or auto: the cores this process "
                             "may use, divided among the ranks on a machine with --distributed "
                             "(default: auto; see docs/threads.md)")
    parser.add_argument("--seed", type=_int(0),
                        default=d["seed"], help=f"seed for init and shuffling (default: {d['seed']})")
    parser.add_argument("--dataset", choices=("digits", "mnist"), default=d["dataset"],
                        help="digits: embedded UCI digits; mnist: IDX files in --data-dir "
                             f"(default: {d['dataset']})")
    parser.add_argument("--data-dir", default=None,
                        help="directory of the MNIST IDX files (default: download to the cache)")
    parser.add_argument("--checkpoint", metavar="PATH", default=None,
                        help="save a checkpoint here after every epoch")
    parser.add_argument("--resume", metavar="PATH", default=None,
                        help="continue the run saved in this checkpoint")
    parser.add_argument("--quiet", action="store_true", help="print only the final result")
    parser.add_argument("--metrics-json", metavar="PATH", default=None,
                        help="write the final metrics to this JSON file")
    parser.add_argument("--distributed", action="store_true",
                        help="data-parallel over MPI ranks (start with mpiexec -n R): the "
                             "batch is split over the ranks, BN synchronized; needs mpi4py")
    return parser


def main(args):
    """Run; a bad data file, checkpoint or setting prints one line and returns 1."""
    try:
        run(args)
    except (ValueError, OSError, ImportError) as exc:  # CheckpointError is a ValueError
        print(f"fastbn train: error: {exc}", file=sys.stderr, flush=True)
        if args.distributed:  # a rank that fails alone would leave the others waiting
            from . import distributed
            distributed.abort(1)
        return 1
    return 0
