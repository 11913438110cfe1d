"""Weight normalization (Salimans & Kingma, 2016): ``w = g * v / ||v||``, as the classic
hook-based ``torch.nn.utils.weight_norm``.

The weight parameter is replaced by a magnitude ``<name>_g`` and a direction
``<name>_v`` (the state_dict keys PyTorch writes), and the weight is recomputed from them
before every forward (a forward pre-hook), so gradients reach ``g`` and ``v`` through
the ops of the tape.
"""
import numbers

import numpy as np

from ..module import Module, Parameter

__all__ = ["weight_norm", "remove_weight_norm"]


def _norm_except_dim(v, dim):
    """The 2-norm of Tensor v over every dim but ``dim`` (kept with length 1), or over all
    of v for ``dim=-1``: PyTorch's ``norm_except_dim``."""
    sq = v * v
    if dim == -1:
        return sq.sum() ** 0.5
    return sq.sum(axis=tuple(i for i in range(v.ndim) if i != dim), keepdims=True) ** 0.5


class WeightNorm:
    """The hook that recomputes ``module.<name>`` from ``<name>_g`` and ``<name>_v``.

    Parameters
    ----------
    name : str
        The name of the reparametrized parameter.
    dim : int
        The dim that keeps its own norm; -1: one norm over the whole tensor.
    """

    def __init__(self, name, dim):
        self.name = name
        self.dim = -1 if dim is None else dim

    def compute_weight(self, module):
        """``g * v / ||v||`` from the module's ``<name>_g`` and ``<name>_v`` (a Tensor on
        the tape when grad mode is on)."""
        g = getattr(module, self.name + "_g")
        v = getattr(module, self.name + "_v")
        return v * (g / _norm_except_dim(v, self.dim))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))

    def remove(self, module):
        """Turn ``<name>`` back into an ordinary parameter holding the current weight."""
        weight = self.compute_weight(module)
        delattr(module, self.name)
        del module._parameters[self.name + "_g"]
        del module._parameters[self.name + "_v"]
        setattr(module, self.name, Parameter(weight.data))


def _hook_of(module, name):
    """(key, WeightNorm) of module's hook for ``name``, or (None, None)."""
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, WeightNorm) and hook.name == name:
            return key, hook
    return None, None


def _dim(dim, ndim):
    """dim as PyTorch reads it: None or -1 mean the whole tensor; other negative dims
    count from the end."""
    if dim is None:
        return -1
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
        raise TypeError(f"weight_norm: dim must be an int or None, got {type(dim).__name__}")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        # AxisError is both an IndexError (PyTorch's type here) and a ValueError
        raise np.exceptions.AxisError(
            f"weight_norm: dim {dim} is out of range for a {ndim}-D parameter (expected "
            f"-{max(ndim, 1)} to {max(ndim, 1) - 1}, or None for the whole tensor)")
    return -1 if dim == -1 else int(dim) % max(ndim, 1)


def weight_norm(module, name="weight", dim=0):
    """Reparametrize ``module.<name>`` as ``g * v / ||v||`` (weight normalization).

    The parameter is replaced by ``<name>_g`` (the norm, its shape that of the parameter
    with every dim but ``dim`` of length 1) and ``<name>_v`` (the parameter itself), so
    at first the module computes what it did.  ``module.<name>`` becomes a plain Tensor,
    recomputed from them before every forward.  Same semantics, parameter names and
    state_dict keys as ``torch.nn.utils.weight_norm``.

    Parameters
    ----------
    module : fastbn.nn.Module
        The module holding the parameter (Linear, Conv2d, ...); changed in place.
    name : str, default "weight"
        The parameter to reparametrize.
    dim : int or None, default 0
        The dim that keeps one norm per index (0: one per output channel or row).
        ``None`` or -1: a single norm over the whole tensor (PyTorch's reading of -1);
        other negative dims count from the end.

    Returns
    -------
    fastbn.nn.Module
        ``module``.

    Raises
    ------
    TypeError
        ``module`` is not a Module, or ``<name>`` is not a Parameter (None, a buffer).
    AttributeError
        ``module`` has no attribute ``<name>``.
    IndexError
        ``dim`` is out of range (a ``numpy.exceptions.AxisError``, also a ValueError).
    RuntimeError
        ``<name>`` is already weight-normalized.

    Examples
    --------
    >>> from fastbn import nn
    >>> m = nn.utils.weight_norm(nn.Linear(20, 40))
    >>> m.weight_g.shape, m.weight_v.shape
    ((40, 1), (40, 20))
    >>> list(m.state_dict())
    ['bias', 'weight_g', 'weight_v']
    """
    if not isinstance(module, Module):
        raise TypeError(f"weight_norm: module must be a fastbn.nn.Module, got "
                        f"{type(module).__name__}")
    if _hook_of(module, name)[1] is not None:
        raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter "
                           f"{name}")
    weight = getattr(module, name)
    if not isinstance(weight, Parameter):
        raise TypeError(f"weight_norm: {type(module).__name__}.{name} is "
                        f"{'None' if weight is None else type(weight).__name__}, not a "
                        "Parameter")
    dim = _dim(dim, weight.ndim)
    w = weight.data
    if dim == -1:
        g = np.sqrt(np.sum(np.square(w, dtype=np.float64)))
    else:
        axes = tuple(i for i in range(w.ndim) if i != dim)
        g = np.sqrt(np.sum(np.square(w, dtype=np.float64), axis=axes, keepdims=True))
    hook = WeightNorm(name, dim)
    del module._parameters[name]
    module.register_parameter(name + "_g", Parameter(np.asarray(g, dtype=w.dtype)))
    module.register_parameter(name + "_v", Parameter(w))
    setattr(module, name, hook.compute_weight(module))
    module.register_forward_pre_hook(hook)
    return module


def remove_weight_norm(module, name="weight"):
    """Undo :func:`weight_norm`: ``module.<name>`` becomes a Parameter again, holding the
    current ``g * v / ||v||``, and ``<name>_g`` / ``<name>_v`` are removed.

    Parameters
    ----------
    module : fastbn.nn.Module
        A module that :func:`weight_norm` changed; changed in place.
    name : str, default "weight"
        The reparametrized parameter.

    Returns
    -------
    fastbn.nn.Module
        ``module``.

    Raises
    ------
    ValueError
        ``<name>`` of ``module`` is not weight-normalized.
    """
    key, hook = _hook_of(module, name)
    if hook is not None:
        hook.remove(module)
        del module._forward_pre_hooks[key]
        return module
    raise ValueError(f"weight_norm of '{name}' not found in {module}")
