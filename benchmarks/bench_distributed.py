"""Data-parallel training step at 1 and 2 MPI ranks, one thread per rank.

    python benchmarks/bench_distributed.py [--ranks 1 2] [--steps 40] [--batch 64]

Launches itself with mpiexec once per rank count.  Each rank runs the trainer's convnet
(SyncBatchNorm, DistributedDataParallel, SGD) on its share of a fixed global batch of
MNIST-sized images; the step is forward + backward + gradient allreduce + SGD step.
Reported per rank count, medians over the steps: step time, samples/s of the global batch,
and the share of the step spent in MPI collectives (SyncBatchNorm's Allgather/Allreduce
and the gradient buckets' Allreduce, waiting for the other rank included), with the
gradient allreduce alone beside it.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np


class _TimedComm:
    """An mpi4py communicator whose collectives add their wall time to ``seconds``."""

    def __init__(self, comm):
        self._comm, self.seconds = comm, 0.0

    def __getattr__(self, name):
        return getattr(self._comm, name)

    def _timed(self, fn, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def Allreduce(self, *args, **kwargs):
        return self._timed(self._comm.Allreduce, *args, **kwargs)

    def Allgather(self, *args, **kwargs):
        return self._timed(self._comm.Allgather, *args, **kwargs)


def _rank_main(steps, batch, warmup=5):
    import fastbn
    from fastbn import distributed, nn, optim, train
    from fastbn.tensor import Tensor

    fastbn.set_num_threads(1)
    comm = distributed.init_process_group()
    rank, world = comm.Get_rank(), comm.Get_size()
    timed = _TimedComm(comm)
    rng = np.random.default_rng(rank)
    local = batch // world
    x = Tensor(rng.standard_normal((local, 1, 28, 28), dtype=np.float32))
    y = Tensor(rng.integers(0, 10, local))
    model = nn.SyncBatchNorm.convert_sync_batchnorm(train.convnet((1, 28, 28)), timed)
    ddp = distributed.DistributedDataParallel(model, timed, broadcast_buffers=False)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    step_s, comm_s, grad_s = [], [], []
    for i in range(warmup + steps):
        comm.Barrier()          # start the ranks together, so a step's wait is its own
        timed.seconds = 0.0
        t0 = time.perf_counter()
        loss = loss_fn(ddp(x), y)
        opt.zero_grad()
        loss.backward()
        t1 = time.perf_counter()
        ddp.allreduce_gradients()
        t2 = time.perf_counter()
        opt.step()
        t3 = time.perf_counter()
        if i >= warmup:
            step_s.append(t3 - t0)
            comm_s.append(timed.seconds)
            grad_s.append(t2 - t1)
    if rank == 0:
        med = {k: float(np.median(v)) for k, v in
               (("step_s", step_s), ("comm_s", comm_s), ("grad_allreduce_s", grad_s))}
        share = float(np.median(np.array(comm_s) / np.array(step_s)))
        print(json.dumps({"ranks": world, "batch": batch, "steps": steps, **med,
                          "comm_share": share, "buckets": ddp.num_buckets}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64, help="global batch (default: 64)")
    parser.add_argument("--rank-main", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rank_main:
        _rank_main(args.steps, args.batch)
        return
    from fastbn import distributed
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    print(f"convnet (trainer preset) on 1x28x28 float32, global batch {args.batch}, "
          f"1 thread per rank, median of {args.steps} steps")
    print(f"{'ranks':>5} {'step ms':>9} {'samples/s':>10} {'collectives':>12} "
          f"{'grad allreduce':>15} {'buckets':>8}")
    for n in args.ranks:
        proc = subprocess.run([*distributed.mpiexec_command(n), sys.executable,
                               os.path.abspath(__file__), "--rank-main", "--steps",
                               str(args.steps), "--batch", str(args.batch)],
                              capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode:
            sys.exit(f"mpiexec -n {n} failed:\n{proc.stdout}{proc.stderr}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{n:>5} {1e3 * r['step_s']:>9.2f} {args.batch / r['step_s']:>10.0f} "
              f"{100 * r['comm_share']:>11.1f}% {1e3 * r['grad_allreduce_s']:>12.3f} ms "
              f"{r['buckets']:>8}")


if __name__ == "__main__":
    main()
