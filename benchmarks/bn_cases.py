"""Batch Normalization workloads shared by the asv benchmarks and compare.py.

Three implementations of the same three operations on the same inputs:
fastbn (fastbn.kernels), a float32 NumPy version written the way a user would
write it, and torch.nn.functional.batch_norm with autograd.  Plus a streaming
copy of the same size (the bandwidth roof) and an alternating timer.
"""
import argparse
import contextlib
import gc
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import fastbn
from fastbn.kernels import batch_norm_backward, batch_norm_forward

SHAPES = [(64, 16, 32, 32), (64, 64, 16, 16), (128, 128, 8, 8), (32, 256, 14, 14),
          (8, 32, 112, 112), (256, 1024), (60, 100)]
OPS = ("train_fwd", "train_fwd_bwd", "eval_fwd")
OP_TITLES = {"train_fwd": "train fwd", "train_fwd_bwd": "train fwd+bwd", "eval_fwd": "eval fwd"}
# Minimum passes over the tensor (reads + writes of x-sized arrays):
# forward = stats read + apply read + write; backward = sums read x, dy +
# dx pass reads x, dy and writes dx; eval = one read, one write.
PASSES = {"train_fwd": 3, "train_fwd_bwd": 8, "eval_fwd": 2}
MOMENTUM, EPS = 0.1, 1e-5
# calls per turn of measure(): warm = 4 timed back to back after untimed ones
# (WARM_UP_S); cold = 1
CACHE_BLOCKS = {"warm": 5, "cold": 1}
# A warm turn's untimed calls last this long at least (one call at least): a
# vCPU left idle by a 1-thread turn (another implementation's, or fastbn's at
# 1 thread) runs the next 2-thread calls slowly for about half a millisecond
# here (fastbn's forward on (128,128,8,8): 0.12, 0.11, 0.10, 0.10 ms, then
# 0.09), which one untimed call did not cover.
WARM_UP_S = 1e-3


def parse_shape(text):
    """An N,C[,spatial...] command-line shape (argparse type)."""
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: use e.g. 64,16,32,32") from None
    if len(shape) < 2 or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"bad shape {text!r}: need N,C[,spatial...] >= 1")
    return shape


class Inputs:
    """Random x, dy, affine parameters and running statistics of one shape."""

    def __init__(self, shape, dtype="float32", seed=0):
        rng = np.random.default_rng(seed)
        C = shape[1]
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.x = rng.standard_normal(shape).astype(dtype)
        self.dy = rng.standard_normal(shape).astype(dtype)
        self.weight = rng.uniform(0.5, 1.5, C).astype(dtype)
        self.bias = rng.uniform(-0.5, 0.5, C).astype(dtype)
        self.running_mean = rng.uniform(-0.1, 0.1, C).astype(dtype)
        self.running_var = rng.uniform(0.9, 1.1, C).astype(dtype)

    @property
    def nbytes(self):
        return self.x.nbytes

    def stats(self):
        """Fresh copies of the running statistics: each implementation updates its own."""
        return self.running_mean.copy(), self.running_var.copy()


def fastbn_ops(inp):
    """{op: zero-argument callable} through fastbn.kernels."""
    x, dy, w, b = inp.x, inp.dy, inp.weight, inp.bias
    rm, rv = inp.stats()

    def train_fwd():
        return batch_norm_forward(x, w, b, rm, rv, True, MOMENTUM, EPS)

    def train_fwd_bwd():
        _, mean, invstd = batch_norm_forward(x, w, b, rm, rv, True, MOMENTUM, EPS)
        return batch_norm_backward(dy, x, w, mean, invstd)

    def eval_fwd():
        return batch_norm_forward(x, w, b, rm, rv, False, MOMENTUM, EPS)

    return {"train_fwd": train_fwd, "train_fwd_bwd": train_fwd_bwd, "eval_fwd": eval_fwd}


def numpy_ops(inp):
    """{op: callable}: plain NumPy in the input's dtype, as a user would write it."""
    x, dy = inp.x, inp.dy
    C = x.shape[1]
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, C) + (1,) * (x.ndim - 2)
    w, b = inp.weight.reshape(bshape), inp.bias.reshape(bshape)
    rm, rv = inp.stats()
    m = x.size // C

    def forward():
        mean = x.mean(axis=axes, keepdims=True)
        var = x.var(axis=axes, keepdims=True)
        invstd = 1 / np.sqrt(var + EPS)
        xhat = (x - mean) * invstd
        y = xhat * w + b
        rm[:] = (1 - MOMENTUM) * rm + MOMENTUM * mean.ravel()
        rv[:] = (1 - MOMENTUM) * rv + MOMENTUM * var.ravel() * (m / (m - 1))
        return y, xhat, invstd

    def train_fwd_bwd():
        _, xhat, invstd = forward()
        dbias = dy.sum(axis=axes, keepdims=True)
        dweight = (dy * xhat).sum(axis=axes, keepdims=True)
        dx = (w * invstd / m) * (m * dy - dbias - xhat * dweight)
        return dx, dweight.ravel(), dbias.ravel()

    def eval_fwd():
        scale = w / np.sqrt(rv.reshape(bshape) + EPS)
        return x * scale + (b - rm.reshape(bshape) * scale)

    return {"train_fwd": forward, "train_fwd_bwd": train_fwd_bwd, "eval_fwd": eval_fwd}


def torch_ops(inp):
    """{op: callable}: torch.nn.functional.batch_norm, training with autograd
    (grads set to None before each backward, as zero_grad() does), eval under
    no_grad.  Raises ImportError without torch."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(inp.x.copy()).requires_grad_()
    dy = torch.from_numpy(inp.dy.copy())
    w = torch.from_numpy(inp.weight.copy()).requires_grad_()
    b = torch.from_numpy(inp.bias.copy()).requires_grad_()
    rm, rv = (torch.from_numpy(a) for a in inp.stats())

    def train_fwd():
        return F.batch_norm(x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS)

    def train_fwd_bwd():
        x.grad = w.grad = b.grad = None
        F.batch_norm(x, rm, rv, w, b, training=True, momentum=MOMENTUM, eps=EPS).backward(dy)
        return x.grad, w.grad, b.grad

    def eval_fwd():
        with torch.no_grad():
            return F.batch_norm(x, rm, rv, w, b, training=False, momentum=MOMENTUM, eps=EPS)

    return {"train_fwd": train_fwd, "train_fwd_bwd": train_fwd_bwd, "eval_fwd": eval_fwd}


def check_agreement(inp, use_torch, rtol=1e-3, atol=1e-3):
    """Raise AssertionError unless every implementation computes the same dx,
    dweight, dbias (training) and y (inference) as fastbn: never time wrong code."""
    impls = [numpy_ops] + ([torch_ops] if use_torch else [])
    ref = fastbn_ops(inp)
    want = {"train_fwd_bwd": ref["train_fwd_bwd"](), "eval_fwd": ref["eval_fwd"]()[:1]}
    for make in impls:
        ops = make(inp)
        for op, expected in want.items():
            got = ops[op]()
            got = got if isinstance(got, tuple) else (got,)
            for name, a, b in zip(("out", "dweight", "dbias"), got, expected):
                a = a.detach().numpy() if hasattr(a, "detach") else np.asarray(a)
                np.testing.assert_allclose(
                    a.reshape(b.shape), b, rtol=rtol, atol=atol,
                    err_msg=f"{make.__name__} {op} {name} differs from fastbn for {inp.shape}")


def torch_available():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


class StreamingCopy:
    """np.copyto of x into a preallocated array of the same size, split over
    `threads` Python threads (NumPy releases the GIL while copying).  Moves
    2 * nbytes per call: the bandwidth roof for the kernels."""

    def __init__(self, x, threads=1):
        src = x.reshape(-1)
        self._dst = np.empty_like(src)
        edges = np.linspace(0, src.size, threads + 1).astype(int)
        self._parts = [(self._dst[a:z], src[a:z]) for a, z in zip(edges[:-1], edges[1:])]
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None

    def __call__(self):
        futures = [self._pool.submit(np.copyto, d, s) for d, s in self._parts[1:]]
        np.copyto(*self._parts[0])
        for f in futures:
            f.result()

    def close(self):
        if self._pool is not None:
            self._pool.shutdown()


def use_threads(n):
    """asv setup: fastbn on n threads, or skip (NotImplementedError) when the asv
    environment's OMP_NUM_THREADS selects another count, so none is measured twice."""
    env = os.environ.get("OMP_NUM_THREADS")
    if env is not None and env.strip() != str(n):
        raise NotImplementedError(f"threads={n} runs in the OMP_NUM_THREADS={n} environment")
    fastbn.set_num_threads(n)


@contextlib.contextmanager
def thread_counts(n):
    """Run fastbn and (if imported) torch on exactly n threads.  They share one
    libgomp here, so both are set explicitly (see shared/docs/PERFORMANCE.md)."""
    torch = sys.modules.get("torch")
    previous = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    try:
        with fastbn.threads(n):
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(previous)


def measure(fns, repeat, warmup=3, threads=None, block=CACHE_BLOCKS["warm"]):
    """Time each callable of {key: fn} `repeat` times, alternating A B C A B C
    so machine drift hits all alike, after `warmup` untimed rounds; GC off.
    `threads` ({key: n}, optional) runs each fn on its own thread count, set
    outside the timed region, so thread counts alternate too.

    ``block``: calls per turn.  1 times every call right after the others ran
    (cold caches: each sees the last one's data in the L3); each timed call
    then follows an untimed parallel region at its thread count, so that
    every implementation finds the (shared) OpenMP team awake: otherwise the
    first one at 2 threads after a 1-thread turn pays the team's wake-up
    (0.2-0.3 ms here) and the next one does not.  B > 1 runs untimed calls for
    WARM_UP_S (one at least), then times B - 1 calls back to back (warm: the
    steady state of a loop that calls one kernel, as a training step calls a
    layer on data its neighbours just wrote).

    Returns {key: (median seconds, minor page faults per call)}.
    """
    keys = list(fns)
    times = {k: [] for k in keys}
    faults = dict.fromkeys(keys, 0)

    def run(key):
        """The times and page faults of the timed calls of one turn."""
        out = []
        with thread_counts(threads[key]) if threads else contextlib.nullcontext():
            if block == 1:
                _wake_team()
            else:
                end = time.perf_counter() + WARM_UP_S
                fns[key]()
                while time.perf_counter() < end:
                    fns[key]()
            for _ in range(max(block - 1, 1)):
                f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                t0 = time.perf_counter()
                fns[key]()
                t1 = time.perf_counter()
                out.append((t1 - t0, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0))
        return out

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(warmup):
            for key in keys:
                run(key)
        while len(times[keys[0]]) < repeat:
            for key in keys:
                for dt, df in run(key):
                    times[key].append(dt)
                    faults[key] += df
    finally:
        if gc_was_enabled:
            gc.enable()
    return {k: (float(np.median(times[k])), faults[k] / len(times[k])) for k in keys}


_WAKE = np.ones((1, 1, 1 << 16), np.float32)  # over fastbn's serial threshold


def _wake_team():
    """One small parallel fastbn kernel on the current thread count (64K values)."""
    batch_norm_forward(_WAKE, training=False, running_mean=np.zeros(1, np.float32),
                       running_var=np.ones(1, np.float32))


def bandwidth_efficiency(op, t_op, nbytes, t_copy):
    """Achieved GB/s of `op` (its minimum passes over nbytes in t_op seconds)
    over the copy's GB/s (2 passes in t_copy)."""
    return (PASSES[op] * nbytes / t_op) / (2 * nbytes / t_copy)
