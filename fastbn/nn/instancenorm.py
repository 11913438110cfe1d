"""InstanceNorm1d/2d/3d with PyTorch's semantics (``torch.nn.modules.instancenorm``).

Each sample's channel is normalized with its own statistics over the spatial positions.
With ``track_running_stats=True`` training also updates running statistics (the
samples' average mean and average unbiased variance, with ``momentum``; momentum None
updates nothing, as in PyTorch), and eval mode normalizes with them, as BatchNorm does;
otherwise eval mode uses the input's statistics too.  Unbatched input (no N axis) is
taken as a batch of one.
"""
import warnings

import numpy as np

from ..autograd import Tensor
from . import functional as F
from .batchnorm import _NormBase

__all__ = ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"]


class _InstanceNorm(_NormBase):
    _no_batch_dim = 0  # the input's dimensions without N

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=False,
                 track_running_stats=False, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)

    def forward(self, input):
        shape = input.shape if isinstance(input, Tensor) else np.shape(input)
        d = self._no_batch_dim
        if len(shape) not in (d, d + 1):
            raise ValueError(f"{self._layer_name()}: expected {d}D (unbatched) or {d + 1}D "
                             f"input, got {len(shape)}D input of shape {shape}")
        channels = shape[len(shape) - d]
        if channels != self.num_features:
            message = (f"{self._layer_name()}: expected input's size at dim="
                       f"{len(shape) - d} to match num_features ({self.num_features}), "
                       f"got input of shape {shape}")
            if self.affine or self.running_mean is not None:
                raise ValueError(message)
            # PyTorch's rule: without parameters or statistics num_features is unused
            warnings.warn(message + "; num_features is not used without affine or running "
                          "statistics", stacklevel=2)
        if len(shape) == d:
            return self._normalize(F.unsqueeze(input, 0)).squeeze(0)
        return self._normalize(input)

    def _normalize(self, input):
        return F.instance_norm(input, self.running_mean, self.running_var, self.weight,
                               self.bias, self.training or not self.track_running_stats,
                               0.0 if self.momentum is None else self.momentum, self.eps)


_DOC = """Instance Normalization over {shape} input (PyTorch's ``nn.{name}``).

    Each sample's channel is normalized with the mean and biased variance of its
    {positions}, then (``affine``) scaled and shifted per channel.  With
    ``track_running_stats`` training updates running statistics,
    ``running = (1 - momentum) * running + momentum * stat`` with stat the samples'
    average mean and average unbiased variance, and eval mode normalizes with them
    (as BatchNorm); otherwise eval mode uses the input's statistics too.  PyTorch's
    defaults: no affine, no running statistics.

    Parameters
    ----------
    num_features : int
        C, the channels.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        Weight of a step's statistics in the running ones; None leaves them as they
        are (PyTorch's InstanceNorm).
    affine : bool, default False
        Learn a per-channel weight (init 1) and bias (init 0).
    track_running_stats : bool, default False
    device, dtype
        PyTorch's factory keywords: the CPU, float32 (default) or float64.
    bias : bool, default True
        Keyword only: with ``affine``, learn the bias too.

    Raises
    ------
    ValueError
        In forward, for input of another number of dimensions, a single spatial
        position when the input's statistics are used, or another number of
        channels with ``affine`` or running statistics (without them PyTorch only
        warns, and so does this layer).
    """


class InstanceNorm1d(_InstanceNorm):
    __doc__ = _DOC.format(shape="(N, C, L) or (C, L)", name="InstanceNorm1d",
                          positions="L positions")
    _no_batch_dim = 2


class InstanceNorm2d(_InstanceNorm):
    __doc__ = _DOC.format(shape="(N, C, H, W) or (C, H, W)", name="InstanceNorm2d",
                          positions="H x W positions")
    _no_batch_dim = 3


class InstanceNorm3d(_InstanceNorm):
    __doc__ = _DOC.format(shape="(N, C, D, H, W) or (C, D, H, W)", name="InstanceNorm3d",
                          positions="D x H x W positions")
    _no_batch_dim = 4
