"""Section 4.2 (Figures 2 and 3) at small scale: the BN-Inception of ``fastbn.models``
trained on MNIST as the paper's variants,

- Inception: no BN, ReLU, the baseline learning rate, dropout before the classifier;
- BN-Baseline: the same with BN before every nonlinearity;
- BN-x5, BN-x30: BN at 5 and 30 times the rate, with Section 4.2.1's changes (dropout
  removed, L2 weight regularization divided by 5, the learning-rate decay 6 times
  faster);
- BN-x5-Sigmoid: BN-x5 with sigmoids instead of ReLUs;
- Inception-Sigmoid: Inception with sigmoids (the paper: never better than chance).

SGD with momentum, every variant from the same initial weights and on the same batches.
The table gives, for each variant, the steps and the training time to reach the
Inception baseline's best test accuracy, the speed-up against the baseline in steps
and in time, the best accuracy and the time per step."""
import argparse
import functools

import numpy as np

from .. import models
from .. import train as _train
from ..tensor import Tensor
from ..train import _int
from . import common

__all__ = ["NAME", "HELP", "VARIANTS", "add_arguments", "build", "run", "markdown", "plot"]

NAME = "inception"
HELP = "Figure 2: BN-Inception at 1x, 5x, 30x the rate, sigmoid"
# label, BN, activation, learning-rate multiple, Section 4.2.1's changes
VARIANTS = {
    "inception": ("Inception", False, "relu", 1, False),
    "bn_baseline": ("BN-Baseline", True, "relu", 1, False),
    "bn_x5": ("BN-x5", True, "relu", 5, True),
    "bn_x30": ("BN-x30", True, "relu", 30, True),
    "bn_x5_sigmoid": ("BN-x5-Sigmoid", True, "sigmoid", 5, True),
    "inception_sigmoid": ("Inception-Sigmoid", False, "sigmoid", 1, False),
}
BASELINE = "inception"
DECAY_SPEEDUP = 6  # Section 4.2.1: "accelerate the learning rate decay by 6 times"
L2_REDUCTION = 5   # Section 4.2.1: "reduce the L2 weight regularization by a factor of 5"
SETTINGS = {"steps": (250, 40), "eval_every": (25, 10), "eval_size": (500, 200),
            "rounds": (10, 3)}


def add_arguments(parser):
    positive = _int(1)
    number = common._positive_float
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS),
                        help="which variants to run; inception, the baseline the others are "
                             "measured against, is always run (default: all)")
    parser.add_argument("--steps", type=positive, default=None,
                        help="SGD steps per variant (default: 250; --quick: 40)")
    parser.add_argument("--eval-every", type=positive, default=None,
                        help="measure test accuracy every this many steps (default: 25; "
                             "--quick: 10)")
    parser.add_argument("--eval-size", type=positive, default=None,
                        help="test images those measurements use, the first of the test "
                             "split; the last step is measured on all (default: 500; "
                             "--quick: 200)")
    parser.add_argument("--lr", type=number, default=0.003,
                        help="the baseline learning rate (Inception, BN-Baseline); BN-x5 "
                             "and BN-x30 use 5 and 30 times it (default: 0.003)")
    parser.add_argument("--momentum", type=_fraction, default=0.9,
                        help="SGD momentum, every variant (default: 0.9)")
    parser.add_argument("--weight-decay", type=_fraction, default=2e-4,
                        help="the baseline's L2 weight regularization; the accelerated "
                             f"variants use 1/{L2_REDUCTION} of it (default: 2e-4)")
    parser.add_argument("--dropout", type=_fraction, default=0.4,
                        help="dropout before the classifier of Inception, BN-Baseline and "
                             "Inception-Sigmoid; the others have none (default: 0.4, "
                             "GoogLeNet's)")
    parser.add_argument("--decay", type=_decay, default=0.5,
                        help="the baseline's learning rate at the last step, as a fraction "
                             "of its first (exponential decay, every step); the accelerated "
                             f"variants decay {DECAY_SPEEDUP} times faster, to decay ** "
                             f"{DECAY_SPEEDUP} (default: 0.5)")
    parser.add_argument("--rounds", type=positive, default=None,
                        help="rounds of the side-by-side timing of a step (default: 10; "
                             "--quick: 3)")
    common.add_quick_argument(parser, SETTINGS)
    return common.add_run_arguments(parser, batch_size=32)


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


def _decay(text):
    value = _fraction(text)
    if value == 0:
        raise argparse.ArgumentTypeError("expected a number in (0, 1], got 0")
    return value


def build(variant, in_channels=1, seed=0, dropout=0.4):
    """One variant's net: ``models.inception_bn`` with the variant's BN and activation,
    ``dropout`` before the classifier unless the variant has Section 4.2.1's changes, and
    He initialization of :func:`common.vgg_init` in fan-in mode from ``seed`` (every
    variant draws the same; without BN the convolutions' biases start at 0).

    Parameters
    ----------
    variant : str
        A key of ``VARIANTS``.
    in_channels : int
        Channels of the images.
    seed : int
        Seed of the initial weights.
    dropout : float
        The dropout of the variants that keep it.

    Returns
    -------
    InceptionBN
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    _, bn, activation, _, accelerated = VARIANTS[variant]
    net = models.inception_bn(in_channels, 10, bn=bn, activation=activation,
                              dropout=0.0 if accelerated else dropout)
    return common.vgg_init(net, seed, mode="fan_in")


def run(args, say=print):
    """Train every variant as args say; returns the JSON-able results."""
    common.settle_quick(args, SETTINGS)
    d = common.load_experiment_data(args.dataset, args.data_dir)
    say(f"data: {d.source}")
    images, labels = common.as_images(d.x_test), d.y_test
    d = d._replace(x_train=common.as_images(d.x_train), x_test=images[:args.eval_size],
                   y_test=d.y_test[:args.eval_size])
    eval_size = len(d.x_test)
    chance = float(np.bincount(d.y_test).max() / eval_size)
    schedule = common.record_schedule(args.steps, args.eval_every)
    variants = [BASELINE] + [v for v in dict.fromkeys(args.variants) if v != BASELINE]
    gamma = args.decay ** (1.0 / args.steps)
    runs = []
    for variant in variants:
        label, bn, activation, multiple, accelerated = VARIANTS[variant]
        lr = args.lr * multiple
        wd = args.weight_decay / L2_REDUCTION if accelerated else args.weight_decay
        g = gamma ** DECAY_SPEEDUP if accelerated else gamma
        model = build(variant, d.x_train.shape[1], args.seed, args.dropout)
        log = common.train_net(model, d, lr, args.steps, args.batch_size, args.seed, schedule,
                               desc=label, progress=False if args.quiet else None,
                               momentum=args.momentum, weight_decay=wd, gamma=g)
        times = log["step_seconds"]
        final = _train.evaluate(model, images, labels)
        runs.append({"variant": variant, "label": label, "bn": bn, "activation": activation,
                     "lr": lr, "weight_decay": wd, "dropout": model.dropout.p,
                     "final_lr_fraction": g ** args.steps,
                     "steps": log["steps"], "accuracy": log["accuracy"], "loss": log["loss"],
                     "seconds": log["seconds"], "diverged_at": log["diverged_at"],
                     "best_accuracy": max(log["accuracy"]),
                     "best_step": log["steps"][int(np.argmax(log["accuracy"]))],
                     "final_accuracy": final[0],
                     "train_seconds": float(times.sum()),
                     "ms_per_step_median": 1e3 * float(np.median(times)),
                     "ms_per_step_mean": 1e3 * float(times.mean())})
        r = runs[-1]
        say(f"{label} (lr {lr:g}): best {100 * r['best_accuracy']:.2f}% at step "
            f"{r['best_step']} ({eval_size} test images), final {100 * final[0]:.2f}% (all "
            f"{len(images)}); {r['ms_per_step_median']:.1f} ms/step"
            + (f"; diverged at step {r['diverged_at']}" if r["diverged_at"] else ""))
    target = runs[0]["best_accuracy"]
    say("timing a step of every variant, side by side")
    batch = (Tensor(d.x_train[:args.batch_size]), Tensor(d.y_train[:args.batch_size]))
    costs = common.step_costs(
        {v: functools.partial(build, v, d.x_train.shape[1], args.seed, args.dropout)
         for v in variants}, *batch, lr=0.0, rounds=args.rounds)
    base_steps = common.reach(runs[0], target)[0]
    for r in runs:
        steps = common.reach(r, target)[0]
        cost = costs[r["variant"]]
        r["step_ms"] = cost
        r["reach_steps"] = steps
        r["reach_seconds"] = None if steps is None else steps * cost / 1e3
        # no ratio where the target is the initial accuracy (a baseline that never learned)
        ratio = bool(steps) and bool(base_steps)
        r["speedup_steps"] = base_steps / steps if ratio else None
        r["speedup_time"] = base_steps * costs[BASELINE] / (steps * cost) if ratio else None
    return {"data": d.source, "runs": runs, "target": target, "chance": chance,
            "config": {"steps": args.steps, "eval_every": args.eval_every,
                       "eval_size": eval_size, "test_images": len(images), "lr": args.lr,
                       "momentum": args.momentum, "weight_decay": args.weight_decay,
                       "dropout": args.dropout, "decay": args.decay,
                       "decay_speedup": DECAY_SPEEDUP, "l2_reduction": L2_REDUCTION,
                       "batch_size": args.batch_size, "seed": args.seed,
                       "threads": args.threads, "rounds": args.rounds,
                       "variants": variants, "quick": args.quick}}


def _pct(x):
    return f"{100 * x:.2f}%"


def _times(x):
    return "-" if x is None else f"{x:.2f}x"


def markdown(result):
    """The experiment's tables as a markdown section."""
    cfg, runs = result["config"], result["runs"]
    base = runs[0]
    lines = ["## BN-Inception: Section 4.2's variants (Figure 2)", "",
             f"Data: {result['data']}. Net: `fastbn.models.inception_bn`, every variant from "
             f"the same initial weights (seed {cfg['seed']}) and on the same "
             f"batches. SGD, momentum {cfg['momentum']:g}, batch {cfg['batch_size']}, "
             f"{cfg['steps']} steps; baseline lr {cfg['lr']:g}, L2 {cfg['weight_decay']:g}, "
             f"dropout {cfg['dropout']:g}, learning rate decayed every step to "
             f"{cfg['decay']:g} of its first by the last; BN-x5, BN-x30 and BN-x5-Sigmoid "
             f"without dropout, L2 / {cfg['l2_reduction']}, decay {cfg['decay_speedup']} "
             f"times faster. Test accuracy every {cfg['eval_every']} steps on the first "
             f"{cfg['eval_size']} test images (chance, the most frequent class: "
             f"{_pct(result['chance'])}); the final one on all {cfg['test_images']}. He "
             "initialization (fan-in) of the convolutions. "
             f"{cfg['threads']} thread(s).", "",
             f"| variant | lr | steps (time) to {_pct(result['target'])} (Inception's best) | "
             "speed-up in steps | speed-up in time | best acc. (step) | final acc. "
             f"(all {cfg['test_images']}) | ms/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in runs:
        note = f" (diverged at step {r['diverged_at']})" if r["diverged_at"] else ""
        ratio = "" if r is base else f" ({r['step_ms'] / base['step_ms']:.2f}x)"
        lines.append(f"| {r['label']}{note} | {r['lr']:g} | "
                     f"{common.reached_text(r['reach_steps'], r['reach_seconds'])} | "
                     f"{_times(r['speedup_steps'])} | {_times(r['speedup_time'])} | "
                     f"{_pct(r['best_accuracy'])} ({r['best_step']}) | "
                     f"{_pct(r['final_accuracy'])} | {r['step_ms']:.1f}{ratio} |")
    lines += ["", "Time per step: the median over rounds of one step of every variant on "
                  "one batch, side by side (fresh nets, the order rotating, plain SGD), so "
                  "that the shared machine's load reaches them alike; the time to the "
                  "target is steps times that. Each run's own step times are in "
                  "results.json.", "", "Test accuracy during training:", "",
              "| step | " + " | ".join(r["label"] for r in runs) + " |",
              "|---:|" + "---:|" * len(runs)]
    index = [dict(zip(r["steps"], r["accuracy"])) for r in runs]
    recorded = set(base["steps"])
    for step in [s for s in common.record_schedule(base["steps"][-1], base["steps"][-1])
                 if s in recorded and s]:
        lines.append(f"| {step} | " + " | ".join(
            _pct(ix[step]) if step in ix else "-" for ix in index) + " |")
    return "\n".join(lines) + "\n"


STYLES = {"inception": ("k", "--"), "bn_baseline": ("tab:blue", "-"),
          "bn_x5": ("tab:orange", "-"), "bn_x30": ("tab:red", "-"),
          "bn_x5_sigmoid": ("tab:green", "-"), "inception_sigmoid": ("tab:purple", "--")}


def plot(result):
    """Test accuracy against steps and against training time (steps times the
    side-by-side time per step), the paper's Figure 2, as a matplotlib Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for r in result["runs"]:
        color, ls = STYLES[r["variant"]]
        style = dict(color=color, ls=ls, label=f"{r['label']} (lr {r['lr']:g})")
        steps = np.asarray(r["steps"], float)
        axes[0].plot(steps, r["accuracy"], **style)
        axes[1].plot(steps * r["step_ms"] / 1e3, r["accuracy"], **style)
    for ax, xlabel in zip(axes, ("steps", "steps x time per step (s)")):
        ax.set(xlabel=xlabel, ylim=(0, 1))
        ax.axhline(result["target"], color="0.6", lw=0.8, ls=":")
        ax.axhline(result["chance"], color="0.8", lw=0.8, ls=":")
    axes[0].set(ylabel="test accuracy", title="test accuracy against steps")
    axes[1].set(title="against training time")
    axes[1].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
