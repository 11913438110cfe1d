"""conv2d forward and backward of the small convnet's layers: fastbn vs PyTorch.

Layers (batch 64, float32, 3x3, padding 1): 1->32 channels on 28x28 and 32->64
channels on 14x14.  Each (library, threads) configuration runs in its own
process (fastbn and torch share one libgomp here), alternated A B A B; the
figures are medians over every repetition of every round.

    python benchmarks/bench_conv.py [--repeat 20] [--rounds 2] [--threads 1 2]

fastbn runs its kernels on ``fastbn.threads(n)`` (the first layer by im2col,
the second by Winograd F(2x2, 3x3)); torch runs on ``torch.set_num_threads(n)``.
GFLOP/s count a direct convolution's multiply-adds, whatever the algorithm.
"""
import argparse
import json
import statistics
import time

if __package__:  # imported by asv's benchmark discovery as benchmarks.bench_conv
    from . import alternate
else:  # run as a script
    import alternate

LAYERS = [("conv 1->32 28x28", 1, 32, 28), ("conv 32->64 14x14", 32, 64, 14)]
BATCH = 64


def _flops(cin, cout, hw):
    return 2.0 * BATCH * cout * cin * 9 * hw * hw  # a direct convolution's (one pass)


def _time(fn, repeat):
    """[(wall, cpu)] seconds per call.  CPU time (all threads of the process) is
    the steadier figure on a shared machine; at 1 thread it bounds the wall time."""
    fn()
    fn()  # warm-up: first calls fault in fresh pages
    out = []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def _run_fastbn(threads, repeat):
    import numpy as np
    from threadpoolctl import threadpool_limits

    import fastbn
    from fastbn import kernels as K

    rng = np.random.default_rng(0)
    res = {}
    with fastbn.threads(threads), threadpool_limits(threads, user_api="blas"):
        for name, cin, cout, hw in LAYERS:
            x = rng.standard_normal((BATCH, cin, hw, hw), dtype=np.float32)
            w = rng.standard_normal((cout, cin, 3, 3), dtype=np.float32)
            b = rng.standard_normal(cout, dtype=np.float32)
            y, cols = K.conv2d_forward(x, w, b, padding=1)
            dy = rng.standard_normal(y.shape, dtype=np.float32)
            res[name] = {
                "forward": _time(lambda: K.conv2d_forward(x, w, b, padding=1), repeat),
                "backward": _time(lambda: K.conv2d_backward(dy, x, w, cols, padding=1,
                                                           need_input=cin > 1), repeat),
            }
    return res


def _run_torch(threads, repeat):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    res = {}
    for name, cin, cout, hw in LAYERS:
        x = torch.randn((BATCH, cin, hw, hw), generator=g, requires_grad=cin > 1)
        w = torch.randn((cout, cin, 3, 3), generator=g, requires_grad=True)
        b = torch.randn(cout, generator=g, requires_grad=True)
        with torch.no_grad():
            fwd = _time(lambda: F.conv2d(x, w, b, padding=1), repeat)
        y = F.conv2d(x, w, b, padding=1)
        dy = torch.randn(y.shape, generator=g)

        def backward():  # autograd on a recorded forward; the forward itself is not timed
            out = F.conv2d(x, w, b, padding=1)
            t0, c0 = time.perf_counter(), time.process_time()
            out.backward(dy)
            return time.perf_counter() - t0, time.process_time() - c0

        backward()
        backward()
        res[name] = {"forward": fwd, "backward": [backward() for _ in range(repeat)]}
    return res


def _worker(lib, threads, repeat):
    run = _run_fastbn if lib == "fastbn" else _run_torch
    print(json.dumps(run(threads, repeat)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker[0], int(args.worker[1]), args.repeat)

    libs = alternate.libraries()
    results = alternate.run(__file__, libs, args.threads, args.rounds,
                            ["--repeat", str(args.repeat)])
    print(f"batch {BATCH}, float32, 3x3, padding 1; medians of {args.rounds} x {args.repeat} "
          "runs (backward: dx (not for the first layer), dweight, dbias)")
    print("wall and CPU milliseconds; GFLOP/s of fastbn's wall time (direct-convolution count)")
    print(f"{'layer':<20}{'pass':<10}{'threads':>8}{'fastbn':>9}{'(cpu)':>8}{'GFLOP/s':>9}"
          f"{'torch':>9}{'(cpu)':>8}{'torch/fastbn':>14}")
    for name, cin, cout, hw in LAYERS:
        for p in ("forward", "backward"):
            gemms = 1 if p == "forward" else (1 if cin == 1 else 2)
            for t in args.threads:
                runs = results[("fastbn", t)][(name, p)]
                f, fc = (statistics.median(r[i] for r in runs) for i in (0, 1))
                line = (f"{name:<20}{p:<10}{t:>8}{f * 1e3:>9.3f}{fc * 1e3:>8.3f}"
                        f"{gemms * _flops(cin, cout, hw) / f / 1e9:>9.1f}")
                if "torch" in libs:
                    runs = results[("torch", t)][(name, p)]
                    tt, tc = (statistics.median(r[i] for r in runs) for i in (0, 1))
                    line += f"{tt * 1e3:>9.3f}{tc * 1e3:>8.3f}{tt / f:>14.2f}"
                print(line)


if __name__ == "__main__":
    main()
