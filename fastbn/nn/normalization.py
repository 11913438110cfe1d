"""Normalization layers other than BatchNorm (``torch.nn.modules.normalization``'s place).

- ``GroupNorm``: statistics per sample and group of channels (Wu and He, 2018);
- ``LayerNorm``: statistics per sample over its trailing dimensions (Ba et al., 2016).

Neither keeps running statistics: training and evaluation compute the same, and a
batch of one sample is normalized as well as a large one.
"""
import numbers

import numpy as np

from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter, factory_dtype

__all__ = ["GroupNorm", "LayerNorm"]


def _check_eps(eps):
    if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    return float(eps)


def _positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class GroupNorm(Module):
    """Group Normalization (Wu and He, 2018; PyTorch's ``nn.GroupNorm``).

    The ``num_channels`` channels form ``num_groups`` groups of consecutive channels;
    each sample's group is normalized with its own mean and biased variance over its
    channels and positions, then (``affine``) scaled and shifted per channel::

        y = (x - mean) / sqrt(var + eps) * weight + bias

    ``num_groups=1`` normalizes each sample over all of it (LayerNorm over (C, H, W)
    with per-channel parameters), ``num_groups=num_channels`` each channel of each
    sample (InstanceNorm with affine).  Independent of the batch: the same in
    training and evaluation, for any batch size.

    Parameters
    ----------
    num_groups : int
        Divides num_channels.
    num_channels : int
        C, the channels of the input (axis 1).
    eps : float, default 1e-5
        Added to the variance; positive.
    affine : bool, default True
        Learn a per-channel weight (init 1) and bias (init 0).
    device, dtype
        PyTorch's factory keywords: the CPU, float32 (default) or float64.
    bias : bool, default True
        Keyword only: with ``affine``, learn the bias too.

    Attributes
    ----------
    weight, bias : Parameter, shape (num_channels,), or None
        state_dict keys ``weight`` and ``bias``.

    Raises
    ------
    ValueError
        On construction, for num_groups not dividing num_channels or a non-positive
        eps; in forward, for input that is not (N, num_channels, *) or groups of a
        single value.
    TypeError
        In forward, for input of another dtype than the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import Tensor, nn
    >>> norm = nn.GroupNorm(2, 4)
    >>> y = norm(Tensor(np.arange(16, dtype=np.float32).reshape(1, 4, 2, 2)))
    >>> np.round(y.numpy()[0, 0].ravel(), 3)
    array([-1.528, -1.091, -0.655, -0.218], dtype=float32)
    """

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        self.num_groups = _positive_int("num_groups", num_groups)
        self.num_channels = _positive_int("num_channels", num_channels)
        if self.num_channels % self.num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups "
                             f"({num_groups})")
        self.eps = _check_eps(eps)
        self.affine = bool(affine)
        dtype = factory_dtype(device, dtype)
        C = self.num_channels
        self.register_parameter("weight", Parameter(np.ones(C, dtype)) if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(C, dtype)) if affine and bias
                                else None)

    def reset_parameters(self):
        """The weight back to 1, the bias to 0."""
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, input):
        """Normalize ``input`` of shape (N, num_channels, *); returns its shape and
        dtype."""
        shape = input.shape if isinstance(input, Tensor) else np.shape(input)
        if len(shape) < 2 or shape[1] != self.num_channels:
            raise ValueError(f"{self._layer_name()}: expected input of shape (N, "
                             f"{self.num_channels}, *), got shape {shape}")
        return F.group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")


class LayerNorm(Module):
    """Layer Normalization (Ba, Kiros and Hinton, 2016; PyTorch's ``nn.LayerNorm``).

    Each sample's trailing ``normalized_shape`` is normalized with its own mean and
    biased variance, then (``elementwise_affine``) scaled and shifted elementwise::

        y = (x - mean) / sqrt(var + eps) * weight + bias

    Independent of the batch: the same in training and evaluation.

    Parameters
    ----------
    normalized_shape : int or tuple of int
        The trailing shape of the input that is normalized (an int: the last
        dimension's size).
    eps : float, default 1e-5
        Added to the variance; positive.
    elementwise_affine : bool, default True
        Learn a weight (init 1) and bias (init 0) of normalized_shape.
    bias : bool, default True
        With ``elementwise_affine``, learn the bias too.
    device, dtype
        PyTorch's factory keywords: the CPU, float32 (default) or float64.

    Attributes
    ----------
    normalized_shape : tuple of int
    weight, bias : Parameter of shape normalized_shape, or None
        state_dict keys ``weight`` and ``bias``.

    Raises
    ------
    ValueError
        On construction, for a shape that is not positive ints or a non-positive eps;
        in forward, for input whose trailing shape is not normalized_shape.
    TypeError
        In forward, for input of another dtype than the parameters.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import Tensor, nn
    >>> norm = nn.LayerNorm(4)
    >>> y = norm(Tensor(np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)))
    >>> np.round(y.numpy(), 3)
    array([[-1.342, -0.447,  0.447,  1.342]], dtype=float32)
    """

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True,
                 device=None, dtype=None):
        super().__init__()
        shape = ((normalized_shape,) if isinstance(normalized_shape, numbers.Integral)
                 else tuple(normalized_shape))
        if not shape:
            raise ValueError("normalized_shape must name at least one dimension")
        self.normalized_shape = tuple(_positive_int("normalized_shape", s) for s in shape)
        self.eps = _check_eps(eps)
        self.elementwise_affine = bool(elementwise_affine)
        dtype = factory_dtype(device, dtype)
        affine = self.elementwise_affine
        self.register_parameter("weight", Parameter(np.ones(self.normalized_shape, dtype))
                                if affine else None)
        self.register_parameter("bias", Parameter(np.zeros(self.normalized_shape, dtype))
                                if affine and bias else None)

    def reset_parameters(self):
        """The weight back to 1, the bias to 0."""
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def forward(self, input):
        """Normalize ``input`` of shape (*, *normalized_shape); returns its shape and
        dtype."""
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")
