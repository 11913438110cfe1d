"""Argument checks and the BatchNorm + ReLU unit the models share."""
import numbers

from .. import nn


def check_positive_int(name, value):
    """value as an int, or a ValueError naming the argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_bool(name, value):
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def norm_relu(channels, bn):
    """BatchNorm followed by ReLU as one fused layer (BatchNorm2d's state_dict keys), or
    None without BatchNorm (the caller applies the ReLU)."""
    return nn.BatchNormReLU2d(channels) if bn else None
