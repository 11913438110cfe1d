"""Run by tests/test_distributed.py under mpiexec: rank 1 raises while the others wait in
an allreduce; the job must stop (MPI_Abort from fastbn's excepthook), not hang."""
import numpy as np
from mpi4py import MPI

from fastbn import distributed

comm = distributed.init_process_group()
if comm.Get_rank() == 1:
    raise RuntimeError("deliberate failure on rank 1")
buf = np.zeros(1)
comm.Allreduce(MPI.IN_PLACE, buf)   # never completes: rank 1 is gone
