"""The ops, each one forward/backward pair recorded on the tape (see fastbn.autograd).

``fastbn.nn.functional`` is their public face and ``fastbn.tensor`` binds
Tensor's methods to them; this module imports only the tape and the kernels.
Signatures follow ``torch.nn.functional``.  Arguments may be Tensors, NumPy
arrays or Python numbers; non-Tensors are constants (no gradient).  Only this
module talks to the tape; the heavy lifting is in ``fastbn.kernels``.
"""
import numbers
import operator

import numpy as np

from . import kernels
from .autograd import Function, Tensor, _FLOATS

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log",
    "sum", "mean", "reshape", "transpose", "getitem", "flatten",
    "relu", "sigmoid", "tanh", "leaky_relu", "softmax", "log_softmax",
    "linear", "batch_norm", "batch_norm_relu", "conv2d", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d",
    "cross_entropy", "mse_loss", "dropout", "manual_seed",
]

def _const(x, like=None):
    """A non-Tensor operand as a constant leaf.  Python numbers take the dtype
    NumPy would give them next to ``like`` (so float32 stays float32)."""
    if isinstance(x, Tensor):
        return x
    if isinstance(like, Tensor) and isinstance(x, numbers.Number) and not isinstance(x, bool):
        return Tensor(np.asarray(x, dtype=np.result_type(like.data.dtype, x)))
    return Tensor(x)


def _pair(a, b):
    if type(a) is not Tensor:
        a = _const(a, b)
    if type(b) is not Tensor:
        b = _const(b, a)
    return a, b


def _float_tensor(x, op, name="input"):
    """x as a Tensor of float32/float64, or a TypeError naming the op."""
    t = x if isinstance(x, Tensor) else _const(x)
    if t.data.dtype not in _FLOATS:
        raise TypeError(f"{op}: {name} must be float32 or float64, got {t.data.dtype}")
    return t


def _same_dtype(op, *named):
    """TypeError unless all given (name, Tensor or None) share one dtype."""
    ref_name, ref = named[0]
    for name, t in named[1:]:
        if t is not None and t.data.dtype is not ref.data.dtype:  # builtin dtypes: singletons
            raise TypeError(f"{op}: {name} has dtype {t.data.dtype} but {ref_name} has "
                            f"{ref.data.dtype}")


def _needs(inputs, i):
    return len(inputs) > i and inputs[i].requires_grad


# ---------------------------------------------------------------------------
# Arithmetic (NumPy broadcasting; the tape sums gradients back to each shape)
# ---------------------------------------------------------------------------
class Add(Function):
    @staticmethod
    def forward(a, b):
        return a + b, None

    @staticmethod
    def backward(saved, g, inputs):
        return g, g


class Sub(Function):
    @staticmethod
    def forward(a, b):
        return a - b, None

    @staticmethod
    def backward(saved, g, inputs):
        return g, (-g if inputs[1].requires_grad else None)


class Mul(Function):
    @staticmethod
    def forward(a, b):
        return a * b, (a, b)

    @staticmethod
    def backward(saved, g, inputs):
        a, b = saved
        return (g * b if inputs[0].requires_grad else None,
                g * a if inputs[1].requires_grad else None)


class Div(Function):
    @staticmethod
    def forward(a, b):
        return a / b, (a, b)

    @staticmethod
    def backward(saved, g, inputs):
        a, b = saved
        ga = g / b
        return ga, (-ga * a / b if inputs[1].requires_grad else None)


class Neg(Function):
    @staticmethod
    def forward(a):
        return -a, None

    @staticmethod
    def backward(saved, g, inputs):
        return (-g,)


class Pow(Function):
    @staticmethod
    def forward(a, exponent):
        return a ** exponent, (a, exponent)

    @staticmethod
    def backward(saved, g, inputs):
        a, p = saved
        return (g * (p * a ** (p - 1)),)


class Exp(Function):
    @staticmethod
    def forward(a):
        out = np.exp(a)
        return out, out

    @staticmethod
    def backward(out, g, inputs):
        return (g * out,)


class Log(Function):
    @staticmethod
    def forward(a):
        return np.log(a), a

    @staticmethod
    def backward(a, g, inputs):
        return (g / a,)


class MatMul(Function):
    """np.matmul semantics: 1-D operands are promoted, batch dims broadcast (the
    tape sums the broadcast batch dims of the gradients away)."""

    @staticmethod
    def forward(a, b):
        return a @ b, (a, b)

    @staticmethod
    def backward(saved, g, inputs):
        a, b = saved
        a2 = a[None, :] if a.ndim == 1 else a
        b2 = b[:, None] if b.ndim == 1 else b
        g2 = g[..., None] if b.ndim == 1 else g          # restore the dims 1-D operands lost
        g2 = g2[..., None, :] if a.ndim == 1 else g2
        ga = gb = None
        if inputs[0].requires_grad:
            ga = g2 @ np.swapaxes(b2, -1, -2)
            ga = ga[..., 0, :] if a.ndim == 1 else ga
        if inputs[1].requires_grad:
            gb = np.swapaxes(a2, -1, -2) @ g2
            gb = gb[..., 0] if b.ndim == 1 else gb
        return ga, gb


def _elementwise(op, a, b):
    a, b = _pair(a, b)
    try:
        return op.apply(a, b)
    except ValueError:
        raise ValueError(f"{op.__name__.lower()}: shapes {a.shape} and {b.shape} do not "
                         "broadcast") from None


def add(a, b):
    return _elementwise(Add, a, b)


def sub(a, b):
    return _elementwise(Sub, a, b)


def mul(a, b):
    return _elementwise(Mul, a, b)


def div(a, b):
    return _elementwise(Div, a, b)


def neg(a):
    return Neg.apply(_const(a))


def pow(a, exponent):
    if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real) \
            or isinstance(exponent, bool):
        raise TypeError(f"pow: the exponent must be a real number, got {type(exponent).__name__}")
    return Pow.apply(_const(a), exponent=exponent)


def exp(a):
    return Exp.apply(_const(a))


def log(a):
    return Log.apply(_const(a))


def matmul(a, b):
    a, b = _pair(a, b)
    if a.data.ndim == 0 or b.data.ndim == 0:
        raise ValueError(f"matmul: operands must have at least one dimension, got shapes "
                         f"{a.shape} and {b.shape}")
    ka = a.shape[-1]
    kb = b.shape[0] if b.data.ndim == 1 else b.shape[-2]
    if ka != kb:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not match "
                         f"(inner dimensions {ka} != {kb})")
    return MatMul.apply(a, b)


# ---------------------------------------------------------------------------
# Reductions and shapes
# ---------------------------------------------------------------------------
def _axes(axis, ndim, op):
    """axis (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, numbers.Integral) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < max(ndim, 1):
            raise ValueError(f"{op}: axis {ax} is out of range for a {ndim}-D tensor")
        out.append(operator.index(ax) % max(ndim, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


class Sum(Function):
    @staticmethod
    def forward(a, axes, keepdims, scale):
        out = a.sum(axis=axes, keepdims=keepdims)
        if scale != 1:
            out = out * scale
        return out, (a.shape, axes, keepdims, scale)

    @staticmethod
    def backward(saved, g, inputs):
        shape, axes, keepdims, scale = saved
        if not keepdims:
            g = np.expand_dims(g, axes)
        if scale != 1:
            g = g * scale
        return (np.broadcast_to(g, shape),)


def sum(a, axis=None, keepdims=False):
    a = _const(a)
    axes = _axes(axis, a.data.ndim, "sum")
    return Sum.apply(a, axes=axes, keepdims=keepdims, scale=1)


def mean(a, axis=None, keepdims=False):
    a = _const(a)
    axes = _axes(axis, a.data.ndim, "mean")
    count = int(np.prod([a.shape[ax] for ax in axes]))
    if count == 0:
        raise ValueError(f"mean: cannot average over an empty set (shape {a.shape}, axis {axis})")
    # 1/count in the tensor's dtype family, so float32 stays float32
    return Sum.apply(a, axes=axes, keepdims=keepdims, scale=1.0 / count)


class Reshape(Function):
    @staticmethod
    def forward(a, shape):
        return a.reshape(shape), a.shape

    @staticmethod
    def backward(in_shape, g, inputs):
        return (g.reshape(in_shape),)


class Transpose(Function):
    @staticmethod
    def forward(a, axes):
        return a.transpose(axes), axes

    @staticmethod
    def backward(axes, g, inputs):
        return (g.transpose(None if axes is None else np.argsort(axes)),)


class GetItem(Function):
    @staticmethod
    def forward(a, index):
        return a[index], (a.shape, a.dtype, index)

    @staticmethod
    def backward(saved, g, inputs):
        shape, dtype, index = saved
        ga = np.zeros(shape, dtype=dtype)
        if _repeats_possible(index):
            np.add.at(ga, index, g)        # integer arrays may pick an element twice
        else:
            ga[index] = g
        return (ga,)


def _repeats_possible(index):
    parts = index if isinstance(index, tuple) else (index,)
    return any(isinstance(p, np.ndarray) and p.dtype != np.bool_ for p in parts)


def _index(index):
    """Tensors and lists inside an index become arrays (lists index like arrays)."""
    def one(i):
        if isinstance(i, Tensor):
            return i.data
        if isinstance(i, list):
            return np.asarray(i)
        return i
    return tuple(one(i) for i in index) if isinstance(index, tuple) else one(index)


def reshape(a, shape):
    a = _const(a)
    try:
        np.empty(a.shape, dtype=np.bool_).reshape(shape)
    except (ValueError, TypeError) as e:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} into {shape}: "
                         f"{e}") from None
    return Reshape.apply(a, shape=shape)


def transpose(a, axes=None):
    a = _const(a)
    if axes is not None:
        axes = tuple(operator.index(ax) % max(a.data.ndim, 1) for ax in axes)
        if sorted(axes) != list(range(a.data.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the "
                             f"{a.data.ndim} axes of shape {a.shape}")
    return Transpose.apply(a, axes=axes)


def getitem(a, index):
    return GetItem.apply(_const(a), index=_index(index))


def flatten(input, start_dim=1, end_dim=-1):
    """Merge dims start_dim..end_dim (``nn.Flatten``'s default start_dim=1)."""
    x = _const(input)
    nd = max(x.data.ndim, 1)
    s, e = start_dim % nd, end_dim % nd
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                         f"for shape {x.shape}")
    shape = x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:]
    return Reshape.apply(x, shape=shape)


# ---------------------------------------------------------------------------
# Activations
# ---------------------------------------------------------------------------
class ReLU(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x):
        out = kernels.relu_forward(x)
        return out, out

    @staticmethod
    def backward(out, g, inputs):
        return (kernels.relu_backward(g, out),)


class LeakyReLU(Function):
    @staticmethod
    def forward(x, negative_slope):
        positive = x > 0
        return np.where(positive, x, x * negative_slope), (positive, negative_slope)

    @staticmethod
    def backward(saved, g, inputs):
        positive, slope = saved
        return (np.where(positive, g, g * slope),)


class Sigmoid(Function):
    @staticmethod
    def forward(x):
        out = np.tanh(0.5 * x)      # 0.5 * (tanh(x / 2) + 1): stable, no overflow warning
        out += 1                    # in place: one temporary fewer
        out *= 0.5
        return out, out

    @staticmethod
    def backward(out, g, inputs):
        d = g * out
        d *= 1 - out
        return (d,)


class Tanh(Function):
    @staticmethod
    def forward(x):
        out = np.tanh(x)
        return out, out

    @staticmethod
    def backward(out, g, inputs):
        return (g * (1 - out * out),)


class Softmax(Function):
    @staticmethod
    def forward(x, dim):
        e = np.exp(x - x.max(axis=dim, keepdims=True))
        out = e / e.sum(axis=dim, keepdims=True)
        return out, (out, dim)

    @staticmethod
    def backward(saved, g, inputs):
        out, dim = saved
        return (out * (g - (g * out).sum(axis=dim, keepdims=True)),)


class LogSoftmax(Function):
    @staticmethod
    def forward(x, dim):
        z = x - x.max(axis=dim, keepdims=True)
        out = z - np.log(np.exp(z).sum(axis=dim, keepdims=True))
        return out, (out, dim)

    @staticmethod
    def backward(saved, g, inputs):
        out, dim = saved
        return (g - np.exp(out) * g.sum(axis=dim, keepdims=True),)


def relu(input):
    return ReLU.apply(_float_tensor(input, "relu"))


def leaky_relu(input, negative_slope=0.01):
    return LeakyReLU.apply(_float_tensor(input, "leaky_relu"), negative_slope=negative_slope)


def sigmoid(input):
    return Sigmoid.apply(_float_tensor(input, "sigmoid"))


def tanh(input):
    return Tanh.apply(_float_tensor(input, "tanh"))


def _dim(dim, x, op):
    nd = x.data.ndim
    if not isinstance(dim, numbers.Integral) or not -max(nd, 1) <= dim < max(nd, 1):
        raise ValueError(f"{op}: dim {dim!r} is out of range for a tensor of shape {x.shape}")
    return int(dim) % max(nd, 1)


def softmax(input, dim):
    x = _float_tensor(input, "softmax")
    return Softmax.apply(x, dim=_dim(dim, x, "softmax"))


def log_softmax(input, dim):
    x = _float_tensor(input, "log_softmax")
    return LogSoftmax.apply(x, dim=_dim(dim, x, "log_softmax"))


# ---------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------
class Linear(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight, bias=None):
        x2 = x.reshape(-1, x.shape[-1])
        y = kernels.matmul(x2, weight, transpose_b=True)
        if bias is not None:
            y += bias
        return y.reshape(x.shape[:-1] + (weight.shape[0],)), (x2, weight, x.shape)

    @staticmethod
    def backward(saved, g, inputs):
        x2, weight, x_shape = saved
        g2 = g.reshape(-1, weight.shape[0])
        gx = kernels.matmul(g2, weight).reshape(x_shape) if inputs[0].requires_grad else None
        gw = kernels.matmul(g2, x2, transpose_a=True) if inputs[1].requires_grad else None
        # g2.sum(axis=0) without ndarray.sum's Python wrapper
        gb = np.add.reduce(g2, axis=0) if _needs(inputs, 2) else None
        return gx, gw, gb


def linear(input, weight, bias=None):
    """``input @ weight.T + bias`` with weight of shape (out_features, in_features)."""
    x = _float_tensor(input, "linear")
    w = _float_tensor(weight, "linear", "weight")
    b = None if bias is None else _float_tensor(bias, "linear", "bias")
    xs, ws = x.data.shape, w.data.shape
    if len(ws) != 2 or not xs or xs[-1] != ws[1]:
        raise ValueError(f"linear: input of shape {xs} does not match weight of shape "
                         f"{ws} (expected input (..., {ws[-1]}) and 2-D weight)")
    if b is not None and b.data.shape != (ws[0],):
        raise ValueError(f"linear: bias must have shape ({w.shape[0]},), got {b.shape}")
    _same_dtype("linear", ("input", x), ("weight", w), ("bias", b))
    return Linear.apply(x, w) if b is None else Linear.apply(x, w, b)


class BatchNorm(Function):
    """batch_norm, or with relu=True relu(batch_norm) fused (one pass fewer each way)."""
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight=None, bias=None, *, running_mean, running_var, training,
                momentum, eps, relu):
        y, mean, invstd = kernels.batch_norm_forward(
            x, weight, bias, running_mean, running_var, training, momentum, eps, relu)
        return y, (x, weight, bias if relu else None, mean, invstd, training, relu)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, bias, mean, invstd, training, relu = saved
        dx, dw, db = kernels.batch_norm_backward(
            g, x, weight, mean, invstd, training, bias, relu,
            need_input=inputs[0].requires_grad, need_weight=_needs(inputs, 1),
            need_bias=_needs(inputs, 2))
        return (dx, dw, db)[:len(inputs)]


def _stat(s, name):
    if s is None or isinstance(s, np.ndarray):
        return s
    if isinstance(s, Tensor):
        return s.data
    raise TypeError(f"batch_norm: {name} must be a NumPy array, a Tensor or None, "
                    f"got {type(s).__name__}")


def _batch_norm(op, input, running_mean, running_var, weight, bias, training, momentum, eps,
                relu):
    x = _float_tensor(input, op)
    w = None if weight is None else _float_tensor(weight, op, "weight")
    b = None if bias is None else _float_tensor(bias, op, "bias")
    _same_dtype(op, ("input", x), ("weight", w), ("bias", b))
    if w is None and b is not None:      # the kernels take a bias only with a weight
        w = Tensor(np.ones(x.shape[1] if x.data.ndim > 1 else 0, dtype=x.data.dtype))
    inputs = (x,) if w is None else (x, w) if b is None else (x, w, b)
    return BatchNorm.apply(*inputs, running_mean=_stat(running_mean, "running_mean"),
                           running_var=_stat(running_var, "running_var"),
                           training=bool(training), momentum=momentum, eps=eps, relu=relu)


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Batch Normalization over axis 1 (PyTorch's F.batch_norm).

    In training the batch statistics normalize and running_mean/running_var
    (NumPy arrays or Tensors, or None) are updated in place; otherwise the
    running statistics normalize and the backward treats them as constants.
    """
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training,
                       momentum, eps, False)


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    """``relu(batch_norm(...))`` (same arguments as batch_norm) in one kernel: the
    forward applies the ReLU as it writes, the backward finds the ReLU's mask
    again from the input, so each direction makes one pass over memory fewer
    than the two ops and nothing extra is stored."""
    return _batch_norm("batch_norm_relu", input, running_mean, running_var, weight, bias,
                       training, momentum, eps, True)


class Conv2d(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight, bias=None, *, stride, padding, dilation, groups):
        y, cols = kernels.conv2d_forward(x, weight, bias, stride, padding, dilation, groups)
        return y, (x, weight, cols, stride, padding, dilation, groups)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, cols, stride, padding, dilation, groups = saved
        dx, dw, db = kernels.conv2d_backward(
            g, x, weight, cols, stride, padding, dilation, groups,
            need_input=inputs[0].requires_grad, need_weight=inputs[1].requires_grad,
            need_bias=_needs(inputs, 2))
        return (dx, dw, db)[:len(inputs)]


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution (cross-correlation) of NCHW input with weight
    (out_channels, in_channels / groups, kh, kw): Winograd F(2x2, 3x3) or im2col,
    with BLAS GEMMs (fastbn.kernels.conv2d_forward says which runs when)."""
    x = _float_tensor(input, "conv2d")
    w = _float_tensor(weight, "conv2d", "weight")
    b = None if bias is None else _float_tensor(bias, "conv2d", "bias")
    _same_dtype("conv2d", ("input", x), ("weight", w), ("bias", b))
    inputs = (x, w) if b is None else (x, w, b)
    return Conv2d.apply(*inputs, stride=stride, padding=padding, dilation=dilation,
                        groups=groups)


class MaxPool2d(Function):
    @staticmethod
    def forward(x, kernel_size, stride, padding):
        y, indices = kernels.max_pool2d_forward(x, kernel_size, stride, padding)
        return y, (indices, x.shape)

    @staticmethod
    def backward(saved, g, inputs):
        indices, shape = saved
        return (kernels.max_pool2d_backward(g, indices, shape),)


class AvgPool2d(Function):
    @staticmethod
    def forward(x, kernel_size, stride, padding, count_include_pad):
        y = kernels.avg_pool2d_forward(x, kernel_size, stride, padding, count_include_pad)
        return y, (x.shape, kernel_size, stride, padding, count_include_pad)

    @staticmethod
    def backward(saved, g, inputs):
        shape, k, s, p, cip = saved
        return (kernels.avg_pool2d_backward(g, shape, k, s, p, cip),)


class AdaptiveAvgPool2d(Function):
    @staticmethod
    def forward(x, output_size):
        return kernels.adaptive_avg_pool2d_forward(x, output_size), (x.shape, output_size)

    @staticmethod
    def backward(saved, g, inputs):
        shape, output_size = saved
        return (kernels.adaptive_avg_pool2d_backward(g, shape, output_size),)


def max_pool2d(input, kernel_size, stride=None, padding=0):
    return MaxPool2d.apply(_float_tensor(input, "max_pool2d"), kernel_size=kernel_size,
                           stride=stride, padding=padding)


def avg_pool2d(input, kernel_size, stride=None, padding=0, count_include_pad=True):
    return AvgPool2d.apply(_float_tensor(input, "avg_pool2d"), kernel_size=kernel_size,
                           stride=stride, padding=padding, count_include_pad=count_include_pad)


def adaptive_avg_pool2d(input, output_size):
    return AdaptiveAvgPool2d.apply(_float_tensor(input, "adaptive_avg_pool2d"),
                                   output_size=output_size)


# ---------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------
_REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction, op):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


class CrossEntropy(Function):
    """log_softmax + negative log likelihood in one pass: the gradient is
    ``softmax(x) - onehot(target)``, no log of a probability is ever taken."""

    # ufunc.reduce rather than ndarray.max / .sum, whose Python wrappers cost as
    # much as the work on a (60, 10) batch; in-place ops spare temporaries
    @staticmethod
    def forward(x, target, reduction):
        C = x.shape[1]
        # (samples, classes); np.moveaxis costs microseconds even where it does nothing
        x2 = x if x.ndim == 2 else np.moveaxis(x, 1, -1).reshape(-1, C)
        t = target.reshape(-1)
        rows = np.arange(t.size)
        e = x2 - np.maximum.reduce(x2, axis=1, keepdims=True)
        picked = e[rows, t]
        np.exp(e, out=e)
        s = np.add.reduce(e, axis=1)
        losses = np.log(s) - picked           # -log softmax[t]; s >= 1, no log(0)
        if reduction == "none":
            out = losses.reshape(target.shape)
        else:
            out = np.add.reduce(losses)
            if reduction == "mean":
                out = out / t.size
        return out.astype(x.dtype, copy=False), (e, s, t, rows, x.shape, reduction)

    @staticmethod
    def backward(saved, g, inputs):
        e, s, t, rows, shape, reduction = saved
        p = e / s[:, None]          # not in place: a retained graph runs this again
        p[rows, t] -= 1
        if reduction == "none":
            p *= g.reshape(-1, 1)
        else:
            p *= g / t.size if reduction == "mean" else g
        if len(shape) == 2:
            return (p,)
        grad = p.reshape((shape[0],) + shape[2:] + (shape[1],))
        return (np.moveaxis(grad, -1, 1),)


def cross_entropy(input, target, reduction="mean"):
    """Cross entropy of logits input (N, C) or (N, C, d1, ...) with integer
    class targets (N,) or (N, d1, ...)."""
    x = _float_tensor(input, "cross_entropy")
    _check_reduction(reduction, "cross_entropy")
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, "
                        f"got dtype {t.dtype}")
    if x.data.ndim < 2 or t.shape != x.shape[:1] + x.shape[2:]:
        raise ValueError(f"cross_entropy: input of shape {x.shape} needs a target of shape "
                         f"{x.shape[:1] + x.shape[2:]} (N, d1, ...), got {t.shape}")
    if t.size == 0:
        raise ValueError(f"cross_entropy: empty batch (input shape {x.shape})")
    ti = t.astype(np.intp, copy=False)
    # one pass checks both bounds: as unsigned, a negative index is above any C
    if np.maximum.reduce(ti.view(np.uintp), axis=None) >= x.shape[1]:
        raise ValueError(f"cross_entropy: target values must be in [0, {x.shape[1]}), got "
                         f"min {t.min()} max {t.max()}")
    return CrossEntropy.apply(x, target=ti, reduction=reduction)


class MSELoss(Function):
    @staticmethod
    def forward(x, target, reduction):
        diff = x - target
        sq = diff * diff
        out = sq if reduction == "none" else (sq.sum() if reduction == "sum" else sq.mean())
        return out, (diff, reduction)

    @staticmethod
    def backward(saved, g, inputs):
        diff, reduction = saved
        scale = 2 / diff.size if reduction == "mean" else 2
        gx = diff * (g * scale)
        return gx, (-gx if inputs[1].requires_grad else None)


def mse_loss(input, target, reduction="mean"):
    """Mean squared error; input and target must have the same shape."""
    x = _float_tensor(input, "mse_loss")
    t = _float_tensor(target, "mse_loss", "target")
    _check_reduction(reduction, "mse_loss")
    if x.shape != t.shape:
        raise ValueError(f"mse_loss: input of shape {x.shape} and target of shape {t.shape} "
                         "differ")
    if x.data.size == 0 and reduction == "mean":
        raise ValueError("mse_loss: mean of an empty input")
    return MSELoss.apply(x, t, reduction=reduction)


# ---------------------------------------------------------------------------
# Dropout
# ---------------------------------------------------------------------------
_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the generator dropout uses when it is given none."""
    global _generator
    _generator = np.random.default_rng(seed)


class Dropout(Function):
    @staticmethod
    def forward(x, mask):
        return x * mask, mask

    @staticmethod
    def backward(mask, g, inputs):
        return (g * mask,)


def dropout(input, p=0.5, training=True, generator=None):
    """Zero each element with probability p and scale the rest by 1/(1-p).
    generator: a ``numpy.random.Generator`` (default: the module's, see manual_seed)."""
    x = _float_tensor(input, "dropout")
    if not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p}")
    if not training or p == 0:
        return x
    rng = _generator if generator is None else generator
    if p == 1:
        mask = np.zeros(x.shape, dtype=x.dtype)
    else:
        mask = (rng.random(x.shape, dtype=x.dtype) >= p) * x.dtype.type(1 / (1 - p))
    return Dropout.apply(x, mask=mask.astype(x.dtype, copy=False))
