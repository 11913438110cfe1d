"""Run by tests/test_distributed.py under mpiexec: ``python -m fastbn train ARGV`` whose
rank 0 dies at the start of its second epoch (after writing the first checkpoint); the
other ranks are then waiting in a collective, and the job must stop, not hang."""
import sys

from fastbn import cli, distributed, train

real_epoch, calls = train._train_epoch, []


def dies_in_second_epoch(*args):
    calls.append(1)
    if len(calls) == 2 and distributed.get_rank() == 0:
        raise KeyboardInterrupt("rank 0 interrupted in epoch 2")
    return real_epoch(*args)


train._train_epoch = dies_in_second_epoch
sys.exit(cli.main(["train", *sys.argv[1:]]))
