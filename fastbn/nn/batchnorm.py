"""Batch Normalization and its training-time variants, with PyTorch's semantics.

- ``BatchNorm1d/2d/3d``: training mode normalizes with the batch's mean and biased
  variance and, when ``track_running_stats``, updates
  ``running = (1 - momentum) * running + momentum * batch`` with the unbiased variance;
  ``momentum=None`` uses 1 / num_batches_tracked instead (a cumulative average).
- Eval mode normalizes with the running statistics when the layer has them, even if
  ``track_running_stats`` was set to False after construction (PyTorch's rule:
  batch statistics in training, or when there are no running statistics).
  ``track_running_stats=False`` in training leaves the running statistics alone.
- ``affine``: a learned per-channel weight (init 1) and bias (init 0); ``bias=False``
  (a keyword, as in PyTorch) keeps the weight and drops the bias.

BatchNormReLU1d/2d are BatchNorm followed by ReLU in one fused kernel (no
PyTorch counterpart): same arguments, parameters, buffers and state_dict keys.
BatchRenorm1d/2d (Batch Renormalization) and GhostBatchNorm1d/2d (ghost batches)
change only what training computes; in eval mode they are BatchNorm.  All have
BatchNorm's parameters, buffers and state_dict keys.
"""
import math
import numbers

import numpy as np

from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter, factory_dtype

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNormReLU1d", "BatchNormReLU2d",
           "BatchRenorm1d", "BatchRenorm2d", "GhostBatchNorm1d", "GhostBatchNorm2d"]


class _NormBase(Module):
    """Per-channel affine parameters and running statistics (PyTorch's _NormBase):
    what BatchNorm, its variants and InstanceNorm share."""
    _input_ndims = ()

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
        """Running mean 0, running variance 1, num_batches_tracked 0 (when tracked)."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self):
        """reset_running_stats, and the affine weight back to 1, the bias to 0."""
        self.reset_running_stats()
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

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

    def _use_batch_stats(self, shape):
        """PyTorch's rule: batch statistics in training or without running statistics;
        a ValueError when they are used and a channel has a single value."""
        use = self.training or (self.running_mean is None and self.running_var is None)
        if use and math.prod(shape) // shape[1] == 1:
            why = ("the layer is in training mode" if self.training else
                   "it has no running statistics (track_running_stats=False)")
            raise ValueError(
                f"{self._layer_name()}: expected more than 1 value per channel, got input "
                f"of shape {shape}. Batch statistics are used because {why}, and a batch of "
                "one sample has none. Drop the last incomplete batch with "
                "DataLoader(..., drop_last=True), or use a larger batch.")
        return use

    def _step_momentum(self):
        """Count a training step; return the weight of its statistics in the running
        ones: momentum, or 1 / num_batches_tracked (cumulative average) for None."""
        count = self.num_batches_tracked
        n = int(count) + 1
        count.fill(n)  # in place; `+=` would re-register the buffer, 0-d NumPy math is slow
        return 1.0 / n if self.momentum is None else self.momentum

    def _eval_forward(self, input, use_batch_stats):
        """Batch Normalization outside training (the variants' eval mode)."""
        return F.batch_norm(input, self.running_mean, self.running_var, self.weight, self.bias,
                            use_batch_stats, 0.0, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class _BatchNorm(_NormBase):
    _relu = False  # a ReLU fused after the normalization

    def forward(self, input):
        shape = self._check_input(input)
        use_batch_stats = self._use_batch_stats(shape)
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

    def extra_repr(self):
        # a SyncBatchNorm converted from a BatchNormReLU: its name does not say it
        return super().extra_repr() + (", relu=True" if self._relu and not type(self)._relu
                                       else "")


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


class BatchNorm3d(_BatchNorm):
    """Batch Normalization over (N, C, D, H, W) input (PyTorch's ``nn.BatchNorm3d``).

    Parameters
    ----------
    num_features : int
        C, the channels (axis 1).
    eps : float, default 1e-5
        Added to the variance; positive.
    momentum : float or None, default 0.1
        Weight of a step's statistics in the running ones; None: cumulative average.
    affine : bool, default True
        Learn a per-channel weight (init 1) and bias (init 0).
    track_running_stats : bool, default True
        Keep running_mean, running_var and num_batches_tracked, and normalize with
        them in eval mode.
    device, dtype
        PyTorch's factory keywords: the CPU, float32 (default) or float64.
    bias : bool, default True
        Keyword only: with ``affine``, learn the bias too.

    Raises
    ------
    ValueError
        In forward, for input that is not 5-D with num_features channels, or a
        channel of a single value when batch statistics are used.
    """
    _input_ndims = (5,)


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


def _check_limit(value, name, lo):
    """r_max / d_max: a number >= lo, or a callable of the step giving one."""
    if callable(value):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= lo:
        raise ValueError(f"{name} must be a number >= {lo} or a callable of the step that "
                         f"returns one, got {value!r}")
    return float(value)


class _BatchRenorm(_NormBase):
    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, r_max=1.0, d_max=0.0,
                 device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, True, device, dtype, bias=bias)
        self.r_max = _check_limit(r_max, "r_max", 1.0)
        self.d_max = _check_limit(d_max, "d_max", 0.0)

    def limits(self, step=None):
        """``(r_max, d_max)`` at a training step (default: the next one,
        ``num_batches_tracked``): the fixed values, or what the schedules return.

        Raises
        ------
        ValueError
            When a schedule returns r_max < 1 or d_max < 0 (or NaN).
        """
        step = int(self.num_batches_tracked) if step is None else int(step)
        values = []
        for name, value, lo in (("r_max", self.r_max, 1.0), ("d_max", self.d_max, 0.0)):
            if callable(value):
                got = value(step)
                if isinstance(got, bool) or not isinstance(got, numbers.Real) or not got >= lo:
                    raise ValueError(f"{self._layer_name()}: the {name} schedule returned "
                                     f"{got!r} at step {step}; expected a number >= {lo}")
                value = float(got)
            values.append(value)
        return tuple(values)

    def forward(self, input):
        shape = self._check_input(input)
        use_batch_stats = self._use_batch_stats(shape)
        if not self.training:
            return self._eval_forward(input, use_batch_stats)
        r_max, d_max = self.limits()
        momentum = self._step_momentum()
        return F.batch_renorm(input, self.running_mean, self.running_var, self.weight,
                              self.bias, r_max, d_max, momentum, self.eps)

    def extra_repr(self):
        def show(v):
            return getattr(v, "__name__", "schedule") if callable(v) else v
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, r_max={show(self.r_max)}, "
                f"d_max={show(self.d_max)}")


_RENORM_DOC = """Batch Renormalization over {shape} input (Ioffe, 2017).

    Training follows Chainer's ``BatchRenormalization`` (the paper's Algorithm 1
    with Batch Normalization's running statistics): with the batch's mean and
    ``sigma_B = sqrt(var_B + eps)`` and the running statistics before the step's
    update, ``sigma = sqrt(running_var + eps)``::

        r = clip(sigma_B / sigma, 1 / r_max, r_max)
        d = clip((mean_B - running_mean) / sigma, -d_max, d_max)
        y = ((x - mean_B) / sigma_B * r + d) * weight + bias

    r and d are constants in the backward (the gradient flows through the batch
    statistics as in Batch Normalization).  The running statistics are then
    updated as Batch Normalization's (momentum, unbiased variance).  Eval mode is
    Batch Normalization with the running statistics, so a trained model folds
    and exports like one.

    With ``r_max=1, d_max=0`` (the defaults, as Chainer's) the layer is
    Batch Normalization in training too, bit for bit.  The paper starts there
    and relaxes the limits as the running statistics settle, to r_max = 3 and
    d_max = 5; give a schedule for that, a callable of the training step
    (``num_batches_tracked`` before the step), e.g. the paper's ImageNet one::

        r_max=lambda t: 1 + 2 * min(max(t - 5000, 0) / 35000, 1),
        d_max=lambda t: 5 * min(max(t - 5000, 0) / 20000, 1)

    Parameters
    ----------
    num_features : int
        C, the channels (axis 1).
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        Weight of a step's statistics in the running ones; None: cumulative average.
    affine : bool, default True
        Learn a per-channel weight (init 1) and bias (init 0).
    r_max : float or callable, default 1.0
        At least 1 (``math.inf``: no clipping), or ``step -> value``.
    d_max : float or callable, default 0.0
        At least 0, or ``step -> value``.
    device, dtype
        PyTorch's factory keywords: the CPU, float32 (default) or float64.
    bias : bool, default True
        Keyword only: with ``affine``, learn the bias too.

    Attributes
    ----------
    running_mean, running_var : ndarray, shape (num_features,)
    num_batches_tracked : ndarray, shape ()
        Training steps so far: the step the schedules see.

    Raises
    ------
    ValueError
        On construction, for r_max < 1 or d_max < 0; in forward, for input of
        another shape, a channel of a single value in training, or a schedule
        that returns a value out of range.
    """


class BatchRenorm1d(_BatchRenorm):
    __doc__ = _RENORM_DOC.format(shape="(N, C) or (N, C, L)")
    _input_ndims = (2, 3)


class BatchRenorm2d(_BatchRenorm):
    __doc__ = _RENORM_DOC.format(shape="(N, C, H, W)")
    _input_ndims = (4,)


class _GhostBatchNorm(_NormBase):
    def __init__(self, num_features, virtual_batch_size, eps=1e-5, momentum=0.1, affine=True,
                 track_running_stats=True, device=None, dtype=None, *, bias=True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device,
                         dtype, bias=bias)
        if (isinstance(virtual_batch_size, bool)
                or not isinstance(virtual_batch_size, numbers.Integral)
                or virtual_batch_size < 1):
            raise ValueError(f"virtual_batch_size must be a positive int, got "
                             f"{virtual_batch_size!r}")
        self.virtual_batch_size = int(virtual_batch_size)

    def forward(self, input):
        shape = self._check_input(input)
        use_batch_stats = self._use_batch_stats(shape)
        if not self.training:
            return self._eval_forward(input, use_batch_stats)
        momentum, running_mean, running_var = 0.0, None, None
        if self.track_running_stats:
            momentum = self._step_momentum()
            running_mean, running_var = self.running_mean, self.running_var
        return F.ghost_batch_norm(input, self.virtual_batch_size, running_mean, running_var,
                                  self.weight, self.bias, momentum, self.eps)

    def extra_repr(self):
        return (f"{self.num_features}, virtual_batch_size={self.virtual_batch_size}, "
                f"eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


_GHOST_DOC = """Ghost Batch Normalization over {shape} input (Hoffer et al., 2017).

    In training the batch is cut into ghost batches of ``virtual_batch_size``
    consecutive samples (the last one holds what is left) and each is normalized
    with its own mean and biased variance, exactly as BatchNorm would normalize it
    alone: the noise of small-batch statistics with the throughput of a large
    batch.  The running statistics are updated once per step, from the ghost
    batches' statistics::

        running = (1 - momentum) * running + momentum * stat

    with stat the ghost batches' means, and their unbiased variances, averaged with
    weights proportional to their sizes: the step's estimate of what BatchNorm's
    per-chunk updates would track, so ``momentum`` keeps its meaning per step.  With
    a batch no larger than ``virtual_batch_size`` the layer is BatchNorm, bit for
    bit.  Eval mode is BatchNorm (the running statistics, or the whole batch's
    without them).

    Parameters
    ----------
    num_features : int
        C, the channels (axis 1).
    virtual_batch_size : int
        Samples per ghost batch.
    eps : float, default 1e-5
    momentum : float or None, default 0.1
        Weight of a step's statistics in the running ones; None: cumulative average.
    affine : bool, default True
    track_running_stats : bool, default True
    device, dtype
        PyTorch's factory keywords: the CPU, float32 (default) or float64.
    bias : bool, default True
        Keyword only: with ``affine``, learn the bias too.

    Raises
    ------
    ValueError
        On construction, for a virtual_batch_size that is not a positive int; in
        forward, for input of another shape, or a ghost batch with a single value
        per channel in training.
    """


class GhostBatchNorm1d(_GhostBatchNorm):
    __doc__ = _GHOST_DOC.format(shape="(N, C) or (N, C, L)")
    _input_ndims = (2, 3)


class GhostBatchNorm2d(_GhostBatchNorm):
    __doc__ = _GHOST_DOC.format(shape="(N, C, H, W)")
    _input_ndims = (4,)
