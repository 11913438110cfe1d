"""float32 error of conv2d by im2col, Winograd F(2x2, 3x3) and F(4x4, 3x3), against the
same convolution in float64, on the 3x3 stride-1 layers of fastbn.models' ResNet-20 and
small BN-Inception.

    python benchmarks/winograd_error.py [--batch 16] [--seed 0]

Inputs: a batch of N(0, 1) values put through a ReLU (what a layer after BN + ReLU
sees); weights: Kaiming-normal (fan in); output gradients: N(0, 1).  For the forward
(y), the input gradient (dx) and the weight gradient (dw) it prints the largest error
over the largest magnitude of the float64 result (max), and the root-mean-square
error over the float64 result's (rms).  float32 rounding alone (the im2col row) is the
floor any float32 convolution pays.
"""
import argparse

import numpy as np

from fastbn import kernels as K

# (name, C, O, H = W): the 3x3 stride-1 layers
LAYERS = [("resnet20 stage 1", 16, 16, 32), ("resnet20 stage 2", 32, 32, 16),
          ("resnet20 stage 3", 64, 64, 8), ("inception conv3", 16, 48, 14),
          ("inception 4c 3x3", 32, 40, 7), ("inception 5b 3x3", 48, 80, 4)]
ALGORITHMS = ("im2col", "winograd", "winograd4")


def errors(got, ref):
    """(max error / max |ref|, rms error / rms ref)."""
    diff = got.astype(np.float64) - ref
    return (float(np.abs(diff).max() / np.abs(ref).max()),
            float(np.sqrt(np.mean(diff ** 2) / np.mean(ref ** 2))))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| layer | algorithm | y max | y rms | dx max | dx rms | dw max | dw rms |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|")
    for name, C, O, H in LAYERS:
        x = np.maximum(rng.standard_normal((args.batch, C, H, H)), 0)
        w = rng.standard_normal((O, C, 3, 3)) * np.sqrt(2 / (9 * C))
        dy = rng.standard_normal((args.batch, O, H, H))
        y64, cols = K.conv2d_forward(x, w, None, 1, 1, algorithm="im2col")
        dx64, dw64, _ = K.conv2d_backward(dy, x, w, cols, 1, 1, need_bias=False,
                                          algorithm="im2col")
        x32, w32, dy32 = (a.astype(np.float32) for a in (x, w, dy))
        for algorithm in ALGORITHMS:
            y, cols = K.conv2d_forward(x32, w32, None, 1, 1, algorithm=algorithm)
            dx, dw, _ = K.conv2d_backward(dy32, x32, w32, cols, 1, 1, need_bias=False,
                                          algorithm=algorithm)
            cells = [f"{e:.1e}" for pair in (errors(y, y64), errors(dx, dx64),
                                             errors(dw, dw64)) for e in pair]
            print(f"| {name} ({C}->{O}, {H}x{H}) | {algorithm} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
