"""3x3 stride-1 convolutions of the real nets by each algorithm fastbn has.

    python benchmarks/bench_winograd.py [--threads 1 2] [--repeat 5]

Per layer shape of ResNet-20 (batch 128) and of the small BN-Inception (batch
64), float32: ms of the forward and of the backward (input and weight
gradients) through fastbn.kernels with algorithm="im2col", "winograd"
(F(2x2, 3x3)) and "winograd4" (F(4x4, 3x3)); medians.
"""
import argparse
import statistics
import time

import numpy as np

# (batch, in channels, out channels, height = width)
LAYERS = [(128, 16, 16, 32), (128, 32, 32, 16), (128, 64, 64, 8), (64, 16, 24, 14),
          (64, 24, 24, 14), (64, 32, 40, 7), (64, 48, 64, 7), (64, 48, 80, 4),
          (64, 56, 56, 4)]
ALGORITHMS = ("im2col", "winograd", "winograd4")


def _median_ms(fn, repeat):
    fn()
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t0)
    return statistics.median(runs) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    import fastbn
    from fastbn import kernels as K
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    print("| threads | N, C -> O, HxW | " + " | ".join(f"{a} fwd + bwd" for a in ALGORITHMS)
          + " |\n|---|---|" + "---:|" * len(ALGORITHMS))
    for threads in args.threads:
        with fastbn.threads(threads), threadpool_limits(threads, user_api="blas"):
            for N, C, O, H in LAYERS:
                x = rng.standard_normal((N, C, H, H), dtype=np.float32)
                w = rng.standard_normal((O, C, 3, 3), dtype=np.float32)
                cells = []
                for a in ALGORITHMS:
                    y, cols = K.conv2d_forward(x, w, None, 1, 1, algorithm=a)
                    dy = rng.standard_normal(y.shape, dtype=np.float32)
                    f = _median_ms(lambda: K.conv2d_forward(x, w, None, 1, 1, algorithm=a),
                                   args.repeat)
                    b = _median_ms(lambda: K.conv2d_backward(dy, x, w, cols, 1, 1,
                                                             need_bias=False, algorithm=a),
                                   args.repeat)
                    cells.append(f"{f:.2f} + {b:.2f} = {f + b:.2f}")
                print(f"| {threads} | {N}, {C} -> {O}, {H}x{H} | " + " | ".join(cells) + " |",
                      flush=True)


if __name__ == "__main__":
    main()
