"""Santurkar, Tsipras, Ilyas & Madry (2018), "How Does Batch Normalization Help
Optimization?", at small scale: a VGG-style convnet trained on MNIST without BN, with BN,
and with "noisy" BN (noise of a time-varying mean and variance added after every BN).

- Their Figures 1 and 2: training and test accuracy over training, and the distribution
  of one layer's pre-activations, without BN, with BN and with noisy BN.  The paper finds
  that noisy BN's layer inputs move more than the plain net's, yet it trains about as BN
  does: BN's gain would not come from steadier layer-input distributions (less "internal
  covariate shift").
- Their Figure 4: at regular steps, from the point x of that step along its gradient g
  on its own batch (train-mode BN, batch statistics, as in training): the loss variation
  (the range of L(x - eta g) over a grid of eta), the gradient predictiveness (the l2
  distance between grad L(x) and grad L(x - eta g)) and the effective beta-smoothness
  (the largest ||grad L(x) - grad L(x - eta g)|| / ||eta g||).
"""
import argparse
import functools
import math

import numpy as np

from .. import nn
from .. import random as _random
from ..tensor import Tensor, no_grad
from ..train import _int
from . import common

__all__ = ["NAME", "HELP", "add_arguments", "run", "markdown", "plot", "landscape_probe",
           "NoisyBatchNorm2d", "vgg"]

NAME = "smoothness"
HELP = "Santurkar et al. (2018): landscape probes and noisy BN, VGG-style convnet"
# the paper's grid of steps along the gradient ends at 0.4 (their Figure 4)
ETAS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4)
VGG = (8, 8, "M", 16, 16, "M", 32, 32, "M")
TAP_PERCENTILES = (5, 15, 50, 85, 95)
SETTINGS = {"steps": (1000, 300), "eval_every": (100, 50), "probe_every": (50, 50),
            "lrs": ([0.1, 0.5], [0.1])}
KINDS = {"standard": "no BN", "bn": "BN", "noisy": "noisy BN"}


def add_arguments(parser):
    positive = _int(1)
    parser.add_argument("--steps", type=positive, default=None,
                        help="SGD steps per net (default: 1000; --quick: 300)")
    parser.add_argument("--eval-every", type=positive, default=None,
                        help="measure test and training accuracy every this many steps "
                             "(default: 100; --quick: 50)")
    parser.add_argument("--probe-every", type=positive, default=None,
                        help="probe the landscape every this many steps (default: 50)")
    parser.add_argument("--lrs", type=common._positive_float, nargs="+", default=None,
                        help="SGD learning rates, no momentum: every net trains at the "
                             "first, which is also where the landscape is probed; without "
                             "and with BN at the others too (default: 0.1 0.5, the paper's "
                             "Figure 1; --quick: 0.1)")
    parser.add_argument("--etas", type=common._positive_float, nargs="+", default=list(ETAS),
                        help="steps along the gradient that the probes take (default: 0.05 "
                             "to 0.4 by 0.05, the paper's range)")
    parser.add_argument("--noise-mean", type=_nonnegative, default=0.5,
                        help="noisy BN: each channel's noise mean is drawn from U(-M, M) "
                             "at every step (default: 0.5)")
    parser.add_argument("--noise-std", type=_nonnegative, default=1.0,
                        help="noisy BN: each channel's noise std is drawn from U(0, S) at "
                             "every step (default: 1.0)")
    parser.add_argument("--targets", type=common._positive_float, nargs="+",
                        default=[0.95, 0.98],
                        help="test accuracies to time (default: 0.95 0.98)")
    common.add_quick_argument(parser, SETTINGS)
    return common.add_run_arguments(parser)


def _nonnegative(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 <= value < math.inf:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


class NoisyBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose output, in training, gets noise of a time-varying mean and
    variance: at every forward each channel draws a mean ``m ~ U(-noise_mean,
    noise_mean)`` and a std ``s ~ U(0, noise_std)``, and every activation of the channel
    (each sample, each position) gets its own draw of mean m and std s added (uniform
    on ``m +- sqrt(3) s``).  Santurkar et
    al.'s "noisy BatchNorm", which shifts the next layer's input distribution at every
    step.  The noise comes from fastbn's global generator (``fastbn.manual_seed``);
    in eval mode the layer is plain BatchNorm2d.

    Parameters
    ----------
    num_features : int
        Channels (axis 1 of the (N, C, H, W) input).
    noise_mean, noise_std : float
        The bounds of the per-step draws of each channel's noise mean and std (>= 0).
    **kwargs
        BatchNorm2d's other arguments.
    """

    def __init__(self, num_features, noise_mean=0.5, noise_std=1.0, **kwargs):
        super().__init__(num_features, **kwargs)
        if not (noise_mean >= 0 and noise_std >= 0):
            raise ValueError(f"noise_mean and noise_std must be >= 0, got {noise_mean!r} "
                             f"and {noise_std!r}")
        self.noise_mean, self.noise_std = float(noise_mean), float(noise_std)

    def forward(self, input):
        out = super().forward(input)
        if not self.training:
            return out
        rng = _random.default_generator
        C = self.num_features
        mean = rng.uniform(-self.noise_mean, self.noise_mean, C).astype(out.dtype)
        std = rng.uniform(0.0, self.noise_std, C).astype(out.dtype)
        # uniform draws of that mean and std: a Gaussian's cost twice as much
        noise = rng.random(out.shape, dtype=out.dtype)
        noise -= 0.5
        noise *= (math.sqrt(12.0) * std).reshape(1, C, 1, 1)
        noise += mean.reshape(1, C, 1, 1)
        return out + noise

    def extra_repr(self):
        return (super().extra_repr() + f", noise_mean={self.noise_mean}, "
                f"noise_std={self.noise_std}")


class _Tap(nn.Module):
    """The identity; when ``armed``, it keeps percentiles, mean and std of what passes
    through it once (the training forward of a record step), then disarms."""

    def __init__(self):
        super().__init__()
        self.armed = False
        self.records = []

    def forward(self, input):
        if self.armed:
            h = np.asarray(input.data, dtype=np.float64)
            self.records.append((np.percentile(h, TAP_PERCENTILES), h.mean(), h.std()))
            self.armed = False
        return input


def vgg(image_shape, kind, seed=0, noise_mean=0.5, noise_std=1.0):
    """The VGG-style net: conv3x3 8, 8, max-pool, 16, 16, max-pool, 32, 32, max-pool,
    then Linear, each conv followed by ReLU; ``kind`` "bn" puts BatchNorm2d and "noisy"
    :class:`NoisyBatchNorm2d` between each conv and its ReLU.  The convs keep their bias
    in every kind (as torchvision's VGG-BN), so all kinds start from the same weights
    (:func:`common.vgg_init` from ``seed``).  A :class:`_Tap` sits before the last ReLU."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    channels, side, _ = image_shape
    layers, convs = [], sum(c != "M" for c in VGG)
    for c in VGG:
        if c == "M":
            layers.append(nn.MaxPool2d(2))
            side //= 2
            continue
        layers.append(nn.Conv2d(channels, c, 3, padding=1))
        if kind == "bn":
            layers.append(nn.BatchNorm2d(c))
        elif kind == "noisy":
            layers.append(NoisyBatchNorm2d(c, noise_mean, noise_std))
        convs -= 1
        if convs == 0:
            layers.append(_Tap())
        layers.append(nn.ReLU())
        channels = c
    if side < 1:
        raise ValueError(f"images of {image_shape[1]}x{image_shape[2]} pixels are too small "
                         "for three 2x2 max-pools")
    layers += [nn.Flatten(), nn.Linear(channels * side * side, 10)]
    return common.vgg_init(nn.Sequential(*layers), seed)


def landscape_probe(model, compute_loss, etas, rng_state=None):
    """Santurkar et al.'s measurements along the current gradient, leaving no trace.

    Call it between a step's backward and its update: ``g``, the parameters' ``.grad``,
    is the step's gradient at the parameters x.  For every eta it sets the parameters to
    ``x - eta * g`` (what an SGD step of size eta gives) and computes
    ``compute_loss()`` and its gradient.  Afterwards the parameters, their ``.grad``, the
    model's buffers (BN's running statistics) and fastbn's global generator are as
    before, bit for bit, so training goes on as if nothing had happened.

    Parameters
    ----------
    model : fastbn.nn.Module
        The model; its parameters that have a ``.grad`` are moved.
    compute_loss : callable
        ``compute_loss()`` returns the scalar loss Tensor of the model as it trains (the
        same batch, train mode: BN uses the batch's statistics, as in the step).
    etas : sequence of float
        The step sizes along ``-g``.
    rng_state : dict, optional
        ``fastbn.random.get_rng_state()`` taken before the step's forward: every probe
        forward starts from it, so dropout and noise draw what the step drew and the
        loss is one function of the parameters.

    Returns
    -------
    dict
        ``loss`` L(x); ``grad_norm`` ||g||; ``losses`` L(x - eta g) per eta;
        ``grad_diffs`` ||g - grad L(x - eta g)|| per eta; ``loss_range`` max - min of the
        loss over x and the points of the grid (the loss variation); ``beta`` the largest
        ``grad_diffs / (eta ||g||)`` (the effective beta-smoothness).
    """
    etas = [float(e) for e in etas]
    if not etas or not all(e > 0 for e in etas):
        raise ValueError(f"etas must be positive step sizes, got {etas}")
    params = list(model.parameters())
    moved = [p for p in params if p.grad is not None]
    if not moved:
        raise ValueError("landscape_probe: no parameter has a gradient; call it after the "
                         "step's backward")
    grads = [p.grad for p in params]
    g = [p.grad for p in moved]
    start = [p.data.copy() for p in moved]
    g64 = [p.grad.astype(np.float64) for p in moved]
    buffers = [(b, b.copy()) for b in model.buffers()]
    rng_after = _random.get_rng_state()

    def forward():
        if rng_state is not None:
            _random.set_rng_state(rng_state)
        return compute_loss()

    losses, diffs = [], []
    try:
        with no_grad():
            loss0 = float(forward().item())
        for eta in etas:
            for p, x0, gp in zip(moved, start, g):
                np.subtract(x0, eta * gp, out=p.data, casting="same_kind")
            model.zero_grad()
            loss = forward()
            loss.backward()
            losses.append(float(loss.item()))
            diffs.append(float(np.sqrt(sum(
                np.sum(np.square(g0 - (0.0 if p.grad is None else p.grad)))
                for p, g0 in zip(moved, g64)))))
    finally:
        for p, x0 in zip(moved, start):
            p.data[...] = x0
        for p, saved_grad in zip(params, grads):
            p.grad = saved_grad
        for b, saved in buffers:
            b[...] = saved
        _random.set_rng_state(rng_after)
    gnorm = float(np.sqrt(sum(np.sum(np.square(g0)) for g0 in g64)))
    ratios = [d / (eta * gnorm) for d, eta in zip(diffs, etas)] if gnorm > 0 else [np.nan]
    return {"loss": loss0, "grad_norm": gnorm, "etas": etas, "losses": losses,
            "grad_diffs": diffs, "loss_range": float(np.ptp([loss0] + losses)),
            "beta": float(np.max(ratios))}



class _Probes:
    """train_net's hook: arms the tap before the forward of each record step, keeps the
    generator's state before the forward of each probe step and probes after its
    backward."""

    def __init__(self, model, tap, record_steps, probe_steps, etas):
        self.model, self.tap, self.etas = model, tap, etas
        self.record_steps, self.probe_steps = set(record_steps), set(probe_steps)
        self.loss_fn = nn.CrossEntropyLoss()
        self.rng_state, self.taps, self.probes = None, [], []

    def before_step(self, step, x, y):
        if step in self.record_steps:
            self.tap.armed = True
            self.taps.append(step)
        if step in self.probe_steps:
            self.rng_state = _random.get_rng_state()

    def after_backward(self, step, x, y):
        if step in self.probe_steps:
            probe = landscape_probe(self.model, lambda: self.loss_fn(self.model(x), y),
                                    self.etas, self.rng_state)
            self.probes.append({"step": step, **probe})


def run(args, say=print):
    """Train the nets as args say; returns the JSON-able results."""
    common.settle_quick(args, SETTINGS)
    if any(t >= 1 for t in args.targets):
        raise ValueError(f"--targets are accuracies below 1, got {args.targets}")
    d = common.load_experiment_data(args.dataset, args.data_dir)
    say(f"data: {d.source}")
    d = d._replace(x_train=common.as_images(d.x_train), x_test=common.as_images(d.x_test))
    train_subset = (d.x_train[:1000], d.y_train[:1000])
    schedule = common.record_schedule(args.steps, args.eval_every)
    probe_steps = sorted({1} | set(range(args.probe_every, args.steps + 1, args.probe_every)))
    lrs = list(dict.fromkeys(args.lrs))
    # the first rate: all three nets, probed; the others: without and with BN (Figure 1)
    order = [(kind, lrs[0], kind != "noisy") for kind in KINDS] + \
            [(kind, lr, False) for lr in lrs[1:] for kind in ("standard", "bn")]
    runs = []
    for kind, lr, probed in order:
        label = f"{KINDS[kind]}, lr {lr:g}"
        model = vgg(d.x_train.shape[1:], kind, args.seed, args.noise_mean, args.noise_std)
        tap = next(m for m in model.modules() if isinstance(m, _Tap))
        hook = _Probes(model, tap, schedule, probe_steps if probed else (), args.etas)
        log = common.train_net(model, d, lr, args.steps, args.batch_size, args.seed, schedule,
                               desc=label, progress=False if args.quiet else None, hook=hook,
                               extra_eval={"train": train_subset})
        times = log["step_seconds"]
        entry = {"key": f"{kind}@{lr:g}", "kind": kind, "label": label, "lr": lr,
                 "probed": probed, "steps": log["steps"], "accuracy": log["accuracy"],
                 "train_accuracy": log["train_accuracy"], "loss": log["loss"],
                 "seconds": log["seconds"], "diverged_at": log["diverged_at"],
                 "final_accuracy": log["accuracy"][-1], "best_accuracy": max(log["accuracy"]),
                 "train_seconds": float(times.sum()), "probe_seconds": log["hook_seconds"],
                 "ms_per_step_median": 1e3 * float(np.median(times)),
                 "ms_per_step_mean": 1e3 * float(times.mean()),
                 "targets": {f"{t:g}": dict(zip(("steps", "seconds"), common.reach(log, t)))
                             for t in args.targets},
                 "tap": _tap_summary(hook.taps, tap.records),
                 "probes": _probe_summary(hook.probes) if probed else None}
        runs.append(entry)
        reached = "; ".join(f"{float(t):.0%}: " + common.reached_text(r["steps"], r["seconds"])
                            for t, r in entry["targets"].items())
        say(f"{label}: test accuracy {100 * entry['final_accuracy']:.2f}% after "
            f"{log['steps'][-1]} steps ({entry['train_seconds']:.1f} s of training, "
            f"{entry['ms_per_step_median']:.2f} ms/step); {reached}"
            + (f"; diverged at step {log['diverged_at']}" if log["diverged_at"] else "")
            + (f"; probes: median loss range {entry['probes']['median']['loss_range']:.3g}, "
               f"beta {entry['probes']['median']['beta']:.3g}" if probed else ""))
    say("timing a step of each net, side by side")
    batch = (Tensor(d.x_train[:args.batch_size]), Tensor(d.y_train[:args.batch_size]))
    costs = common.step_costs(
        {kind: functools.partial(vgg, d.x_train.shape[1:], kind, args.seed, args.noise_mean,
                                 args.noise_std) for kind in KINDS}, *batch, lr=0.0,
        rounds=10 if args.quick else 30)
    return {"data": d.source, "runs": runs, "step_ms": costs,
            "config": {"steps": args.steps, "lrs": lrs, "batch_size": args.batch_size,
                       "seed": args.seed, "threads": args.threads,
                       "eval_every": args.eval_every, "probe_every": args.probe_every,
                       "etas": args.etas, "noise_mean": args.noise_mean,
                       "noise_std": args.noise_std, "targets": args.targets,
                       "quick": args.quick, "architecture": _architecture()}}


def _architecture():
    return "conv3x3 " + " ".join("max-pool" if c == "M" else str(c) for c in VGG) + \
        ", Linear to 10 classes; ReLU after each conv"


def _tap_summary(steps, records):
    """The tapped pre-activations over training, and how much they moved from one record
    to the next (the mean absolute change of the median and of the 5-95 spread)."""
    pct = np.array([r[0] for r in records]) if records else np.empty((0, len(TAP_PERCENTILES)))
    spread = pct[:, -1] - pct[:, 0] if len(pct) else pct
    return {"steps": steps[:len(records)],
            "percentiles": {str(p): pct[:, i].tolist() for i, p in enumerate(TAP_PERCENTILES)},
            "mean": [float(r[1]) for r in records], "std": [float(r[2]) for r in records],
            "median_change": float(np.mean(np.abs(np.diff(pct[:, 2])))) if len(pct) > 1
            else None,
            "spread_change": float(np.mean(np.abs(np.diff(spread)))) if len(pct) > 1
            else None}


def _probe_summary(probes):
    """The probes' series over training and their medians and maxima."""
    series = {key: [p[key] for p in probes]
              for key in ("step", "loss", "grad_norm", "loss_range", "beta")}
    series["loss_min"] = [min([p["loss"]] + p["losses"]) for p in probes]
    series["loss_max"] = [max([p["loss"]] + p["losses"]) for p in probes]
    series["diff_min"] = [min(p["grad_diffs"]) for p in probes]
    series["diff_max"] = [max(p["grad_diffs"]) for p in probes]
    series["losses"] = [p["losses"] for p in probes]
    series["grad_diffs"] = [p["grad_diffs"] for p in probes]
    stats = {}
    for name, key in (("median", np.median), ("max", np.max)):
        stats[name] = {k: float(key(series[k])) for k in ("loss_range", "diff_max", "beta")}
    return {**series, **stats}


def _pct(x):
    return f"{100 * x:.2f}%"


def markdown(result):
    """The experiment's tables as a markdown section."""
    cfg, runs = result["config"], result["runs"]
    targets = [f"{t:g}" for t in cfg["targets"]]
    lines = ["## Smoothness: Santurkar et al. (2018) on a VGG-style convnet", "",
             f"Data: {result['data']}. Net: {cfg['architecture']}. Plain SGD, batch "
             f"{cfg['batch_size']}, {cfg['steps']} steps, seed {cfg['seed']} (the same "
             f"initial weights and batches for every net), {cfg['threads']} thread(s). Noisy "
             f"BN: per step and channel, a mean m ~ U(-{cfg['noise_mean']:g}, "
             f"{cfg['noise_mean']:g}) and a std s ~ U(0, {cfg['noise_std']:g}); every "
             "activation after BN gets its own draw of that mean and std (uniform) added.",
             "", "| net | final test acc. | best test acc. | train acc. (1000 images) | "
             + " | ".join(f"steps (time) to {float(t):.0%}" for t in targets)
             + " | ms/step |", "|---|---:|---:|---:|" + "---:|" * len(targets) + "---:|"]
    ms = result["step_ms"]
    for r in runs:
        note = f" (diverged at step {r['diverged_at']})" if r["diverged_at"] else ""
        cost = ms[r["kind"]]
        cells = []
        for t in targets:
            step = r["targets"][t]["steps"]
            cells.append(common.reached_text(step, step and step * cost / 1e3))
        lines.append(f"| {r['label']}{note} | {_pct(r['final_accuracy'])} | "
                     f"{_pct(r['best_accuracy'])} | {_pct(r['train_accuracy'][-1])} | "
                     + " | ".join(cells) + f" | {cost:.2f} |")
    lines += ["", "Time per step: the median over rounds of one step of each net on one "
                  "batch, side by side (fresh nets, the order rotating), so that the shared "
                  "machine's load reaches them alike; the time to a target is steps times "
                  "that. Each run's own step times are in results.json."]
    lines += ["", "Test accuracy during training:", "",
              "| step | " + " | ".join(r["label"] for r in runs) + " |",
              "|---:|" + "---:|" * len(runs)]
    index = [dict(zip(r["steps"], r["accuracy"])) for r in runs]
    for step in _table_steps(runs[0]["steps"]):
        lines.append(f"| {step} | " + " | ".join(
            _pct(ix[step]) if step in ix else "-" for ix in index) + " |")
    lines += ["", "The input of the last ReLU (after the last conv and its BN and noise), "
                  "on the training batch of each record step: how far its distribution "
                  "moves from one record to the next (mean absolute change of the median "
                  "and of the 5-95 percentile spread), and its 5th / 50th / 95th "
                  "percentiles at the end:", "",
              "| net | change of the median | change of the spread | final 5 / 50 / 95 |",
              "|---|---:|---:|---:|"]
    for r in runs:
        t = r["tap"]
        final = " / ".join(f"{t['percentiles'][p][-1]:+.2f}" for p in ("5", "50", "95")) \
            if t["steps"] else "-"
        lines.append(f"| {r['label']} | {_num(t['median_change'])} | "
                     f"{_num(t['spread_change'])} | {final} |")
    probed = [r for r in runs if r["probes"]]
    if probed:
        lines += ["", f"The landscape along each probed step's gradient g, on its own batch "
                      f"(train-mode BN), every {cfg['probe_every']} steps and at step 1, eta "
                      f"in {_etas(cfg['etas'])}: the loss variation (max - min of the loss "
                      "over x and the x - eta g), the gradient change (the l2 distance "
                      "between the gradients at x and at x - eta g) and the effective "
                      "beta-smoothness (the largest gradient change over eta ||g||); median "
                      "(and largest) over the probes.", "",
                  "| net | loss variation | gradient change (largest over eta) | "
                  "effective beta-smoothness | probe time |", "|---|---:|---:|---:|---:|"]
        for r in probed:
            p = r["probes"]
            lines.append(" | ".join([
                f"| {r['label']}",
                *(f"{_num(p['median'][k])} ({_num(p['max'][k])})"
                  for k in ("loss_range", "diff_max", "beta")),
                f"{r['probe_seconds']:.1f} s |"]))
    return "\n".join(lines) + "\n"


def _table_steps(steps):
    """The round-number steps that were recorded, and the last."""
    recorded = set(steps)
    return [s for s in common.record_schedule(steps[-1], steps[-1]) if s in recorded and s]


def _etas(etas):
    return "{" + ", ".join(f"{e:g}" for e in etas) + "}"


def _num(x):
    return "nan" if x is None else f"{x:.3g}"


COLORS = {"standard": "tab:red", "bn": "tab:blue", "noisy": "tab:purple"}


def plot(result):
    """Their Figures 1/2 (top: accuracies, one layer's distribution) and 4 (bottom: the
    landscape probes) as one matplotlib Figure."""
    from matplotlib.figure import Figure

    runs, lrs = result["runs"], result["config"]["lrs"]
    fig = Figure(figsize=(13, 7.5))
    axes = fig.subplots(2, 3)

    def style(r):
        return dict(color=COLORS[r["kind"]], ls="-" if r["lr"] == lrs[0] else "--",
                    label=r["label"])

    for r in runs:
        axes[0, 0].plot(r["steps"], r["train_accuracy"], **style(r))
        axes[0, 1].plot(r["steps"], r["accuracy"], **style(r))
    for ax, title in ((axes[0, 0], "(a) training accuracy (1000 training images)"),
                      (axes[0, 1], "(b) test accuracy")):
        ax.set(title=title, xlabel="steps", ylim=(0.8, 1.0))
    axes[0, 1].legend(loc="lower right", fontsize="small")
    ax = axes[0, 2]
    for r in runs:
        if r["lr"] != lrs[0] or not r["tap"]["steps"]:
            continue
        t = r["tap"]
        ax.fill_between(t["steps"], t["percentiles"]["5"], t["percentiles"]["95"],
                        color=COLORS[r["kind"]], alpha=0.2, lw=0)
        ax.plot(t["steps"], t["percentiles"]["50"], color=COLORS[r["kind"]],
                label=f"{r['label']}: median, 5-95%")
    ax.set(title="(c) input of the last ReLU", xlabel="steps")
    ax.legend(loc="upper right", fontsize="small")
    for r in runs:
        p = r["probes"]
        if not p:
            continue
        c = COLORS[r["kind"]]
        axes[1, 0].fill_between(p["step"], p["loss_min"], p["loss_max"], color=c, alpha=0.35,
                                lw=0, label=r["label"])
        axes[1, 1].fill_between(p["step"], p["diff_min"], p["diff_max"], color=c, alpha=0.35,
                                lw=0, label=r["label"])
        axes[1, 2].plot(p["step"], p["beta"], color=c, label=r["label"])
    axes[1, 0].set(title="(d) loss landscape: L(x - eta g)", xlabel="steps", yscale="log")
    axes[1, 1].set(title="(e) gradient predictiveness", xlabel="steps", yscale="log",
                   ylabel="||grad L(x) - grad L(x - eta g)||")
    axes[1, 2].set(title="(f) effective beta-smoothness", xlabel="steps", yscale="log")
    for ax in axes[1]:
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return fig
