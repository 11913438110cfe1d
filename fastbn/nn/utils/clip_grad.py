"""Gradient clipping (``torch.nn.utils.clip_grad_norm_``)."""
import math
import numbers

import numpy as np

from ...autograd import Tensor

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False,
                    foreach=None):
    """Scale the gradients of ``parameters`` in place so that their total norm is at most
    ``max_norm`` (PyTorch's rule and arguments).

    The total norm is the ``norm_type``-norm of all the gradients together (of the
    vector of their norms); every gradient is multiplied by
    ``min(1, max_norm / (total_norm + 1e-6))``.  The norms are accumulated in float64.

    Parameters
    ----------
    parameters : Tensor or iterable of Tensor
        Parameters whose ``.grad`` to clip; those without a gradient are skipped.
    max_norm : float
        The largest total norm allowed.
    norm_type : float, optional
        The p of the p-norm (default 2); ``float('inf')`` for the largest magnitude.
    error_if_nonfinite : bool, optional
        Raise instead of clipping when the total norm is NaN or infinite.
    foreach : bool, optional
        Accepted for PyTorch's signature; it changes nothing.

    Returns
    -------
    Tensor
        The total norm before clipping, a 0-d tensor in the gradients' dtype.

    Raises
    ------
    RuntimeError
        With ``error_if_nonfinite`` when the total norm is NaN or infinite.
    ValueError, TypeError
        For a negative ``max_norm``, a non-positive ``norm_type`` or a gradient of
        another shape than its parameter.
    """
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    for name, value in (("max_norm", max_norm), ("norm_type", norm_type)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(f"clip_grad_norm_: {name} must be a number, got {value!r}")
    if max_norm < 0 or not norm_type > 0:
        raise ValueError(f"clip_grad_norm_: max_norm must be >= 0 and norm_type > 0, got "
                         f"{max_norm} and {norm_type}")
    grads = []
    for p in parameters:
        g = p.grad
        if g is None:
            continue
        if not isinstance(g, np.ndarray) or g.shape != p.data.shape or g.dtype.kind != "f":
            raise ValueError(f"clip_grad_norm_: a gradient must be a floating array of its "
                             f"parameter's shape {p.data.shape}, got {type(g).__name__} "
                             f"{getattr(g, 'shape', '')} {getattr(g, 'dtype', '')}")
        grads.append(g)
    if not grads:
        return Tensor(np.zeros((), np.float32))
    norm_type = float(norm_type)
    if math.isinf(norm_type):
        total = max(float(np.max(np.abs(g), initial=0.0)) for g in grads)
    else:
        # pairwise sums: the same bits at any thread count
        per = [np.sum(np.abs(g.astype(np.float64, copy=False)) ** norm_type) for g in grads]
        total = float(np.sum(per)) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from "
                           "`parameters` is non-finite, so it cannot be clipped. To disable "
                           "this error and scale the gradients by the non-finite norm "
                           "anyway, set `error_if_nonfinite=False`")
    coef = min(max_norm / (total + 1e-6), 1.0)
    for g in grads:
        g *= g.dtype.type(coef)
    return Tensor(np.asarray(total, dtype=grads[0].dtype))
