"""Where a training step of the real nets goes, in fastbn and in PyTorch.

    python benchmarks/profile_nets.py [--models resnet20 inception] [--threads 1]
                                      [--steps 10] [--no-torch]

Each library runs in its own process (they share one libgomp here).  fastbn:
every op's forward and backward is timed around its call (fastbn._ops'
Functions), conv2d's backward split into its two calls (input gradient, then
weight and bias gradients); the optimizer step and zero_grad are timed too, and
"tape + Python" is the step's time less all of those.  PyTorch:
torch.profiler's self CPU time per aten op, in the same categories, scaled to
the unprofiled step time (the profiler's own cost is left out).  Then, per conv
layer of fastbn, forward and backward time beside its GEMM floor: the three
products im2col would run for it (forward W @ cols, input gradient W^T @ dy,
weight gradient dy @ cols^T), each one BLAS product over the whole batch through
fastbn.kernels.matmul at the same thread count, timed alone on random operands.
Winograd F(4x4, 3x3) layers do a quarter of those multiply-adds (in 36 smaller
products): the last line per net divides the step's convolution flops (Winograd's
where a layer runs it) by a square 1024^3 float32 product's rate, this BLAS's peak.

Medians over --steps steps after 3 untimed ones; ms per step, and % of the step.
"""
import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

if __package__:
    from . import bench_train as bt
else:
    import bench_train as bt

# fastbn op (Function class name, phase) -> category
FASTBN_CATEGORIES = {
    ("Conv2d", "forward"): "conv forward",
    ("Conv2d", "input grad"): "conv input grad",
    ("Conv2d", "weight grad"): "conv weight grad",
    ("BatchNorm", "forward"): "BN forward",
    ("BatchNorm", "backward"): "BN backward",
    ("ReLU", "forward"): "ReLU", ("ReLU", "backward"): "ReLU",
    ("MaxPool2d", "forward"): "pooling", ("MaxPool2d", "backward"): "pooling",
    ("AvgPool2d", "forward"): "pooling", ("AvgPool2d", "backward"): "pooling",
    ("AdaptiveAvgPool2d", "forward"): "pooling", ("AdaptiveAvgPool2d", "backward"): "pooling",
    ("Cat", "forward"): "cat", ("Cat", "backward"): "cat",
    ("Add", "forward"): "add", ("Add", "backward"): "add",
    ("AddReLU", "forward"): "add + ReLU", ("AddReLU", "backward"): "add + ReLU",
    ("GetItem", "forward"): "shortcut slice", ("GetItem", "backward"): "shortcut slice",
    ("Pad", "forward"): "shortcut slice", ("Pad", "backward"): "shortcut slice",
}
# torch aten op -> category (self CPU time; everything else is "other ops")
TORCH_CATEGORIES = {
    "aten::mkldnn_convolution": "conv forward",
    "aten::thnn_conv2d": "conv forward",
    "aten::_slow_conv2d_forward": "conv forward",
    "aten::convolution_backward": "conv backward (input + weight)",
    "aten::mkldnn_convolution_backward": "conv backward (input + weight)",
    "aten::_slow_conv2d_backward": "conv backward (input + weight)",
    "aten::native_batch_norm": "BN forward",
    "aten::_batch_norm_impl_index": "BN forward",
    "aten::native_batch_norm_backward": "BN backward",
    "aten::relu": "ReLU", "aten::clamp_min": "ReLU", "aten::threshold_backward": "ReLU",
    "aten::max_pool2d_with_indices": "pooling",
    "aten::max_pool2d_with_indices_backward": "pooling",
    "aten::avg_pool2d": "pooling", "aten::avg_pool2d_backward": "pooling",
    "aten::adaptive_avg_pool2d": "pooling", "aten::mean": "pooling",
    "aten::cat": "cat",
    "aten::add": "add", "aten::add_": "add",
    "aten::constant_pad_nd": "shortcut slice", "aten::slice": "shortcut slice",
    "aten::slice_backward": "shortcut slice",
}
ORDER = ["conv forward", "conv input grad", "conv weight grad",
         "conv backward (input + weight)", "BN forward", "BN backward", "ReLU", "pooling",
         "cat", "add", "add + ReLU", "shortcut slice", "optimizer", "other ops",
         "tape + Python"]


def _instrument_fastbn(times, shapes):
    """Wrap fastbn's ops so that each call adds its seconds to times[(op, phase)];
    shapes[layer] = its im2col GEMM's (O, C*kh*kw, N*OH*OW)."""
    from fastbn import _ops, kernels

    def timed(key, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                times[key] += time.perf_counter() - t0
        return staticmethod(wrapper)

    for cls in _ops.Function.__subclasses__():
        name = cls.__name__
        if name != "Conv2d":
            cls.forward = timed((name, "forward"), cls.forward)
            cls.backward = timed((name, "backward"), cls.backward)
    conv_forward = _ops.Conv2d.forward

    def layer(x, weight, stride):
        """A conv layer's key: ("layer", kernel, C -> O, H x W, stride)."""
        return ("layer", f"{weight.shape[2]}x{weight.shape[3]}", f"{x.shape[1]}->{weight.shape[0]}",
                f"{x.shape[2]}x{x.shape[3]}", f"s{stride if isinstance(stride, int) else stride[0]}")

    def forward(x, weight, bias=None, **kwargs):
        t0 = time.perf_counter()
        out = conv_forward(x, weight, bias, **kwargs)
        dt = time.perf_counter() - t0
        times["Conv2d", "forward"] += dt
        key = layer(x, weight, kwargs["stride"])
        times[key + ("forward",)] += dt
        times[key + ("calls",)] += 1
        O, C, kh, kw = weight.shape
        winograd = (kh, kw) == (3, 3) and kwargs["stride"] in (1, (1, 1)) and min(O, C) >= \
            kernels._WINOGRAD_MIN_CHANNELS
        shapes[" ".join(key[1:])] = (O, C * kh * kw, out[0].shape[0] * out[0].shape[2] *
                                     out[0].shape[3], winograd)
        return out

    def backward(saved, g, inputs):
        x, weight, cols, stride, padding, dilation, groups = saved
        dx = dw = db = None
        key = layer(x, weight, stride)
        if inputs[0].requires_grad:
            t0 = time.perf_counter()
            dx = kernels.conv2d_backward(g, x, weight, cols, stride, padding, dilation, groups,
                                         need_weight=False, need_bias=False)[0]
            times["Conv2d", "input grad"] += time.perf_counter() - t0
            times[key + ("input grad",)] += time.perf_counter() - t0
        t0 = time.perf_counter()
        _, dw, db = kernels.conv2d_backward(g, x, weight, cols, stride, padding, dilation,
                                            groups, need_input=False,
                                            need_bias=len(inputs) > 2)
        times["Conv2d", "weight grad"] += time.perf_counter() - t0
        times[key + ("weight grad",)] += time.perf_counter() - t0
        return (dx, dw, db)[:len(inputs)]

    _ops.Conv2d.forward = staticmethod(forward)
    _ops.Conv2d.backward = staticmethod(backward)


def _fastbn_timed_step(model, times):
    """bench_train's fastbn step with its optimizer's zero_grad and step timed."""
    nn, _, optim, Tensor = bt._fastbn_api()
    net = bt._net(model, True)
    net.train()
    x, y = bt._batch(model, np.random.default_rng(0))
    x = Tensor(x)
    opt = optim.SGD(net.parameters(), lr=bt._lr(model), momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        t0 = time.perf_counter()
        opt.zero_grad()
        times["optimizer", "zero_grad"] += time.perf_counter() - t0
        loss_fn(net(x), y).backward()
        t0 = time.perf_counter()
        opt.step()
        times["optimizer", "step"] += time.perf_counter() - t0

    return step


def _profile_fastbn(model, threads, steps):
    import fastbn
    from threadpoolctl import threadpool_limits

    with fastbn.threads(threads), threadpool_limits(threads, user_api="blas"):
        totals = _time_steps(bt.fastbn_step(model), steps)
        times, shapes = collections.defaultdict(float), {}
        _instrument_fastbn(times, shapes)
        step = _fastbn_timed_step(model, times)
        for _ in range(3):
            step()
        times.clear()
        for _ in range(steps):
            step()
        floors = {name: _gemm_floor(*shape[:3]) for name, shape in shapes.items()}
        peak = _peak_gflops()
    per_step, layers = collections.defaultdict(float), collections.defaultdict(float)
    for key, seconds in times.items():
        if key[0] == "layer":
            layers[" ".join(key[1:-1]), key[-1]] += seconds / steps
            continue
        cat = FASTBN_CATEGORIES.get(key, "optimizer" if key[0] == "optimizer" else "other ops")
        per_step[cat] += seconds / steps
    flops = 0.0  # of a step's convolutions: 3 products of 2 O K L flops, / 4 by F(4x4)
    for name, floor in floors.items():  # per call, times the calls of a step
        layers[name, "GEMM floor"] = floor * layers[name, "calls"]
        O, K, L, winograd = shapes[name]
        flops += 6 * O * K * L * layers[name, "calls"] / (4 if winograd else 1)
    layers["peak", "flops"], layers["peak", "GFLOP/s"] = flops, peak
    return statistics.median(totals), dict(per_step), layers


def _peak_gflops(n=1024, repeat=5):
    """GFLOP/s of a square float32 product through fastbn.kernels.matmul."""
    from fastbn.kernels import matmul

    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    matmul(a, a)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        matmul(a, a)
        runs.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(runs) / 1e9


def _gemm_floor(O, K, L, repeat=5):
    """Seconds of im2col's three float32 products for a layer (median of repeat)."""
    from fastbn.kernels import matmul

    rng = np.random.default_rng(0)
    w = rng.standard_normal((O, K), dtype=np.float32)
    cols = rng.standard_normal((K, L), dtype=np.float32)
    dy = rng.standard_normal((O, L), dtype=np.float32)
    total = 0.0
    for a, b, ta, tb in ((w, cols, False, False), (w, dy, True, False), (dy, cols, False, True)):
        matmul(a, b, ta, tb)
        runs = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            matmul(a, b, ta, tb)
            runs.append(time.perf_counter() - t0)
        total += statistics.median(runs)
    return total


def _time_steps(step, steps):
    for _ in range(3):
        step()
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        out.append(time.perf_counter() - t0)
    return out


def _profile_torch(model, threads, steps):
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(threads)
    step = bt.torch_step(model)
    totals = _time_steps(step, steps)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    per_step = collections.defaultdict(float)
    for event in prof.key_averages():
        cat = TORCH_CATEGORIES.get(event.key)
        if cat is None:
            cat = "optimizer" if "foreach" in event.key or "sgd" in event.key.lower() else (
                "other ops" if event.key.startswith("aten::") else None)
        if cat is not None:
            per_step[cat] += event.self_cpu_time_total * 1e-6 / steps
    profiled = sum(per_step.values())
    return statistics.median(totals), dict(per_step), profiled


def _worker(lib, threads, models, steps):
    out = {}
    for model in models:
        if lib == "fastbn":
            total, parts, layers = _profile_fastbn(model, threads, steps)
            out[model] = {"total": total, "parts": parts,
                          "layers": [[*k, v] for k, v in layers.items()]}
        else:
            total, parts, profiled = _profile_torch(model, threads, steps)
            out[model] = {"total": total, "parts": parts, "profiled": profiled}
    print(json.dumps(out))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=list(bt.NETS), default=list(bt.NETS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return _worker(args.worker, args.threads, args.models, args.steps)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] + sys.path))
    results = {}
    for lib in ["fastbn"] + ([] if args.no_torch or not bt.bc.torch_available() else ["torch"]):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", lib, "--threads",
               str(args.threads), "--steps", str(args.steps), "--models", *args.models]
        res = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if res.returncode:
            sys.exit(f"{lib} worker failed:\n{res.stderr[-3000:]}")
        results[lib] = json.loads(res.stdout.splitlines()[-1])
    for model in args.models:
        print(f"\n{model}, {args.threads} thread(s): ms per step (% of the step)\n")
        libs = list(results)
        print("| part | " + " | ".join(libs) + " |\n|---|" + "---:|" * len(libs))
        rows = {}
        for lib in libs:
            r = results[lib][model]
            total, parts = r["total"] * 1e3, {k: v * 1e3 for k, v in r["parts"].items()}
            if lib == "torch":  # scale the profiler's self times to the unprofiled step
                scale = total / (r["profiled"] * 1e3)
                parts = {k: v * scale for k, v in parts.items()}
            else:
                parts["tape + Python"] = total - sum(parts.values())
            for k, v in parts.items():
                rows.setdefault(k, {})[lib] = (v, v / total)
            rows.setdefault("step", {})[lib] = (total, 1.0)
        for k in ORDER + ["step"]:
            if k in rows:
                cells = [f"{rows[k][lib][0]:.1f} ({rows[k][lib][1]:.0%})" if lib in rows[k]
                         else "-" for lib in libs]
                print(f"| {k} | " + " | ".join(cells) + " |")
        layers = collections.defaultdict(dict)
        for name, phase, seconds in results["fastbn"][model]["layers"]:
            layers[name][phase] = seconds * (1 if name == "peak" else 1e3)
        peak = layers.pop("peak")
        print(f"\nfastbn's conv layers of {model} (all layers of a shape together), ms per "
              "step, and their im2col GEMM floor:\n\n| layer | forward | input grad | "
              "weight grad | total | GEMM floor |\n|---|---:|---:|---:|---:|---:|")
        phases = ("forward", "input grad", "weight grad")
        total = {name: sum(t.get(p, 0.0) for p in phases) for name, t in layers.items()}
        for name, t in sorted(layers.items(), key=lambda kv: -total[kv[0]]):
            cells = [f"{t[p]:.1f}" if p in t else "-" for p in phases]
            print(f"| {name} | " + " | ".join(cells) + f" | {total[name]:.1f} | "
                  f"{t.get('GEMM floor', 0.0):.1f} |")
        print(f"| all | " + " | ".join(f"{sum(t.get(p, 0.0) for t in layers.values()):.1f}"
                                       for p in phases)
              + f" | {sum(total.values()):.1f} | "
              f"{sum(t.get('GEMM floor', 0.0) for t in layers.values()):.1f} |")
        print(f"\nconvolutions: {peak['flops'] / 1e9:.2f} GFLOP per step (F(4x4) layers "
              f"counted at a quarter); at this BLAS's peak ({peak['GFLOP/s']:.0f} GFLOP/s, "
              f"1024^3 float32) {peak['flops'] / peak['GFLOP/s'] / 1e6:.1f} ms; fastbn's "
              f"convolutions took {sum(total.values()):.1f} ms")


if __name__ == "__main__":
    main()
