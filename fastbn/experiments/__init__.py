"""Reproductions of Ioffe & Szegedy (2015), "Batch Normalization", at small scale:

- ``figure1``: Section 4.1's MNIST MLP with and without BN (test accuracy; percentiles of
  one sigmoid input over training);
- ``lr-sweep``: Section 4.2's learning-rate claims (BN at 1x, 5x, 30x the baseline rate,
  steps and training time to 90% and 95% test accuracy);
- ``inception``: Section 4.2's Figure 2 on a small BN-Inception (``fastbn.models``):
  Inception, BN-Baseline, BN-x5, BN-x30, BN-x5-Sigmoid and Inception-Sigmoid, steps and
  training time to the Inception baseline's best accuracy;
- ``smoothness``: Santurkar et al. (2018) on a VGG-style convnet without BN, with BN and
  with noisy BN: accuracy, one layer's distribution, and the loss landscape along the
  gradient (loss variation, gradient predictiveness, effective beta-smoothness);
- ``baselines``: BN against weight normalization, L2Norm (ParseNet) and dropout on the
  Figure 1 MLP and a small convnet, each at its best learning rate of a small grid.

Each writes results.json, results.md and a PNG (with matplotlib) into ``--out``.
"""
import argparse
import sys

from .. import _config
from .. import train as _train
from .._io import check_folder

__all__ = ["add_arguments", "main"]


def add_arguments(parser):
    """The ``reproduce`` subcommands, one per experiment."""
    from .report import EXPERIMENTS

    sub = parser.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    for name, module in EXPERIMENTS.items():
        p = sub.add_parser(name.replace("_", "-"), help=module.HELP,
                           description=module.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(func=main, experiment_name=name)
    return parser


def _check_out(path):
    """Before the experiment runs: its results must have a place."""
    try:
        check_folder(path)
    except OSError as exc:
        raise ValueError(f"--out {path}: {exc.strerror}") from None


def main(args):
    """Run the experiment args name and write its outputs; a bad setting or data file
    prints one line and returns 1."""
    from .report import EXPERIMENTS, save

    def say(*parts):
        print(*parts, flush=True)

    try:
        _check_out(args.out)
        with _config.threads(args.threads), _train._blas_threads(args.threads):
            result = EXPERIMENTS[args.experiment_name].run(args, say)
        paths = save(args.out, args.experiment_name, result, say)
    except BrokenPipeError:  # stdout's reader left: python -m fastbn's to handle
        raise
    except (ValueError, OSError) as exc:
        print(f"fastbn reproduce: error: {_train.error_line(exc)}", file=sys.stderr)
        return 1
    print("wrote " + ", ".join(paths))
    return 0
