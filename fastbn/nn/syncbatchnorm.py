"""SyncBatchNorm: Batch Normalization whose training statistics span every MPI rank's batch.

Forward: each rank reduces its local per-channel (count, mean, M2) in float64; one
Allgather per layer gives every rank all partials, merged by a count-weighted Chan merge
(the same on every rank, so the statistics agree bit for bit).  A rank with an empty
batch sends count 0 and still joins.  Backward: one Allreduce of the per-channel
(sum(dy), sum(dy * xhat)) over the ranks, then dx locally with the global statistics:
``dx = weight * invstd / n * (n * dy - sum(dy) - xhat * sum(dy * xhat))``, n the global
count.  dweight and dbias are this rank's sums, as in PyTorch: DistributedDataParallel
then averages them with the other gradients.

Outside training, with one rank, or before ``fastbn.distributed.init_process_group``,
it is plain BatchNorm (PyTorch's fallback).  Same parameters, buffers and state_dict
keys as BatchNorm.
"""
import math

import numpy as np

from .. import _ops, kernels
from ..autograd import Function
from . import functional as F
from .batchnorm import _BatchNorm

__all__ = ["SyncBatchNorm"]


def _local_moments(x3):
    """Per-channel (mean, M2) of an (N, C, L) array, in float64."""
    if x3.size == 0:
        return np.zeros(x3.shape[1]), np.zeros(x3.shape[1])
    x64 = x3.astype(np.float64, copy=False)
    mean = x64.mean(axis=(0, 2))
    d = x64 - mean[:, None]
    return mean, np.einsum("ncl,ncl->c", d, d)


def _chan_merge(parts, C):
    """Merge rows of (count, mean[C], M2[C]) from every rank: count-weighted."""
    counts = parts[:, 0]
    means, m2s = parts[:, 1:C + 1], parts[:, C + 1:]
    n = counts.sum()
    if n == 0:
        return 0.0, np.zeros(C), np.zeros(C)
    mean = counts @ means / n
    m2 = m2s.sum(axis=0) + counts @ (means - mean) ** 2
    return n, mean, m2


class _SyncBatchNorm(Function):
    @staticmethod
    def forward(x, weight=None, bias=None, *, running_mean, running_var, momentum, eps,
                comm):
        x3 = x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
        C = x.shape[1]
        mean, m2 = _local_moments(x3)
        local = np.concatenate(([float(x3.shape[0] * x3.shape[2])], mean, m2))
        parts = np.empty((comm.Get_size(), local.size))
        comm.Allgather(local, parts)
        n, mean, m2 = _chan_merge(parts, C)
        if n <= 1:     # the same on every rank, so every rank raises: no rank is left waiting
            raise ValueError(f"SyncBatchNorm: expected more than 1 value per channel over all "
                             f"ranks, got {int(n)} (input of shape {x.shape} on this rank)")
        var = m2 / n
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * (m2 / (n - 1))
        # normalizing with fixed statistics is what the inference kernel does, in one pass
        y, save_mean, invstd = kernels.batch_norm_forward(
            x, weight, bias, mean.astype(x.dtype), var.astype(x.dtype), training=False, eps=eps)
        return y, (x, weight, save_mean, invstd, n, comm)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, mean, invstd, n, comm = saved
        w = np.ones_like(mean) if weight is None else weight
        # with training=False the kernel gives dy * w * invstd and this rank's sum(dy * xhat)
        # and sum(dy)
        dx, dweight, dbias = kernels.batch_norm_backward(
            g, x, w, mean, invstd, training=False, need_input=inputs[0].requires_grad)
        if dx is not None:     # the same on every rank: all or none reduce
            from ..distributed import _mpi
            MPI = _mpi()
            sums = np.concatenate((dbias, dweight)).astype(np.float64)
            comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
            C = mean.shape[0]
            k = w.astype(np.float64) * invstd / n
            shape = (1, C) + (1,) * (x.ndim - 2)
            a = (k * sums[:C]).astype(x.dtype).reshape(shape)
            b = (k * invstd * sums[C:]).astype(x.dtype).reshape(shape)
            dx -= a + (x - mean.reshape(shape)) * b
        return (dx, dweight, dbias)[:len(inputs)]


class SyncBatchNorm(_BatchNorm):
    """Batch Normalization over ``(N, C, *)`` input with statistics over all ranks' batches.

    ``process_group``: an mpi4py communicator (default: the one set by
    ``fastbn.distributed.init_process_group``).
    """
    _input_ndims = (2, 3, 4, 5)

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, process_group=None, device=None, dtype=None, *,
                 bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype, bias=bias)
        self.process_group = process_group

    def _comm(self):
        from .. import distributed
        comm = (distributed._default_comm if self.process_group is None
                else self.process_group)
        return comm if comm is not None and comm.Get_size() > 1 else None

    def forward(self, input):
        comm = self._comm() if self.training else None
        if comm is None:
            return super().forward(input)
        self._check_input(input)
        momentum = self._step_momentum() if self.track_running_stats else 0.0
        x = _ops._float_tensor(input, "SyncBatchNorm")
        inputs = (x,) if self.weight is None else (x, self.weight) if self.bias is None \
            else (x, self.weight, self.bias)
        _ops._same_dtype("SyncBatchNorm", *zip(("input", "weight", "bias"), inputs))
        out = _SyncBatchNorm.apply(*inputs, running_mean=self.running_mean,
                                   running_var=self.running_var, momentum=momentum,
                                   eps=self.eps, comm=comm)
        return F.relu(out) if self._relu else out

    @classmethod
    def convert_sync_batchnorm(cls, module, process_group=None):
        """module with every BatchNorm1d/2d (and BatchNormReLU1d/2d, the ReLU kept)
        replaced by a SyncBatchNorm that shares its
        parameters and buffers (so an optimizer built before still works); returns the
        new root when module itself is one."""
        if isinstance(module, _BatchNorm) and not isinstance(module, SyncBatchNorm):
            dtype = (module.weight.data.dtype if module.weight is not None else
                     module.running_mean.dtype if module.running_mean is not None else
                     np.float32)
            sync = cls(module.num_features, module.eps, module.momentum, module.affine,
                       module.track_running_stats, process_group, dtype=dtype)
            for name in ("weight", "bias"):
                sync.register_parameter(name, getattr(module, name))
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                sync.register_buffer(name, getattr(module, name))
            sync._relu = module._relu  # BatchNormReLU: the ReLU stays
            sync.train(module.training)
            return sync
        for name, child in list(module.named_children()):
            converted = cls.convert_sync_batchnorm(child, process_group)
            if converted is not child:
                module.add_module(name, converted)
        return module
