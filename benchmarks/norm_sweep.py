"""The trainer's --norm choices at several batch sizes: held-out accuracy and time per step.

For each preset, dataset, batch size and normalization, ``python -m fastbn train`` (run
in this process) trains from seed 0 with the learning rate scaled linearly with the
batch (``--lr 0.05 * batch / 64``: the default's at the default batch), then reports the
held-out accuracy and the mean time of a training step.  The epochs grow with the square
root of the batch (``EPOCHS[dataset] * sqrt(batch / 2)``: on MNIST 1, 2, 4 and 8 epochs
at batches 2, 8, 32 and 128), so a larger batch sees more images in fewer steps, and the
sweep takes minutes.  The "batch, --recalibrate" row is BatchNorm with its running
statistics recomputed after training (nn.utils.update_bn).

    python benchmarks/norm_sweep.py --mnist-dir /work/shared/data/mnist --out sweep.md

Prints (and with --out writes) one markdown table per dataset.
"""
import argparse
import io
import math
import sys
import time

from fastbn import cli, train
from fastbn._io import atomic_write

ROWS = [("batch", []), ("batch, --recalibrate", ["--recalibrate"]), ("group", []),
        ("layer", []), ("renorm", []), ("ghost", []), ("none", [])]
EPOCHS = {"digits": 4, "mnist": 1}  # at batch 2


def epochs(dataset, batch):
    return max(1, round(EPOCHS[dataset] * math.sqrt(batch / 2)))


def run_one(model, dataset, batch, norm, extra, epochs, threads, mnist_dir):
    argv = ["train", "--model", model, "--dataset", dataset, "--batch-size", str(batch),
            "--norm", norm, "--epochs", str(epochs), "--lr", f"{0.05 * batch / 64:g}",
            "--threads", str(threads), "--seed", "0", "--quiet", *extra]
    if dataset == "mnist":
        argv += ["--data-dir", mnist_dir]
    metrics = train.run(cli.build_parser().parse_args(argv), out=io.StringIO())
    return metrics["test_accuracy"], metrics["train_seconds"] / metrics["steps"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["convnet", "mlp"],
                    choices=sorted(train.PRESETS))
    ap.add_argument("--datasets", nargs="+", default=["digits", "mnist"],
                    choices=sorted(EPOCHS))
    ap.add_argument("--batches", type=int, nargs="+", default=[2, 8, 32, 128])
    ap.add_argument("--norms", nargs="+", default=[name for name, _ in ROWS],
                    help="rows to run (default: all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mnist-dir", default=None, help="folder of the MNIST IDX files")
    ap.add_argument("--out", default=None, help="also write the tables to this file")
    args = ap.parse_args()
    lines = []
    for model, dataset in ((m, d) for m in args.models for d in args.datasets):
        lines += [f"{model} on {dataset}, seed 0, {args.threads} thread(s): held-out accuracy "
                  "(ms per training step)", "",
                  "| --norm | " + " | ".join(f"batch {b}, {epochs(dataset, b)} ep."
                                            for b in args.batches) + " |",
                  "|---|" + "---:|" * len(args.batches)]
        for name, extra in ROWS:
            if name not in args.norms:
                continue
            cells = []
            for batch in args.batches:
                t0 = time.perf_counter()
                acc, step = run_one(model, dataset, batch, name.split(",")[0], extra,
                                    epochs(dataset, batch), args.threads, args.mnist_dir)
                cells.append(f"{100 * acc:.2f}% ({1e3 * step:.2f})")
                print(f"  {model} {dataset} {name} batch {batch}: {cells[-1]} "
                      f"[{time.perf_counter() - t0:.0f} s]", file=sys.stderr, flush=True)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
