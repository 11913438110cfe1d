"""Section 4.2's learning-rate claims at small scale: the Figure 1 MLP trained without BN
at a baseline learning rate, with BN at 1x, 5x and 30x that rate, and without BN at 5x
and 30x; steps and training time to reach 90% and 95% test accuracy."""
import numpy as np

from . import common

__all__ = ["NAME", "HELP", "add_arguments", "run", "markdown", "plot"]

NAME = "lr_sweep"
HELP = "Section 4.2: BN at 1x, 5x, 30x the baseline learning rate"


def _multiplier(text):
    value = common._positive_float(text)
    return int(value) if value == int(value) else value


def add_arguments(parser):
    common.add_common_arguments(parser, steps=20000, eval_every=100, lr=2.0)
    parser.add_argument("--multipliers", type=_multiplier, nargs="+", default=[1, 5, 30],
                        help="learning-rate multiples to run, each with and without BN "
                             "(default: 1 5 30)")
    parser.add_argument("--targets", type=common._positive_float, nargs="+",
                        default=[0.90, 0.95],
                        help="test accuracies to time (default: 0.90 0.95)")
    return parser


def run(args, say=print):
    """Train every (BN, multiplier) pair as args say; returns the JSON-able results."""
    if any(t >= 1 for t in args.targets):
        raise ValueError(f"--targets are accuracies below 1, got {args.targets}")
    d = common.load_experiment_data(args.dataset, args.data_dir)
    say(f"data: {d.source}")
    schedule = common.record_schedule(args.steps, args.eval_every)
    runs = []
    multipliers = sorted(set(args.multipliers))
    # the baseline first, then BN at each rate, then the faster rates without BN
    order = [(False, multipliers[0])] + [(True, m) for m in multipliers] + \
            [(False, m) for m in multipliers[1:]]
    for bn, mult in order:
        label = f"{'BN' if bn else 'no BN'} x{mult}"
        model = common.paper_mlp(d.x_train.shape[1], bn, args.init_std, args.seed)
        lr = args.lr * mult
        log = common.train_net(model, d, lr, args.steps, args.batch_size, args.seed, schedule,
                               desc=label, progress=False if args.quiet else None)
        times = log["step_seconds"]
        entry = {"label": label, "with_bn": bn, "multiplier": mult, "lr": lr,
                 "steps": log["steps"], "accuracy": log["accuracy"], "loss": log["loss"],
                 "seconds": log["seconds"], "diverged_at": log["diverged_at"],
                 "final_accuracy": log["accuracy"][-1], "best_accuracy": max(log["accuracy"]),
                 "train_seconds": float(times.sum()),
                 "ms_per_step_median": 1e3 * float(np.median(times)),
                 "ms_per_step_mean": 1e3 * float(times.mean()), "targets": {}}
        for target in args.targets:
            step, seconds = common.reach(log, target)
            entry["targets"][f"{target:g}"] = {"steps": step, "seconds": seconds}
        runs.append(entry)
        reached = ", ".join(f"{float(t):.0%} " + (f"at step {r['steps']} ({r['seconds']:.1f} s)"
                                                  if r["steps"] is not None else "not reached")
                            for t, r in entry["targets"].items())
        say(f"{label} (lr {lr:g}): final {100 * entry['final_accuracy']:.2f}%, best "
            f"{100 * entry['best_accuracy']:.2f}%; {reached}; "
            f"{entry['ms_per_step_median']:.3f} ms/step"
            + (f"; diverged at step {log['diverged_at']}" if log["diverged_at"] else ""))
    return {"data": d.source, "runs": runs,
            "config": {"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size,
                       "init_std": args.init_std, "seed": args.seed, "threads": args.threads,
                       "eval_every": args.eval_every, "multipliers": multipliers,
                       "targets": args.targets}}


def markdown(result):
    """The sweep's table as a markdown section."""
    cfg, runs = result["config"], result["runs"]
    targets = [f"{t:g}" for t in cfg["targets"]]
    lines = ["## Learning-rate sweep", "",
             f"Data: {result['data']}. Plain SGD, baseline lr {cfg['lr']}, batch "
             f"{cfg['batch_size']}, N(0, {cfg['init_std']}^2) initial weights, seed "
             f"{cfg['seed']}, {cfg['steps']} steps per run, test accuracy every "
             f"{cfg['eval_every']} steps, {cfg['threads']} thread(s). Time is training time "
             "(batch gathering, forward, backward, update), not counting evaluations.", "",
             "| run | lr | final acc. | best acc. | "
             + " | ".join(f"steps (time) to {float(t):.0%}" for t in targets)
             + " | ms/step (median) |",
             "|---|---:|---:|---:|" + "---:|" * len(targets) + "---:|"]
    for r in runs:
        note = f" (diverged at step {r['diverged_at']})" if r["diverged_at"] else ""
        lines.append(f"| {r['label']}{note} | {r['lr']:g} | {100 * r['final_accuracy']:.2f}% | "
                     f"{100 * r['best_accuracy']:.2f}% | "
                     + " | ".join(common.reached_text(r["targets"][t]["steps"],
                                                       r["targets"][t]["seconds"])
                                    for t in targets)
                     + f" | {r['ms_per_step_median']:.3f} |")
    base = [r for r in runs if not r["with_bn"]]
    bn = [r for r in runs if r["with_bn"]]
    if base and bn:
        b = float(np.median([r["ms_per_step_median"] for r in base]))
        n = float(np.median([r["ms_per_step_median"] for r in bn]))
        lines += ["", f"Median time per step over the runs: without BN {b:.3f} ms, with BN "
                      f"{n:.3f} ms ({n / b:.2f}x)."]
    return "\n".join(lines) + "\n"


def plot(result):
    """Test error against steps and against training time, log-log, as a Figure."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    colors = {m: c for m, c in zip(result["config"]["multipliers"],
                                   ("tab:blue", "tab:orange", "tab:red", "tab:green",
                                    "tab:purple"))}
    for r in result["runs"]:
        steps = np.asarray(r["steps"][1:], float)
        error = 1 - np.asarray(r["accuracy"][1:])
        seconds = np.asarray(r["seconds"][1:], float)
        style = dict(color=colors.get(r["multiplier"], "k"), ls="-" if r["with_bn"] else "--",
                     label=f"{r['label']} (lr {r['lr']:g})")
        axes[0].plot(steps, error, **style)
        axes[1].plot(seconds, error, **style)
    for ax, xlabel in zip(axes, ("steps", "training time (s)")):
        ax.set(xscale="log", yscale="log", xlabel=xlabel)
        for t in result["config"]["targets"]:
            ax.axhline(1 - t, color="0.6", lw=0.8, ls=":")
    axes[0].set_ylabel("test error (1 - accuracy)")
    axes[0].set_title("test error against steps")
    axes[1].set_title("against training time")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=3,
               fontsize="small", frameon=False)
    return fig
