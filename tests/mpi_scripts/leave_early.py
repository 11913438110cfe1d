"""Run by tests/test_distributed.py under mpiexec: after a first allreduce, the last rank
leaves in the way argv[1] names while the others go into a second allreduce, which then
never completes: the job must end, not hang.  ``late``: every rank finishes, rank 0 only
after argv[2] seconds outside MPI; the job must wait for it and exit 0."""
import os
import signal
import sys
import time

import numpy as np
from mpi4py import MPI

from fastbn import distributed

how = sys.argv[1]
comm = distributed.init_process_group()
rank, last = comm.Get_rank(), comm.Get_size() - 1
buf = np.ones(1)
comm.Allreduce(MPI.IN_PLACE, buf)
if how == "late":
    if rank == 0:
        time.sleep(float(sys.argv[2]))
    print(f"rank {rank} done", flush=True)
elif rank != last:
    comm.Allreduce(MPI.IN_PLACE, buf)
    print("the second allreduce completed", flush=True)
elif how == "exit":
    sys.exit(0)
elif how == "exit3":
    sys.exit(3)
elif how == "caught-interrupt":  # as a command line that turns Ctrl-C into status 130
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        sys.exit(130)
elif how == "exception":
    raise RuntimeError(f"deliberate failure on rank {rank}")
elif how == "sigterm":
    os.kill(os.getpid(), signal.SIGTERM)
elif how == "os-exit":
    os._exit(2)
# how == "end": the last rank runs off the end of the script
