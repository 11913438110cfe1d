"""Run by tests/test_distributed.py under mpiexec: ``python -m fastbn train ARGV`` whose
last rank calls ``sys.exit(0)`` at the start of its second epoch; the other ranks are then
waiting in a collective, and the job must stop, not hang."""
import sys

from fastbn import cli, distributed, train

real_epoch, calls = train._train_epoch, []


def exits_in_second_epoch(*args):
    calls.append(1)
    if len(calls) == 2 and distributed.get_rank() == distributed.get_world_size() - 1:
        sys.exit(0)
    return real_epoch(*args)


train._train_epoch = exits_in_second_epoch
sys.exit(cli.main(["train", *sys.argv[1:]]))
