"""GroupNorm and LayerNorm forward and forward+backward: fastbn vs PyTorch.

Cases (float32): GroupNorm on (32, 64, 28, 28) with 8 and 32 groups, LayerNorm over the
last dimension of (64, 197, 384) (ViT-S/16 token rows) and (64, 196, 192).  Both
libraries run their ops with autograd: fastbn's tape (``fastbn.nn.functional``), torch's
(``torch.nn.functional``), the input, weight and bias requiring gradients; the forward
alone runs under no_grad.  Each (library, threads) configuration runs in its own process
(in one process each library's idle threads would spin on the other's cores), alternated
A B A B; the figures are medians over every repetition of every round.  Neither side calls a BLAS: the workers run with
OPENBLAS_NUM_THREADS=1, so that no idle BLAS thread pool competes for the cores.

    python benchmarks/bench_norms.py [--repeat 30] [--rounds 3] [--threads 1 2]

The floor: the least memory traffic any forward+backward has, timed with fastbn's ReLU
kernels at the same thread count: a forward that reads x and writes y, then, y kept
alive as in a tape, a backward that reads dy and y and writes dx.  Over tensors larger
than the cache no kernel is faster than that, so torch's time over the floor bounds
the ratio any implementation can reach.

Also asv benchmarks: the time of each case, and fastbn's time over torch's measured
alternately in one process.
"""
import argparse
import contextlib
import json
import os
import statistics
import time

import numpy as np

if __package__:  # imported by asv's benchmark discovery as benchmarks.bench_norms
    from . import alternate
    from . import bn_cases as bc
else:  # run as a script
    import alternate
    import bn_cases as bc

# name -> (op, input shape, groups or normalized shape)
CASES = {
    "GroupNorm (32,64,28,28) G=8": ("group", (32, 64, 28, 28), 8),
    "GroupNorm (32,64,28,28) G=32": ("group", (32, 64, 28, 28), 32),
    "LayerNorm (64,197,384)": ("layer", (64, 197, 384), (384,)),
    "LayerNorm (64,196,192)": ("layer", (64, 196, 192), (192,)),
}
OPS = ("forward", "forward+backward")
EPS = 1e-5


def _inputs(case, seed=0):
    """x, dy, weight, bias of a case, float32."""
    kind, shape, arg = CASES[case]
    rng = np.random.default_rng(seed)
    pshape = (shape[1],) if kind == "group" else arg
    return (rng.standard_normal(shape, dtype=np.float32),
            rng.standard_normal(shape, dtype=np.float32),
            rng.uniform(0.5, 1.5, pshape).astype(np.float32),
            rng.uniform(-0.5, 0.5, pshape).astype(np.float32))


def fastbn_ops(case):
    """{op: zero-argument callable} on fastbn's tape."""
    import fastbn
    import fastbn.nn.functional as F

    kind, _, arg = CASES[case]
    x, dy, w, b = _inputs(case)
    xt, wt, bt = (fastbn.Tensor(a, requires_grad=True) for a in (x, w, b))
    norm = F.group_norm if kind == "group" else F.layer_norm

    def forward():
        with fastbn.no_grad():
            return norm(xt, arg, wt, bt, EPS)

    def forward_backward():
        xt.grad = wt.grad = bt.grad = None
        norm(xt, arg, wt, bt, EPS).backward(dy)
        return xt.grad, wt.grad, bt.grad

    return {"forward": forward, "forward+backward": forward_backward}


def floor_ops(case):
    """{op: the floor's zero-argument callable} (see the module docstring)."""
    from fastbn import kernels as K

    x, dy, _, _ = _inputs(case)

    def forward_backward():
        y = K.relu_forward(x)
        return y, K.relu_backward(dy, y)

    return {"forward": lambda: K.relu_forward(x), "forward+backward": forward_backward}


def torch_ops(case):
    """{op: zero-argument callable} on torch's autograd (ImportError without torch)."""
    import torch
    import torch.nn.functional as F

    kind, _, arg = CASES[case]
    x, dy, w, b = (torch.from_numpy(a) for a in _inputs(case))
    for t in (x, w, b):
        t.requires_grad_()
    norm = F.group_norm if kind == "group" else F.layer_norm

    def forward():
        with torch.no_grad():
            return norm(x, arg, w, b, EPS)

    def forward_backward():
        x.grad = w.grad = b.grad = None
        norm(x, arg, w, b, EPS).backward(dy)
        return x.grad, w.grad, b.grad

    return {"forward": forward, "forward+backward": forward_backward}


def check_agreement(case):
    """fastbn's and torch's gradients agree (never time wrong code)."""
    ours = fastbn_ops(case)["forward+backward"]()
    theirs = torch_ops(case)["forward+backward"]()
    for name, a, b in zip(("dx", "dweight", "dbias"), ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-3, atol=2e-3,
                                   err_msg=f"{case}: {name} differs from torch's")


def _time(fn, repeat):
    for _ in range(3):  # warm-up: first calls fault in fresh pages
        fn()
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def _worker(lib, threads, repeat):
    if lib == "torch":
        import torch
        torch.set_num_threads(threads)
        make, context = torch_ops, contextlib.nullcontext()
    else:
        import fastbn
        make, context = fastbn_ops, fastbn.threads(threads)
    res = {}
    with context:
        for case in CASES:
            if lib == "torch" and threads == 1:
                check_agreement(case)
            ops = make(case)
            res[case] = {op: _time(ops[op], repeat) for op in OPS}
            if lib == "fastbn":
                floors = floor_ops(case)
                res[case].update({f"floor {op}": _time(floors[op], repeat) for op in OPS})
    print(json.dumps(res))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker[0], int(args.worker[1]), args.repeat)

    libs = alternate.libraries()
    os.environ["OPENBLAS_NUM_THREADS"] = "1"  # the workers': see the module docstring
    results = alternate.run(__file__, libs, args.threads, args.rounds,
                            ["--repeat", str(args.repeat)])
    print(f"float32, autograd on both sides; medians of {args.rounds} x {args.repeat} runs, "
          "milliseconds; ratio: torch time over fastbn time; floor: the least traffic "
          "(module docstring), and torch's time over it, the most ratio possible")
    print("| case | op | threads | fastbn ms | torch ms | ratio | floor ms | torch / floor |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    ratios, bounds = {}, {}
    for case in CASES:
        for op in OPS:
            for t in args.threads:
                f, fl = (statistics.median(results[("fastbn", t)][(case, key)])
                         for key in (op, f"floor {op}"))
                line = f"| {case} | {op} | {t} | {f * 1e3:.3f} |"
                if "torch" in libs:
                    tt = statistics.median(results[("torch", t)][(case, op)])
                    ratios.setdefault((op, t), []).append(tt / f)
                    bounds.setdefault((op, t), []).append(tt / fl)
                    line += f" {tt * 1e3:.3f} | {tt / f:.2f}x | {fl * 1e3:.3f} | {tt / fl:.2f}x |"
                else:
                    line += f" - | - | {fl * 1e3:.3f} | - |"
                print(line)
    for (op, t), r in sorted(ratios.items()):
        print(f"{op}, {t} thread(s): median ratio {statistics.median(r):.2f}x, "
              f"lowest {min(r):.2f}x; at the floor {statistics.median(bounds[op, t]):.2f}x, "
              f"lowest {min(bounds[op, t]):.2f}x")


# ---------------------------------------------------------------- asv

class _Threaded:
    params = [list(CASES), [1, 2]]
    param_names = ["case", "threads"]

    def teardown(self, case, threads):
        import fastbn
        fastbn.set_num_threads(None)


class Norms(_Threaded):
    """Median time of a GroupNorm or LayerNorm forward, and forward+backward, on fastbn's
    tape."""

    def setup(self, case, threads):
        bc.use_threads(threads)
        self.ops = fastbn_ops(case)
        for fn in self.ops.values():
            fn()

    def time_forward(self, case, threads):
        self.ops["forward"]()

    def time_forward_backward(self, case, threads):
        self.ops["forward+backward"]()


class NormsVsTorch(_Threaded):
    """fastbn's forward+backward time over torch's, alternated in one process; below 1:
    fastbn faster.  At 2 threads this favours fastbn: its team's workers spin for the
    next loop (fastbn/_parallel.h) while torch's OpenMP threads want the cores, so the
    script's separate processes give the ratio to quote."""

    unit = "fastbn/torch time"

    def setup(self, case, threads):
        if not bc.torch_available():
            raise NotImplementedError("torch is not importable")
        bc.use_threads(threads)
        self.fns = {"fastbn": fastbn_ops(case)["forward+backward"],
                    "torch": torch_ops(case)["forward+backward"]}

    def track_time_ratio(self, case, threads):
        with bc.thread_counts(threads):
            res = bc.measure(self.fns, 15)
        return res["fastbn"][0] / res["torch"][0]


if __name__ == "__main__":
    main()
