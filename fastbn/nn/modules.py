"""Layers: Linear, Conv2d, activations, pooling, Flatten, Dropout and the losses.

Each holds its hyperparameters and parameters and calls one op of
``fastbn.nn.functional``.  Parameters start as PyTorch's do (``reset_parameters``).
"""
import math
import numbers

import numpy as np

from ..autograd import Tensor
from .. import kernels as K
from . import functional as F
from . import init
from .module import Module, Parameter, factory_dtype

__all__ = ["Linear", "Conv2d", "ReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "MaxPool2d",
           "AvgPool2d", "AdaptiveAvgPool2d", "Flatten", "Dropout", "CrossEntropyLoss",
           "NLLLoss"]


def _positive_int(name, value):
    """As PyTorch: a TypeError for a value that is not an int, a ValueError below 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def _reset_weight_and_bias(weight, bias):
    """PyTorch's default for Linear and Conv2d: kaiming_uniform(a=sqrt(5)) for the weight,
    which is U(+-1/sqrt(fan_in)), and the same bound for the bias."""
    init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        fan_in, _ = init._calculate_fan_in_and_fan_out(weight)
        bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
        init.uniform_(bias, -bound, bound)


class Linear(Module):
    """A fully connected layer, ``y = x @ weight.T + bias`` (``torch.nn.Linear``).

    Parameters
    ----------
    in_features : int
        Size of each input sample, positive.
    out_features : int
        Size of each output sample, positive.
    bias : bool, optional
        Whether to learn an additive bias.
    device : str or device, optional
        PyTorch's factory keyword: ``'cpu'`` or None (fastbn runs on the CPU only).
    dtype : dtype, optional
        float32 (when None) or float64: the parameters' dtype, which the input must
        match.

    Attributes
    ----------
    weight : Parameter
        Shape (out_features, in_features), initialized as PyTorch's:
        U(-1/sqrt(in_features), 1/sqrt(in_features)).
    bias : Parameter or None
        Shape (out_features,), initialized with the same bound.

    Raises
    ------
    ValueError
        For sizes below 1, or a device that is not the CPU.
    TypeError
        For sizes that are not ints, or a dtype other than float32/float64.

    Notes
    -----
    Shape:

    - Input: ``(*, in_features)``, ``*`` any number of dims (at least one dim).
    - Output: ``(*, out_features)``.

    state_dict keys: ``weight``, ``bias``.
    """

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = _positive_int("in_features", in_features)
        self.out_features = _positive_int("out_features", out_features)
        dtype = factory_dtype(device, dtype)
        self.weight = Parameter(np.empty((out_features, in_features), dtype))
        self.register_parameter("bias", Parameter(np.empty(out_features, dtype)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}")


class Conv2d(Module):
    """2-D convolution (cross-correlation) over NCHW input (``torch.nn.Conv2d``).

    Runs :func:`fastbn.nn.functional.conv2d` (Winograd F(2x2, 3x3) or im2col with BLAS
    GEMMs).

    Parameters
    ----------
    in_channels : int
        Channels of the input, positive.
    out_channels : int
        Channels of the output, positive.
    kernel_size : int or tuple of int
        (kH, kW), positive.
    stride : int or tuple of int, optional
        Positive.
    padding : int or tuple of int, optional
        Zero padding on both sides, non-negative; PyTorch's ``'same'``/``'valid'``
        strings are not accepted.
    dilation : int or tuple of int, optional
        Spacing of the kernel's taps, positive.
    groups : int, optional
        Positive; divides in_channels and out_channels.
    bias : bool, optional
        Whether to learn an additive bias.
    padding_mode : {'zeros'}, optional
        Only ``'zeros'`` (PyTorch's other modes are not supported).
    device : str or device, optional
        PyTorch's factory keyword: ``'cpu'`` or None (fastbn runs on the CPU only).
    dtype : dtype, optional
        float32 (when None) or float64: the parameters' dtype, which the input must
        match.

    Attributes
    ----------
    weight : Parameter
        Shape (out_channels, in_channels // groups, kH, kW), initialized as PyTorch's:
        U(-1/sqrt(k), 1/sqrt(k)) with ``k = in_channels // groups * kH * kW``.
    bias : Parameter or None
        Shape (out_channels,), initialized with the same bound.

    Raises
    ------
    ValueError
        For sizes below 1 (padding below 0), channels not divisible by groups, another
        padding_mode, or a device that is not the CPU.
    TypeError
        For sizes that are not ints or pairs of ints, or a dtype other than
        float32/float64.

    Notes
    -----
    Shape:

    - Input: ``(N, C_in, H, W)``.
    - Output: ``(N, C_out, H_out, W_out)`` with
      ``H_out = (H + 2 * pH - dH * (kH - 1) - 1) // sH + 1`` (p padding, d dilation,
      k kernel_size, s stride) and likewise ``W_out``.

    state_dict keys: ``weight``, ``bias``.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 groups=1, bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        self.in_channels = _positive_int("in_channels", in_channels)
        self.out_channels = _positive_int("out_channels", out_channels)
        self.groups = _positive_int("groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) "
                             f"must be divisible by groups ({groups})")
        self.kernel_size = K._pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = K._pair(stride, "stride", "Conv2d", 1)
        self.padding = K._pair(padding, "padding", "Conv2d", 0)
        self.dilation = K._pair(dilation, "dilation", "Conv2d", 1)
        if padding_mode != "zeros":
            raise ValueError(f"padding_mode {padding_mode!r} is not supported (only 'zeros')")
        self.padding_mode = padding_mode
        dtype = factory_dtype(device, dtype)
        shape = (out_channels, in_channels // groups) + self.kernel_size
        self.weight = Parameter(np.empty(shape, dtype))
        self.register_parameter("bias", Parameter(np.empty(out_channels, dtype)) if bias else None)
        self.reset_parameters()

    def reset_parameters(self):
        _reset_weight_and_bias(self.weight, self.bias)

    def forward(self, input):
        return F.conv2d(input, self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        return s + (", bias=False" if self.bias is None else "")


class ReLU(Module):
    """max(x, 0).

    Parameters
    ----------
    inplace : bool, optional
        Accepted for PyTorch's signature: the output is always a new tensor, which is
        what a model that uses the returned value sees.
    """

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = bool(inplace)

    def forward(self, input):
        return F.relu(input)

    def extra_repr(self):
        return "inplace=True" if self.inplace else ""


class Sigmoid(Module):
    """Elementwise logistic sigmoid ``1 / (1 + exp(-x))`` (``torch.nn.Sigmoid``).

    Notes
    -----
    Shape:

    - Input: ``(*)``, any shape, float32 or float64.
    - Output: the input's shape and dtype.
    """

    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    """Elementwise hyperbolic tangent (``torch.nn.Tanh``).

    Notes
    -----
    Shape:

    - Input: ``(*)``, any shape, float32 or float64.
    - Output: the input's shape and dtype.
    """

    def forward(self, input):
        return F.tanh(input)


class Softmax(Module):
    """softmax along a dim (``F.softmax``).

    Parameters
    ----------
    dim : int, optional
        The dim that sums to 1; None: PyTorch's legacy implicit choice, with its warning.
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log_softmax along a dim (``F.log_softmax``).

    Parameters
    ----------
    dim : int, optional
        As :class:`Softmax`.
    """

    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.log_softmax(input, self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


def _check_unsupported(name, value, default):
    """PyTorch's pooling keywords fastbn takes only at their defaults."""
    if value != default:
        raise ValueError(f"{name}={value!r} is not supported; only {name}={default!r}")


class _Pool2d(Module):
    """kernel_size, stride and padding kept as given, as PyTorch's modules keep them
    (stride None: kernel_size); checked here, at construction."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__()
        _check_unsupported("ceil_mode", ceil_mode, False)
        K._pool_args(kernel_size, stride, padding, type(self).__name__)
        self.kernel_size = kernel_size
        self.stride = kernel_size if stride is None or stride == () else stride
        self.padding = padding
        self.ceil_mode = False

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """2-D max pooling, padding counting as -inf (``torch.nn.MaxPool2d``).

    PyTorch's ``dilation``, ``return_indices`` and ``ceil_mode`` are accepted at their
    defaults only.

    Parameters
    ----------
    kernel_size : int or tuple of int
        The window, (kH, kW), positive.
    stride : int or tuple of int, optional
        Positive; None (default) is ``kernel_size``.
    padding : int or tuple of int, optional
        Non-negative, at most half the window.
    dilation : int, optional
        1 only (PyTorch's default).
    return_indices, ceil_mode : bool, optional
        False only (PyTorch's defaults).

    Raises
    ------
    ValueError
        For sizes below 1 (padding below 0), padding over half the window, or
        ``dilation``, ``return_indices`` or ``ceil_mode`` other than their defaults.
    TypeError
        For sizes that are not ints or pairs of ints.

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)``, float32 or float64.
    - Output: ``(N, C, H_out, W_out)``, the input's dtype, with
      ``H_out = (H + 2 * padding[0] - kernel_size[0]) // stride[0] + 1`` and likewise
      ``W_out``.
    """
    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices=False,
                 ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        _check_unsupported("dilation", dilation, 1)
        _check_unsupported("return_indices", return_indices, False)
        self.dilation, self.return_indices = 1, False

    def forward(self, input):
        return F.max_pool2d(input, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"{super().extra_repr()}, dilation={self.dilation}, ceil_mode={self.ceil_mode}"


class AvgPool2d(_Pool2d):
    """2-D average pooling (``torch.nn.AvgPool2d``).

    PyTorch's ``ceil_mode`` and ``divisor_override`` are accepted at their defaults only.

    Parameters
    ----------
    kernel_size : int or tuple of int
        The window, (kH, kW), positive.
    stride : int or tuple of int, optional
        Positive; None (default) is ``kernel_size``.
    padding : int or tuple of int, optional
        Non-negative, at most half the window.
    ceil_mode : bool, optional
        False only (PyTorch's default).
    count_include_pad : bool, optional
        True (default): padding counts in each window's divisor; False: only the
        input's values do.
    divisor_override : None, optional
        None only (PyTorch's default).

    Raises
    ------
    ValueError
        For sizes below 1 (padding below 0), padding over half the window, or
        ``ceil_mode``/``divisor_override`` other than their defaults.
    TypeError
        For sizes that are not ints or pairs of ints.

    Notes
    -----
    Shape:

    - Input: ``(N, C, H, W)``, float32 or float64.
    - Output: ``(N, C, H_out, W_out)``, the input's dtype, with
      ``H_out = (H + 2 * padding[0] - kernel_size[0]) // stride[0] + 1`` and likewise
      ``W_out``.
    """
    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True, divisor_override=None):
        super().__init__(kernel_size, stride, padding, ceil_mode)
        _check_unsupported("divisor_override", divisor_override, None)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = None

    def forward(self, input):
        return F.avg_pool2d(input, self.kernel_size, self.stride, self.padding,
                            self.count_include_pad)


class AdaptiveAvgPool2d(Module):
    """Average pooling of (N, C, H, W) input to a fixed output size, whatever H and W.

    Parameters
    ----------
    output_size : int or (int or None, int or None)
        (oh, ow); an int for both; None keeps the input's size in that dim.
    """

    def __init__(self, output_size):
        super().__init__()
        sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
        if not 1 <= len(sizes) <= 2 or any(
                s is not None and (isinstance(s, bool) or not isinstance(s, numbers.Integral)
                                   or s < 1) for s in sizes):
            raise ValueError(f"output_size must be a positive int or a pair of positive ints "
                             f"or None, got {output_size!r}")
        self.output_size = tuple(output_size) if isinstance(output_size, list) else output_size

    def forward(self, input):
        return F.adaptive_avg_pool2d(input, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"


class Flatten(Module):
    """Flattens dims ``start_dim`` .. ``end_dim`` into one (``torch.nn.Flatten``).

    Parameters
    ----------
    start_dim : int, optional
        First dim to flatten (1: all but the batch dim).
    end_dim : int, optional
        Last dim to flatten (included).

    Notes
    -----
    Shape:

    - Input: ``(*, S_start, ..., S_end, *)``, any dtype.
    - Output: ``(*, S_start * ... * S_end, *)``.
    """

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim, self.end_dim = start_dim, end_dim

    def forward(self, input):
        return F.flatten(input, self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Dropout(Module):
    """Zeroes elements with probability p in training, the identity in eval (``torch.nn.Dropout``).

    In training the rest are scaled by 1/(1-p).  Draws from the global generator
    (``fastbn.manual_seed``), so runs and checkpoints are reproducible.

    Parameters
    ----------
    p : float, optional
        Probability of zeroing, in [0, 1] (default 0.5).
    inplace : bool, optional
        Accepted for PyTorch's signature; the output is always a new tensor.
    """

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ValueError(f"dropout probability must be in [0, 1], got {p!r}")
        self.p = float(p)
        self.inplace = bool(inplace)

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}" + (", inplace=True" if self.inplace else "")


def _check_reduction(reduction):
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return reduction


class CrossEntropyLoss(Module):
    """Softmax cross-entropy of logits against class indices (``torch.nn.CrossEntropyLoss``).

    Runs :func:`fastbn.nn.functional.cross_entropy`.  Unlike PyTorch: no ``weight``,
    ``ignore_index``, ``label_smoothing`` or probability targets (:class:`NLLLoss`
    has weight and ignore_index).

    Parameters
    ----------
    reduction : {'mean', 'sum', 'none'}, optional
        Average or sum over the targets, or one loss per target.

    Raises
    ------
    ValueError
        For another reduction.

    Notes
    -----
    Shape:

    - Input: ``(N, C)`` or ``(N, C, d1, ...)`` logits, float32 or float64.
    - Target: ``(N,)`` or ``(N, d1, ...)`` integer class indices in ``[0, C)``.
    - Output: a 0-d tensor, or the target's shape with ``reduction='none'``.
    """

    def __init__(self, reduction="mean"):
        super().__init__()
        self.reduction = _check_reduction(reduction)

    def forward(self, input, target):
        return F.cross_entropy(input, target, reduction=self.reduction)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""


class NLLLoss(Module):
    """Negative log likelihood of log-probabilities against class indices (``torch.nn.NLLLoss``).

    Runs ``F.nll_loss``; a class ``weight`` is kept as a buffer, as in PyTorch.

    Parameters
    ----------
    weight : array_like or Tensor, optional
        A rescaling weight per class, shape (C,).
    size_average, reduce : None
        PyTorch's deprecated arguments; only None is accepted (use ``reduction``).
    ignore_index : int, optional
        A target value that contributes nothing.
    reduction : {'mean', 'sum', 'none'}, optional
    """

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean"):
        super().__init__()
        if size_average is not None or reduce is not None:
            raise ValueError("size_average and reduce are deprecated in PyTorch and not "
                             "supported: use reduction='mean', 'sum' or 'none'")
        if weight is not None:
            weight = np.array(weight.data if isinstance(weight, Tensor) else weight)
            if weight.ndim != 1 or weight.dtype.kind != "f":
                raise ValueError(f"weight must be a 1-D floating array, got shape "
                                 f"{weight.shape} and dtype {weight.dtype}")
        self.register_buffer("weight", weight)
        self.ignore_index = ignore_index
        self.reduction = _check_reduction(reduction)

    def forward(self, input, target):
        return F.nll_loss(input, target, self.weight, self.ignore_index, self.reduction)

    def extra_repr(self):
        return f"reduction={self.reduction!r}" if self.reduction != "mean" else ""
