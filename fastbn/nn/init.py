"""Parameter initialization, in place, as in ``torch.nn.init``.

Each function takes a Tensor (or NumPy array) and fills it; random ones draw from
``generator`` or, by default, the global one that ``fastbn.manual_seed`` seeds.
"""
import math

import numpy as np

from .. import random as _random

__all__ = ["calculate_gain", "uniform_", "normal_", "zeros_", "ones_", "constant_",
           "kaiming_uniform_", "kaiming_normal_", "_calculate_fan_in_and_fan_out"]


def _array(tensor):
    data = getattr(tensor, "data", tensor)
    if not isinstance(data, np.ndarray):
        raise TypeError(f"expected a Tensor or NumPy array, got {type(tensor).__name__}")
    return data


def calculate_gain(nonlinearity, param=None):
    """The gain PyTorch recommends for a nonlinearity (leaky_relu's slope is param)."""
    linear = ("linear", "conv1d", "conv2d", "conv3d", "sigmoid", "conv_transpose1d",
              "conv_transpose2d", "conv_transpose3d")
    if nonlinearity in linear:
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else float(param)
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"unsupported nonlinearity {nonlinearity!r}")


def _calculate_fan_in_and_fan_out(tensor):
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError("fan in and fan out need a tensor with at least 2 dimensions, "
                         f"got shape {shape}")
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    data = _array(tensor)
    gen = _random.default_generator if generator is None else generator
    data[...] = gen.uniform(a, b, size=data.shape)
    return tensor


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """Fill tensor with draws from N(mean, std**2), in place (``torch.nn.init.normal_``).

    Parameters
    ----------
    tensor : Tensor or numpy.ndarray
    mean, std : float, optional
    generator : numpy.random.Generator, optional
        Default: fastbn's global generator (``fastbn.manual_seed``).

    Returns
    -------
    Tensor or numpy.ndarray
        tensor itself.
    """
    data = _array(tensor)
    gen = _random.default_generator if generator is None else generator
    data[...] = gen.normal(mean, std, size=data.shape)
    return tensor


def constant_(tensor, val):
    _array(tensor)[...] = val
    return tensor


def zeros_(tensor):
    return constant_(tensor, 0)


def ones_(tensor):
    return constant_(tensor, 1)


def _kaiming_fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """U(-bound, bound) with bound = gain * sqrt(3 / fan) (He et al., 2015)."""
    fan = _kaiming_fan(tensor, mode)
    if fan == 0:
        return tensor  # PyTorch warns and leaves an empty tensor alone
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan)
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """N(0, std**2) with std = gain / sqrt(fan) (He et al., 2015), in place, as
    ``torch.nn.init.kaiming_normal_``.

    Parameters
    ----------
    tensor : Tensor or numpy.ndarray
        At least 2-D: (out, in, ...) as a Linear or Conv2d weight.
    a : float, optional
        The negative slope of a leaky ReLU after the layer (0: ReLU).
    mode : {"fan_in", "fan_out"}, optional
        Keep the variance of the forward ("fan_in") or of the backward ("fan_out").
    nonlinearity : str, optional
        As :func:`calculate_gain`; PyTorch's default "leaky_relu" with a=0 is the ReLU's
        gain, sqrt(2).
    generator : numpy.random.Generator, optional

    Returns
    -------
    Tensor or numpy.ndarray
        tensor itself.

    Raises
    ------
    ValueError
        For a 1-D tensor or an unknown mode or nonlinearity.
    """
    fan = _kaiming_fan(tensor, mode)
    if fan == 0:
        return tensor  # PyTorch warns and leaves an empty tensor alone
    return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(fan), generator)
