"""BatchNorm forward+backward against copies of one and of two tensors' size.

compare.py's `% copy` measures the training passes against np.copyto of the
tensor's size, which touches two tensors' worth of memory (source and
destination).  Forward+backward touches four (x, y, dy, dx): where the cache
holds two but not four, the copy runs from cache and the passes partly from
DRAM.  This times, alternated in one process at one thread, fastbn's
forward+backward, a copy of the tensor and a copy of twice the tensor (as much
memory touched as forward+backward), and prints the passes' rate against each.

    python benchmarks/bn_footprint.py [--repeat N] [--shapes N,C,H,W ...]
"""
import argparse

import numpy as np

if __package__:  # imported by asv's benchmark discovery as benchmarks.bn_footprint
    from . import bn_cases as bc
else:  # run as a script
    import bn_cases as bc

SHAPES = [s for s in bc.SHAPES if len(s) == 4]


def run(shapes, repeat):
    print("| shape | MiB | fwd+bwd ms | % of copy (2 tensors touched) | "
          "% of copy (4 tensors touched) |")
    print("|---|---:|---:|---:|---:|")
    for shape in shapes:
        inp = bc.Inputs(shape)
        small = bc.StreamingCopy(inp.x)
        large = bc.StreamingCopy(np.concatenate([inp.x, inp.x]))
        fns = {"fwd_bwd": bc.fastbn_ops(inp)["train_fwd_bwd"], "copy": small, "copy2": large}
        with bc.thread_counts(1):
            t = {k: v[0] for k, v in bc.measure(fns, repeat).items()}
        traffic = bc.PASSES["train_fwd_bwd"] * inp.nbytes / t["fwd_bwd"]
        print(f"| {shape} | {inp.nbytes / 2**20:.1f} | {t['fwd_bwd'] * 1e3:.3f} | "
              f"{traffic / (2 * inp.nbytes / t['copy']):.0%} | "
              f"{traffic / (4 * inp.nbytes / t['copy2']):.0%} |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=60)
    parser.add_argument("--shapes", nargs="+", type=bc.parse_shape, default=SHAPES)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be positive")
    run(args.shapes, args.repeat)


if __name__ == "__main__":
    main()
