"""Normalization layers other than BatchNorm (``torch.nn.modules.normalization``'s place).

- ``GroupNorm``: statistics per sample and group of channels (Wu and He, 2018);
- ``LayerNorm``: statistics per sample over its trailing dimensions (Ba et al., 2016);
- ``L2Norm``: ParseNet's L2 normalization across channels with a learned per-channel
  scale (Liu, Rabinovich & Berg, 2015), the layer SSD puts after its conv4_3.

None keeps running statistics: training and evaluation compute the same, and a batch of
one sample is normalized as well as a large one.
"""
import math
import numbers

import numpy as np

from ..autograd import Tensor
from . import functional as F
from .module import Module, Parameter, _check_dtype, factory_dtype
from .modules import _positive_int

__all__ = ["GroupNorm", "LayerNorm", "L2Norm"]


def _check_eps(eps):
    if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and eps > 0):
        raise ValueError(f"eps must be a positive number, got {eps!r}")
    return float(eps)


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
        On construction, for sizes below 1, num_groups not dividing num_channels or a
        non-positive eps; in forward, for input that is not ``(N, num_channels, *)`` or
        groups of a single value.
    TypeError
        On construction, for sizes that are not ints; in forward, for input of another
        dtype than the parameters.

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
        """Normalize ``input`` of shape ``(N, num_channels, *)``; returns its shape and
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
        On construction, for a size below 1 or a non-positive eps; in forward, for
        input whose trailing shape is not normalized_shape.
    TypeError
        On construction, for sizes that are not ints; in forward, for input of another
        dtype than the parameters.

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
        """Normalize ``input`` of shape ``(*, *normalized_shape)``; returns its shape and
        dtype."""
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class L2Norm(Module):
    r"""L2-normalize the channels at each position, then scale each channel (ParseNet).

    .. math::

        y_{n,c,\dots} = \gamma_c \, \frac{x_{n,c,\dots}}
                         {\sqrt{\sum_{c'} x_{n,c',\dots}^2 + \epsilon}}

    For (N, C) input every sample's feature vector gets unit L2 norm; for (N, C, H, W)
    (or any (N, C, ...)) every position's vector of C channels does.  Unlike BatchNorm it
    uses no batch statistics: it behaves the same in training and eval and on a batch of
    one.  ``eps`` inside the square root, as in ParseNet's Caffe Normalize layer, keeps
    the gradient finite at zero input.

    Parameters
    ----------
    num_features : int
        C, the number of channels (axis 1 of the input).
    init_scale : float, default 1.0
        The initial value of every channel's scale gamma: the L2 norm of the output
        vector at each position (ParseNet and SSD use 10 or 20 for conv features;
        ``sqrt(num_features)`` gives each output element unit mean square).
    eps : float, default 1e-10
        Added to the sum of squares before the square root.
    dtype : float32 or float64, default float32
        Of the scale parameter; the input must have the same dtype.

    Attributes
    ----------
    weight : Parameter, shape (num_features,)
        The learned per-channel scale gamma (state_dict key ``weight``).

    Raises
    ------
    ValueError
        On construction, for a ``num_features`` that is not a positive int or a
        non-finite ``init_scale`` or non-positive ``eps``; in forward, for input with
        fewer than 2 dims or another number of channels.
    TypeError
        In forward, for input whose dtype is not the scale's.

    Examples
    --------
    >>> import numpy as np
    >>> from fastbn import Tensor, nn
    >>> norm = nn.L2Norm(3, init_scale=2.0)
    >>> y = norm(Tensor(np.array([[3.0, 0.0, 4.0]], np.float32)))
    >>> np.round(y.numpy(), 4)
    array([[1.2, 0. , 1.6]], dtype=float32)
    """

    def __init__(self, num_features, init_scale=1.0, eps=1e-10, dtype=np.float32):
        super().__init__()
        if (isinstance(num_features, bool) or not isinstance(num_features, numbers.Integral)
                or num_features < 1):
            raise ValueError(f"num_features must be a positive int, got {num_features!r}")
        if (isinstance(init_scale, bool) or not isinstance(init_scale, numbers.Real)
                or not math.isfinite(init_scale)):
            raise ValueError(f"init_scale must be a finite number, got {init_scale!r}")
        if isinstance(eps, bool) or not (isinstance(eps, numbers.Real) and eps > 0):
            raise ValueError(f"eps must be a positive number, got {eps!r}")
        self.num_features = int(num_features)
        self.init_scale = float(init_scale)
        self.eps = float(eps)
        self.weight = Parameter(np.empty(self.num_features, _check_dtype(dtype)))
        self.reset_parameters()

    def reset_parameters(self):
        """Set every channel's scale back to ``init_scale``."""
        self.weight.data[...] = self.init_scale

    def forward(self, input):
        """Normalize and scale ``input``.

        Parameters
        ----------
        input : Tensor or ndarray, shape (N, num_features, ...)
            Of the scale's dtype.

        Returns
        -------
        Tensor
            The same shape and dtype.
        """
        x = input if isinstance(input, Tensor) else Tensor(np.asarray(input))
        if x.ndim < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"{self._layer_name()}: expected input of shape (N, "
                             f"{self.num_features}, ...) (channels on axis 1), got shape "
                             f"{x.shape}")
        if x.dtype != self.weight.dtype:
            raise TypeError(f"{self._layer_name()}: input has dtype {x.dtype} but the scale "
                            f"has {self.weight.dtype} (convert one with .to(dtype))")
        # composed from the tape's ops (a dedicated kernel would fuse their passes);
        # multiplying by the inverse norm backpropagates in fewer passes than dividing
        inv_norm = ((x * x).sum(axis=1, keepdims=True) + self.eps) ** -0.5
        scale = self.weight.reshape((1, self.num_features) + (1,) * (x.ndim - 2))
        return x * inv_norm * scale

    def extra_repr(self):
        return f"{self.num_features}, init_scale={self.init_scale}, eps={self.eps}"
