"""Head-to-head Batch Normalization timings: fastbn vs NumPy vs PyTorch, one process.

For each shape (float32) and thread count, times training forward, training
forward+backward and inference forward of fastbn.kernels, a plain float32
NumPy version and (when importable) torch.nn.functional.batch_norm with
autograd, plus a streaming copy of the same size.  Implementations and
thread counts are alternated (A B C A B C ...) so drift hits all alike;
medians of --repeat runs after a warm-up.  Bandwidth is the op's minimum
traffic (passes x bytes) per second as a fraction of the same-run copy's rate
at the same thread count.

Caches: ``--cache warm`` (default) gives each implementation a turn of
untimed calls for a millisecond (one at least), then times 4 calls, the
steady state of a training step, where a layer reads data its neighbours
just wrote; ``--cache cold`` times every call
right after the other implementations ran, which evicts the L3: the tensors
come from DRAM, whose rate 2 cores hardly raise above 1's.

    python benchmarks/compare.py --out bench.md
    python benchmarks/compare.py --quick --threads 1 --shapes 64,16,32,32 256,1024
"""
import argparse
import os
import platform
import subprocess
import sys
import time

import numpy as np

if __package__:  # imported by asv's benchmark discovery as benchmarks.compare
    from . import bn_cases as bc
else:  # run as a script
    import bn_cases as bc

import fastbn
from fastbn._io import atomic_write

IMPLS = ("fastbn", "numpy", "torch")


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"


def machine_description(use_torch):
    parts = [f"{cpu_model()}, {os.cpu_count()} logical CPUs", f"Python {platform.python_version()}",
             f"NumPy {np.__version__}", f"fastbn {fastbn.__version__}"]
    if use_torch:
        import torch

        parts.append(f"PyTorch {torch.__version__}")
    return "; ".join(parts)


def run(shapes, threads_list, repeat, warmup, use_torch, cache="warm", log=sys.stderr):
    """List of result dicts, one per (threads, shape, op).  Implementations and
    thread counts alternate within each (shape, op) measurement."""
    rows = []
    for shape in shapes:
        t0 = time.perf_counter()
        inp = bc.Inputs(shape, "float32")
        bc.check_agreement(inp, use_torch)
        impls = {"fastbn": bc.fastbn_ops(inp), "numpy": bc.numpy_ops(inp)}
        if use_torch:
            impls["torch"] = bc.torch_ops(inp)
        copies = {n: bc.StreamingCopy(inp.x, n) for n in threads_list}
        try:
            for op in bc.OPS:
                fns = {(name, n): ops[op] for n in threads_list for name, ops in impls.items()}
                fns.update({("copy", n): copies[n] for n in threads_list})
                res = bc.measure(fns, repeat, warmup, threads={k: k[1] for k in fns},
                                 block=bc.CACHE_BLOCKS[cache])
                rows += [{"threads": n, "shape": shape, "op": op, "nbytes": inp.nbytes,
                          **{name: res[name, n] for name in [*impls, "copy"]}}
                         for n in threads_list]
        finally:
            for copy in copies.values():
                copy.close()
        print(f"  {shape}: {time.perf_counter() - t0:.1f} s", file=log, flush=True)
    rows.sort(key=lambda r: r["threads"])  # stable: shapes and ops keep their order
    return rows


def _ms(entry):
    return "-" if entry is None else f"{entry[0] * 1e3:.3f}"


def _ratio(a, b):
    return "-" if a is None or b is None else f"{b[0] / a[0]:.2f}x"


def _shape(shape):
    return "(" + ",".join(map(str, shape)) + ")"


def efficiency(row):
    return bc.bandwidth_efficiency(row["op"], row["fastbn"][0], row["nbytes"], row["copy"][0])


def speedups(rows, nthreads, op, other="torch"):
    return [r[other][0] / r["fastbn"][0] for r in rows
            if r["threads"] == nthreads and r["op"] == op and r.get(other)]


def format_report(rows, args, header):
    warm = bc.CACHE_BLOCKS["warm"]
    threads_list = sorted({r["threads"] for r in rows})
    lines = [f"Machine: {header}", "",
             "Load average (1 min) before / after: "
             f"{args.load_before:.2f} / {os.getloadavg()[0]:.2f} (other processes compete "
             "for the cores above 0; 2-thread OpenMP timings suffer first). "
             f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}", "",
             f"Command: `{args.command_line}`", "",
             f"float32, median of {args.repeat} runs after {args.warmup} warm-up turns, "
             "implementations and thread counts alternated; caches "
             + (f"warm (turns of untimed calls for {bc.WARM_UP_S * 1e3:g} ms, one at least, "
                f"then {warm - 1} timed). "
                if args.cache == "warm" else
                "cold (every call timed right after the other implementations ran). ")
             + "`x numpy`/`x torch`: that "
             "implementation's time over fastbn's (above 1: fastbn faster). `% copy`: "
             "fastbn's minimum traffic per second over a same-run np.copyto of the same "
             "size on as many threads. Faults: minor page faults per call (fastbn / torch).",
             ""]
    for nthreads in threads_list:
        lines += [f"### {nthreads} thread{'s' if nthreads > 1 else ''}", "",
                  "| shape | op | fastbn ms | numpy ms | torch ms | x numpy | x torch "
                  "| fastbn GB/s | % copy | faults |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["threads"] == nthreads):
            gbs = bc.PASSES[r["op"]] * r["nbytes"] / r["fastbn"][0] / 1e9
            faults = f"{r['fastbn'][1]:.0f}" + (f" / {r['torch'][1]:.0f}" if r.get("torch") else "")
            lines.append(
                f"| {_shape(r['shape'])} | {bc.OP_TITLES[r['op']]} | {_ms(r['fastbn'])} "
                f"| {_ms(r['numpy'])} | {_ms(r.get('torch'))} | {_ratio(r['fastbn'], r['numpy'])} "
                f"| {_ratio(r['fastbn'], r.get('torch'))} | {gbs:.1f} | {efficiency(r):.0%} "
                f"| {faults} |")
        lines.append("")
    if len(threads_list) > 1:
        lo, hi = threads_list[0], threads_list[-1]
        lines += [f"### Thread scaling: fastbn time at {lo} over time at {hi} threads", "",
                  "| shape | " + " | ".join(bc.OP_TITLES[o] for o in bc.OPS) + " |",
                  "|---|" + "---:|" * len(bc.OPS)]
        by_key = {(r["threads"], r["shape"], r["op"]): r for r in rows}
        for shape in dict.fromkeys(r["shape"] for r in rows):
            t = {n: [by_key[n, shape, op]["fastbn"][0] for op in bc.OPS] for n in (lo, hi)}
            cells = [f"{a / b:.2f}x" for a, b in zip(t[lo], t[hi])]
            lines.append(f"| {_shape(shape)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append(summary(rows))
    return "\n".join(lines) + "\n"


def summary(rows):
    """Median (and worst) fastbn/torch speed-up over shapes, per op and thread count."""
    other = "torch" if any(r.get("torch") for r in rows) else "numpy"
    parts = []
    for nthreads in sorted({r["threads"] for r in rows}):
        for op in bc.OPS:
            s = speedups(rows, nthreads, op, other)
            parts.append(f"{bc.OP_TITLES[op]} @{nthreads}T {np.median(s):.2f}x "
                         f"(min {min(s):.2f}x)")
    return f"**Summary** (median fastbn speed-up over {other}, over shapes): " + "; ".join(parts)


def build_parser():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=100, help="timed runs per measurement (100)")
    p.add_argument("--warmup", type=int, default=None,
                   help="untimed runs first (default: repeat // 10, at least 3)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts, each set explicitly for fastbn and torch (1 2)")
    p.add_argument("--shapes", type=bc.parse_shape, nargs="+", default=bc.SHAPES,
                   help="shapes as N,C[,H,W] (default: the issue's seven shapes)")
    p.add_argument("--quick", action="store_true", help="15 repeats, 2 warm-up runs")
    p.add_argument("--cache", choices=sorted(bc.CACHE_BLOCKS), default="warm",
                   help="warm: turns of back-to-back calls (default); cold: one call per turn")
    p.add_argument("--no-torch", action="store_true", help="do not import torch")
    p.add_argument("--out", help="also write the markdown report to this file")
    return p


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quick:
        args.repeat, args.warmup = 15, 2
    if args.repeat < 1 or min(args.threads) < 1:
        parser.error("--repeat and --threads must be positive")
    if args.warmup is None:
        args.warmup = max(3, args.repeat // 10)
    args.command_line = " ".join(["python", "benchmarks/compare.py"] +
                                 (sys.argv[1:] if argv is None else list(argv)))
    use_torch = not args.no_torch and bc.torch_available()
    header = machine_description(use_torch)
    print(f"{header}\n", file=sys.stderr)
    args.load_before = os.getloadavg()[0]
    rows = run(args.shapes, args.threads, args.repeat, args.warmup, use_torch, args.cache)
    report = format_report(rows, args, header)
    print(report)
    if args.out:
        with atomic_write(args.out, "w") as f:
            f.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
