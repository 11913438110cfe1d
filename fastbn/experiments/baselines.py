"""BN against the baselines its critics name, on MNIST: the Figure 1 MLP (three hidden
layers of 100 sigmoids) and a small convnet (two conv3x3 + ReLU + max-pool blocks), each
with no normalization, BN, weight normalization (Salimans & Kingma, 2016), L2-normalized
features with a learned per-channel scale (ParseNet, Liu et al., 2015), dropout without
BN, and BN with dropout.

Every variant trains at each learning rate of a small grid (same seed, batches and
initial weights) and is reported at the rate whose net does best on validation images
held out of the training split.  The table gives test accuracy at fixed steps, steps and
training time to 90% and 95%, the final train/test gap (the regularization claim) and the
time per step (the paper's worry that "the extra cost added in each training step may
undo the accelerating effect")."""
import functools
import math

import numpy as np

from .. import nn
from .. import train as _train
from ..nn.utils import weight_norm
from ..tensor import Tensor
from ..train import _int
from . import common

__all__ = ["NAME", "HELP", "VARIANTS", "add_arguments", "run", "build", "markdown", "plot"]

NAME = "baselines"
HELP = "BN against weight norm, L2Norm (ParseNet) and dropout, MLP and convnet"
VARIANTS = {"none": "no normalization", "bn": "BN", "wn": "weight norm", "l2": "L2Norm",
            "dropout": "dropout", "bn_dropout": "BN + dropout"}
NETS = {"mlp": "the Figure 1 MLP (784-100-100-100-10, sigmoid)",
        "convnet": "the small convnet (conv3x3 32 and 64, ReLU, max-pool; Linear)"}
# Dropout as commonly placed for each net: after every hidden layer of the narrow MLP, at
# a low rate; before the classifier of the convnet, at Srivastava et al.'s 0.5
DROPOUT = {"mlp": 0.2, "convnet": 0.5}
SETTINGS = {"mlp_steps": (3000, 400), "convnet_steps": (200, 40), "records": (8, 1)}
TRAIN_EVAL = 2000  # training images whose accuracy gives the train/test gap


def add_arguments(parser):
    positive = _int(1)
    parser.add_argument("--nets", nargs="+", choices=list(NETS), default=list(NETS),
                        help="which nets to run (default: both)")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=list(VARIANTS), help="which variants to run (default: all)")
    parser.add_argument("--mlp-steps", type=positive, default=None,
                        help="SGD steps per MLP run (default: 3000; --quick: 400)")
    parser.add_argument("--convnet-steps", type=positive, default=None,
                        help="SGD steps per convnet run (default: 200; --quick: 40)")
    parser.add_argument("--mlp-lrs", type=common._positive_float, nargs="+",
                        default=[0.5, 2.0, 8.0],
                        help="the MLP's learning-rate grid (default: 0.5 2 8)")
    parser.add_argument("--convnet-lrs", type=common._positive_float, nargs="+",
                        default=[0.02, 0.1, 0.5],
                        help="the convnet's learning-rate grid (default: 0.02 0.1 0.5)")
    parser.add_argument("--records", type=positive, default=None,
                        help="test-accuracy measurements per run, evenly spaced, besides "
                             "those at 100, 200, 500, ... steps (default: 8; --quick: 1)")
    parser.add_argument("--validation", type=positive, default=1000,
                        help="training images held out to choose each variant's learning "
                             "rate (default: 1000)")
    parser.add_argument("--targets", type=common._positive_float, nargs="+",
                        default=[0.90, 0.95],
                        help="test accuracies to time (default: 0.90 0.95)")
    parser.add_argument("--init-std", type=common._positive_float, default=0.01,
                        help="std of the MLP's Gaussian initial weights (default: 0.01, as "
                             "figure1)")
    common.add_quick_argument(parser, SETTINGS)
    return common.add_run_arguments(parser)


def build(net, variant, shape, seed=0, init_std=0.01):
    """One variant of one net, its weights drawn from ``seed`` as every other variant's.

    Parameters
    ----------
    net : {"mlp", "convnet"}
    variant : one of VARIANTS
        "bn": BN between each hidden layer's Wx and its nonlinearity (the layer loses its
        bias); "wn": weight_norm on every Linear and Conv2d (g starts at ||v||, so the
        net starts as "none"); "l2": L2Norm(C, sqrt(C)) in the same place as BN (each
        feature then starts with unit mean square, as after BN); "dropout" and
        "bn_dropout": Dropout (``DROPOUT``) after each hidden sigmoid (MLP) or before the
        classifier (convnet).
    shape : int or tuple
        The MLP's input features, or the convnet's (channels, height, width).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    bn = variant in ("bn", "bn_dropout")
    if net == "mlp":
        model, activation = common.paper_mlp(shape, bn, init_std, seed), nn.Sigmoid
    elif net == "convnet":
        model, activation = common.small_convnet(shape, bn, seed), nn.ReLU
    else:
        raise ValueError(f"net must be one of {list(NETS)}, got {net!r}")
    layers, features = [], None
    for layer in model:
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            features = layer.weight.shape[0]
            if variant == "wn":
                weight_norm(layer)
        if isinstance(layer, activation) and variant == "l2":
            layers.append(nn.L2Norm(features, math.sqrt(features)))
        if net == "convnet" and layer is model[-1] and variant.endswith("dropout"):
            layers.append(nn.Dropout(DROPOUT[net]))
        layers.append(layer)
        if net == "mlp" and isinstance(layer, activation) and variant.endswith("dropout"):
            layers.append(nn.Dropout(DROPOUT[net]))
    return nn.Sequential(*layers)


def run(args, say=print):
    """Train every (net, variant, learning rate) as args say; returns the JSON-able
    results."""
    common.settle_quick(args, SETTINGS)
    if any(t >= 1 for t in args.targets):
        raise ValueError(f"--targets are accuracies below 1, got {args.targets}")
    d = common.load_experiment_data(args.dataset, args.data_dir)
    say(f"data: {d.source}")
    if args.validation >= len(d.x_train) - args.batch_size:
        raise ValueError(f"--validation {args.validation} leaves too few of the "
                         f"{len(d.x_train)} training images to train on")
    keep = len(d.x_train) - args.validation
    val = (d.x_train[keep:], d.y_train[keep:])
    d = d._replace(x_train=d.x_train[:keep], y_train=d.y_train[:keep])
    nets = {}
    for net in args.nets:
        steps = args.mlp_steps if net == "mlp" else args.convnet_steps
        grid = sorted(set(args.mlp_lrs if net == "mlp" else args.convnet_lrs))
        nd, val_x = d, val[0]
        if net == "convnet":
            nd = d._replace(x_train=common.as_images(d.x_train),
                            x_test=common.as_images(d.x_test))
            val_x = common.as_images(val_x)
        shape = nd.x_train.shape[1] if net == "mlp" else nd.x_train.shape[1:]
        schedule = common.record_schedule(steps, max(1, steps // args.records))
        runs = []
        for variant in args.variants:
            for lr in grid:
                label = f"{net} {VARIANTS[variant]}, lr {lr:g}"
                model = build(net, variant, shape, args.seed, args.init_std)
                log = common.train_net(model, nd, lr, steps, args.batch_size, args.seed,
                                       schedule, desc=label,
                                       progress=False if args.quiet else None)
                runs.append(_entry(net, variant, lr, log, model, nd, val_x, val[1],
                                   args.targets))
                say(_line(runs[-1]))
        say(f"{net}: timing a step of every variant, side by side")
        batch = (Tensor(nd.x_train[:args.batch_size]), Tensor(nd.y_train[:args.batch_size]))
        costs = common.step_costs(
            {v: functools.partial(build, net, v, shape, args.seed, args.init_std)
             for v in args.variants}, *batch, lr=0.0, rounds=10 if args.quick else 30)
        best = {}
        for variant in args.variants:
            mine = [i for i, r in enumerate(runs) if r["variant"] == variant]
            best[variant] = max(mine, key=lambda i: (runs[i]["val_accuracy"], -runs[i]["lr"]))
            r = runs[best[variant]]
            say(f"{net} {VARIANTS[variant]}: best lr {r['lr']:g} (validation "
                f"{100 * r['val_accuracy']:.2f}%)")
        nets[net] = {"label": NETS[net], "steps": steps, "lrs": grid, "runs": runs,
                     "best": best, "dropout": DROPOUT[net], "step_ms": costs}
    return {"data": d.source, "nets": nets,
            "config": {"batch_size": args.batch_size, "seed": args.seed,
                       "threads": args.threads, "validation": args.validation,
                       "train_images": keep, "train_eval": TRAIN_EVAL,
                       "targets": args.targets,
                       "init_std": args.init_std, "records": args.records,
                       "variants": args.variants, "quick": args.quick}}


def _entry(net, variant, lr, log, model, d, val_x, val_y, targets):
    """One run's JSON-able record; the validation and training accuracies are measured
    here, once, at the end."""
    times = log["step_seconds"]
    train_acc = _train.evaluate(model, d.x_train[:TRAIN_EVAL], d.y_train[:TRAIN_EVAL])[0]
    return {"net": net, "variant": variant, "label": VARIANTS[variant], "lr": lr,
            "steps": log["steps"], "accuracy": log["accuracy"], "loss": log["loss"],
            "seconds": log["seconds"], "diverged_at": log["diverged_at"],
            "final_accuracy": log["accuracy"][-1], "best_accuracy": max(log["accuracy"]),
            "val_accuracy": _train.evaluate(model, val_x, val_y)[0],
            "train_accuracy": train_acc, "gap": train_acc - log["accuracy"][-1],
            "targets": {f"{t:g}": dict(zip(("steps", "seconds"), common.reach(log, t)))
                        for t in targets},
            "train_seconds": float(times.sum()),
            "ms_per_step_median": 1e3 * float(np.median(times)),
            "ms_per_step_mean": 1e3 * float(times.mean())}


def _line(r):
    return (f"{r['net']} {r['label']}, lr {r['lr']:g}: test {100 * r['final_accuracy']:.2f}%, "
            f"validation {100 * r['val_accuracy']:.2f}%, train {100 * r['train_accuracy']:.2f}%; "
            f"{r['ms_per_step_median']:.2f} ms/step"
            + (f"; diverged at step {r['diverged_at']}" if r["diverged_at"] else ""))


def _pct(x):
    return f"{100 * x:.2f}%"


def _table_steps(steps):
    """The round-number steps that were recorded, and the last."""
    recorded = set(steps)
    return [s for s in common.record_schedule(steps[-1], steps[-1]) if s in recorded and s]


def markdown(result):
    """The experiment's tables as a markdown section."""
    cfg = result["config"]
    targets = [f"{t:g}" for t in cfg["targets"]]
    lines = ["## Baselines: BN against weight norm, L2Norm and dropout", "",
             f"Data: {result['data']}; {cfg['validation']} of the training images are held "
             f"out to choose each variant's learning rate (the best final validation "
             f"accuracy), so the nets train on {cfg['train_images']}. Plain SGD, batch "
             f"{cfg['batch_size']}, seed {cfg['seed']} (the same initial weights, batches "
             f"and dropout draws for every variant), {cfg['threads']} thread(s)."]
    for net in result["nets"].values():
        runs = net["runs"]
        winners = [runs[i] for i in net["best"].values()]
        steps = _table_steps(winners[0]["steps"])
        lines += ["", f"### {net['label'][0].upper()}{net['label'][1:]}", "",
                  f"{net['steps']} steps per run; learning-rate grid "
                  f"{', '.join(f'{lr:g}' for lr in net['lrs'])}; dropout rate "
                  f"{net['dropout']:g}. Each variant at its grid winner:", "",
                  "| variant | lr | " + " | ".join(f"test acc. at {s}" for s in steps)
                  + "".join(f" | steps (time) to {float(t):.0%}" for t in targets)
                  + f" | train acc. ({cfg['train_eval']} images) | train - test | ms/step |",
                  "|---|---:|" + "---:|" * (len(steps) + len(targets)) + "---:|---:|---:|"]
        ms = net["step_ms"]
        for r in winners:
            at = dict(zip(r["steps"], r["accuracy"]))
            cost = ms[r["variant"]]
            ratio = (f" ({cost / ms['none']:.2f}x)" if "none" in ms and r["variant"] != "none"
                     else "")
            note = f" (diverged at step {r['diverged_at']})" if r["diverged_at"] else ""
            lines.append(
                f"| {r['label']}{note} | {r['lr']:g} | "
                + " | ".join(_pct(at[s]) if s in at else "-" for s in steps)
                + "".join(f" | {common.reached_text(n, n and n * cost / 1e3)}"
                          for n in (r["targets"][t]["steps"] for t in targets))
                + f" | {_pct(r['train_accuracy'])} | {100 * r['gap']:+.2f} | "
                  f"{cost:.3f}{ratio} |")
        lines += ["", "Time per step: the median over rounds of one step of every variant "
                      "on one batch, side by side (fresh nets, the order rotating), so that "
                      "the shared machine's load reaches them alike; the time to a target "
                      "is steps times that. Each run's own step times are in results.json."]
        lines += ["", "Every run: final test accuracy / validation accuracy (the winner's "
                      "in bold):", "",
                  "| variant | " + " | ".join(f"lr {lr:g}" for lr in net["lrs"]) + " |",
                  "|---|" + "---:|" * len(net["lrs"])]
        for variant, i_best in net["best"].items():
            cells = []
            for lr in net["lrs"]:
                i = next(i for i, r in enumerate(runs)
                         if r["variant"] == variant and r["lr"] == lr)
                r = runs[i]
                cell = f"{_pct(r['final_accuracy'])} / {_pct(r['val_accuracy'])}"
                if r["diverged_at"]:
                    cell += f" (diverged at {r['diverged_at']})"
                cells.append(f"**{cell}**" if i == i_best else cell)
            lines.append(f"| {VARIANTS[variant]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


STYLES = {"none": ("k", "-"), "bn": ("tab:blue", "-"), "wn": ("tab:green", "-"),
          "l2": ("tab:orange", "-"), "dropout": ("k", "--"), "bn_dropout": ("tab:blue", "--")}


def plot(result):
    """Test accuracy of each variant (at its grid winner) against steps and against
    training time (steps times the side-by-side time per step), one row per net, as a
    matplotlib Figure."""
    from matplotlib.figure import Figure

    nets = result["nets"]
    fig = Figure(figsize=(11, 3.6 * len(nets)))
    axes = np.atleast_2d(fig.subplots(len(nets), 2, squeeze=False))
    for row, (name, net) in zip(axes, nets.items()):
        for i in net["best"].values():
            r = net["runs"][i]
            color, ls = STYLES[r["variant"]]
            style = dict(color=color, ls=ls, label=f"{r['label']} (lr {r['lr']:g})")
            steps = np.asarray(r["steps"][1:], float)
            row[0].plot(steps, r["accuracy"][1:], **style)
            row[1].plot(steps * net["step_ms"][r["variant"]] / 1e3, r["accuracy"][1:], **style)
        for ax, xlabel in zip(row, ("steps", "steps x time per step (s)")):
            ax.set(xlabel=xlabel, ylim=(0.8, 1.0))
            for t in result["config"]["targets"]:
                ax.axhline(t, color="0.6", lw=0.8, ls=":")
        row[0].set(ylabel="test accuracy", title=f"{name}: test accuracy against steps")
        row[1].set(title="against training time")
        row[1].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
