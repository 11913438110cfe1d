"""The autodiff tape: overhead per op, conv2d through the tape, one training step.

    python benchmarks/bench_tape.py [--repeat 20] [--rounds 2] [--threads 1 2]

1. Tape overhead: a chain of 100 trivial ops on a float32 array of 4 elements,
   then one backward; the figure is (forward + backward time) / 100, median of
   many short chains (short, so that a busy machine's time slices rarely land
   inside one).  ``neg`` is the trivial unary op; ``add``/``mul`` also
   accumulate into a shared leaf each op.  torch runs the same chains.
2. conv2d forward and backward through ``F.conv2d`` (tape included) for the
   small convnet's layers at batch 64, 3x3, padding 1: 1->32 on 28x28 (input
   needs no gradient, as for a network's first layer) and 32->64 on 14x14.
3. One training step (forward, backward, SGD update) of
   conv3x3(1->32)-BN-ReLU-maxpool-conv3x3(32->64)-BN-ReLU-maxpool-linear(3136->10)
   at batch 64, float32 (fastbn: BN+ReLU fused, as in the trainer's preset).

Each (library, threads) configuration of 2 and 3 runs in its own process
(fastbn and torch share one libgomp here), alternated A B A B; figures are
medians over every repetition of every round.  fastbn runs its kernels on
``fastbn.threads(n)`` and NumPy's BLAS on n threads (threadpoolctl); torch on
``torch.set_num_threads(n)``.  The 2-thread figures on a busy 2-core machine
depend heavily on how idle OpenMP threads wait: compare with
``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_tape.py`` (the workers
inherit the environment).
"""
import argparse
import json
import resource
import statistics
import time

if __package__:  # imported by asv's benchmark discovery as benchmarks.bench_tape
    from . import alternate
else:  # run as a script
    import alternate

BATCH = 64
CONV_LAYERS = [("conv 1->32 28x28", 1, 32, 28), ("conv 32->64 14x14", 32, 64, 14)]
CHAIN = 100


def _time(fn, repeat, warmup=2, clock=time.perf_counter):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t0 = clock()
        fn()
        out.append(clock() - t0)
    return out


def _time_step(res, step, repeat):
    """Times of the training step, and its minor page faults per step (fresh
    large arrays fault their pages in: see shared/docs/PERFORMANCE.md)."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    res["training step"] = _time(step, repeat)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    res["training step page faults"] = [faults / (repeat + 2)]
    # CPU time of all threads: on a shared machine, steadier than wall time at 1 thread
    res["training step CPU time"] = _time(step, repeat, warmup=0, clock=time.process_time)


# ---------------------------------------------------------------------------
# tape overhead
# ---------------------------------------------------------------------------
def _chain_times(make_leaf, ops, backward, repeat):
    """{op: (forward us/op, backward us/op, total us/op)} over `repeat` chains."""
    res = {}
    for name, op in ops.items():
        fwd, bwd, tot = [], [], []
        for r in range(repeat + 5):
            x, w = make_leaf(), make_leaf()
            t0 = time.perf_counter()
            y = x
            for _ in range(CHAIN):
                y = op(y, w)
            t1 = time.perf_counter()
            backward(y)
            t2 = time.perf_counter()
            if r >= 5:                          # warm-up chains
                fwd.append((t1 - t0) / CHAIN * 1e6)
                bwd.append((t2 - t1) / CHAIN * 1e6)
                tot.append((t2 - t0) / CHAIN * 1e6)
        res[name] = tuple(statistics.median(v) for v in (fwd, bwd, tot))
    return res


_OPS = {"neg": lambda y, w: -y, "add": lambda y, w: y + w, "mul": lambda y, w: y * w}


def _overhead_fastbn(repeat):
    import numpy as np

    import fastbn

    seed = np.ones(4, np.float32)
    res = _chain_times(lambda: fastbn.Tensor(seed.copy(), requires_grad=True), _OPS,
                       lambda y: y.backward(seed), repeat)
    with fastbn.no_grad():                      # the same chain, recording nothing
        res["neg (no_grad, forward only)"] = _chain_times(
            lambda: fastbn.Tensor(seed.copy(), requires_grad=True), {"neg": _OPS["neg"]},
            lambda y: None, repeat)["neg"]
    return res


def _overhead_torch(repeat):
    import torch

    torch.set_num_threads(1)
    seed = torch.ones(4)
    return _chain_times(lambda: seed.clone().requires_grad_(True), _OPS,
                        lambda y: y.backward(seed), repeat)


# ---------------------------------------------------------------------------
# conv2d and the training step
# ---------------------------------------------------------------------------
def _fastbn_work(threads, repeat):
    import numpy as np
    from threadpoolctl import threadpool_limits

    import fastbn
    import fastbn.nn.functional as F
    from fastbn import Tensor

    rng = np.random.default_rng(0)

    def param(*shape, fan_in=None):
        scale = np.sqrt(2.0 / fan_in) if fan_in else 1.0
        return Tensor((scale * rng.standard_normal(shape)).astype(np.float32),
                      requires_grad=True)

    res = {}
    with fastbn.threads(threads), threadpool_limits(threads, user_api="blas"):
        for name, cin, cout, hw in CONV_LAYERS:
            x = Tensor(rng.standard_normal((BATCH, cin, hw, hw), dtype=np.float32),
                       requires_grad=cin > 1)
            w, b = param(cout, cin, 3, 3, fan_in=9 * cin), param(cout)
            dy = rng.standard_normal((BATCH, cout, hw, hw), dtype=np.float32)
            y = None

            def forward():
                nonlocal y
                y = F.conv2d(x, w, b, padding=1)

            def backward():
                forward()                       # untimed below: backward frees the graph
                t0 = time.perf_counter()
                y.backward(dy)
                return time.perf_counter() - t0

            res[name] = {"forward": _time(forward, repeat),
                         "backward": [backward() for _ in range(repeat)]}

        w1, b1, g1, be1 = param(32, 1, 3, 3, fan_in=9), param(32), param(32), param(32)
        w2, b2, g2, be2 = param(64, 32, 3, 3, fan_in=288), param(64), param(64), param(64)
        lw, lb = param(10, 3136, fan_in=3136), param(10)
        params = [w1, b1, g1, be1, w2, b2, g2, be2, lw, lb]
        for p in (g1, g2):
            p.data[:] = 1.0
        stats = [np.zeros(32, np.float32), np.ones(32, np.float32),
                 np.zeros(64, np.float32), np.ones(64, np.float32)]
        x = Tensor(rng.standard_normal((BATCH, 1, 28, 28), dtype=np.float32))
        t = rng.integers(0, 10, BATCH)

        def step():
            h = F.conv2d(x, w1, b1, padding=1)
            h = F.max_pool2d(F.batch_norm_relu(h, stats[0], stats[1], g1, be1, True), 2)
            h = F.conv2d(h, w2, b2, padding=1)
            h = F.max_pool2d(F.batch_norm_relu(h, stats[2], stats[3], g2, be2, True), 2)
            loss = F.cross_entropy(F.linear(F.flatten(h), lw, lb), t)
            loss.backward()
            for p in params:
                p.data -= 0.01 * p.grad
                p.grad = None
            return loss

        _time_step(res, step, repeat)
    return res


def _torch_work(threads, repeat):
    import torch
    import torch.nn as nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    res = {}
    for name, cin, cout, hw in CONV_LAYERS:
        x = torch.randn(BATCH, cin, hw, hw, requires_grad=cin > 1)
        conv = nn.Conv2d(cin, cout, 3, padding=1)
        dy = torch.randn(BATCH, cout, hw, hw)
        y = None

        def forward():
            nonlocal y
            y = conv(x)

        def backward():
            forward()
            t0 = time.perf_counter()
            y.backward(dy)
            return time.perf_counter() - t0

        res[name] = {"forward": _time(forward, repeat),
                     "backward": [backward() for _ in range(repeat)]}

    model = nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(3136, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x = torch.randn(BATCH, 1, 28, 28)
    t = torch.randint(0, 10, (BATCH,))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), t)
        loss.backward()
        opt.step()
        return loss

    _time_step(res, step, repeat)
    return res


_WORKERS = {"fastbn": _fastbn_work, "torch": _torch_work}


def _worker(lib, threads, repeat):
    print(json.dumps(_WORKERS[lib](threads, repeat)))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--chains", type=int, default=300, help="chains for the tape overhead")
    ap.add_argument("--worker", nargs=2, metavar=("LIB", "THREADS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker[0], int(args.worker[1]), args.repeat)

    libs = alternate.libraries()

    print(f"== tape overhead: chains of {CHAIN} ops on float32[4], us per op "
          f"(median of {args.chains} chains)")
    print(f"{'':8}{'op':30}{'forward':>10}{'backward':>10}{'total':>10}")
    for lib, fn in (("fastbn", _overhead_fastbn), ("torch", _overhead_torch)):
        if lib in libs:
            for op, (f, b, t) in fn(args.chains).items():
                print(f"{lib:8}{op:30}{f:10.2f}{b:10.2f}{t:10.2f}")

    results = alternate.run(__file__, libs, args.threads, args.rounds,
                            ["--repeat", str(args.repeat)])

    print(f"\n== conv2d through the tape and one training step, batch {BATCH}, float32: "
          f"median ms over {args.rounds} x {args.repeat} runs (page faults: per step)")
    rows = sorted({k for r in results.values() for k in r})
    header = "".join(f"{lib + ' x' + str(t):>14}" for t in args.threads for lib in libs)
    print(f"{'':34}{header}")
    for key in rows:
        cells = []
        for t in args.threads:
            for lib in libs:
                v = results.get((lib, t), {}).get(key)
                scale = 1 if "faults" in key[-1] else 1e3       # counts, or seconds -> ms
                cells.append(f"{statistics.median(v) * scale:14.2f}" if v else f"{'-':>14}")
        print(f"{' '.join(key):34}{''.join(cells)}")


if __name__ == "__main__":
    main()
