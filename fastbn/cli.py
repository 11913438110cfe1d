"""Command line: python -m fastbn {info,train,reproduce}.

Exit status: 0 done, 1 an error (one line on stderr), 2 bad arguments, 130 Ctrl-C,
141 (128 + SIGPIPE) when the reader of the output went away (``| head``).
"""
import argparse
import os
import sys
import time


def _cmd_info(args):
    """Print the build configuration and time a BN forward+backward against NumPy."""
    import numpy as np

    from . import show_config
    from .kernels import batch_norm_backward, batch_norm_forward

    show_config()
    rng = np.random.default_rng(0)
    shape = tuple(args.shape)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    C = shape[1]
    w, b = np.ones(C, np.float32), np.zeros(C, np.float32)
    axes = (0,) + tuple(range(2, x.ndim))
    bshape = (1, C) + (1,) * (x.ndim - 2)

    def fastbn_step():
        y, mean, invstd = batch_norm_forward(x, w, b)
        batch_norm_backward(dy, x, w, mean, invstd)

    def numpy_step():
        mean = x.mean(axes, keepdims=True)
        invstd = 1.0 / np.sqrt(x.var(axes, keepdims=True) + 1e-5)
        xhat = (x - mean) * invstd
        y = xhat * w.reshape(bshape) + b.reshape(bshape)
        m = x.size // C
        db = dy.sum(axes, keepdims=True)
        dw = (dy * xhat).sum(axes, keepdims=True)
        return y, w.reshape(bshape) * invstd / m * (m * dy - db - xhat * dw)

    times = {"fastbn": [], "numpy": []}
    for _ in range(args.repeat):  # alternate so drift hits both alike
        for name, fn in (("fastbn", fastbn_step), ("numpy", numpy_step)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
    print(f"\nBN training forward+backward, float32 {shape}, median of {args.repeat}:")
    print(f"  fastbn {med['fastbn']:.3f} ms   numpy {med['numpy']:.3f} ms   "
          f"speed-up {med['numpy'] / med['fastbn']:.1f}x")
    return 0


def _add_train(sub):
    """``train``: the trainer (fastbn/train.py) owns its options and its run."""
    from . import train

    parser = sub.add_parser("train", help="train a small BN net on the embedded digits or MNIST",
                            description=train.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    train.add_arguments(parser)
    parser.set_defaults(func=train.main)


def _add_reproduce(sub):
    """``reproduce``: the paper's experiments (fastbn/experiments/)."""
    from . import experiments

    parser = sub.add_parser("reproduce", help="reproduce the BN paper's MNIST experiments",
                            description=experiments.__doc__,
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    experiments.add_arguments(parser)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m fastbn", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="show the build configuration and a quick timing")
    info.add_argument("--shape", type=int, nargs="+", default=[64, 16, 32, 32],
                      help="input shape for the timing (default: 64 16 32 32)")
    info.add_argument("--repeat", type=int, default=50)
    info.set_defaults(func=_cmd_info)
    _add_train(sub)
    _add_reproduce(sub)
    return parser


def main(argv=None):
    """Run the command argv (default: sys.argv[1:]); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught
        return status
    except KeyboardInterrupt:  # train says more itself (where to resume from)
        print(f"fastbn {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130
    except BrokenPipeError:
        # stdout's reader left: stop quietly, as a program killed by SIGPIPE does, with
        # stdout pointed at devnull so that the interpreter's last flush cannot fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
