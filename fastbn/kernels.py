"""Validated NumPy entry points to the Batch Normalization kernels.

Arrays in, arrays out.  This is the only module that calls ``fastbn._core``;
it checks types, shapes and values, makes inputs C-contiguous, views them as
(N, C, L) and picks the thread count.  The autodiff tape calls these.
"""
import numbers

import numpy as np

from . import _core
from ._config import get_num_threads

__all__ = ["batch_norm_forward", "batch_norm_backward"]

_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check_input(x, name):
    x = np.asarray(x)
    if x.dtype not in _DTYPES:
        raise TypeError(f"{name} has dtype {x.dtype}; supported dtypes are float32 and float64")
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N, C) or (N, C, *spatial), got shape {x.shape}")
    return np.ascontiguousarray(x)


def _check_channel_param(p, name, x, writable=False):
    """A per-channel vector of x's channel count.  Read-only ones are cast to x's
    dtype; ones updated in place (running stats) must already match it."""
    if p is None:
        return None
    C = x.shape[1]
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
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not (value > lo if lo_open else value >= lo) or not value <= hi:
        bound = f"({lo}, {hi}]" if lo_open else f"[{lo}, {hi}]"
        raise ValueError(f"{name} must be in {bound}, got {value}")
    return value


def _view3(x):
    """(N, C, *spatial) -> (N, C, L), a view of a contiguous array."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def batch_norm_forward(x, weight=None, bias=None, running_mean=None, running_var=None,
                       training=True, momentum=0.1, eps=1e-5):
    """Batch Normalization forward over the channels (axis 1) of x.

    Returns ``(y, save_mean, save_invstd)``.  In training, the statistics are
    the batch's (mean and biased variance over every axis but 1) and
    running_mean / running_var, when given, are updated in place with
    ``running = (1 - momentum) * running + momentum * batch`` (unbiased
    variance).  In inference, the running statistics normalize x and are
    returned as save_mean and ``1 / sqrt(running_var + eps)``.
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
        invstd = 1.0 / np.sqrt(running_var.astype(np.float64) + eps)
        scale = invstd * (1.0 if weight is None else weight)
        shift = (0.0 if bias is None else bias) - running_mean * scale
        y = np.empty_like(x)
        if x.size:
            _core.forward_eval(_view3(x), scale.astype(x.dtype), shift.astype(x.dtype),
                               _view3(y), get_num_threads())
        return y, running_mean.copy(), invstd.astype(x.dtype)

    if per_channel == 1:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got input size {x.shape}")
    save_mean = np.zeros(C, dtype=x.dtype)
    save_invstd = np.zeros(C, dtype=x.dtype)
    y = np.empty_like(x)
    if per_channel == 0:  # empty batch: nothing to normalize, running stats untouched
        return y, save_mean, save_invstd
    _core.forward_train(_view3(x), weight, bias, _view3(y), save_mean, save_invstd,
                        running_mean, running_var, momentum, eps, get_num_threads())
    return y, save_mean, save_invstd


def batch_norm_backward(dy, x, weight, save_mean, save_invstd, training=True):
    """Gradients of batch_norm_forward: ``(dx, dweight, dbias)``.

    ``training=True``: the batch statistics depend on x,
    ``dx = weight * invstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat))``.
    ``training=False``: the statistics are constants (a frozen layer),
    ``dx = dy * weight * invstd``.  dweight = sum(dy * xhat), dbias = sum(dy);
    both are None when weight is None.
    """
    x = _check_input(x, "input")
    dy = _check_input(dy, "grad_output")
    if dy.shape != x.shape:
        raise ValueError(f"grad_output has shape {dy.shape} but the input has shape {x.shape}")
    if dy.dtype != x.dtype:
        raise TypeError(f"grad_output has dtype {dy.dtype} but the input has {x.dtype}")
    weight = _check_channel_param(weight, "weight", x)
    save_mean = _check_channel_param(save_mean, "save_mean", x)
    save_invstd = _check_channel_param(save_invstd, "save_invstd", x)
    if save_mean is None or save_invstd is None:
        raise ValueError("save_mean and save_invstd are required")
    C = x.shape[1]
    dx = np.empty_like(x)
    dweight = None if weight is None else np.zeros(C, dtype=x.dtype)
    dbias = None if weight is None else np.zeros(C, dtype=x.dtype)
    if x.size:
        _core.backward(_view3(dy), _view3(x), weight, save_mean, save_invstd, _view3(dx),
                       dweight, dbias, bool(training), get_num_threads())
    return dx, dweight, dbias
