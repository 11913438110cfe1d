"""Normalization layers other than BatchNorm (``torch.nn.modules.normalization``'s place).

- ``L2Norm``: ParseNet's L2 normalization across channels with a learned per-channel
  scale (Liu, Rabinovich & Berg, 2015), the layer SSD puts after its conv4_3.
"""
import math
import numbers

import numpy as np

from ..autograd import Tensor
from .module import Module, Parameter, _check_dtype

__all__ = ["L2Norm"]


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
