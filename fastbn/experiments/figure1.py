"""Figure 1 of Ioffe & Szegedy (2015): an MLP of three sigmoid layers on MNIST trained
with and without Batch Normalization.  (a) test accuracy against training steps; (b, c)
the 15th, 50th and 85th percentiles of one sigmoid input over training, without (b) and
with (c) BN."""
import functools

import numpy as np

from ..train import _int
from . import common

__all__ = ["NAME", "HELP", "add_arguments", "run", "markdown", "plot"]

NAME = "figure1"
HELP = "Figure 1: the MNIST sigmoid MLP with and without BN"
NETS = (("baseline", False, "without BN"), ("bn", True, "with BN"))


def add_arguments(parser):
    common.add_common_arguments(parser, steps=50000, eval_every=None, lr=2.0)
    parser.add_argument("--unit", type=_int(0), default=0,
                        help="which unit of the last hidden layer to follow (default: 0)")
    parser.add_argument("--probe-size", type=_int(2), default=1000,
                        help="the percentiles are over the first this many test images "
                             "(default: 1000)")
    return parser


def run(args, say=print, on_record=None):
    """Train both nets as args say; returns the JSON-able results.  ``on_record(key,
    step, model)``, when given, is called at each record of the net ``key`` ("baseline"
    or "bn")."""
    if args.unit >= 100:
        raise ValueError(f"--unit {args.unit}: the hidden layers have 100 units")
    d = common.load_experiment_data(args.dataset, args.data_dir)
    say(f"data: {d.source}")
    probe = d.x_test[:args.probe_size]
    every = args.eval_every or max(1, args.steps // 100)
    schedule = common.record_schedule(args.steps, every)
    nets = {}
    for key, bn, label in NETS:
        model = common.paper_mlp(d.x_train.shape[1], bn, args.init_std, args.seed)
        log = common.train_net(model, d, args.lr, args.steps, args.batch_size, args.seed,
                               schedule, probe=(probe, args.unit), desc=label,
                               progress=False if args.quiet else None,
                               on_record=on_record and functools.partial(on_record, key))
        pct = np.percentile(log["activations"], common.PERCENTILES, axis=1)
        times = log["step_seconds"]
        ref = next(i for i, s in enumerate(log["steps"]) if s >= max(1, args.steps // 50))
        nets[key] = {"label": label, "with_bn": bn, "steps": log["steps"],
                     "accuracy": log["accuracy"], "loss": log["loss"],
                     "seconds": log["seconds"], "diverged_at": log["diverged_at"],
                     "percentiles": {str(p): row.tolist()
                                     for p, row in zip(common.PERCENTILES, pct)},
                     "drift": _drift(log["unit_percentiles"], ref, log["steps"]),
                     "train_seconds": float(times.sum()),
                     "ms_per_step_median": 1e3 * float(np.median(times)),
                     "ms_per_step_mean": 1e3 * float(times.mean())}
        say(f"{label}: test accuracy {100 * log['accuracy'][-1]:.2f}% after "
            f"{log['steps'][-1]} steps, {times.sum():.1f} s of training, "
            f"{1e3 * np.median(times):.3f} ms/step (median)")
    return {"data": d.source, "nets": nets,
            "config": {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
                       "init_std": args.init_std, "seed": args.seed, "threads": args.threads,
                       "unit": args.unit, "probe_images": len(probe), "eval_every": every}}


def _drift(unit_percentiles, ref, steps):
    """How far every unit's sigmoid-input distribution moved from record ``ref`` (2% into
    training, past the first transient) to the end: the mean over units of the absolute
    change of the 50th percentile and of the 15-85 spread."""
    first, last = unit_percentiles[ref], unit_percentiles[-1]
    return {"from_step": steps[ref], "to_step": steps[-1],
            "median": float(np.mean(np.abs(last[1] - first[1]))),
            "spread": float(np.mean(np.abs((last[2] - last[0]) - (first[2] - first[0]))))}


def _table_steps(steps):
    """The rows of the tables: the round numbers that were recorded, and the last step."""
    recorded = set(steps)
    return [s for s in common.record_schedule(steps[-1], steps[-1]) if s in recorded and s]


def markdown(result):
    """The figure's numbers as a markdown section."""
    nets, cfg = result["nets"], result["config"]
    base, bn = nets["baseline"], nets["bn"]
    lines = ["## Figure 1: MNIST MLP with and without BN", "",
             f"Data: {result['data']}. Plain SGD, lr {cfg['lr']}, batch {cfg['batch_size']}, "
             f"N(0, {cfg['init_std']}^2) initial weights, seed {cfg['seed']}, "
             f"{cfg['threads']} thread(s).", "",
             "| step | test accuracy without BN | with BN |", "|---:|---:|---:|"]
    index = {name: dict(zip(n["steps"], range(len(n["steps"])))) for name, n in nets.items()}
    for step in _table_steps(base["steps"]):
        cells = [f"{100 * n['accuracy'][index[k][step]]:.2f}%" if step in index[k] else "-"
                 for k, n in (("baseline", base), ("bn", bn))]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    lines += ["", "| | without BN | with BN |", "|---|---:|---:|",
              f"| training time | {base['train_seconds']:.1f} s | {bn['train_seconds']:.1f} s |",
              f"| time per step (median) | {base['ms_per_step_median']:.3f} ms | "
              f"{bn['ms_per_step_median']:.3f} ms |",
              f"| time per step (mean) | {base['ms_per_step_mean']:.3f} ms | "
              f"{bn['ms_per_step_mean']:.3f} ms |", "",
              f"Sigmoid input of unit {cfg['unit']} of the last hidden layer over the first "
              f"{cfg['probe_images']} test images, 15th / 50th / 85th percentiles (eval mode):",
              "", "| step | without BN | with BN |", "|---:|---:|---:|"]
    for step in [0] + _table_steps(base["steps"]):
        cells = []
        for k, n in (("baseline", base), ("bn", bn)):
            i = index[k].get(step)
            cells.append("-" if i is None else " / ".join(
                _num(n["percentiles"][str(p)][i]) for p in common.PERCENTILES))
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    db, dn = base["drift"], bn["drift"]
    lines += ["", f"Drift over all units of the last hidden layer, step {db['from_step']} to "
                  f"{db['to_step']} (mean over units of the absolute change):", "",
              "| | without BN | with BN |", "|---|---:|---:|",
              f"| 50th percentile | {_size(db['median'])} | {_size(dn['median'])} |",
              f"| 15-85 spread | {_size(db['spread'])} | {_size(dn['spread'])} |"]
    return "\n".join(lines) + "\n"


def _num(x):
    return "nan" if x is None else f"{x:+.2f}"


def _size(x):
    return "nan" if x is None else f"{x:.2f}"


def plot(result):
    """The three panels as a matplotlib Figure."""
    nets = result["nets"]
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 3.2))
    axes = fig.subplots(1, 3)
    for n, style in ((nets["baseline"], "--"), (nets["bn"], "-")):
        axes[0].plot(n["steps"], n["accuracy"], style, color="k", label=n["label"])
    axes[0].set(title="(a) test accuracy", xlabel="steps", ylim=(0.7, 1.0))
    axes[0].legend(loc="lower right")
    for ax, n, title in ((axes[1], nets["baseline"], "(b) without BN"),
                         (axes[2], nets["bn"], "(c) with BN")):
        for p, shade in zip(common.PERCENTILES, ("0.55", "k", "0.55")):
            values = [np.nan if v is None else v for v in n["percentiles"][str(p)]]
            ax.plot(n["steps"], values, color=shade, label=f"{p}th percentile")
        ax.set(title=f"{title}: one sigmoid input", xlabel="steps")
    axes[1].sharey(axes[2])
    axes[2].legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    return fig
