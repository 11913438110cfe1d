"""BatchNorm1d and BatchNorm2d with PyTorch's semantics.

- Training mode normalizes with the batch's mean and biased variance and, when
  ``track_running_stats``, updates ``running = (1 - momentum) * running + momentum * batch``
  with the unbiased variance; ``momentum=None`` uses 1 / num_batches_tracked instead (a
  cumulative average).
- Eval mode normalizes with the running statistics when the layer has them, even if
  ``track_running_stats`` was set to False after construction (PyTorch's rule:
  batch statistics in training, or when there are no running statistics).
  ``track_running_stats=False`` in training leaves the running statistics alone.
- ``affine``: a learned per-channel weight (init 1) and bias (init 0); ``bias=False``
  (a keyword, as in PyTorch) keeps the weight and drops the bias.

BatchNormReLU1d/2d are BatchNorm followed by ReLU in one fused kernel (no
PyTorch counterpart): same arguments, parameters, buffers and state_dict keys.
"""
import math
import numbers

import numpy as np

from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter, factory_dtype

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNormReLU1d", "BatchNormReLU2d"]


class _BatchNorm(Module):
    _input_ndims = ()
    _relu = False  # a ReLU fused after the normalization

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__()
        if (isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral)
                or num_features < 1):
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, numbers.Real)
                                         and 0 <= momentum <= 1):
            raise ValueError(f"momentum must be in [0, 1] or None, got {momentum!r}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = factory_dtype(device, dtype)
        C = self.num_features
        self.register_parameter("weight", Parameter(np.ones(C, dtype)) if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(C, dtype)) if affine and bias
                                else None)
        tracked = self.track_running_stats
        self.register_buffer("running_mean", np.zeros(C, dtype) if tracked else None)
        self.register_buffer("running_var", np.ones(C, dtype) if tracked else None)
        self.register_buffer("num_batches_tracked", np.array(0, np.int64) if tracked else None)

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def _check_input(self, input):
        shape = input.shape if isinstance(input, Tensor) else np.shape(input)
        if len(shape) not in self._input_ndims:
            dims = " or ".join(f"{d}D" for d in self._input_ndims)
            raise ValueError(f"{self._layer_name()}: expected {dims} input, got "
                             f"{len(shape)}D input of shape {shape}")
        if shape[1] != self.num_features:
            raise ValueError(f"{self._layer_name()}: expected {self.num_features} channels "
                             f"(axis 1), got input of shape {shape}")
        return shape

    def forward(self, input):
        shape = self._check_input(input)
        # PyTorch's rule: batch statistics in training or without running statistics
        use_batch_stats = self.training or (self.running_mean is None
                                            and self.running_var is None)
        if use_batch_stats and math.prod(shape) // shape[1] == 1:
            why = ("the layer is in training mode" if self.training else
                   "it has no running statistics (track_running_stats=False)")
            raise ValueError(
                f"{self._layer_name()}: expected more than 1 value per channel, got input "
                f"of shape {shape}. Batch statistics are used because {why}, and a batch of "
                "one sample has none. Drop the last incomplete batch with "
                "DataLoader(..., drop_last=True), or use a larger batch.")
        momentum = 0.0
        running_mean, running_var = self.running_mean, self.running_var
        if self.training:
            if self.track_running_stats:
                momentum = self._step_momentum()
            else:           # training without tracking leaves any running statistics alone
                running_mean = running_var = None
        norm = F.batch_norm_relu if self._relu else F.batch_norm
        return norm(input, running_mean, running_var, self.weight, self.bias,
                    use_batch_stats, momentum, self.eps)

    def _step_momentum(self):
        """Count a training step; return the weight of its statistics in the running
        ones: momentum, or 1 / num_batches_tracked (cumulative average) for None."""
        count = self.num_batches_tracked
        n = int(count) + 1
        count.fill(n)  # in place; `+=` would re-register the buffer, 0-d NumPy math is slow
        return 1.0 / n if self.momentum is None else self.momentum

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}"
                # a SyncBatchNorm converted from a BatchNormReLU: its name does not say it
                + (", relu=True" if self._relu and not type(self)._relu else ""))


class BatchNorm1d(_BatchNorm):
    """Batch Normalization over (N, C) or (N, C, L) input (``torch.nn.BatchNorm1d``).

    Training mode normalizes with the batch's mean and biased variance and, with
    ``track_running_stats``, updates ``running = (1 - momentum) * running +
    momentum * batch`` (unbiased variance).  Eval mode normalizes with the running
    statistics when the layer has them.  PyTorch's semantics throughout.

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
        are needed.
    TypeError
        For a dtype other than float32/float64.

    Notes
    -----
    Shape:

    - Input: ``(N, C)`` or ``(N, C, L)``, float32 or float64.
    - Output: the input's shape and dtype.

    state_dict keys: ``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (those that are not None), as PyTorch's.
    """
    _input_ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch Normalization over (N, C, H, W) input (``torch.nn.BatchNorm2d``).

    Training mode normalizes with the batch's mean and biased variance and, with
    ``track_running_stats``, updates ``running = (1 - momentum) * running +
    momentum * batch`` (unbiased variance).  Eval mode normalizes with the running
    statistics when the layer has them.  PyTorch's semantics throughout.

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
        are needed.
    TypeError
        For a dtype other than float32/float64.

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)``, float32 or float64.
    - Output: the input's shape and dtype.

    state_dict keys: ``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (those that are not None), as PyTorch's.
    """
    _input_ndims = (4,)


class BatchNormReLU1d(BatchNorm1d):
    """``relu(BatchNorm1d(x))`` in one fused kernel (one pass over memory fewer each way).

    No PyTorch counterpart: the same arguments, parameters, buffers and state_dict
    keys as :class:`BatchNorm1d`, so one loads the other's state_dict.

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
        are needed.
    TypeError
        For a dtype other than float32/float64.

    Notes
    -----
    Shape:

    - Input: ``(N, C)`` or ``(N, C, L)``, float32 or float64.
    - Output: the input's shape and dtype.

    state_dict keys: ``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (those that are not None), as PyTorch's.
    """
    _relu = True


class BatchNormReLU2d(BatchNorm2d):
    """``relu(BatchNorm2d(x))`` in one fused kernel (one pass over memory fewer each way).

    No PyTorch counterpart: the same arguments, parameters, buffers and state_dict
    keys as :class:`BatchNorm2d`, so one loads the other's state_dict.

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
        are needed.
    TypeError
        For a dtype other than float32/float64.

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)``, float32 or float64.
    - Output: the input's shape and dtype.

    state_dict keys: ``weight``, ``bias``, ``running_mean``, ``running_var``,
    ``num_batches_tracked`` (those that are not None), as PyTorch's.
    """
    _relu = True
