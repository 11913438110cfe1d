"""Kernels and training steps while other processes compete for the cores.

    python benchmarks/contention.py [--rounds 3] [--repeat 60] [--alternations 2]
                                    [--competitors 0 1 2] [--threads 1 2] [--json PATH]
                                    [--baseline OTHER_SOURCE_TREE] [--no-torch]

For each round and each K in --competitors (default 0, 1 and the number of
cores this process may run on), K busy-loop processes start (fresh ones each
round); they are stopped when the K's measurements end, also on Ctrl-C or an
error, and each one exits by itself when this script dies.  Meanwhile a child
process for fastbn, one for PyTorch (when importable; the two share one
libgomp in a process) and, with --baseline, one for fastbn from another source
tree (main, say, built in place), in turn, time every case:

- BatchNorm training forward+backward on the benchmark shapes (bn_cases.py),
  through fastbn.kernels / torch.nn.functional.batch_norm with autograd;
- conv2d forward+backward of the convnet's two layers (batch 64, 3x3, pad 1);
- ReLU forward+backward on the convnet's first activation (64, 32, 28, 28);
- one SGD training step of the trainer's presets (fastbn/train.py): the
  convnet on MNIST-sized (28x28) and on the embedded digits' (8x8) images,
  and the MLP on MNIST-sized input, batch 64; torch runs the same nets
  (BatchNorm then ReLU where fastbn fuses them).

Each process runs one library at one thread count (so that a thread count's
idle workers, which spin for a few milliseconds, never run beside another's
calls), --alternations times in turn (fastbn 1T, torch 1T, fastbn NT, torch
NT, fastbn 1T, ...: the competitors' placement on the cores, which sets how
much CPU a thread gets, changes between processes).  Every call is timed, in
turns of --block calls (and 2 ms of calls at least, so that short calls have
many samples) that alternate the cases.  Printed: the median and p90 of each,
in milliseconds, over all rounds; for each round the worst (over the cases)
ratio of fastbn's N-thread median and p90 to its 1-thread ones, and the load
other processes put on the machine meanwhile (it is shared).

asv (class Contention) tracks those ratios with one busy process per core.
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

if __package__:  # imported by asv's benchmark discovery as benchmarks.contention
    from . import alternate
    from . import bn_cases as bc
else:  # run as a script
    import alternate
    import bn_cases as bc

CONV_LAYERS = [(1, 32, 28), (32, 64, 14)]  # (in, out channels, height = width), batch 64
RELU_SHAPE = (64, 32, 28, 28)
BATCH = 64
STEPS = {"convnet 28x28": ("convnet", (1, 28, 28)), "convnet 8x8": ("convnet", (1, 8, 8)),
         "mlp 784": ("mlp", (1, 28, 28))}
# busy loop of a competitor; it exits when its parent (this script) is gone
_BUSY = ("import os, sys\nparent = int(sys.argv[1])\nwhile os.getppid() == parent:\n"
         "    for _ in range(1 << 20):\n        pass\n")


def _machine_cpu():
    """CPU seconds the whole machine spent busy so far (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _children_cpu():
    import resource

    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


@contextlib.contextmanager
def foreign_load(out):
    """out[0] = the cores, on average, that processes other than this script and
    its children (workers, competitors) kept busy while the block ran: on a
    shared machine, whether other jobs disturbed a measurement (None off Linux)."""
    t0, m0, c0 = time.perf_counter(), _machine_cpu(), _children_cpu()
    yield out
    m1 = _machine_cpu()
    if m0 is not None and m1 is not None:
        out[0] = max((m1 - m0) - (_children_cpu() - c0), 0.0) / (time.perf_counter() - t0)


def cores():
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def competitors(k):
    """k busy-loop processes, running while the block runs."""
    procs = []
    try:
        for _ in range(k):
            # a session of their own: a Ctrl-C at the terminal reaches this script only
            procs.append(subprocess.Popen([sys.executable, "-c", _BUSY, str(os.getpid())],
                                          stdin=subprocess.DEVNULL, start_new_session=True))
        time.sleep(0.2 if k else 0)  # let them start spinning
        yield procs
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# ---------------------------------------------------------------- cases

def _fastbn_cases():
    """{case name: zero-argument callable} through fastbn."""
    import fastbn.nn as nn
    from fastbn import Tensor, kernels as K, optim, train

    rng = np.random.default_rng(0)
    cases = {}
    for shape in bc.SHAPES:
        cases["bn " + "x".join(map(str, shape))] = bc.fastbn_ops(bc.Inputs(shape))["train_fwd_bwd"]
    for cin, cout, hw in CONV_LAYERS:
        x = rng.standard_normal((BATCH, cin, hw, hw), dtype=np.float32)
        w = rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * 0.1
        b = np.zeros(cout, np.float32)
        dy = rng.standard_normal((BATCH, cout, hw, hw), dtype=np.float32)

        def conv(x=x, w=w, b=b, dy=dy, need_input=cin > 1):
            _, cols = K.conv2d_forward(x, w, b, padding=1)
            return K.conv2d_backward(dy, x, w, cols, padding=1, need_input=need_input)

        cases[f"conv {cin}->{cout} {hw}x{hw}"] = conv
    x = rng.standard_normal(RELU_SHAPE, dtype=np.float32)
    dy = rng.standard_normal(RELU_SHAPE, dtype=np.float32)
    cases["relu " + "x".join(map(str, RELU_SHAPE))] = (
        lambda: K.relu_backward(dy, K.relu_forward(x)))
    for name, (preset, image) in STEPS.items():
        model = train.PRESETS[preset](image)
        model.train()
        opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xs = Tensor(rng.standard_normal((BATCH,) + image, dtype=np.float32))
        ys = rng.integers(0, 10, BATCH)
        cases["step " + name] = _step(model, nn.CrossEntropyLoss(), opt, xs, ys)
    return cases


def _step(model, loss_fn, opt, x, y):
    def step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def _torch_preset(nn, preset, image):
    """train.py's preset in torch: BatchNorm then ReLU where fastbn fuses them."""
    if preset == "convnet":
        layers = []
        for cin, cout in ((image[0], 32), (32, 64)):
            layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(), nn.MaxPool2d(2)]
        return nn.Sequential(*layers, nn.Flatten(),
                             nn.Linear(64 * (image[1] // 4) * (image[2] // 4), 10))
    layers, features = [nn.Flatten()], int(np.prod(image))
    for _ in range(2):
        layers += [nn.Linear(features, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU()]
        features = 256
    return nn.Sequential(*layers, nn.Linear(features, 10))


def _torch_cases():
    """The same cases in PyTorch (autograd for every backward)."""
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    cases = {}
    for shape in bc.SHAPES:
        cases["bn " + "x".join(map(str, shape))] = bc.torch_ops(bc.Inputs(shape))["train_fwd_bwd"]
    for cin, cout, hw in CONV_LAYERS:
        x = torch.from_numpy(rng.standard_normal((BATCH, cin, hw, hw), dtype=np.float32))
        x.requires_grad_(cin > 1)
        w = torch.from_numpy(rng.standard_normal((cout, cin, 3, 3), dtype=np.float32) * 0.1)
        b = torch.zeros(cout)
        w.requires_grad_()
        b.requires_grad_()
        dy = torch.from_numpy(rng.standard_normal((BATCH, cout, hw, hw), dtype=np.float32))

        def conv(x=x, w=w, b=b, dy=dy):
            x.grad = w.grad = b.grad = None
            F.conv2d(x, w, b, padding=1).backward(dy)

        cases[f"conv {cin}->{cout} {hw}x{hw}"] = conv
    x = torch.from_numpy(rng.standard_normal(RELU_SHAPE, dtype=np.float32)).requires_grad_()
    dy = torch.from_numpy(rng.standard_normal(RELU_SHAPE, dtype=np.float32))

    def relu():
        x.grad = None
        F.relu(x).backward(dy)

    cases["relu " + "x".join(map(str, RELU_SHAPE))] = relu
    for name, (preset, image) in STEPS.items():
        model = _torch_preset(torch.nn, preset, image)
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        xs = torch.from_numpy(rng.standard_normal((BATCH,) + image, dtype=np.float32))
        ys = torch.from_numpy(rng.integers(0, 10, BATCH))
        cases["step " + name] = _step(model, torch.nn.CrossEntropyLoss(), opt, xs, ys)
    return cases


def measure_cases(cases, repeat, block, threads, set_threads, warmup=2, turn_s=2e-3):
    """{thread count: {name: [seconds of each timed call]}}: turns of each case at
    each thread count (A1 AN B1 BN ...; set_threads(n) switches), each turn
    `block` calls and at least `turn_s` seconds of them, until each has `repeat`
    timed calls, after `warmup` untimed rounds of turns; GC off."""
    import gc

    times = {t: {name: [] for name in cases} for t in threads}
    gc.collect()
    gc.disable()
    try:
        turn = 0
        while min(len(v) for per in times.values() for v in per.values()) < repeat:
            for name, fn in cases.items():
                for t in threads:
                    set_threads(t)
                    end, calls = time.perf_counter() + turn_s, 0
                    while calls < block or time.perf_counter() < end:
                        t0 = time.perf_counter()
                        fn()
                        dt = time.perf_counter() - t0
                        calls += 1
                        if turn >= warmup:
                            times[t][name].append(dt)
            turn += 1
    finally:
        gc.enable()
    return times


def _worker(lib, threads, repeat, block, only):
    if lib == "torch":
        import torch

        cases = _torch_cases()
        set_threads = torch.set_num_threads
    else:
        import fastbn
        from threadpoolctl import ThreadpoolController

        cases = _fastbn_cases()
        blas = ThreadpoolController().select(user_api="blas")

        def set_threads(n):  # fastbn's kernels, and NumPy's BLAS as the trainer sets it
            fastbn.set_num_threads(n)
            blas.limit(limits=n)

    if only:
        cases = {k: v for k, v in cases.items() if any(s in k for s in only)}
    times = measure_cases(cases, repeat, block, threads, set_threads)
    team = None
    if lib == "fastbn":
        try:
            from fastbn import _parallel
        except ImportError:  # a build before the thread team: no counters
            pass
        else:
            team = _parallel.stats()
    print(json.dumps({"times": times, "team": team}))


def _merge(acc, res):
    for key, per in res.items():
        for case, v in per.items():
            acc.setdefault(key, {}).setdefault(case, []).extend(v)


def _run_worker(lib, threads, args):
    """{(lib, t): {case: [seconds]}} from a child process, or {} if it failed;
    lib "baseline" is fastbn imported from args.baseline."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = ([args.baseline] if lib == "baseline" else []) + sys.path + [root]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(path))
    cmd = [sys.executable, __file__, "--worker", "fastbn" if lib == "baseline" else lib,
           "--threads", *map(str, threads),
           "--repeat", str(-(-args.repeat // args.alternations)), "--block", str(args.block)]
    if args.only:
        cmd += ["--only", *args.only]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        print(f"[{lib} worker failed]\n{out.stderr[-2000:]}", file=sys.stderr)
        return {}
    res = json.loads(out.stdout.splitlines()[-1])
    got = {(lib, int(t)): {(case,): v for case, v in per.items()}
           for t, per in res["times"].items()}
    if res["team"]:  # fastbn's team counters (fastbn._parallel.stats), as pseudo-cases
        for t in threads:
            got[lib, t].update({("team", k): [v] for k, v in res["team"].items()})
    return got


# ---------------------------------------------------------------- report

def _stats(times):
    """(median, p90) of a list of seconds."""
    return statistics.median(times), float(np.percentile(times, 90))


def _cell(times):
    if not times:
        return "-"
    m, p = _stats(times)
    return f"{m * 1e3:.3f} ({p * 1e3:.3f})"


def report(results, rounds, ks, threads, foreign, out=sys.stdout):
    """Print the tables; results[(round, k)][(lib, t)][(case,)] = seconds,
    foreign[(round, k)] the other processes' load meanwhile (foreign_load)."""
    libs = sorted({lib for r in results.values() for lib, _ in r},
                  key=["fastbn", "baseline", "torch"].index)
    cases = [c for c in next(iter(results[0, ks[0]].values())) if c[0] != "team"]
    cols = [(lib, t) for lib in libs for t in threads]
    vs = [t for t in threads if "baseline" in libs]  # fastbn / baseline median columns
    lo, hi = min(threads), max(threads)
    for k in ks:
        print(f"\n{k} competing busy process(es); ms, median (p90) over {rounds} round(s)\n",
              file=out)
        print("| case | " + " | ".join(f"{lib} {t}T" for lib, t in cols)
              + "".join(f" | fastbn/baseline {t}T" for t in vs)
              + f" | fastbn {hi}T/{lo}T median, p90 (worst round) |", file=out)
        print("|---" * (len(cols) + len(vs) + 2) + "|", file=out)
        for case in cases:
            row = []
            per = {col: [v for r in range(rounds)
                         for v in results[r, k].get(col, {}).get(case, [])] for col in cols}
            for col in cols:
                row.append(_cell(per[col]))
            for t in vs:
                a, b = per["fastbn", t], per["baseline", t]
                row.append(f"{statistics.median(a) / statistics.median(b):.3f}"
                           if a and b else "-")
            worst = [0.0, 0.0]
            for r in range(rounds):
                a, b = (results[r, k].get(("fastbn", t), {}).get(case) for t in (lo, hi))
                if a and b:
                    (ma, pa), (mb, pb) = _stats(a), _stats(b)
                    worst = [max(worst[0], mb / ma), max(worst[1], pb / pa)]
            print(f"| {case[0]} | " + " | ".join(row)
                  + f" | {worst[0]:.2f}, {worst[1]:.2f} |", file=out)
    print(file=out)
    for k in ks:
        for r in range(rounds):
            ratios = []
            for case in cases:
                a, b = (results[r, k].get(("fastbn", t), {}).get(case) for t in (lo, hi))
                if a and b:
                    (ma, pa), (mb, pb) = _stats(a), _stats(b)
                    ratios.append((mb / ma, pb / pa, case[0]))
            if ratios:
                m, p = max(ratios), max(ratios, key=lambda v: v[1])
                team = {c[1]: sum(v) for c, v in results[r, k].get(("fastbn", hi), {}).items()
                        if c[0] == "team"}
                if team.get("invited"):
                    print(f"K={k} round {r + 1}: fastbn {hi}T's workers joined "
                          f"{1 - team['withdrawn'] / team['invited']:.0%} of "
                          f"{team['invited']} invitations; backoffs "
                          + ", ".join(f"{key[8:]} {v}" for key, v in team.items()
                                      if key.startswith("backoff_")), file=out)
                load = foreign[r, k]
                print(f"K={k} round {r + 1}: fastbn {hi}T/{lo}T worst median ratio {m[0]:.2f} "
                      f"({m[2]}), worst p90 ratio {p[1]:.2f} ({p[2]}); other processes' load "
                      + ("unknown" if load is None else f"{load:.2f} cores"), file=out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=60,
                    help="timed calls per case at least (default 60)")
    ap.add_argument("--alternations", type=int, default=2,
                    help="processes per library and thread count in each round and K, "
                         "in turn (default 2)")
    ap.add_argument("--block", type=int, default=2,
                    help="calls per turn at least (and 2 ms of them; default 2)")
    ap.add_argument("--competitors", type=int, nargs="+", default=None,
                    help="numbers of busy processes (default: 0, 1 and the number of cores)")
    ap.add_argument("--threads", type=int, nargs="+", default=None,
                    help="thread counts (default: 1 and the number of cores)")
    ap.add_argument("--only", nargs="+", default=None,
                    help="run only the cases whose names contain one of these strings")
    ap.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    ap.add_argument("--baseline", metavar="PATH",
                    help="also time fastbn from this source tree (built in place: another "
                         "commit), alternating with the others")
    ap.add_argument("--json", metavar="PATH", help="also write every measurement here")
    ap.add_argument("--worker", metavar="LIB", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker, args.threads, args.repeat, args.block, args.only)

    n = cores()
    ks = args.competitors if args.competitors is not None else sorted({0, 1, n})
    threads = args.threads or sorted({1, n})
    libs = ["fastbn"] if args.no_torch else alternate.libraries()
    if args.baseline:
        libs.insert(1, "baseline")
    print(f"{n} cores; competitors {ks}; threads {threads}; {', '.join(libs)}; "
          f"{args.rounds} round(s) of {args.repeat} calls per case", flush=True)
    results, foreign = {}, {}
    for r in range(args.rounds):
        for k in ks:
            with foreign_load([None]) as load:
                with competitors(k):
                    results[r, k] = {}
                    for _ in range(args.alternations):
                        for t in threads:
                            for lib in libs:
                                _merge(results[r, k], _run_worker(lib, [t], args))
            foreign[r, k] = load[0]
            print(f"round {r + 1}, {k} competitor(s) done", file=sys.stderr, flush=True)
    report(results, args.rounds, ks, threads, foreign)
    if args.json:
        from fastbn._io import atomic_write

        rows = [{"round": r + 1, "competitors": k, "lib": lib, "threads": t,
                 "case": " ".join(case), "foreign_load": foreign[r, k],
                 "counts" if case[0] == "team" else "seconds": v}
                for (r, k), res in results.items() for (lib, t), cases in res.items()
                for case, v in cases.items()]
        with atomic_write(args.json, "w") as f:
            json.dump(rows, f)


# ---------------------------------------------------------------- asv

class Contention:
    """fastbn's time at its thread count (OMP_NUM_THREADS, asv.conf.json's
    matrix) over its 1-thread time, each the median or p90 of calls alternated
    in one process, with one busy process per core (started in setup, stopped
    in teardown).  Below 1: the threads still help; 1.5 (median) and 3 (p90)
    are the bounds kept."""

    params = [["bn 64x64x16x16", "step convnet 28x28"]]
    param_names = ["case"]
    unit = "ratio"
    repeat = 1
    number = 1
    timeout = 180
    TURNS = 6  # of 4 calls at each thread count, after one untimed

    def setup(self, case):
        import fastbn

        self.threads = fastbn.get_num_threads()
        if self.threads < 2:
            raise NotImplementedError("one thread (OMP_NUM_THREADS=1): nothing to compare")
        self.fn = _fastbn_cases()[case]
        self.busy = competitors(cores())
        self.busy.__enter__()

    def teardown(self, case):
        busy = getattr(self, "busy", None)  # asv tears down a skipped setup too
        if busy is not None:
            busy.__exit__(None, None, None)

    def _ratios(self):
        import fastbn

        times = measure_cases({"case": self.fn}, 4 * self.TURNS, 4, [1, self.threads],
                           fastbn.set_num_threads, warmup=1, turn_s=0)
        fastbn.set_num_threads(None)
        (m1, p1), (mn, pn) = _stats(times[1]["case"]), _stats(times[self.threads]["case"])
        return mn / m1, pn / p1

    def track_median_ratio(self, case):
        return self._ratios()[0]

    def track_p90_ratio(self, case):
        return self._ratios()[1]


if __name__ == "__main__":
    main()
