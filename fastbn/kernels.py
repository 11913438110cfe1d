"""Validated NumPy entry points to the compiled kernels: Batch Normalization
(``fastbn._core``) and its relatives, Group, Layer and Instance Normalization
(``fastbn._norm``), ReLU (``fastbn._activation``), conv2d (``fastbn._conv``,
``fastbn._winograd``), pooling (``fastbn._conv``) and the optimizers'
parameter updates (``fastbn._optim``).

Arrays in, arrays out.  This is the only module that calls the compiled
modules; it checks types, shapes and values, makes inputs C-contiguous and
picks the thread count.  The autodiff tape calls these.
"""
import math
import numbers

import numpy as np

from . import _activation, _blas, _conv, _core, _norm, _optim, _winograd
from ._config import blas_thread_control, get_num_threads

__all__ = ["batch_norm_forward", "batch_norm_backward",
           "group_norm_forward", "group_norm_backward", "layer_norm_forward",
           "layer_norm_backward", "instance_norm_forward", "instance_norm_backward",
           "batch_renorm_forward", "batch_renorm_backward", "ghost_batch_norm_forward",
           "ghost_batch_norm_backward",
           "relu_forward", "add_relu_forward", "relu_backward",
           "matmul",
           "conv2d_forward", "conv2d_backward",
           "max_pool2d_forward", "max_pool2d_backward",
           "avg_pool2d_forward", "avg_pool2d_backward",
           "adaptive_avg_pool2d_forward", "adaptive_avg_pool2d_backward",
           "sgd_update", "sgd_updates", "adam_update", "adam_updates", "adamw_updates",
           "rmsprop_updates", "adadelta_updates"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_blas.set_thread_control(blas_thread_control())


def _check_float(x, name):
    """x as a C-contiguous float32 / float64 array."""
    if type(x) is not np.ndarray:
        x = np.asarray(x)
    if x.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; supported dtypes are float32 and float64")
    # ascontiguousarray would turn a 0-d array into a 1-d one
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def _check_input(x, name):
    """x as a C-contiguous float (N, C, *spatial) array."""
    x = _check_float(x, name)
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N, C) or (N, C, *spatial), got shape {x.shape}")
    return x


def _check_matches(a, name, like, like_name):
    """a (a checked array) beside `like`: the same shape and dtype."""
    if a.shape != like.shape:
        raise ValueError(f"{name} has shape {a.shape} but {like_name} has {like.shape}")
    if a.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {a.dtype} but {like_name} has {like.dtype}")
    return a


def _check_channel_param(p, name, x, writable=False):
    """A per-channel vector of x's channel count.  Read-only ones are cast to x's
    dtype; ones updated in place (running stats) must already match it."""
    if p is None:
        return None
    C = x.shape[1]
    if (type(p) is np.ndarray and p.dtype == x.dtype and p.shape == (C,)
            and p.flags.c_contiguous and (p.flags.writeable or not writable)):
        return p  # the common case, checked cheaply: small layers feel every microsecond
    arr = np.asarray(p)
    if arr.ndim != 1 or arr.shape[0] != C:
        raise ValueError(f"{name} must have shape ({C},) to match the input's {C} channels, "
                         f"got shape {arr.shape}")
    if arr.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {arr.dtype}; supported dtypes are float32 and float64")
    if not writable:
        return np.ascontiguousarray(arr, dtype=x.dtype)
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{name} is updated in place and must be a NumPy array, "
                        f"got {type(p).__name__}")
    if arr.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {arr.dtype} but the input has {x.dtype}; "
                        "running statistics must match the input's dtype")
    if not arr.flags.c_contiguous or not arr.flags.writeable:
        raise ValueError(f"{name} is updated in place and must be a writable, "
                         "contiguous array")
    return arr


def _check_scalar(value, name, lo, hi, lo_open):
    if type(value) is float and (lo < value if lo_open else lo <= value) and value <= hi:
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value > lo if lo_open else value >= lo) or not value <= hi:
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name} must be in {bound}, got {value}")
    return value


def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None,
                       training=True, momentum=0.1, eps=1e-5, relu=False):
    """Batch Normalization forward over the channels (axis 1) of x.

    With ``relu=True``, ``relu(batch_norm(x))`` in the same pass.  In training, the
    statistics are the batch's (mean and biased variance over every axis but 1) and
    running_mean / running_var, when given, are updated in place with
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased variance).  In
    inference, the running statistics normalize x and are returned as save_mean and
    ``1 / sqrt(running_var + eps)``.  Bitwise identical results at any thread count.

    Parameters
    ----------
    x : numpy.ndarray
        Shape ``(N, C)`` or ``(N, C, *spatial)``, float32 or float64 (copied to
        C-contiguous if it is not).
    weight : array_like, optional
        The scale, shape (C,), float32 or float64 (cast to x's dtype).
    bias : array_like, optional
        The shift, shape (C,), float32 or float64 (cast to x's dtype).
    running_mean : numpy.ndarray, optional
        Shape (C,).  In training (optional) updated in place, so a writable,
        C-contiguous array of x's dtype; in inference (required) any float array.
    running_var : numpy.ndarray, optional
        Shape (C,), as running_mean.
    training : bool, optional
        Normalize with the batch's statistics (True) or the running ones.
    momentum : float, optional
        In [0, 1].
    eps : float, optional
        Added to the variance, > 0.
    relu : bool, optional
        Apply a ReLU to the output.

    Returns
    -------
    y : numpy.ndarray
        x's shape and dtype, C-contiguous.
    save_mean : numpy.ndarray
        Shape (C,), x's dtype: the mean used (zeros for an empty batch).
    save_invstd : numpy.ndarray
        Shape (C,), x's dtype: ``1 / sqrt(var + eps)`` of the variance used.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, running statistics that are not NumPy
        arrays of x's dtype in training, or a momentum or eps that is not a number.
    ValueError
        For x of fewer than 2 dims, per-channel arrays of the wrong shape, read-only or
        non-contiguous running statistics in training, momentum or eps out of range,
        no running statistics in inference, or one value per channel in training.
    """
    x = _check_input(x, "input")
    weight = _check_channel_param(weight, "weight", x)
    bias = _check_channel_param(bias, "bias", x)
    running_mean = _check_channel_param(running_mean, "running_mean", x, writable=training)
    running_var = _check_channel_param(running_var, "running_var", x, writable=training)
    momentum = _check_scalar(momentum, "momentum", 0.0, 1.0, lo_open=False)
    eps = _check_scalar(eps, "eps", 0.0, np.inf, lo_open=True)
    C = x.shape[1]
    per_channel = x.size // C if C else 0

    if not training:
        if running_mean is None or running_var is None:
            raise ValueError("running_mean and running_var are required when training=False")
        y = np.empty_like(x)
        save_invstd = np.empty(C, dtype=x.dtype)
        _core.forward_eval(x, weight, bias, running_mean, running_var, y,
                           save_invstd, eps, get_num_threads() if x.size else 1, bool(relu))
        return y, running_mean.copy(), save_invstd

    if per_channel == 1:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got input size {x.shape}")
    save_mean = np.zeros(C, dtype=x.dtype)
    save_invstd = np.zeros(C, dtype=x.dtype)
    y = np.empty_like(x)
    if per_channel == 0:  # empty batch: nothing to normalize, running stats untouched
        return y, save_mean, save_invstd
    _core.forward_train(x, weight, bias, y, save_mean, save_invstd,
                        running_mean, running_var, momentum, eps, get_num_threads(),
                        bool(relu))
    return y, save_mean, save_invstd


def batch_norm_backward(dy, x, weight, save_mean, save_invstd, training=True, bias=None,
                        relu=False, need_input=True, need_weight=True, need_bias=True):
    """Gradients of :func:`batch_norm_forward`: ``(dx, dweight, dbias)``.

    What is not needed (``need_*``, as PyTorch's output mask) is not computed: without
    dweight and dbias the inference backward is one pass over dy, and without dx the
    training backward is one pass over x and dy.  ``training=True``: the batch
    statistics depend on x,
    ``dx = weight * invstd / m * (m * g - sum(g) - xhat * sum(g * xhat))``.
    ``training=False``: the statistics are constants (a frozen layer),
    ``dx = g * weight * invstd``.  dweight = sum(g * xhat), dbias = sum(g).  g = dy, or
    with ``relu=True`` (the gradient of the fused ``relu(batch_norm(x))``, bias as in
    the forward) dy where the forward's output was positive, found again from x.

    Parameters
    ----------
    dy : numpy.ndarray
        The output's gradient, x's shape and dtype.
    x : numpy.ndarray
        Shape ``(N, C)`` or ``(N, C, *spatial)``, float32 or float64 (copied to
        C-contiguous if it is not).
    weight : array_like or None
        Shape (C,), as in the forward; None: no scale (then dweight and dbias are None).
    save_mean : array_like
        Shape (C,): the forward's save_mean.
    save_invstd : array_like
        Shape (C,): the forward's save_invstd.
    training : bool, optional
        As in the forward.
    bias : array_like, optional
        Shape (C,): the forward's bias, needed with ``relu=True`` to find the mask.
    relu : bool, optional
        The forward fused a ReLU.
    need_input : bool, optional
        Compute dx.
    need_weight : bool, optional
        Compute dweight.
    need_bias : bool, optional
        Compute dbias.

    Returns
    -------
    dx : numpy.ndarray or None
        x's shape and dtype.
    dweight : numpy.ndarray or None
        Shape (C,), x's dtype.
    dbias : numpy.ndarray or None
        Shape (C,), x's dtype.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, or dy of another dtype than x.
    ValueError
        For x of fewer than 2 dims, dy of another shape, per-channel arrays of the
        wrong shape, or a missing save_mean or save_invstd.
    """
    x = _check_input(x, "input")
    dy = _check_matches(_check_input(dy, "grad_output"), "grad_output", x, "the input")
    weight = _check_channel_param(weight, "weight", x)
    bias = _check_channel_param(bias, "bias", x)
    save_mean = _check_channel_param(save_mean, "save_mean", x)
    save_invstd = _check_channel_param(save_invstd, "save_invstd", x)
    if save_mean is None or save_invstd is None:
        raise ValueError("save_mean and save_invstd are required")
    C = x.shape[1]
    dx = np.empty_like(x) if need_input else None
    dweight = np.zeros(C, dtype=x.dtype) if need_weight and weight is not None else None
    dbias = np.zeros(C, dtype=x.dtype) if need_bias and weight is not None else None
    if x.size and (dx is not None or dweight is not None or dbias is not None):
        _core.backward(dy, x, weight, save_mean, save_invstd, dx,
                       dweight, dbias, bool(training), get_num_threads(), bias, bool(relu))
    return dx, dweight, dbias


# ---------------------------------------------------------------- the normalization family
# Group, Layer and Instance Normalization run on fastbn._norm (statistics per row of a
# reshaped view); Batch Renormalization and ghost batches are Batch Normalization's
# kernels with other coefficients or on chunks of the batch.


def _check_eps(eps):
    return _check_scalar(eps, "eps", 0.0, np.inf, lo_open=True)


def _check_param(p, name, x, shape):
    """A read-only weight or bias of the given shape, cast to x's dtype, as one
    contiguous vector (None stays None)."""
    if p is None:
        return None
    arr = np.asarray(p)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got shape {arr.shape}")
    if arr.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {arr.dtype}; supported dtypes are float32 and float64")
    return np.ascontiguousarray(arr, dtype=x.dtype).reshape(-1)


def _check_num_groups(num_groups, C):
    if (isinstance(num_groups, bool) or not isinstance(num_groups, numbers.Integral)
            or num_groups < 1):
        raise ValueError(f"num_groups must be a positive int, got {num_groups!r}")
    if C % num_groups:
        raise ValueError(f"num_groups={num_groups} must divide the input's {C} channels")
    return int(num_groups)


def _rows_forward(x, N, G, Cg, L, weight, bias, eps, stats_shape, var=None):
    """y, mean, invstd of fastbn._norm.forward over the (N, G * Cg, L) view of x."""
    y = np.empty_like(x)
    mean = np.zeros(stats_shape, x.dtype)
    invstd = np.zeros(stats_shape, x.dtype)
    if x.size:
        _norm.forward(x, N, G, Cg, L, weight, bias, y, mean, invstd, var, eps,
                      get_num_threads())
    return y, mean, invstd


def _rows_backward(dy, x, N, G, Cg, L, weight, mean, invstd, need_input, need_weight,
                   need_bias):
    """(dx, dweight, dbias) of fastbn._norm.backward, None where not needed
    (dweight and dbias also without a weight)."""
    C = G * Cg
    dx = np.empty_like(x) if need_input else None
    dweight = np.zeros(C, x.dtype) if need_weight and weight is not None else None
    dbias = np.zeros(C, x.dtype) if need_bias and weight is not None else None
    if x.size and (dx is not None or dweight is not None or dbias is not None):
        _norm.backward(dy, x, N, G, Cg, L, weight, np.ascontiguousarray(mean).reshape(-1),
                       np.ascontiguousarray(invstd).reshape(-1), dx, dweight, dbias,
                       get_num_threads())
    return dx, dweight, dbias


def _check_saved(a, name, x, shape):
    a = np.asarray(a)
    if a.shape != shape or a.dtype != x.dtype:
        raise ValueError(f"{name} must be a {x.dtype} array of shape {shape} (as the forward "
                         f"returned it), got {a.dtype} of shape {a.shape}")
    return a


def group_norm_forward(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group Normalization forward, as PyTorch's ``F.group_norm``.

    Group Normalization forward (PyTorch's ``F.group_norm``): the C channels
    of x ``(N, C, *spatial)`` form ``num_groups`` groups of consecutive channels;
    each (sample, group) is normalized with its own mean and biased variance,
    then ``y = xhat * weight[c] + bias[c]`` per channel.

    Returns ``(y, mean, invstd)``, the statistics of shape (N, num_groups).

    Parameters
    ----------
    x : ndarray, shape ``(N, C, *spatial)``
        float32 or float64 (non-contiguous input is copied).
    num_groups : int
        A positive divisor of C.
    weight, bias : ndarray, shape (C,), optional
        x's dtype; None: no scale, no shift.
    eps : float, default 1e-5
        Added to the variance; positive.

    Returns
    -------
    y : ndarray
        x's shape and dtype.
    mean, invstd : ndarray, shape (N, num_groups)
        Each group's mean and ``1 / sqrt(var + eps)``, x's dtype.

    Raises
    ------
    ValueError
        For x of fewer than 2 dimensions, num_groups not dividing C,
        groups of one value, a weight or bias of another shape, or eps not positive.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_input(x, "input")
    N, C = x.shape[:2]
    G = _check_num_groups(num_groups, C)
    weight = _check_param(weight, "weight", x, (C,))
    bias = _check_param(bias, "bias", x, (C,))
    eps = _check_eps(eps)
    L = x.size // (N * C) if N * C else math.prod(x.shape[2:])
    if C // G * L == 1:
        raise ValueError(f"group_norm: expected more than 1 value per group, got input of "
                         f"shape {x.shape} with num_groups={G}")
    return _rows_forward(x, N, G, C // G, L, weight, bias, eps, (N, G))


def group_norm_backward(dy, x, num_groups, weight, mean, invstd, need_input=True,
                        need_weight=True, need_bias=True):
    """Gradients of :func:`group_norm_forward`.

    Gradients of group_norm_forward: ``(dx, dweight, dbias)``, None where not
    needed (``need_*``) and dweight, dbias None without a weight.
    ``dx = invstd * (g - mean(g) - xhat * mean(g * xhat))`` over each group,
    ``g = dy * weight``; dweight = sum(dy * xhat), dbias = sum(dy) per channel.

    Parameters
    ----------
    dy : ndarray
        The gradient of y: x's shape, dtype float32 or float64.
    x : ndarray, shape ``(N, C, *spatial)``
        float32 or float64 (non-contiguous input is copied).
    num_groups : int
        As in the forward.
    weight : ndarray, shape (C,), or None
        The forward's weight.
    mean, invstd : ndarray, shape (N, num_groups)
        What the forward returned.
    need_input, need_weight, need_bias : bool
        Which gradients to compute.

    Returns
    -------
    dx : ndarray or None
        x's shape and dtype.
    dweight, dbias : ndarray or None
        shape (C,), x's dtype; None when not needed or without a weight.

    Raises
    ------
    ValueError
        For shapes that do not match x's.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_input(x, "input")
    dy = _check_matches(_check_input(dy, "grad_output"), "grad_output", x, "the input")
    N, C = x.shape[:2]
    G = _check_num_groups(num_groups, C)
    weight = _check_param(weight, "weight", x, (C,))
    mean = _check_saved(mean, "mean", x, (N, G))
    invstd = _check_saved(invstd, "invstd", x, (N, G))
    L = x.size // (N * C) if N * C else 0
    return _rows_backward(dy, x, N, G, C // G, L, weight, mean, invstd, need_input,
                          need_weight, need_bias)


def _normalized_shape(normalized_shape, x):
    """normalized_shape as a tuple that x's trailing dimensions match."""
    shape = ((normalized_shape,) if isinstance(normalized_shape, numbers.Integral)
             else tuple(normalized_shape))
    if not shape or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                            and s >= 0 for s in shape):
        raise ValueError(f"normalized_shape must be a non-empty shape (an int or a tuple of "
                         f"ints), got {normalized_shape!r}")
    shape = tuple(int(s) for s in shape)
    if x.ndim < len(shape) or x.shape[x.ndim - len(shape):] != shape:
        raise ValueError(f"layer_norm: normalized_shape={shape} expects input of shape "
                         f"(*, {', '.join(map(str, shape))}), got input of shape {x.shape}")
    return shape


def layer_norm_forward(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer Normalization forward, as PyTorch's ``F.layer_norm``.

    Layer Normalization forward (PyTorch's ``F.layer_norm``): each sample's
    last ``len(normalized_shape)`` dimensions, which must be normalized_shape,
    are normalized with their own mean and biased variance, then
    ``y = xhat * weight + bias`` elementwise (weight and bias of
    normalized_shape).

    Returns ``(y, mean, invstd)``, the statistics of the leading shape
    ``x.shape[:-len(normalized_shape)]``.

    Parameters
    ----------
    x : ndarray, shape ``(*, *normalized_shape)``
        float32 or float64 (non-contiguous input is copied).
    normalized_shape : int or tuple of int
        x's trailing shape.
    weight, bias : ndarray, shape normalized_shape, optional
        x's dtype; None: no scale, no shift.
    eps : float, default 1e-5
        Added to the variance; positive.

    Returns
    -------
    y : ndarray
        x's shape and dtype.
    mean, invstd : ndarray
        Of the leading shape, x's dtype.

    Raises
    ------
    ValueError
        For a normalized_shape that is not x's trailing shape, a weight or
        bias of another shape, or eps not positive.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_float(x, "input")
    shape = _normalized_shape(normalized_shape, x)
    weight = _check_param(weight, "weight", x, shape)
    bias = _check_param(bias, "bias", x, shape)
    eps = _check_eps(eps)
    lead = x.shape[:x.ndim - len(shape)]
    M = math.prod(shape)
    return _rows_forward(x, math.prod(lead), 1, M, 1, weight, bias, eps, lead)


def layer_norm_backward(dy, x, normalized_shape, weight, mean, invstd, need_input=True,
                        need_weight=True, need_bias=True):
    """Gradients of :func:`layer_norm_forward`.

    Gradients of layer_norm_forward: ``(dx, dweight, dbias)`` (dweight and
    dbias of normalized_shape), None where not needed (``need_*``) and dweight,
    dbias None without a weight.

    Parameters
    ----------
    dy : ndarray
        The gradient of y: x's shape, dtype float32 or float64.
    x : ndarray, shape ``(*, *normalized_shape)``
        float32 or float64 (non-contiguous input is copied).
    normalized_shape : int or tuple of int
        As in the forward.
    weight : ndarray, shape normalized_shape, or None
        The forward's weight.
    mean, invstd : ndarray
        What the forward returned.
    need_input, need_weight, need_bias : bool
        Which gradients to compute.

    Returns
    -------
    dx : ndarray or None
        x's shape and dtype.
    dweight, dbias : ndarray or None
        shape normalized_shape, x's dtype; None when not needed or without a weight.

    Raises
    ------
    ValueError
        For shapes that do not match x's.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_float(x, "input")
    dy = _check_matches(_check_float(dy, "grad_output"), "grad_output", x, "the input")
    shape = _normalized_shape(normalized_shape, x)
    weight = _check_param(weight, "weight", x, shape)
    lead = x.shape[:x.ndim - len(shape)]
    mean = _check_saved(mean, "mean", x, lead)
    invstd = _check_saved(invstd, "invstd", x, lead)
    M = math.prod(shape)
    dx, dweight, dbias = _rows_backward(dy, x, math.prod(lead), 1, M, 1, weight, mean, invstd,
                                        need_input, need_weight, need_bias)
    return (dx, None if dweight is None else dweight.reshape(shape),
            None if dbias is None else dbias.reshape(shape))


def instance_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None,
                          use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance Normalization forward, as PyTorch's ``F.instance_norm``.

    Instance Normalization forward (PyTorch's ``F.instance_norm``) over x
    ``(N, C, *spatial)``.

    ``use_input_stats=True``: each (sample, channel) is normalized with its own
    mean and biased variance over the spatial positions; running_mean /
    running_var (C,), when given, are updated in place with
    ``running = (1 - momentum) * running + momentum * stat``, stat the average
    over the samples of their means, and of their unbiased variances.
    Returns ``(y, mean, invstd)`` of shape (N, C).  ``use_input_stats=False``:
    the running statistics normalize, as Batch Normalization in inference;
    returns ``(y, running_mean, invstd)`` of shape (C,).

    Parameters
    ----------
    x : ndarray, shape ``(N, C, *spatial)``
        float32 or float64 (non-contiguous input is copied).
    weight, bias : ndarray, shape (C,), optional
        x's dtype; None: no scale, no shift.
    running_mean, running_var : ndarray, shape (C,), optional
        x's dtype, writable: updated in place (required without use_input_stats).
    use_input_stats : bool, default True
        Normalize with each instance's statistics, else with the running ones.
    momentum : float, default 0.1
        In [0, 1].
    eps : float, default 1e-5
        Added to the variance; positive.

    Returns
    -------
    y : ndarray
        x's shape and dtype.
    mean, invstd : ndarray
        Shape (N, C), or (C,) without use_input_stats; x's dtype.

    Raises
    ------
    ValueError
        For x of fewer than 2 dimensions or of one spatial position, missing
        running statistics without use_input_stats, a parameter of another
        shape, or eps not positive.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_input(x, "input")
    if not use_input_stats:
        if running_mean is None or running_var is None:
            raise ValueError("instance_norm: running_mean and running_var are required when "
                             "use_input_stats=False")
        return batch_norm_forward(x, weight, bias, running_mean, running_var, training=False,
                                  eps=eps)
    N, C = x.shape[:2]
    weight = _check_channel_param(weight, "weight", x)
    bias = _check_channel_param(bias, "bias", x)
    running_mean = _check_channel_param(running_mean, "running_mean", x, writable=True)
    running_var = _check_channel_param(running_var, "running_var", x, writable=True)
    momentum = _check_scalar(momentum, "momentum", 0.0, 1.0, lo_open=False)
    eps = _check_eps(eps)
    L = math.prod(x.shape[2:])
    if L == 1:
        raise ValueError(f"instance_norm: expected more than 1 spatial element when using the "
                         f"input's statistics, got input of shape {x.shape}")
    tracked = running_mean is not None or running_var is not None
    var = np.zeros(N * C) if tracked else None
    y, mean, invstd = _rows_forward(x, N, C, 1, L, weight, bias, eps, (N, C), var)
    if tracked and N and L:
        if running_mean is not None:
            running_mean[...] = ((1 - momentum) * running_mean
                                 + momentum * mean.astype(np.float64).mean(axis=0))
        if running_var is not None:
            unbiased = var.reshape(N, C).mean(axis=0) * (L / (L - 1))
            running_var[...] = (1 - momentum) * running_var + momentum * unbiased
    return y, mean, invstd


def instance_norm_backward(dy, x, weight, mean, invstd, use_input_stats=True, need_input=True,
                           need_weight=True, need_bias=True):
    """Gradients of :func:`instance_norm_forward`.

    Gradients of instance_norm_forward, given what it returned (mean, invstd):
    ``(dx, dweight, dbias)``, None where not needed.  With
    ``use_input_stats=False`` the statistics are constants (Batch
    Normalization's inference backward).

    Parameters
    ----------
    dy : ndarray
        The gradient of y: x's shape, dtype float32 or float64.
    x : ndarray, shape ``(N, C, *spatial)``
        float32 or float64 (non-contiguous input is copied).
    weight : ndarray, shape (C,), or None
        The forward's weight.
    mean, invstd : ndarray
        What the forward returned.
    use_input_stats : bool, default True
        As in the forward.
    need_input, need_weight, need_bias : bool
        Which gradients to compute.

    Returns
    -------
    dx : ndarray or None
        x's shape and dtype.
    dweight, dbias : ndarray or None
        shape (C,), x's dtype; None when not needed or without a weight.

    Raises
    ------
    ValueError
        For shapes that do not match x's.
    TypeError
        For input that is not float32 or float64.
    """
    if not use_input_stats:
        return batch_norm_backward(dy, x, weight, mean, invstd, training=False,
                                   need_input=need_input, need_weight=need_weight,
                                   need_bias=need_bias)
    x = _check_input(x, "input")
    dy = _check_matches(_check_input(dy, "grad_output"), "grad_output", x, "the input")
    N, C = x.shape[:2]
    weight = _check_channel_param(weight, "weight", x)
    mean = _check_saved(mean, "mean", x, (N, C))
    invstd = _check_saved(invstd, "invstd", x, (N, C))
    L = x.size // (N * C) if N * C else 0
    return _rows_backward(dy, x, N, C, 1, L, weight, mean, invstd, need_input, need_weight,
                          need_bias)


def batch_renorm_forward(x, weight, bias, running_mean, running_var, r_max=1.0, d_max=0.0,
                         momentum=0.1, eps=1e-5):
    """Batch Renormalization's training forward (Ioffe, 2017).

    Batch Renormalization's training forward (Ioffe, 2017), as Chainer's
    ``BatchRenormalization``: with the batch's mean and std
    ``sigma_B = sqrt(var_B + eps)`` and the running ones (before this step's
    update) ``sigma = sqrt(running_var + eps)``,
    ``r = clip(sigma_B / sigma, 1 / r_max, r_max)``,
    ``d = clip((mean_B - running_mean) / sigma, -d_max, d_max)`` and
    ``y = weight * (xhat * r + d) + bias``.  running_mean / running_var are then
    updated as Batch Normalization's.  With r = 1 and d = 0 everywhere (always
    so for r_max = 1, d_max = 0) y is batch_norm_forward's, bit for bit.

    Returns ``(y, mean, invstd, r, d)``; r and d (float64, per channel) are
    constants for the backward.

    Parameters
    ----------
    x : ndarray, shape ``(N, C, *)``
        float32 or float64 (non-contiguous input is copied).
    weight, bias : ndarray, shape (C,), or None
        x's dtype.
    running_mean, running_var : ndarray, shape (C,)
        x's dtype, writable: read, then updated in place.
    r_max : float, default 1.0
        At least 1.
    d_max : float, default 0.0
        At least 0.
    momentum : float, default 0.1
        In [0, 1].
    eps : float, default 1e-5
        Added to the variance; positive.

    Returns
    -------
    y : ndarray
        x's shape and dtype.
    mean, invstd : ndarray, shape (C,)
        The batch's, x's dtype.
    r, d : ndarray, shape (C,)
        float64.

    Raises
    ------
    ValueError
        For missing running statistics, r_max < 1, d_max < 0, a parameter of
        another shape, or eps not positive.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_input(x, "input")
    if running_mean is None or running_var is None:
        raise ValueError("batch_renorm: running_mean and running_var are required")
    rm = _check_channel_param(running_mean, "running_mean", x, writable=True)
    rv = _check_channel_param(running_var, "running_var", x, writable=True)
    r_max = _check_scalar(r_max, "r_max", 1.0, np.inf, lo_open=False)
    d_max = _check_scalar(d_max, "d_max", 0.0, np.inf, lo_open=False)
    C = x.shape[1]
    if r_max == 1.0 and d_max == 0.0:  # r = 1, d = 0: Batch Normalization
        y, mean, invstd = batch_norm_forward(x, weight, bias, rm, rv, True, momentum, eps)
        return y, mean, invstd, np.ones(C), np.zeros(C)
    eps = _check_eps(eps)
    sigma = np.sqrt(rv + np.float64(eps))
    mu = rm.astype(np.float64)  # before the update
    y, mean, invstd = batch_norm_forward(x, weight, bias, rm, rv, True, momentum, eps)
    r = np.divide(1.0, invstd * sigma)
    np.minimum(np.maximum(r, 1.0 / r_max, out=r), r_max, out=r)
    d = np.subtract(mean, mu)
    d /= sigma
    np.minimum(np.maximum(d, -d_max, out=d), d_max, out=d)
    if x.size and ((r != 1.0).any() or d.any()):
        w = 1.0 if weight is None else np.asarray(weight, np.float64)
        b = 0.0 if bias is None else np.asarray(bias, np.float64)
        scale = (invstd * (w * r)).astype(x.dtype)
        shift = (w * d + b).astype(x.dtype)
        x3 = x.reshape(x.shape[0], C, -1)
        _norm.channel_affine(x3, y.reshape(x3.shape), mean, scale, shift, get_num_threads())
    return y, mean, invstd, r, d


def batch_renorm_backward(dy, x, weight, mean, invstd, r, d, need_input=True,
                          need_weight=True, need_bias=True):
    """Gradients of :func:`batch_renorm_forward`, r and d held constant.

    Gradients of batch_renorm_forward with r and d constants:
    ``(dx, dweight, dbias)``.  dx is Batch Normalization's with the weight
    ``weight * r``; ``dweight = r * sum(dy * xhat) + d * sum(dy)``,
    ``dbias = sum(dy)``.

    Parameters
    ----------
    dy : ndarray
        The gradient of y: x's shape, dtype float32 or float64.
    x : ndarray, shape ``(N, C, *)``
        float32 or float64 (non-contiguous input is copied).
    weight : ndarray, shape (C,), or None
        The forward's weight.
    mean, invstd, r, d : ndarray, shape (C,)
        What the forward returned.
    need_input, need_weight, need_bias : bool
        Which gradients to compute.

    Returns
    -------
    dx : ndarray or None
        x's shape and dtype.
    dweight, dbias : ndarray or None
        shape (C,), x's dtype; None when not needed or without a weight.

    Raises
    ------
    ValueError
        For r or d of another shape than (C,), or other shapes that do not
        match x's.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_input(x, "input")
    r = np.asarray(r, np.float64)
    d = np.asarray(d, np.float64)
    C = x.shape[1]
    if r.shape != (C,) or d.shape != (C,):
        raise ValueError(f"r and d must have shape ({C},), got {r.shape} and {d.shape}")
    if not d.any() and not (r != 1.0).any():  # Batch Normalization's gradients
        return batch_norm_backward(dy, x, weight, mean, invstd, True, need_input=need_input,
                                   need_weight=need_weight, need_bias=need_bias)
    w = r if weight is None else r * np.asarray(weight, np.float64)
    dx, dw, db = batch_norm_backward(dy, x, w.astype(x.dtype), mean, invstd, training=True,
                                     need_input=need_input,
                                     need_weight=need_weight and weight is not None,
                                     need_bias=(need_bias or need_weight)
                                     and weight is not None)
    if dw is not None:
        dw = (r * dw + d * db).astype(x.dtype)
    return dx, dw, db if need_bias else None


def _check_virtual_batch(virtual_batch_size):
    if (isinstance(virtual_batch_size, bool)
            or not isinstance(virtual_batch_size, numbers.Integral) or virtual_batch_size < 1):
        raise ValueError(f"virtual_batch_size must be a positive int, got "
                         f"{virtual_batch_size!r}")
    return int(virtual_batch_size)


def _chunks(N, size):
    """(start, stop) of the ghost batches: consecutive runs of `size` samples,
    the last one holding what is left."""
    return [(n, min(n + size, N)) for n in range(0, N, size)]


def ghost_batch_norm_forward(x, weight, bias, running_mean, running_var, virtual_batch_size,
                             momentum=0.1, eps=1e-5):
    """Ghost Batch Normalization's training forward (Hoffer et al., 2017).

    Ghost Batch Normalization's training forward (Hoffer et al., 2017): each
    run of ``virtual_batch_size`` samples (the last one: what is left) is
    normalized with its own statistics, as batch_norm_forward would normalize
    it alone.  running_mean / running_var, when given, are updated once:
    ``running = (1 - momentum) * running + momentum * stat``, stat the average
    of the chunks' means and of their unbiased variances, each weighted by its
    number of samples.  With one chunk this is batch_norm_forward, bit for bit.

    Returns ``(y, mean, invstd)``, the statistics of shape (chunks, C).

    Parameters
    ----------
    x : ndarray, shape ``(N, C, *)``
        float32 or float64 (non-contiguous input is copied).
    weight, bias : ndarray, shape (C,), or None
        x's dtype.
    running_mean, running_var : ndarray, shape (C,), or None
        x's dtype, writable: updated in place.
    virtual_batch_size : int
        Samples a ghost batch; positive.
    momentum : float, default 0.1
        In [0, 1].
    eps : float, default 1e-5
        Added to the variance; positive.

    Returns
    -------
    y : ndarray
        x's shape and dtype.
    mean, invstd : ndarray, shape (ghost batches, C)
        x's dtype.

    Raises
    ------
    ValueError
        For a virtual_batch_size that is not a positive int, a ghost batch of
        one value a channel, a parameter of another shape, or eps not positive.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_input(x, "input")
    size = _check_virtual_batch(virtual_batch_size)
    N, C = x.shape[:2]
    if N <= size:
        y, mean, invstd = batch_norm_forward(x, weight, bias, running_mean, running_var, True,
                                             momentum, eps)
        return y, mean.reshape(1, C), invstd.reshape(1, C)
    weight = _check_channel_param(weight, "weight", x)
    bias = _check_channel_param(bias, "bias", x)
    running_mean = _check_channel_param(running_mean, "running_mean", x, writable=True)
    running_var = _check_channel_param(running_var, "running_var", x, writable=True)
    momentum = _check_scalar(momentum, "momentum", 0.0, 1.0, lo_open=False)
    eps = _check_eps(eps)
    chunks = _chunks(N, size)
    per_sample = x.size // (N * C) if C else 0
    for a, b in chunks:
        if (b - a) * per_sample == 1:
            raise ValueError(f"ghost_batch_norm: the last ghost batch of input of shape "
                             f"{x.shape} (virtual_batch_size={size}) has 1 value per channel; "
                             "expected more than 1 (drop the last incomplete batch, or choose "
                             "a batch size that leaves a remainder of 0 or at least 2)")
    y = np.empty_like(x)
    mean = np.zeros((len(chunks), C), x.dtype)
    invstd = np.zeros((len(chunks), C), x.dtype)
    stats = np.zeros((2, len(chunks), C), x.dtype)  # each chunk's mean and unbiased variance
    if per_sample == 0 or C == 0:
        return y, mean, invstd
    for k, (a, b) in enumerate(chunks):
        _core.forward_train(x[a:b], weight, bias, y[a:b], mean[k], invstd[k], stats[0, k],
                            stats[1, k], 1.0, eps, get_num_threads())
    if running_mean is not None or running_var is not None:
        counts = np.array([b - a for a, b in chunks], np.float64) / N
        step = counts @ stats.astype(np.float64)
        if running_mean is not None:
            running_mean[...] = (1 - momentum) * running_mean + momentum * step[0]
        if running_var is not None:
            running_var[...] = (1 - momentum) * running_var + momentum * step[1]
    return y, mean, invstd


def ghost_batch_norm_backward(dy, x, weight, mean, invstd, virtual_batch_size, need_input=True,
                              need_weight=True, need_bias=True):
    """Gradients of :func:`ghost_batch_norm_forward`.

    Gradients of ghost_batch_norm_forward: each ghost batch's Batch
    Normalization gradient (its statistics depend on its samples);
    dweight and dbias summed over the ghost batches in order.

    Parameters
    ----------
    dy : ndarray
        The gradient of y: x's shape, dtype float32 or float64.
    x : ndarray, shape ``(N, C, *)``
        float32 or float64 (non-contiguous input is copied).
    weight : ndarray, shape (C,), or None
        The forward's weight.
    mean, invstd : ndarray, shape (ghost batches, C)
        What the forward returned.
    virtual_batch_size : int
        As in the forward.
    need_input, need_weight, need_bias : bool
        Which gradients to compute.

    Returns
    -------
    dx : ndarray or None
        x's shape and dtype.
    dweight, dbias : ndarray or None
        shape (C,), x's dtype; None when not needed or without a weight.

    Raises
    ------
    ValueError
        For shapes that do not match x's and virtual_batch_size.
    TypeError
        For input that is not float32 or float64.
    """
    x = _check_input(x, "input")
    dy = _check_matches(_check_input(dy, "grad_output"), "grad_output", x, "the input")
    N, C = x.shape[:2]
    chunks = _chunks(N, _check_virtual_batch(virtual_batch_size)) or [(0, 0)]
    k = len(chunks)
    mean = _check_saved(mean, "mean", x, (k, C))
    invstd = _check_saved(invstd, "invstd", x, (k, C))
    if k == 1:
        return batch_norm_backward(dy, x, weight, mean[0], invstd[0], True,
                                   need_input=need_input, need_weight=need_weight,
                                   need_bias=need_bias)
    weight = _check_channel_param(weight, "weight", x)
    dx = np.empty_like(x) if need_input else None
    want_w = need_weight and weight is not None
    want_b = need_bias and weight is not None
    dws = np.zeros((k, C), x.dtype) if want_w else None
    dbs = np.zeros((k, C), x.dtype) if want_b else None
    if x.size and (need_input or want_w or want_b):
        for j, (a, b) in enumerate(chunks):
            _core.backward(dy[a:b], x[a:b], weight, mean[j], invstd[j],
                           None if dx is None else dx[a:b], None if dws is None else dws[j],
                           None if dbs is None else dbs[j], True, get_num_threads())
    dweight = None if dws is None else dws.astype(np.float64).sum(axis=0).astype(x.dtype)
    dbias = None if dbs is None else dbs.astype(np.float64).sum(axis=0).astype(x.dtype)
    return dx, dweight, dbias


# ---------------------------------------------------------------- ReLU

def relu_forward(x):
    """``max(x, 0)`` of a float array of any shape, NaN kept (as ``torch.relu``).

    Parameters
    ----------
    x : numpy.ndarray
        Any shape, float32 or float64 (copied to C-contiguous if it is not).

    Returns
    -------
    numpy.ndarray
        x's shape and dtype, C-contiguous.

    Raises
    ------
    TypeError
        For another dtype.
    """
    x = _check_float(x, "input")
    y = np.empty_like(x)
    _activation.relu(x, y, get_num_threads())
    return y


def add_relu_forward(a, b):
    """``max(a + b, 0)`` in one pass, NaN kept: a residual join and its ReLU.

    Parameters
    ----------
    a, b : numpy.ndarray
        One shape (no broadcasting) and one dtype, float32 or float64 (copied to
        C-contiguous if they are not).

    Returns
    -------
    numpy.ndarray
        a's shape and dtype, C-contiguous; its gradient is :func:`relu_backward`'s.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, or b of another dtype than a.
    ValueError
        For b of another shape.
    """
    a = _check_float(a, "input")
    b = _check_matches(_check_float(b, "other"), "other", a, "input")
    y = np.empty_like(a)
    _activation.add_relu(a, b, y, get_num_threads())
    return y


def relu_backward(dy, y):
    """The ReLU's input gradient from its output y.

    0 where y <= 0, else dy (a NaN output passes dy), as torch's threshold_backward; an
    inf dy where y <= 0 gives 0, not NaN.

    Parameters
    ----------
    dy : numpy.ndarray
        The output's gradient, y's shape and dtype.
    y : numpy.ndarray
        :func:`relu_forward`'s output, float32 or float64.

    Returns
    -------
    numpy.ndarray
        y's shape and dtype, C-contiguous.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, or dy of another dtype than y.
    ValueError
        For dy of another shape.
    """
    y = _check_float(y, "output")
    dy = _check_matches(_check_float(dy, "grad_output"), "grad_output", y, "the output")
    dx = np.empty_like(y)
    _activation.relu_grad(dy, y, dx, get_num_threads())
    return dx


# ---------------------------------------------------------------- matrix products

def matmul(a, b, transpose_a=False, transpose_b=False):
    """``op(a) @ op(b)`` of 2-D float arrays of one dtype, op transposing when asked.

    Single-threaded BLAS calls inside fastbn's threads, on blocks of the output fixed by
    the shape (the same bits at any thread count).  Sizes past the 32-bit BLAS's
    (2**31 - 1 rows, columns, depth or row length) are split into calls it can take.

    Parameters
    ----------
    a : array_like
        Shape (m, k), or (k, m) with ``transpose_a``; float32 or float64 (copied to
        C-contiguous if it is not).
    b : array_like
        Shape (k, n), or (n, k) with ``transpose_b``; a's dtype.
    transpose_a : bool, optional
        Use ``a.T``.
    transpose_b : bool, optional
        Use ``b.T``.

    Returns
    -------
    numpy.ndarray
        Shape (m, n), a's dtype (zeros when k is 0).

    Raises
    ------
    ValueError
        For operands that are not 2-D or inner dimensions that differ.
    TypeError
        For operands that are not both float32 or both float64.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"matmul: operands must be 2-D, got shapes {a.shape} and {b.shape}")
    if a.dtype not in _DTYPES or b.dtype != a.dtype:
        raise TypeError(f"matmul: operands must be both float32 or both float64, got "
                        f"{a.dtype} and {b.dtype}")
    m, k = a.shape[::-1] if transpose_a else a.shape
    k2, n = b.shape[::-1] if transpose_b else b.shape
    if k != k2:
        raise ValueError(f"matmul: op(a) is {m}x{k} and op(b) is {k2}x{n}")
    out = np.empty((m, n), dtype=a.dtype)
    if out.size and k:
        _blas.matmul(np.ascontiguousarray(a), np.ascontiguousarray(b), out, transpose_a,
                     transpose_b, get_num_threads())
    else:
        out[...] = 0
    return out


# ---------------------------------------------------------------- convolution and pooling
# Entry points to fastbn._conv.  Arguments follow torch.nn.functional: NCHW
# input, weight (out, in / groups, kh, kw), int or pair hyper-parameters.
# conv2d: per image, im2col then weight (O, C*kh*kw) @ cols[n] (C*kh*kw, OH*OW)
# straight into y[n], each image's GEMMs a single-threaded BLAS call inside
# fastbn's threads (see fastbn/_conv.pyx); everything follows get_num_threads().


def _check_nchw(x, name, op):
    x = np.asarray(x)
    if x.dtype not in _DTYPES:
        raise TypeError(f"{op}: {name} has dtype {x.dtype}; supported dtypes are "
                        "float32 and float64")
    if x.ndim != 4:
        raise ValueError(f"{op}: {name} must be 4-D (N, C, H, W), got shape {x.shape}")
    return np.ascontiguousarray(x)


def _pair(value, name, op, minimum, maximum=2**63 - 1):
    """An int or a pair of ints, each in [minimum, maximum], as a tuple (h, w)."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(pair) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool)
                                 for v in pair):
        raise TypeError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        what = "positive" if minimum == 1 else "non-negative"
        raise ValueError(f"{op}: {name} must be {what}, got {value!r}")
    if max(pair) > maximum:
        raise ValueError(f"{op}: {name} must be at most {maximum}, got {value!r}")
    return pair


def _out_sizes(shape, kernel, stride, padding, dilation, op):
    H, W = shape[2], shape[3]
    size = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip((H, W), kernel, stride, padding, dilation))
    if min(size) < 1:
        raise ValueError(f"{op}: output size {size} is too small for input size {(H, W)} "
                         f"with kernel {kernel}, stride {stride}, padding {padding}, "
                         f"dilation {dilation}")
    return size


def _check_grad(dy, shape, op, dtype=None):
    dy = _check_nchw(dy, "grad_output", op)
    if dy.shape != tuple(shape):
        raise ValueError(f"{op}: grad_output has shape {dy.shape}, expected {tuple(shape)}")
    if dtype is not None and dy.dtype != dtype:
        raise TypeError(f"{op}: grad_output has dtype {dy.dtype}, expected {dtype}")
    return dy


def _input_shape(input_shape, op):
    shape = tuple(input_shape)
    if len(shape) != 4 or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool)
                                  and s >= 0 for s in shape):
        raise ValueError(f"{op}: input_shape must be (N, C, H, W), got {input_shape!r}")
    return tuple(int(s) for s in shape)


# The weight gradient's partial sums, each over a run of images: a number fixed
# by the shape, so the bits do not depend on the thread count, and enough to
# share out; but each with enough GEMM columns (output pixels, or Winograd
# tiles): 16 runs of a 64-image batch of 4x4 planes summed 16 columns each,
# and the weight gradient took twice the rest of the layer's backward.
_WEIGHT_PARTS = 16
_PART_COLUMNS = 128


def _weight_parts(N, columns_per_image):
    """How many runs of images the weight gradient is summed over."""
    return max(1, min(N, _WEIGHT_PARTS, N * columns_per_image // _PART_COLUMNS))


_ALGORITHMS = ("auto", "im2col", "winograd", "winograd4")
# Winograd's tile transforms cost per channel, its GEMMs save per channel pair:
# measured here, 8 -> 16 channels on 28x28 is 16% faster by Winograd over a
# forward and both gradients, 1 -> 32 (a first layer on grey images) 3-5x
# slower.
_WINOGRAD_MIN_CHANNELS = 8
# U = G g G^T for a 3x3 filter g (fastbn/_winograd.pyx), as one product over all
# filters: U.ravel() = kron(G, G) @ g.ravel().  F(2x2, 3x3) and F(4x4, 3x3)
# (interpolation points 0, +-1, +-2), by output tile side m.
_WINOGRAD_G = {2: np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
               4: np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
                            [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]])}
_WINOGRAD_GG = {m: np.kron(g, g) for m, g in _WINOGRAD_G.items()}
_WINOGRAD_NAMES = {2: "winograd", 4: "winograd4"}


def _winograd_filters(weight, m):
    """(O, C, 3, 3) filters -> ((m + 2)^2, C, O) transformed ones (each transposed, as
    fastbn/_winograd.pyx wants them), computed in float64."""
    O, C = weight.shape[:2]
    u = matmul(_WINOGRAD_GG[m], weight.transpose(1, 0, 2, 3).reshape(C * O, 9)
               .astype(np.float64), transpose_b=True)
    return u.reshape((m + 2) ** 2, C, O).astype(weight.dtype, copy=False)


class _ConvArgs:
    """Validated arguments of a conv2d call, shared by forward and backward."""

    def __init__(self, x, weight, stride, padding, dilation, groups, op, algorithm="auto"):
        x = _check_nchw(x, "input", op)
        weight = _check_nchw(weight, "weight", op)
        if weight.dtype != x.dtype:
            raise TypeError(f"{op}: weight has dtype {weight.dtype} but the input has {x.dtype}")
        if isinstance(groups, bool) or not isinstance(groups, numbers.Integral) or groups < 1:
            raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
        N, C, H, W = x.shape
        O, Cg, kh, kw = weight.shape
        if C != Cg * groups or O % groups or O == 0:
            raise ValueError(f"{op}: input with {C} channels and groups={groups} needs weight "
                             f"of shape (O, {C // groups if C % groups == 0 else C / groups}, "
                             f"kh, kw) with O divisible by {groups}; got weight {weight.shape}")
        if kh < 1 or kw < 1:
            raise ValueError(f"{op}: kernel size must be positive, got weight {weight.shape}")
        self.x, self.weight, self.groups = x, weight, int(groups)
        self.kernel = (kh, kw)
        self.stride = _pair(stride, "stride", op, 1)
        self.padding = _pair(padding, "padding", op, 0)
        self.dilation = _pair(dilation, "dilation", op, 1)
        self.out = _out_sizes(x.shape, self.kernel, self.stride, self.padding, self.dilation, op)
        self.K = Cg * kh * kw   # rows of one group's columns
        self.L = self.out[0] * self.out[1]
        self.winograd = self._pick_winograd(algorithm, op)

    def _pick_winograd(self, algorithm, op):
        """The output tile side m of Winograd F(m x m, 3x3) to run, or 0 for im2col.
        Winograd needs 3x3, stride 1, dilation 1, one group and padding <= 2 (then
        the input's gradient is one too); by default only with enough input and
        output channels."""
        if algorithm not in _ALGORITHMS:
            raise ValueError(f"{op}: algorithm must be one of {_ALGORITHMS}, got {algorithm!r}")
        fits = (self.kernel == (3, 3) and self.stride == (1, 1) and self.dilation == (1, 1)
                and self.groups == 1 and max(self.padding) <= 2)
        if algorithm.startswith("winograd") and not fits:
            raise ValueError(f"{op}: algorithm={algorithm!r} needs a 3x3 kernel, stride 1, "
                             "dilation 1, groups 1 and padding <= 2")
        if algorithm == "auto":
            return 4 if fits and min(self.weight.shape[:2]) >= _WINOGRAD_MIN_CHANNELS else 0
        return {"im2col": 0, **{v: k for k, v in _WINOGRAD_NAMES.items()}}[algorithm]

    @property
    def identity(self):
        """1x1, stride 1, no padding: the columns are the input itself."""
        return self.kernel == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0)

    def im2col(self):
        x = self.x
        if self.identity:
            return x.reshape(x.shape[0], x.shape[1], self.L)
        cols = np.empty((x.shape[0], self.K * self.groups, self.L), dtype=x.dtype)
        if cols.size:
            _conv.im2col(x, cols, self.kernel, self.stride, self.padding, self.dilation,
                         *self.out, get_num_threads())
        return cols

    def check_blas_sizes(self, O):
        if max(O, self.K, self.L) >= 2**31:  # the BLAS takes 32-bit sizes
            raise ValueError(f"conv2d: a {self.L}-pixel output with {self.K} taps per output "
                             f"and {O} channels is too large for the 32-bit BLAS")

    def grouped(self, a, rows):
        """(N, G * rows, L) -> (N, G, rows, L) view."""
        return a.reshape(a.shape[0], self.groups, rows, self.L)

    def grouped_weight(self):
        O = self.weight.shape[0]
        return self.weight.reshape(self.groups, O // self.groups, self.K)


def conv2d_forward(x, weight, bias=None, stride=1, padding=0, dilation=1, groups=1,
                   algorithm="auto"):
    """2-D convolution (cross-correlation) as ``torch.nn.functional.conv2d``.

    algorithm: ``'im2col'`` (per image: im2col writes cols[n], the GEMM reads it back
    from cache and writes y[n]), ``'winograd4'`` (F(4x4, 3x3), 4x fewer multiply-adds)
    or ``'winograd'`` (F(2x2, 3x3), 2.25x fewer; both for 3x3 kernels with stride 1,
    dilation 1, groups 1, padding <= 2), or ``'auto'``: F(4x4, 3x3) where it applies and
    both sides have at least 8 channels, else im2col.

    Parameters
    ----------
    x : numpy.ndarray
        Shape (N, C_in, H, W), float32 or float64 (copied to C-contiguous if it is
        not).
    weight : numpy.ndarray
        Shape (C_out, C_in / groups, kH, kW), x's dtype.
    bias : array_like, optional
        Shape (C_out,), float32 or float64 (cast to x's dtype).
    stride : int or tuple of int, optional
        Positive.
    padding : int or tuple of int, optional
        Zero padding on both sides, non-negative.
    dilation : int or tuple of int, optional
        Positive.
    groups : int, optional
        Positive; divides C_in and C_out.
    algorithm : {'auto', 'im2col', 'winograd4', 'winograd'}, optional
        As above.

    Returns
    -------
    y : numpy.ndarray
        Shape (N, C_out, H_out, W_out), x's dtype, with
        ``H_out = (H + 2 * pH - dH * (kH - 1) - 1) // sH + 1``, likewise W_out.
    cols : numpy.ndarray or None
        The im2col matrix, shape (N, C_in * kH * kW, H_out * W_out), x's dtype (a view
        of x for a 1x1 kernel with stride 1 and no padding), to hand to
        :func:`conv2d_backward`; None after Winograd.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, weight of another dtype than x, or
        hyperparameters that are not ints or pairs of ints.
    ValueError
        For arrays that are not 4-D, shapes that do not match, hyperparameters out of
        range, an empty output, an unknown algorithm, a Winograd one where it does not
        apply, or sizes past the 32-bit BLAS.
    """
    op = "conv2d"
    a = _ConvArgs(x, weight, stride, padding, dilation, groups, op, algorithm)
    N, O = a.x.shape[0], a.weight.shape[0]
    a.check_blas_sizes(O)
    if bias is not None:
        bias = np.asarray(bias)
        if bias.shape != (O,):
            raise ValueError(f"{op}: bias must have shape ({O},), got {bias.shape}")
        if bias.dtype not in _DTYPES:
            raise TypeError(f"{op}: bias has dtype {bias.dtype}; supported dtypes are "
                            "float32 and float64")
        bias = np.ascontiguousarray(bias, dtype=a.x.dtype)
    if a.winograd:
        y = np.empty((N, O) + a.out, dtype=a.x.dtype)
        if y.size:
            _winograd.forward(a.x, _winograd_filters(a.weight, a.winograd), bias, y, *a.padding,
                              get_num_threads())
        return y, None
    cols = (a.x.reshape(N, a.x.shape[1], a.L) if a.identity else
            np.empty((N, a.K * a.groups, a.L), dtype=a.x.dtype))
    y = np.empty((N, O) + a.out, dtype=a.x.dtype)
    if y.size:
        _conv.conv_forward(a.x, a.grouped_weight(), bias, cols, y.reshape(N, O, a.L),
                           a.kernel, a.stride, a.padding, a.dilation, *a.out, a.identity,
                           get_num_threads())
    return y, cols


def conv2d_backward(dy, x, weight, cols, stride=1, padding=0, dilation=1, groups=1,
                    need_input=True, need_weight=True, need_bias=True, algorithm="auto"):
    """Gradients of :func:`conv2d_forward`: ``(dx, dweight, dbias)``, None where not needed.

    im2col: dx = col2im(weight^T @ dy[n]) per image; dweight = sum_n dy[n] @ cols[n]^T.
    Winograd: dx is the Winograd convolution of dy with the flipped, transposed
    filters; dweight = G^T (sum of the transformed dy tiles times the transformed input
    tiles) G.  dweight is accumulated over a fixed number of runs of images and added
    in float64 (the same bits at any thread count); dbias = dy summed over N, H, W (in
    float64).

    Parameters
    ----------
    dy : numpy.ndarray
        The output's gradient, shape (N, C_out, H_out, W_out), x's dtype.
    x : numpy.ndarray
        The forward's input, shape (N, C_in, H, W), float32 or float64.
    weight : numpy.ndarray
        Shape (C_out, C_in / groups, kH, kW), x's dtype.
    cols : numpy.ndarray or None
        conv2d_forward's second result; None: recomputed from x when im2col needs it.
    stride : int or tuple of int, optional
        Positive.
    padding : int or tuple of int, optional
        Zero padding on both sides, non-negative.
    dilation : int or tuple of int, optional
        Positive.
    groups : int, optional
        Positive; divides C_in and C_out.
    need_input : bool, optional
        Compute dx.
    need_weight : bool, optional
        Compute dweight.
    need_bias : bool, optional
        Compute dbias.
    algorithm : {'auto', 'im2col', 'winograd4', 'winograd'}, optional
        As in conv2d_forward (the same choice as the forward's).

    Returns
    -------
    dx : numpy.ndarray or None
        x's shape and dtype.
    dweight : numpy.ndarray or None
        weight's shape, x's dtype.
    dbias : numpy.ndarray or None
        Shape (C_out,), x's dtype.

    Raises
    ------
    TypeError
        As conv2d_forward, or dy of another dtype than x.
    ValueError
        As conv2d_forward, or dy or cols of the wrong shape (cols also of the wrong
        dtype).
    """
    op = "conv2d_backward"
    a = _ConvArgs(x, weight, stride, padding, dilation, groups, op, algorithm)
    N, O, G = a.x.shape[0], a.weight.shape[0], a.groups
    a.check_blas_sizes(O)
    dy = _check_grad(dy, (N, O) + a.out, op, a.x.dtype)
    dx = dweight = dbias = None
    if need_bias:
        dbias = np.zeros(O, dtype=np.float64)
        if dy.size:
            _core.channel_sums(dy.reshape(N, O, a.L), dbias, get_num_threads())
        dbias = dbias.astype(dy.dtype)
    m = a.winograd
    if m:
        if need_input:
            dx = conv2d_forward(dy, a.weight.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1],
                                padding=(2 - a.padding[0], 2 - a.padding[1]),
                                algorithm=_WINOGRAD_NAMES[m])[0]
        if need_weight:
            tiles = ((a.out[0] + m - 1) // m) * ((a.out[1] + m - 1) // m)
            parts = np.zeros((_weight_parts(N, tiles), (m + 2) ** 2, O, a.x.shape[1]),
                             dtype=a.x.dtype)
            if N and a.L:
                _winograd.weight_grad(dy, a.x, parts, *a.padding, get_num_threads())
            du = parts.sum(axis=0, dtype=np.float64).reshape((m + 2) ** 2, -1)
            dweight = matmul(du, _WINOGRAD_GG[m], transpose_a=True)
            dweight = dweight.reshape(a.weight.shape).astype(a.x.dtype, copy=False)
        return dx, dweight, dbias
    wg = a.grouped_weight()
    parts = None
    if need_weight:
        if cols is None:
            cols = a.im2col()
        cols = np.asarray(cols)
        if cols.shape != (N, a.K * G, a.L) or cols.dtype != a.x.dtype:
            raise ValueError(f"{op}: cols has shape {cols.shape} and dtype {cols.dtype}, "
                             f"expected {(N, a.K * G, a.L)} and {a.x.dtype} "
                             "(pass conv2d_forward's cols, or None)")
        cols = np.ascontiguousarray(cols)
        parts = np.zeros((_weight_parts(N, a.L),) + wg.shape, dtype=a.x.dtype)
    if need_input:
        dx = np.empty_like(a.x)
    if N and a.L and (dx is not None or parts is not None):
        _conv.conv_backward(dy.reshape(N, O, a.L), wg, cols if need_weight else None, dx, parts,
                            a.kernel, a.stride, a.padding, a.dilation, *a.out, a.identity,
                            get_num_threads())
    if parts is not None:
        dweight = parts.sum(axis=0, dtype=np.float64).astype(a.x.dtype, copy=False)
        dweight = dweight.reshape(a.weight.shape)
    return dx, dweight, dbias


_INT_MAX = 2**31 - 1


def _pool_args(kernel_size, stride, padding, op):
    # torch's pooling takes C ints: larger windows overflowed the divisor here
    kernel = _pair(kernel_size, "kernel_size", op, 1, _INT_MAX)
    stride = (kernel if stride is None or stride == () else
              _pair(stride, "stride", op, 1, _INT_MAX))
    padding = _pair(padding, "padding", op, 0, _INT_MAX)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{op}: padding should be at most half of the kernel size, got "
                         f"padding {padding} and kernel_size {kernel}")
    return kernel, stride, padding


def _check_pool_input(shape, op):
    """As torch: an empty batch is fine, empty channels or planes are not (padding
    would otherwise make windows of nothing but padding)."""
    if min(shape[1:]) < 1:
        raise ValueError(f"{op}: input must have non-zero channels, height and width "
                         f"(only the batch may be empty), got shape {tuple(shape)}")


def _planes(a):
    """(N, C, H, W) -> (N * C, H, W) view of a contiguous array."""
    return a.reshape(a.shape[0] * a.shape[1], a.shape[2], a.shape[3])


def max_pool2d_forward(x, kernel_size, stride=None, padding=0):
    """Max pooling as ``torch.nn.functional.max_pool2d`` (padding is -inf).

    Parameters
    ----------
    x : numpy.ndarray
        Shape (N, C, H, W), float32 or float64 (copied to C-contiguous if it is not);
        only the batch may be empty.
    kernel_size : int or tuple of int
        The window, (kH, kW), positive (at most 2**31 - 1).
    stride : int or tuple of int, optional
        Positive; None or ``()`` (default) is ``kernel_size``.
    padding : int or tuple of int, optional
        Non-negative, at most half the window.

    Returns
    -------
    y : numpy.ndarray
        Shape (N, C, H_out, W_out), x's dtype, ``H_out = (H + 2 * pH - kH) // sH + 1``.
    indices : numpy.ndarray
        int64, y's shape: the flat index ``h * W + w`` of each maximum in its input
        plane.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, or sizes that are not ints or pairs
        of ints.
    ValueError
        For input that is not 4-D or has no channels, height or width, sizes out of
        range, padding over half the window, or an empty output.
    """
    op = "max_pool2d"
    x = _check_nchw(x, "input", op)
    _check_pool_input(x.shape, op)
    kernel, stride, padding = _pool_args(kernel_size, stride, padding, op)
    out = _out_sizes(x.shape, kernel, stride, padding, (1, 1), op)
    y = np.empty(x.shape[:2] + out, dtype=x.dtype)
    indices = np.empty(y.shape, dtype=np.int64)
    if y.size:
        _conv.max_pool_forward(_planes(x), _planes(y), _planes(indices), kernel, stride,
                               padding, get_num_threads())
    return y, indices


def max_pool2d_backward(dy, indices, input_shape):
    """Gradient of :func:`max_pool2d_forward`: dy scattered (added) to the argmax of each window.

    Parameters
    ----------
    dy : numpy.ndarray
        The output's gradient, shape (N, C, H_out, W_out), float32 or float64.
    indices : numpy.ndarray
        The forward's indices: int64, dy's shape.
    input_shape : tuple of int
        (N, C, H, W) of the forward's input.

    Returns
    -------
    numpy.ndarray
        input_shape, dy's dtype.

    Raises
    ------
    TypeError
        For a dy dtype other than float32/float64.
    ValueError
        For an input_shape that is not 4 non-negative ints or has no channels, height
        or width, dy that is not 4-D or does not match it, or indices of the wrong
        shape or dtype or out of range.
    """
    op = "max_pool2d_backward"
    shape = _input_shape(input_shape, op)
    _check_pool_input(shape, op)
    dy = _check_nchw(dy, "grad_output", op)
    indices = np.ascontiguousarray(indices)
    if indices.shape != dy.shape or indices.dtype != np.int64:
        raise ValueError(f"{op}: indices must be int64 of grad_output's shape {dy.shape}, "
                         f"got {indices.dtype} {indices.shape}")
    if dy.shape[:2] != shape[:2]:
        raise ValueError(f"{op}: grad_output {dy.shape} does not match input_shape {shape}")
    dx = np.empty(shape, dtype=dy.dtype)
    # the kernel counts (and skips) indices outside their plane; an empty plane holds none
    bad = (_conv.max_pool_backward(_planes(dy), _planes(indices), _planes(dx), get_num_threads())
           if dx.size else indices.size)
    if bad:
        raise ValueError(f"{op}: indices out of range for input planes of {shape[2:]}")
    return dx


_EXCLUDE_PAD, _INCLUDE_PAD, _ADAPTIVE = 0, 1, 2  # modes of _conv.avg_pool_*


def avg_pool2d_forward(x, kernel_size, stride=None, padding=0, count_include_pad=True):
    """Average pooling as ``torch.nn.functional.avg_pool2d`` (``ceil_mode=False``).

    Parameters
    ----------
    x : numpy.ndarray
        Shape (N, C, H, W), float32 or float64 (copied to C-contiguous if it is not);
        only the batch may be empty.
    kernel_size : int or tuple of int
        The window, (kH, kW), positive (at most 2**31 - 1).
    stride : int or tuple of int, optional
        Positive; None or ``()`` (default) is ``kernel_size``.
    padding : int or tuple of int, optional
        Non-negative, at most half the window.
    count_include_pad : bool, optional
        Divide by the whole window (True) or by the input elements in it.

    Returns
    -------
    numpy.ndarray
        Shape (N, C, H_out, W_out), x's dtype, ``H_out = (H + 2 * pH - kH) // sH + 1``.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, or sizes that are not ints or pairs
        of ints.
    ValueError
        For input that is not 4-D or has no channels, height or width, sizes out of
        range, padding over half the window, or an empty output.
    """
    op = "avg_pool2d"
    x = _check_nchw(x, "input", op)
    _check_pool_input(x.shape, op)
    kernel, stride, padding = _pool_args(kernel_size, stride, padding, op)
    out = _out_sizes(x.shape, kernel, stride, padding, (1, 1), op)
    y = np.empty(x.shape[:2] + out, dtype=x.dtype)
    if y.size:
        _conv.avg_pool_forward(_planes(x), _planes(y), kernel, stride, padding,
                               _INCLUDE_PAD if count_include_pad else _EXCLUDE_PAD,
                               get_num_threads())
    return y


def avg_pool2d_backward(dy, input_shape, kernel_size, stride=None, padding=0,
                        count_include_pad=True):
    """Gradient of :func:`avg_pool2d_forward`: each dy / divisor spread over its window.

    Parameters
    ----------
    dy : numpy.ndarray
        The output's gradient, shape (N, C, H_out, W_out), float32 or float64.
    input_shape : tuple of int
        (N, C, H, W) of the forward's input.
    kernel_size : int or tuple of int
        The window, (kH, kW), positive (at most 2**31 - 1).
    stride : int or tuple of int, optional
        Positive; None or ``()`` (default) is ``kernel_size``.
    padding : int or tuple of int, optional
        Non-negative, at most half the window.
    count_include_pad : bool, optional
        As in the forward.

    Returns
    -------
    numpy.ndarray
        input_shape, dy's dtype.

    Raises
    ------
    TypeError
        For a dy dtype other than float32/float64, or sizes that are not ints or pairs
        of ints.
    ValueError
        For an input_shape that is not 4 non-negative ints or has no channels, height
        or width, sizes out of range, padding over half the window, an empty output, or
        dy that is not 4-D or does not match the output's shape.
    """
    op = "avg_pool2d_backward"
    shape = _input_shape(input_shape, op)
    _check_pool_input(shape, op)
    kernel, stride, padding = _pool_args(kernel_size, stride, padding, op)
    out = _out_sizes(shape, kernel, stride, padding, (1, 1), op)
    dy = _check_grad(dy, shape[:2] + out, op)
    dx = np.empty(shape, dtype=dy.dtype)
    if dx.size:
        _conv.avg_pool_backward(_planes(dy), _planes(dx), kernel, stride, padding,
                                _INCLUDE_PAD if count_include_pad else _EXCLUDE_PAD,
                                get_num_threads())
    return dx


def _adaptive_size(output_size, shape, op):
    """torch's output_size: an int, or a pair whose None entries keep the input size;
    0 gives an empty output, as in torch."""
    if isinstance(output_size, (tuple, list)):
        size = tuple(shape[2 + i] if s is None else s for i, s in enumerate(output_size))
    else:
        size = output_size
    return _pair(size, "output_size", op, 0)


def adaptive_avg_pool2d_forward(x, output_size):
    """Adaptive average pooling as ``torch.nn.functional.adaptive_avg_pool2d``.

    Output (oh, ow) averages rows ``[floor(oh * H / H_out), ceil((oh + 1) * H / H_out))``
    and likewise columns.

    Parameters
    ----------
    x : numpy.ndarray
        Shape (N, C, H, W), float32 or float64, H and W positive.
    output_size : int or tuple of (int or None)
        (H_out, W_out), non-negative (0 gives an empty output, as in torch); None keeps
        the input's size.

    Returns
    -------
    numpy.ndarray
        Shape (N, C, H_out, W_out), x's dtype.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64 or an output_size that is not ints.
    ValueError
        For x that is not 4-D or has an empty plane, or a negative output_size.
    """
    op = "adaptive_avg_pool2d"
    x = _check_nchw(x, "input", op)
    out = _adaptive_size(output_size, x.shape, op)
    if min(x.shape[2:]) < 1:
        raise ValueError(f"{op}: input must have non-empty spatial size, got {x.shape}")
    y = np.empty(x.shape[:2] + out, dtype=x.dtype)
    if y.size:
        _conv.avg_pool_forward(_planes(x), _planes(y), (1, 1), (1, 1), (0, 0), _ADAPTIVE,
                               get_num_threads())
    return y


def adaptive_avg_pool2d_backward(dy, input_shape, output_size):
    """Gradient of :func:`adaptive_avg_pool2d_forward`.

    Parameters
    ----------
    dy : numpy.ndarray
        The output's gradient, shape (N, C, H_out, W_out), float32 or float64.
    input_shape : tuple of int
        (N, C, H, W) of the forward's input.
    output_size : int or tuple of (int or None)
        As in the forward.

    Returns
    -------
    numpy.ndarray
        input_shape, dy's dtype.

    Raises
    ------
    TypeError
        For a dy dtype other than float32/float64 or an output_size that is not ints.
    ValueError
        For an input_shape that is not 4 non-negative ints or has an empty plane, or dy
        that does not match the output's shape.
    """
    op = "adaptive_avg_pool2d_backward"
    shape = _input_shape(input_shape, op)
    out = _adaptive_size(output_size, shape, op)
    if min(shape[2:]) < 1:
        raise ValueError(f"{op}: input must have non-empty spatial size, got {shape}")
    dy = _check_grad(dy, shape[:2] + out, op)
    dx = np.empty(shape, dtype=dy.dtype)
    if dy.size:
        _conv.avg_pool_backward(_planes(dy), _planes(dx), (1, 1), (1, 1), (0, 0), _ADAPTIVE,
                                get_num_threads())
    else:  # an empty output: no window reads the input
        dx[...] = 0
    return dx


# ---------------------------------------------------------------- optimizer updates
# Entry points to fastbn._optim for fastbn.optim: one pass updates a parameter
# and its state in place (formulas: fastbn.optim's SGD and Adam), a list of
# parameters in one compiled call.  Every operand is checked before any
# parameter changes: a bad one raises and leaves all of them as they were.


def _update_operands(op, param, grad, state):
    """The gradient as an aligned, contiguous array of param's dtype, after
    checking that param can be updated in place and that the state arrays
    match it."""
    if type(param) is not np.ndarray or param.dtype not in _DTYPES:
        raise TypeError(f"{op}: the parameter must be a float32 or float64 NumPy array, got "
                        f"{type(param).__name__} of dtype {getattr(param, 'dtype', None)}")
    if not param.flags.writeable:
        raise ValueError(f"{op}: the parameter is read-only and cannot be updated in place")
    if type(grad) is not np.ndarray or grad.dtype is not param.dtype:
        kind = np.asarray(grad).dtype.kind
        if kind not in "fiu":       # a complex gradient would lose its imaginary part
            raise TypeError(f"{op}: the gradient must be real numbers, got dtype "
                            f"{np.asarray(grad).dtype}")
        grad = np.asarray(grad, dtype=param.dtype)
    if grad.shape != param.shape:
        raise ValueError(f"{op}: gradient of shape {grad.shape} for a parameter of shape "
                         f"{param.shape}")
    for s in state:
        if not (type(s) is np.ndarray and s.dtype is param.dtype and s.shape == param.shape
                and s.flags.carray):
            raise ValueError(f"{op}: optimizer state must be writable, aligned, contiguous "
                             f"arrays of the parameter's shape {param.shape} and dtype "
                             f"{param.dtype}")
    return np.require(grad, requirements="CA")


def _run_updates(op, update, params, grads, states, flags, hyper, no_state_ok=False):
    """update(params, grads, *states, flags, *hyper), the compiled many-parameter
    call (states: lists of arrays, or None where no_state_ok; flags: a list of
    per-parameter values, or None for an update that takes none), which returns
    False when an operand is not a plain contiguous array: then check every
    operand (clear errors before anything changes), run it on contiguous copies of
    strided parameters and write those back."""
    lists = (*states,) if flags is None else (*states, flags)
    lengths = [len(x) for x in (grads, *lists)]
    if any(n != len(params) for n in lengths):
        raise ValueError(f"{op}: {len(params)} parameters, but lists of {lengths} gradients, "
                         "states and per-parameter flags")
    if update(params, grads, *lists, *hyper):
        return
    grads = [_update_operands(op, p, g, [s[i] for s in states
                                         if not (no_state_ok and s[i] is None)])
             for i, (p, g) in enumerate(zip(params, grads))]
    work = [p if p.flags.carray else np.array(p, order="C") for p in params]
    if not update(work, grads, *lists, *hyper):
        raise RuntimeError(f"{op}: operands still not plain after checking")
    for p, w in zip(params, work):
        if w is not p:
            p[...] = w


def sgd_updates(params, grads, momentum_buffers, lr, weight_decay=0.0, momentum=0.0,
                dampening=0.0, nesterov=False, firsts=None):
    """:func:`sgd_update` on each parameter in turn, in one compiled call.

    State arrays: writable, aligned, C-contiguous, of their parameter's shape and
    dtype, updated in place.  The hyperparameters are converted with ``float`` and not
    range-checked here (:mod:`fastbn.optim` checks them).

    Parameters
    ----------
    params : sequence of numpy.ndarray
        float32 or float64, writable; each updated in place.
    grads : sequence of array_like
        One per parameter, of its shape (converted to its dtype).
    momentum_buffers : sequence of numpy.ndarray or None
        One per parameter: None (no momentum), else updated in place.
    lr : float
        Learning rate.
    weight_decay : float, optional
        L2 penalty.
    momentum : float, optional
        Momentum factor.
    dampening : float, optional
        Dampening of the momentum.
    nesterov : bool, optional
        Nesterov momentum.
    firsts : sequence of bool, optional
        Per parameter: its first step with momentum (the buffer's contents are ignored
        and it is set to the gradient); default all False.

    Raises
    ------
    TypeError
        For a parameter that is not a float32/float64 ndarray, or a gradient that is
        not real numbers.
    ValueError
        For a read-only parameter, a gradient of another shape, state arrays that are
        not writable, aligned, C-contiguous arrays of the parameter's shape and dtype,
        lists of different lengths, or a step that is not a positive int (Adam, AdamW).
        Every operand is checked before any parameter changes.
    """
    params = list(params)
    firsts = [False] * len(params) if firsts is None else list(firsts)
    hyper = (float(lr), float(weight_decay), float(momentum), float(dampening), bool(nesterov),
             get_num_threads())
    # a None buffer: no momentum
    _run_updates("sgd_update", _optim.sgd_many, params, list(grads), [list(momentum_buffers)],
                 firsts, hyper, no_state_ok=True)


def sgd_update(param, grad, momentum_buffer, lr, weight_decay=0.0, momentum=0.0,
               dampening=0.0, nesterov=False, first=False):
    """One SGD step on param, in place, with PyTorch's rule.

    ::

        d = grad + weight_decay * param
        buf = d (first step), else momentum * buf + (1 - dampening) * d
        d = d + momentum * buf if nesterov else buf
        param -= lr * d

    State arrays: writable, aligned, C-contiguous, of their parameter's shape and
    dtype, updated in place.  The hyperparameters are converted with ``float`` and not
    range-checked here (:mod:`fastbn.optim` checks them).

    Parameters
    ----------
    param : numpy.ndarray
        float32 or float64, writable; updated in place (a strided one through a
        contiguous copy written back).
    grad : array_like
        Real numbers of param's shape, converted to param's dtype.
    momentum_buffer : numpy.ndarray or None
        None (no momentum), else updated in place.
    lr : float
        Learning rate.
    weight_decay : float, optional
        L2 penalty.
    momentum : float, optional
        Momentum factor.
    dampening : float, optional
        Dampening of the momentum.
    nesterov : bool, optional
        Nesterov momentum.
    first : bool, optional
        The first step with momentum: the buffer's contents are ignored.

    Raises
    ------
    TypeError
        For a parameter that is not a float32/float64 ndarray, or a gradient that is
        not real numbers.
    ValueError
        For a read-only parameter, a gradient of another shape, state arrays that are
        not writable, aligned, C-contiguous arrays of the parameter's shape and dtype,
        lists of different lengths, or a step that is not a positive int (Adam, AdamW).
        Every operand is checked before any parameter changes.
    """
    sgd_updates([param], [grad], [momentum_buffer], lr, weight_decay, momentum, dampening,
                nesterov, [first])


def _check_steps(op, steps):
    steps = list(steps)
    for step in steps:
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 1:
            raise ValueError(f"{op}: step must be a positive int, got {step!r}")
    return steps


def adam_updates(params, grads, exp_avgs, exp_avg_sqs, steps, lr, beta1, beta2, eps,
                 weight_decay=0.0):
    """:func:`adam_update` on each parameter in turn, in one compiled call.

    State arrays: writable, aligned, C-contiguous, of their parameter's shape and
    dtype, updated in place.  The hyperparameters are converted with ``float`` and not
    range-checked here (:mod:`fastbn.optim` checks them).

    Parameters
    ----------
    params : sequence of numpy.ndarray
        float32 or float64, writable; each updated in place.
    grads : sequence of array_like
        One per parameter, of its shape (converted to its dtype).
    exp_avgs : sequence of numpy.ndarray
        The running averages of the gradient, updated in place.
    exp_avg_sqs : sequence of numpy.ndarray
        The running averages of its square, updated in place.
    steps : sequence of int
        Each parameter's step number, from 1.
    lr : float
        Learning rate.
    beta1 : float
        Decay of exp_avg.
    beta2 : float
        Decay of exp_avg_sq.
    eps : float
        Added to the denominator.
    weight_decay : float, optional
        L2 penalty added to the gradient.

    Raises
    ------
    TypeError
        For a parameter that is not a float32/float64 ndarray, or a gradient that is
        not real numbers.
    ValueError
        For a read-only parameter, a gradient of another shape, state arrays that are
        not writable, aligned, C-contiguous arrays of the parameter's shape and dtype,
        lists of different lengths, or a step that is not a positive int (Adam, AdamW).
        Every operand is checked before any parameter changes.
    """
    steps = _check_steps("adam_update", steps)
    hyper = (float(lr), float(weight_decay), float(beta1), float(beta2), float(eps),
             get_num_threads())
    _run_updates("adam_update", _optim.adam_many, list(params), list(grads),
                 [list(exp_avgs), list(exp_avg_sqs)], steps, hyper)


def adam_update(param, grad, exp_avg, exp_avg_sq, step, lr, beta1, beta2, eps,
                weight_decay=0.0):
    """Adam's step number ``step`` (from 1) on param, in place.

    With PyTorch's bias corrections::

        d = grad + weight_decay * param
        exp_avg = beta1 * exp_avg + (1 - beta1) * d
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * d * d
        param -= lr / (1 - beta1**step)
                 * exp_avg / (sqrt(exp_avg_sq) / sqrt(1 - beta2**step) + eps)

    State arrays: writable, aligned, C-contiguous, of their parameter's shape and
    dtype, updated in place.  The hyperparameters are converted with ``float`` and not
    range-checked here (:mod:`fastbn.optim` checks them).

    Parameters
    ----------
    param : numpy.ndarray
        float32 or float64, writable; updated in place (a strided one through a
        contiguous copy written back).
    grad : array_like
        Real numbers of param's shape, converted to param's dtype.
    exp_avg : numpy.ndarray
        The running average of the gradient, updated in place.
    exp_avg_sq : numpy.ndarray
        The running average of its square, updated in place.
    step : int
        The step number, from 1.
    lr : float
        Learning rate.
    beta1 : float
        Decay of exp_avg.
    beta2 : float
        Decay of exp_avg_sq.
    eps : float
        Added to the denominator.
    weight_decay : float, optional
        L2 penalty added to the gradient.

    Raises
    ------
    TypeError
        For a parameter that is not a float32/float64 ndarray, or a gradient that is
        not real numbers.
    ValueError
        For a read-only parameter, a gradient of another shape, state arrays that are
        not writable, aligned, C-contiguous arrays of the parameter's shape and dtype,
        lists of different lengths, or a step that is not a positive int (Adam, AdamW).
        Every operand is checked before any parameter changes.
    """
    adam_updates([param], [grad], [exp_avg], [exp_avg_sq], [step], lr, beta1, beta2, eps,
                 weight_decay)


def adamw_updates(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1,
                  beta2, eps, weight_decay=0.0):
    """AdamW's step number ``steps[i]`` (from 1) on each parameter, in place, in one compiled call.

    With PyTorch's operations::

        param *= 1 - lr * weight_decay
        exp_avg = lerp(exp_avg, grad, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad
        max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)   (amsgrad)
        param -= lr / (1 - beta1**step) * exp_avg
                 / (sqrt(exp_avg_sq or max_exp_avg_sq) / sqrt(1 - beta2**step) + eps)

    State arrays: writable, aligned, C-contiguous, of their parameter's shape and
    dtype, updated in place.  The hyperparameters are converted with ``float`` and not
    range-checked here (:mod:`fastbn.optim` checks them).

    Parameters
    ----------
    params : sequence of numpy.ndarray
        float32 or float64, writable; each updated in place.
    grads : sequence of array_like
        One per parameter, of its shape (converted to its dtype).
    exp_avgs : sequence of numpy.ndarray
        The running averages of the gradient, updated in place.
    exp_avg_sqs : sequence of numpy.ndarray
        The running averages of its square, updated in place.
    max_exp_avg_sqs : sequence of numpy.ndarray or None
        Per parameter: an array (amsgrad: the running maximum of exp_avg_sq, updated in
        place) or None.
    steps : sequence of int
        Each parameter's step number, from 1.
    lr : float
        Learning rate.
    beta1 : float
        Decay of exp_avg.
    beta2 : float
        Decay of exp_avg_sq.
    eps : float
        Added to the denominator.
    weight_decay : float, optional
        Decoupled weight decay.

    Raises
    ------
    TypeError
        For a parameter that is not a float32/float64 ndarray, or a gradient that is
        not real numbers.
    ValueError
        For a read-only parameter, a gradient of another shape, state arrays that are
        not writable, aligned, C-contiguous arrays of the parameter's shape and dtype,
        lists of different lengths, or a step that is not a positive int (Adam, AdamW).
        Every operand is checked before any parameter changes.
    """
    steps = _check_steps("adamw_update", steps)
    hyper = (float(lr), float(weight_decay), float(beta1), float(beta2), float(eps),
             get_num_threads())
    _run_updates("adamw_update", _optim.adamw_many, list(params), list(grads),
                 [list(exp_avgs), list(exp_avg_sqs), list(max_exp_avg_sqs)], steps, hyper,
                 no_state_ok=True)


def rmsprop_updates(params, grads, square_avgs, grad_avgs, momentum_buffers, lr, alpha, eps,
                    weight_decay=0.0, momentum=0.0):
    """RMSprop's step on each parameter, in place, in one compiled call.

    With PyTorch's operations::

        d = grad + weight_decay * param
        square_avg = alpha * square_avg + (1 - alpha) * d * d
        centered (grad_avgs[i] an array): grad_avg = lerp(grad_avg, d, 1 - alpha),
            avg = sqrt(square_avg - grad_avg * grad_avg) + eps
        otherwise: avg = sqrt(square_avg) + eps
        momentum (momentum_buffers[i] an array): buf = momentum * buf + d / avg,
            param -= lr * buf
        otherwise: param -= lr * d / avg

    State arrays: writable, aligned, C-contiguous, of their parameter's shape and
    dtype, updated in place.  The hyperparameters are converted with ``float`` and not
    range-checked here (:mod:`fastbn.optim` checks them).

    Parameters
    ----------
    params : sequence of numpy.ndarray
        float32 or float64, writable; each updated in place.
    grads : sequence of array_like
        One per parameter, of its shape (converted to its dtype).
    square_avgs : sequence of numpy.ndarray
        The running averages of the squared gradient, updated in place.
    grad_avgs : sequence of numpy.ndarray or None
        Per parameter: the running average of the gradient (centered), or None.
    momentum_buffers : sequence of numpy.ndarray or None
        Per parameter: the momentum buffer, or None (no momentum).
    lr : float
        Learning rate.
    alpha : float
        Smoothing constant.
    eps : float
        Added to the denominator.
    weight_decay : float, optional
        L2 penalty added to the gradient.
    momentum : float, optional
        Momentum factor.

    Raises
    ------
    TypeError
        For a parameter that is not a float32/float64 ndarray, or a gradient that is
        not real numbers.
    ValueError
        For a read-only parameter, a gradient of another shape, state arrays that are
        not writable, aligned, C-contiguous arrays of the parameter's shape and dtype,
        lists of different lengths, or a step that is not a positive int (Adam, AdamW).
        Every operand is checked before any parameter changes.
    """
    params = list(params)
    hyper = (float(lr), float(weight_decay), float(alpha), float(eps), float(momentum),
             get_num_threads())
    _run_updates("rmsprop_update", _optim.rmsprop_many, params, list(grads),
                 [list(square_avgs), list(grad_avgs), list(momentum_buffers)], None, hyper,
                 no_state_ok=True)


def adadelta_updates(params, grads, square_avgs, acc_deltas, lr, rho, eps, weight_decay=0.0):
    """Adadelta's step on each parameter, in place, in one compiled call.

    With PyTorch's operations::

        d = grad + weight_decay * param
        square_avg = rho * square_avg + (1 - rho) * d * d
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) * d
        acc_delta = rho * acc_delta + (1 - rho) * delta * delta
        param -= lr * delta

    State arrays: writable, aligned, C-contiguous, of their parameter's shape and
    dtype, updated in place.  The hyperparameters are converted with ``float`` and not
    range-checked here (:mod:`fastbn.optim` checks them).

    Parameters
    ----------
    params : sequence of numpy.ndarray
        float32 or float64, writable; each updated in place.
    grads : sequence of array_like
        One per parameter, of its shape (converted to its dtype).
    square_avgs : sequence of numpy.ndarray
        The running averages of the squared gradient, updated in place.
    acc_deltas : sequence of numpy.ndarray
        The running averages of the squared updates, updated in place.
    lr : float
        Learning rate (scales delta).
    rho : float
        Decay of the running averages.
    eps : float
        Added inside the square roots.
    weight_decay : float, optional
        L2 penalty added to the gradient.

    Raises
    ------
    TypeError
        For a parameter that is not a float32/float64 ndarray, or a gradient that is
        not real numbers.
    ValueError
        For a read-only parameter, a gradient of another shape, state arrays that are
        not writable, aligned, C-contiguous arrays of the parameter's shape and dtype,
        lists of different lengths, or a step that is not a positive int (Adam, AdamW).
        Every operand is checked before any parameter changes.
    """
    params = list(params)
    hyper = (float(lr), float(weight_decay), float(rho), float(eps), get_num_threads())
    _run_updates("adadelta_update", _optim.adadelta_many, params, list(grads),
                 [list(square_avgs), list(acc_deltas)], None, hyper)
