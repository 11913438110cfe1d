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
    """Batch Normalization with statistics over every rank's batch (``torch.nn.SyncBatchNorm``).

    Over MPI.  In training, each rank's per-channel (count, mean, M2) is gathered by one
    Allgather and merged in the same order on every rank, so the statistics agree bit
    for bit; the backward makes one Allreduce.  Outside training, with one rank, or
    before ``init_process_group`` it is plain BatchNorm (PyTorch's fallback).
    dweight and dbias are this rank's sums, as in PyTorch:
    :class:`fastbn.distributed.DistributedDataParallel` averages them.

    Parameters
    ----------
    num_features : int
        C, the number of channels (axis 1 of the input), positive.
    eps : float, optional
        Added to the variance for numerical stability, > 0.
    momentum : float or None, optional
        Weight of each batch's statistics in the running ones, in [0, 1]; None keeps
        a cumulative average (``1 / num_batches_tracked``).
    affine : bool, optional
        Learn a per-channel weight (init 1) and bias (init 0).
    track_running_stats : bool, optional
        Keep running statistics (updated in training, used in eval); without them the
        batch's statistics normalize in eval too.
    process_group : mpi4py.MPI.Comm, optional
        The ranks whose batches share statistics; None: the communicator set by
        :func:`fastbn.distributed.init_process_group`.
    device : str or device, optional
        PyTorch's factory keyword: ``'cpu'`` or None (fastbn runs on the CPU only).
    dtype : dtype, optional
        float32 (when None) or float64: the parameters' and buffers' dtype, which the
        input must match.
    bias : bool, optional
        Keyword only, as in PyTorch: False keeps the weight and drops the bias.

    Attributes
    ----------
    weight : Parameter or None
        Shape (C,), when ``affine``.
    bias : Parameter or None
        Shape (C,), when ``affine`` and ``bias``.
    running_mean : numpy.ndarray or None
        Buffer of shape (C,), init 0, when ``track_running_stats``.
    running_var : numpy.ndarray or None
        Buffer of shape (C,), init 1 (unbiased batch variances enter it).
    num_batches_tracked : numpy.ndarray or None
        0-d int64 buffer counting the training steps.

    Raises
    ------
    ValueError
        For a num_features that is not a positive int, eps <= 0, momentum out of
        [0, 1], or a device that is not the CPU; in ``forward``, for input of the wrong
        number of dims or channels, or with one value per channel when batch statistics
        are needed (over all ranks, raised on every rank alike).
    TypeError
        For a dtype other than float32/float64.

    Notes
    -----
    Shape:

    - Input: ``(N, C)`` or ``(N, C, *)`` with up to 3 spatial dims, float32 or float64.
    - Output: the input's shape and dtype.

    state_dict keys: ``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (those that are not None), as PyTorch's.
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
        """Replace every BatchNorm in ``module`` by a SyncBatchNorm.

        As ``torch.nn.SyncBatchNorm.convert_sync_batchnorm``.

        BatchNorm1d/2d and BatchNormReLU1d/2d (the ReLU kept) are replaced by a
        SyncBatchNorm that shares their parameters and buffers, so an optimizer built
        before still works; the train/eval mode is kept.

        Parameters
        ----------
        module : Module
            The model, changed in place.
        process_group : mpi4py.MPI.Comm, optional
            As the constructor's.

        Returns
        -------
        Module
            ``module``, or the new SyncBatchNorm when ``module`` itself is a BatchNorm.
        """
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
