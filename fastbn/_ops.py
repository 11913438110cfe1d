"""The ops, each one forward/backward pair recorded on the tape (see fastbn.autograd).

``fastbn.nn.functional`` is their public face and ``fastbn.tensor`` binds
Tensor's methods to them; this module imports only the tape and the kernels.
Signatures follow ``torch.nn.functional``.  Arguments may be Tensors, NumPy
arrays or Python numbers; non-Tensors are constants (no gradient).  Only this
module talks to the tape; the heavy lifting is in ``fastbn.kernels``.
"""
import collections
import numbers
import operator
import warnings

import numpy as np

from . import kernels
from . import random as _random
from ._types import as_dtype
from .autograd import Function, Tensor, _FLOATS

__all__ = [
    "add", "sub", "mul", "div", "neg", "pow", "matmul", "exp", "log", "sqrt", "absolute",
    "maximum", "minimum",
    "sum", "mean", "extremum", "argmax", "argmin",
    "eq", "ne", "lt", "le", "gt", "ge",
    "reshape", "transpose", "getitem", "flatten", "unsqueeze", "squeeze", "cat", "stack",
    "pad", "clone", "to_dtype",
    "relu", "add_relu", "sigmoid", "tanh", "leaky_relu", "softmax", "log_softmax",
    "linear", "batch_norm", "batch_norm_relu", "group_norm", "layer_norm", "instance_norm",
    "batch_renorm", "ghost_batch_norm", "conv2d", "max_pool2d", "avg_pool2d",
    "adaptive_avg_pool2d", "cross_entropy", "nll_loss", "mse_loss", "dropout", "manual_seed",
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


def _elementwise(op, a, b, **params):
    a, b = _pair(a, b)
    try:
        return op.apply(a, b, **params)
    except ValueError:
        raise ValueError(f"{op.__name__.lower()}: shapes {a.shape} and {b.shape} do not "
                         "broadcast") from None


def add(a, b):
    """Elementwise ``a + b``.

    As ``torch.add(input, other)``, the operands named ``a`` and ``b``.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        Operands that broadcast together (NumPy's rules).  A Python number takes the
        other operand's dtype family, so a float32 tensor stays float32.

    Returns
    -------
    Tensor
        Of the broadcast shape, in NumPy's promoted dtype; on the tape (each operand's
        gradient is summed back to its own shape).

    Raises
    ------
    ValueError
        When the shapes do not broadcast.
    """
    return _elementwise(Add, a, b)


def sub(a, b):
    """Elementwise ``a - b``.

    As ``torch.sub(input, other)``, the operands named ``a`` and ``b``.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        Operands that broadcast together (NumPy's rules).  A Python number takes the
        other operand's dtype family, so a float32 tensor stays float32.

    Returns
    -------
    Tensor
        Of the broadcast shape, in NumPy's promoted dtype; on the tape (each operand's
        gradient is summed back to its own shape).

    Raises
    ------
    ValueError
        When the shapes do not broadcast.
    """
    return _elementwise(Sub, a, b)


def mul(a, b):
    """Elementwise ``a * b``.

    As ``torch.mul(input, other)``, the operands named ``a`` and ``b``.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        Operands that broadcast together (NumPy's rules).  A Python number takes the
        other operand's dtype family, so a float32 tensor stays float32.

    Returns
    -------
    Tensor
        Of the broadcast shape, in NumPy's promoted dtype; on the tape (each operand's
        gradient is summed back to its own shape).

    Raises
    ------
    ValueError
        When the shapes do not broadcast.
    """
    return _elementwise(Mul, a, b)


def div(a, b):
    """Elementwise ``a / b`` (true division).

    As ``torch.div(input, other)``, the operands named ``a`` and ``b``.

    Parameters
    ----------
    a, b : Tensor, array_like or number
        Operands that broadcast together (NumPy's rules).  A Python number takes the
        other operand's dtype family, so a float32 tensor stays float32.

    Returns
    -------
    Tensor
        Of the broadcast shape, in NumPy's promoted dtype; on the tape (each operand's
        gradient is summed back to its own shape).

    Raises
    ------
    ValueError
        When the shapes do not broadcast.
    """
    return _elementwise(Div, a, b)


def neg(a):
    """Elementwise ``-a`` (``torch.neg``).

    Parameters
    ----------
    a : Tensor, array_like or number
        Any shape; float32 or float64 to take a gradient.

    Returns
    -------
    Tensor
        Of ``a``'s shape and dtype, on the tape.
    """
    return Neg.apply(_const(a))


def pow(a, exponent):
    """Elementwise ``a ** exponent`` with a constant real exponent (``torch.pow``).

    Parameters
    ----------
    a : Tensor, array_like or number
        Any shape; float32 or float64 to take a gradient.
    exponent : float or int
        A real number; unlike PyTorch, not a Tensor.

    Returns
    -------
    Tensor
        Of ``a``'s shape, on the tape (gradient ``exponent * a ** (exponent - 1)``).

    Raises
    ------
    TypeError
        For an exponent that is a Tensor, a bool or not a real number.
    """
    if isinstance(exponent, Tensor) or not isinstance(exponent, numbers.Real) \
            or isinstance(exponent, bool):
        raise TypeError(f"pow: the exponent must be a real number, got {type(exponent).__name__}")
    return Pow.apply(_const(a), exponent=exponent)


def exp(a):
    """Elementwise exponential (``torch.exp``).

    Parameters
    ----------
    a : Tensor, array_like or number
        Any shape; float32 or float64 to take a gradient.

    Returns
    -------
    Tensor
        Of ``a``'s shape and dtype, on the tape.
    """
    return Exp.apply(_const(a))


def log(a):
    """Elementwise natural logarithm (``torch.log``).

    Parameters
    ----------
    a : Tensor, array_like or number
        Any shape; float32 or float64 to take a gradient.

    Returns
    -------
    Tensor
        Of ``a``'s shape and dtype, on the tape.
        Negative values give NaN and 0 gives -inf, as NumPy's.
    """
    return Log.apply(_const(a))


class Sqrt(Function):
    @staticmethod
    def forward(a):
        out = np.sqrt(a)
        return out, out

    @staticmethod
    def backward(out, g, inputs):
        return (g / (2 * out),)


class Abs(Function):
    @staticmethod
    def forward(a):
        return np.abs(a), a

    @staticmethod
    def backward(a, g, inputs):
        return (g * np.sign(a),)


class Maximum(Function):
    """Elementwise maximum (``largest``) or minimum; a tie sends half the gradient
    to each operand, as PyTorch's."""

    @staticmethod
    def forward(a, b, largest):
        return (np.maximum if largest else np.minimum)(a, b), (a, b, largest)

    @staticmethod
    def backward(saved, g, inputs):
        a, b, largest = saved
        a_wins = (a > b) if largest else (a < b)
        share = np.where(a_wins, 1.0, np.where(a == b, 0.5, 0.0)).astype(g.dtype, copy=False)
        return (g * share if inputs[0].requires_grad else None,
                g * (1 - share) if inputs[1].requires_grad else None)


def sqrt(a):
    """Elementwise square root (``torch.sqrt``).

    Parameters
    ----------
    a : Tensor or array_like
        float32 or float64.

    Returns
    -------
    Tensor
        Of a's shape and dtype; the gradient is ``g / (2 * sqrt(a))``.
    """
    return Sqrt.apply(_float_tensor(a, "sqrt"))


def absolute(a):
    """Elementwise absolute value (``torch.abs``).

    Parameters
    ----------
    a : Tensor or array_like

    Returns
    -------
    Tensor
        ``|a|``; the gradient is ``sign(a) * g`` (0 at 0, as PyTorch's).
    """
    return Abs.apply(_const(a))


def maximum(a, b):
    """Elementwise maximum of two broadcastable tensors (``torch.maximum``).

    Parameters
    ----------
    a, b : Tensor or array_like
        Operands that broadcast together.

    Returns
    -------
    Tensor
        Where they tie, each operand gets half the gradient, as in PyTorch.
    """
    return _elementwise(Maximum, a, b, largest=True)


def minimum(a, b):
    """Elementwise minimum of two broadcastable tensors (``torch.minimum``).

    Ties share the gradient as in :func:`maximum`.

    Parameters
    ----------
    a, b : Tensor or array_like
        Operands that broadcast together.

    Returns
    -------
    Tensor
    """
    return _elementwise(Maximum, a, b, largest=False)


def matmul(a, b):
    """Matrix product with NumPy's and PyTorch's ``matmul`` semantics (``torch.matmul``).

    1-D operands are promoted (and the added dim removed again), batch dims broadcast.

    Parameters
    ----------
    a : Tensor or array_like
        Shape (k,), (n, k) or (..., n, k).
    b : Tensor or array_like
        Shape (k,), (k, m) or (..., k, m).

    Returns
    -------
    Tensor
        Shape (..., n, m) (fewer dims for 1-D operands), in NumPy's promoted dtype; on
        the tape.

    Raises
    ------
    ValueError
        For a 0-d operand or inner dimensions that differ.
    """
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
    """Sum over ``axis``, in NumPy's spelling.

    ``Tensor.sum`` and :func:`fastbn.sum` take PyTorch's ``dim``/``keepdim``.

    Parameters
    ----------
    a : Tensor or array_like
        Any shape; the sum keeps the dtype.
    axis : int or tuple of int, optional
        The axes to sum over; all when None.
    keepdims : bool, optional
        Keep the summed axes with length 1.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    ValueError
        For an axis out of range or repeated.
    """
    a = _const(a)
    axes = _axes(axis, a.data.ndim, "sum")
    return Sum.apply(a, axes=axes, keepdims=keepdims, scale=1)


def mean(a, axis=None, keepdims=False):
    """Mean over ``axis``, in NumPy's spelling.

    ``Tensor.mean`` and :func:`fastbn.mean` take PyTorch's ``dim``/``keepdim``.

    Parameters
    ----------
    a : Tensor or array_like
        Any shape; float32 stays float32.
    axis : int or tuple of int, optional
        The axes to average over; all when None.
    keepdims : bool, optional
        Keep the averaged axes with length 1.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    ValueError
        For an axis out of range or repeated, or an average over no elements.
    """
    a = _const(a)
    axes = _axes(axis, a.data.ndim, "mean")
    count = int(np.prod([a.shape[ax] for ax in axes]))
    if count == 0:
        raise ValueError(f"mean: cannot average over an empty set (shape {a.shape}, axis {axis})")
    # 1/count in the tensor's dtype family, so float32 stays float32
    return Sum.apply(a, axes=axes, keepdims=keepdims, scale=1.0 / count)


MaxResult = collections.namedtuple("MaxResult", ["values", "indices"])
MaxResult.__doc__ = """``(values, indices)`` of ``max(dim)``/``min(dim)`` (torch.return_types.max)."""


class ExtremumAll(Function):
    """max() or min() of every element; ties share the gradient evenly (PyTorch's)."""

    @staticmethod
    def forward(a, largest):
        out = (np.maximum if largest else np.minimum).reduce(a, axis=None)
        return np.asarray(out), (a, out)

    @staticmethod
    def backward(saved, g, inputs):
        a, out = saved
        hit = np.isnan(a) if np.isnan(out) else a == out
        return (hit * (g / np.count_nonzero(hit)),)


class ExtremumDim(Function):
    """Values of max(dim)/min(dim); the gradient goes to the returned index."""

    @staticmethod
    def forward(a, index, dim, keepdim):
        values = np.take_along_axis(a, index, axis=dim)
        return (values if keepdim else values.squeeze(dim)), (a.shape, index, dim, keepdim)

    @staticmethod
    def backward(saved, g, inputs):
        shape, index, dim, keepdim = saved
        ga = np.zeros(shape, dtype=g.dtype)
        np.put_along_axis(ga, index, g if keepdim else np.expand_dims(g, dim), axis=dim)
        return (ga,)


def _reduced_dim(input, dim, op):
    """input as a Tensor and dim as a non-negative axis, for an op that reduces one dim."""
    x = _const(input)
    if x.data.size == 0:
        raise ValueError(f"{op}: cannot reduce an empty tensor (shape {x.shape})")
    return x, None if dim is None else _dim(dim, x, op)


def extremum(input, dim=None, keepdim=False, largest=True):
    """``torch.max``/``torch.min`` of one tensor.

    Parameters
    ----------
    input : Tensor or array_like
        A non-empty tensor.
    dim : int, optional
        The dim to reduce; None reduces every element.
    keepdim : bool, optional
        Keep the reduced dim with length 1.
    largest : bool, optional
        True for max, False for min.

    Returns
    -------
    Tensor or MaxResult
        Without ``dim``, the extreme element as a 0-d tensor (ties share the gradient
        evenly); with it, ``MaxResult(values, indices)``: the values on the tape (the
        gradient goes to the returned index) and int64 indices without gradient.  NaN
        counts as the extreme, as in PyTorch.

    Raises
    ------
    ValueError
        For an empty tensor or a dim out of range.
    """
    op = "max" if largest else "min"
    x, d = _reduced_dim(input, dim, op)
    if d is None:
        return ExtremumAll.apply(x, largest=largest)
    if x.data.ndim == 0:    # dim 0 of a 0-d tensor is the element itself, as in PyTorch
        return MaxResult(clone(x), Tensor(np.zeros((), np.int64)))
    index = np.expand_dims((np.argmax if largest else np.argmin)(x.data, axis=d), d)
    values = ExtremumDim.apply(x, index=index, dim=d, keepdim=bool(keepdim))
    index = index if keepdim else index.squeeze(d)
    return MaxResult(values, Tensor(index.astype(np.int64, copy=False)))


def _arg_extremum(input, dim, keepdim, largest):
    op = "argmax" if largest else "argmin"
    x, d = _reduced_dim(input, dim, op)
    find = np.argmax if largest else np.argmin
    if d is None:
        index = np.asarray(find(x.data))
        if keepdim:
            index = index.reshape((1,) * x.data.ndim)
    else:
        index = find(x.data, axis=d, keepdims=bool(keepdim)) if x.data.ndim else np.asarray(0)
    return Tensor(index.astype(np.int64, copy=False))


def argmax(input, dim=None, keepdim=False):
    """Indices of the largest values (``torch.argmax``).

    Parameters
    ----------
    input : Tensor or array_like
        A non-empty tensor.
    dim : int, optional
        The dim to search; None searches the flattened tensor.
    keepdim : bool, optional
        Keep the searched dim(s) with length 1.

    Returns
    -------
    Tensor
        int64 indices, without gradient; the first one where values tie.
    """
    return _arg_extremum(input, dim, keepdim, True)


def argmin(input, dim=None, keepdim=False):
    """Indices of the smallest values (``torch.argmin``).

    Parameters
    ----------
    input : Tensor or array_like
        A non-empty tensor.
    dim : int, optional
        The dim to search; None searches the flattened tensor.
    keepdim : bool, optional
        Keep the searched dim(s) with length 1.

    Returns
    -------
    Tensor
        int64 indices, without gradient; the first one where values tie.

    Raises
    ------
    ValueError
        For an empty tensor or a dim out of range.
    """
    return _arg_extremum(input, dim, keepdim, False)


# ---------------------------------------------------------------------------
# Comparisons: bool tensors, no gradient
# ---------------------------------------------------------------------------
def _compare(ufunc, name, a, b):
    x = a.data if isinstance(a, Tensor) else np.asarray(a)
    y = b.data if isinstance(b, Tensor) else np.asarray(b)
    if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
        raise TypeError(f"{name}: operands must be numeric, got {x.dtype} and {y.dtype}")
    try:
        return Tensor(np.asarray(ufunc(x, y)))
    except ValueError:
        raise ValueError(f"{name}: shapes {x.shape} and {y.shape} do not broadcast") from None


def eq(input, other):
    """``input == other`` elementwise (``torch.eq``).

    Parameters
    ----------
    input, other : Tensor, array_like or number
        Operands that broadcast together.

    Returns
    -------
    Tensor
        bool, without gradient.
    """
    return _compare(np.equal, "eq", input, other)


def ne(input, other):
    """``input != other`` elementwise (``torch.ne``).

    Parameters
    ----------
    input, other : Tensor, array_like or number
        Operands that broadcast together.

    Returns
    -------
    Tensor
        bool, without gradient.
    """
    return _compare(np.not_equal, "ne", input, other)


def lt(input, other):
    """``input < other`` elementwise (``torch.lt``).

    Parameters
    ----------
    input, other : Tensor, array_like or number
        Operands that broadcast together.

    Returns
    -------
    Tensor
        bool, without gradient.
    """
    return _compare(np.less, "lt", input, other)


def le(input, other):
    """``input <= other`` elementwise (``torch.le``).

    Parameters
    ----------
    input, other : Tensor, array_like or number
        Operands that broadcast together.

    Returns
    -------
    Tensor
        bool, without gradient.
    """
    return _compare(np.less_equal, "le", input, other)


def gt(input, other):
    """``input > other`` elementwise (``torch.gt``).

    Parameters
    ----------
    input, other : Tensor, array_like or number
        Operands that broadcast together.

    Returns
    -------
    Tensor
        bool, without gradient.
    """
    return _compare(np.greater, "gt", input, other)


def ge(input, other):
    """``input >= other`` elementwise (``torch.ge``).

    Parameters
    ----------
    input, other : Tensor, array_like or number
        Operands that broadcast together.

    Returns
    -------
    Tensor
        bool, without gradient.
    """
    return _compare(np.greater_equal, "ge", input, other)


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
    """``a`` in another shape with the same elements (``torch.reshape``).

    Parameters
    ----------
    a : Tensor or array_like
        Any shape and dtype.
    shape : int or tuple of int
        The new shape; one entry may be -1.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    ValueError
        When ``a`` cannot take that shape.
    """
    a = _const(a)
    try:
        np.empty(a.shape, dtype=np.bool_).reshape(shape)
    except (ValueError, TypeError) as e:
        raise ValueError(f"reshape: cannot reshape a tensor of shape {a.shape} into {shape}: "
                         f"{e}") from None
    return Reshape.apply(a, shape=shape)


def transpose(a, axes=None):
    """Permute the axes, as NumPy's ``transpose(a, axes)``.

    ``Tensor.transpose`` and :func:`fastbn.transpose` swap two dims, as PyTorch's.

    Parameters
    ----------
    a : Tensor or array_like
        Any shape and dtype.
    axes : sequence of int, optional
        A permutation of the axes (negative ones count from the end); None reverses
        them.

    Returns
    -------
    Tensor
        On the tape (a view of the data).

    Raises
    ------
    ValueError
        When ``axes`` is not a permutation of ``a``'s axes.
    """
    a = _const(a)
    if axes is not None:
        axes = tuple(operator.index(ax) % max(a.data.ndim, 1) for ax in axes)
        if sorted(axes) != list(range(a.data.ndim)):
            raise ValueError(f"transpose: axes {axes} are not a permutation of the "
                             f"{a.data.ndim} axes of shape {a.shape}")
    return Transpose.apply(a, axes=axes)


def getitem(a, index):
    """``a[index]`` with NumPy's indexing, on the tape (``Tensor.__getitem__``).

    Parameters
    ----------
    a : Tensor or array_like
        Any shape and dtype.
    index : int, slice, None, Ellipsis, array_like, Tensor or tuple of these
        Tensors and lists in the index act as integer or boolean arrays.

    Returns
    -------
    Tensor
        The gradient is scattered back to the picked elements (added up where an
        integer array picks one element more than once).

    Raises
    ------
    IndexError
        For an index out of range (NumPy's error).
    """
    return GetItem.apply(_const(a), index=_index(index))


def flatten(input, start_dim=1, end_dim=-1):
    """Merge dims ``start_dim`` .. ``end_dim`` into one.

    The default ``start_dim=1`` keeps the batch dim, as ``torch.nn.Flatten``;
    ``torch.flatten`` (:func:`fastbn.flatten`) starts at 0.

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.
    start_dim : int, optional
        First dim to merge.
    end_dim : int, optional
        Last dim to merge (included).

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    ValueError
        When ``start_dim`` comes after ``end_dim``.
    """
    x = _const(input)
    nd = max(x.data.ndim, 1)
    s, e = start_dim % nd, end_dim % nd
    if s > e:
        raise ValueError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} "
                         f"for shape {x.shape}")
    shape = x.shape[:s] + (int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:]
    return Reshape.apply(x, shape=shape)


def unsqueeze(input, dim):
    """input with a new dim of length 1 (``torch.unsqueeze``), on the tape.

    Parameters
    ----------
    input : Tensor or array_like
    dim : int
        Where the new dim goes, ``-ndim - 1 <= dim <= ndim``.

    Returns
    -------
    Tensor
    """
    x = _const(input)
    nd = x.data.ndim
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -nd - 1 <= dim <= nd:
        raise ValueError(f"unsqueeze: dim {dim!r} is out of range for a tensor of shape "
                         f"{x.shape} (expected [{-nd - 1}, {nd}])")
    d = int(dim) % (nd + 1)
    return Reshape.apply(x, shape=x.shape[:d] + (1,) + x.shape[d:])


def squeeze(input, dim=None):
    """input without dims of length 1 (``torch.squeeze``), on the tape.

    Parameters
    ----------
    input : Tensor or array_like
    dim : int or tuple of int, optional
        Only these dims; a named dim whose length is not 1 stays, as in PyTorch.

    Returns
    -------
    Tensor
    """
    x = _const(input)
    dims = range(x.data.ndim) if dim is None else _axes(dim, x.data.ndim, "squeeze")
    drop = {d for d in dims if x.data.ndim and x.shape[d] == 1}
    return Reshape.apply(x, shape=tuple(n for d, n in enumerate(x.shape) if d not in drop))


class Cat(Function):
    @staticmethod
    def forward(*arrays, dim):
        return np.concatenate(arrays, axis=dim), (dim, np.cumsum([a.shape[dim] for a in arrays]))

    @staticmethod
    def backward(saved, g, inputs):
        dim, ends = saved
        return tuple(part if t.requires_grad else None
                     for t, part in zip(inputs, np.split(g, ends[:-1], axis=dim)))


class Stack(Function):
    @staticmethod
    def forward(*arrays, dim):
        return np.stack(arrays, axis=dim), dim

    @staticmethod
    def backward(dim, g, inputs):
        return tuple(np.take(g, i, axis=dim) if t.requires_grad else None
                     for i, t in enumerate(inputs))


class Pad(Function):
    fresh_grads = True     # new arrays (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, *, pads, value):
        out = np.full(tuple(n + a + b for n, (a, b) in zip(x.shape, pads)), value, x.dtype)
        src, dst = _pad_slices(x.shape, pads)
        out[dst] = x[src]
        return out, (x.shape, src, dst)

    @staticmethod
    def backward(saved, g, inputs):
        shape, src, dst = saved
        gx = np.zeros(shape, g.dtype)
        gx[src] = g[dst]
        return (gx,)


def _pad_slices(shape, pads):
    """(input slices, output slices) of what a pad keeps: (before, after) per dim, a
    negative side cropping."""
    src, dst = [], []
    for n, (a, b) in zip(shape, pads):
        lo, hi = max(-a, 0), n - max(-b, 0)
        src.append(slice(lo, max(hi, lo)))
        dst.append(slice(max(a, 0), max(a, 0) + max(hi - lo, 0)))
    return tuple(src), tuple(dst)


def _tensor_list(tensors, op):
    if isinstance(tensors, (Tensor, np.ndarray)) or not isinstance(tensors, (list, tuple)):
        raise TypeError(f"{op}: expected a list or tuple of tensors, got "
                        f"{type(tensors).__name__}")
    if not tensors:
        raise ValueError(f"{op}: expected a non-empty list of tensors")
    out = [_const(t) for t in tensors]
    kinds = {t.data.dtype.kind for t in out}
    if not kinds <= set("biuf"):
        raise TypeError(f"{op}: tensors must be numeric, got dtypes "
                        f"{sorted({str(t.dtype) for t in out})}")
    return out


def cat(tensors, dim=0):
    """Join tensors along an existing dim (``torch.cat``), on the tape.

    Parameters
    ----------
    tensors : list or tuple of Tensor
        Tensors with the same number of dims and the same sizes except along ``dim``;
        their dtypes promote as in PyTorch (each gets its gradient in its own dtype).
    dim : int, optional
        The dim to join along.

    Returns
    -------
    Tensor

    Raises
    ------
    ValueError
        For an empty list, 0-d tensors or sizes that do not match.
    """
    ts = _tensor_list(tensors, "cat")
    nd = ts[0].data.ndim
    if nd == 0:
        raise ValueError("cat: zero-dimensional tensors cannot be concatenated")
    d = _dim(dim, ts[0], "cat")
    for i, t in enumerate(ts):
        if t.data.ndim != nd or t.shape[:d] + t.shape[d + 1:] != ts[0].shape[:d] + ts[0].shape[d + 1:]:
            raise ValueError(f"cat: tensor {i} has shape {t.shape}, which does not match "
                             f"tensor 0's {ts[0].shape} except in dim {d}")
    return Cat.apply(*ts, dim=d)


def pad(input, pad, mode="constant", value=None):
    """Pad (or, with negative sizes, crop) the last dims (``torch.nn.functional.pad``).

    Parameters
    ----------
    input : Tensor or array_like
    pad : sequence of int
        ``(left, right)`` sizes per dim from the last one backwards: ``(1, 1)`` pads the
        last dim by one on each side, ``(0, 0, 2, 2)`` the second-to-last by two.  An
        even length of at most twice the dims.
    mode : {"constant"}, optional
        PyTorch's other modes ("reflect", "replicate", "circular") raise
        NotImplementedError.
    value : number, optional
        The fill (default 0).

    Returns
    -------
    Tensor
        On the tape; the gradient is the output's, cropped back to the input.

    Raises
    ------
    ValueError
        For a pad of odd length, longer than twice the dims, or that leaves a dim
        with a negative size, or an unknown mode.
    NotImplementedError
        For a mode other than "constant".
    TypeError
        For pad sizes that are not ints.
    """
    t = input if isinstance(input, Tensor) else _const(input)
    if mode != "constant":
        if mode in ("reflect", "replicate", "circular"):
            raise NotImplementedError(f"pad: mode {mode!r} is not implemented in fastbn; "
                                      "'constant' is")
        raise ValueError(f"pad: unknown padding mode {mode!r}")
    sizes = tuple(pad)
    if not all(isinstance(p, numbers.Integral) and not isinstance(p, bool) for p in sizes):
        raise TypeError(f"pad: sizes must be ints, got {pad!r}")
    nd = t.data.ndim
    if len(sizes) % 2:
        raise ValueError("pad: padding length must be divisible by 2")
    if len(sizes) > 2 * nd:
        raise ValueError(f"pad: padding length should be less than or equal to two times "
                         f"the input dimension but got padding length {len(sizes)} and "
                         f"input of dimension {nd}")
    pads = [(0, 0)] * nd
    for i in range(len(sizes) // 2):
        pads[nd - 1 - i] = (int(sizes[2 * i]), int(sizes[2 * i + 1]))
    for d, (n, (a, b)) in enumerate(zip(t.shape, pads)):
        if n + a + b < 0:
            raise ValueError(f"pad: the input size {n}, plus negative padding {a} and {b}, "
                             f"gives a negative output size in dim {d}")
    return Pad.apply(t, pads=tuple(pads), value=0 if value is None else value)


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dim (``torch.stack``), on the tape.

    Parameters
    ----------
    tensors : list or tuple of Tensor
        Tensors of one shape.
    dim : int, optional
        Where the new dim goes, ``-ndim - 1 <= dim <= ndim``.

    Returns
    -------
    Tensor
    """
    ts = _tensor_list(tensors, "stack")
    for i, t in enumerate(ts):
        if t.shape != ts[0].shape:
            raise ValueError(f"stack: tensor {i} has shape {t.shape}, tensor 0 has "
                             f"{ts[0].shape}; all must be equal")
    nd = ts[0].data.ndim
    if isinstance(dim, bool) or not isinstance(dim, numbers.Integral) or not -nd - 1 <= dim <= nd:
        raise ValueError(f"stack: dim {dim!r} is out of range for stacking tensors of shape "
                         f"{ts[0].shape} (expected [{-nd - 1}, {nd}])")
    return Stack.apply(*ts, dim=int(dim) % (nd + 1))


class Clone(Function):
    @staticmethod
    def forward(a):
        return a.copy(), None

    @staticmethod
    def backward(saved, g, inputs):
        return (g,)


class Cast(Function):
    """A copy in another floating dtype; the tape casts the gradient back."""

    @staticmethod
    def forward(a, dtype):
        return a.astype(dtype), None

    @staticmethod
    def backward(saved, g, inputs):
        return (g,)


def clone(input):
    """A copy of input that owns its data (``torch.clone``).

    Parameters
    ----------
    input : Tensor or array_like

    Returns
    -------
    Tensor
        On the tape: the gradient flows through unchanged.
    """
    return Clone.apply(_const(input))


def to_dtype(input, dtype, copy=False):
    """input in another dtype (``Tensor.to(dtype)``).

    Parameters
    ----------
    input : Tensor or array_like
    dtype : dtype
        ``fastbn.float32``, ``fastbn.long``, ...
    copy : bool, optional
        Copy even when the dtype is already ``dtype``.

    Returns
    -------
    Tensor
        input itself when nothing changes; a float32/float64 copy of a float32/float64
        tensor stays on the tape (its gradient is cast back), other conversions carry no
        gradient, as in PyTorch.
    """
    x = _const(input)
    dtype = as_dtype(dtype)
    if dtype is x.data.dtype:               # builtin dtypes are singletons
        return clone(x) if copy else x
    if dtype in _FLOATS and x.data.dtype in _FLOATS:
        return Cast.apply(x, dtype=dtype)
    return Tensor(x.data.astype(dtype))


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


class AddReLU(Function):
    @staticmethod
    def forward(a, b):
        out = kernels.add_relu_forward(a, b)
        return out, out

    @staticmethod
    def backward(out, g, inputs):
        g = kernels.relu_backward(g, out)
        return g, g


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


def relu(input, inplace=False):
    """max(input, 0), keeping NaN (``torch.nn.functional.relu``).

    Parameters
    ----------
    input : Tensor or array_like
        float32 or float64.
    inplace : bool, optional
        Accepted for PyTorch's signature; the result is always a new tensor (what
        ``x = F.relu(x, inplace=True)`` uses).

    Returns
    -------
    Tensor
    """
    return ReLU.apply(_float_tensor(input, "relu"))


def add_relu(input, other):
    """``relu(input + other)``: a residual join and the ReLU after it.

    One pass where the two are float tensors of one shape and dtype (PyTorch has no
    such function).

    Parameters
    ----------
    input, other : Tensor, array_like or number
        Operands of :func:`add`; any others than a float pair of one shape and dtype
        take :func:`add` then :func:`relu`.

    Returns
    -------
    Tensor
        What ``relu(add(input, other))`` gives, NaN kept; on the tape.

    Raises
    ------
    ValueError
        When the shapes do not broadcast.
    TypeError
        For a result that is not float32 or float64.
    """
    if (isinstance(input, Tensor) and isinstance(other, Tensor)
            and input.data.dtype in _FLOATS and input.data.dtype is other.data.dtype
            and input.data.shape == other.data.shape):
        return AddReLU.apply(input, other)
    return relu(add(input, other))


def leaky_relu(input, negative_slope=0.01):
    """``input`` where positive, else ``negative_slope * input``.

    ``torch.nn.functional.leaky_relu``, without ``inplace``.

    Parameters
    ----------
    input : Tensor or array_like
        Any shape, float32 or float64.
    negative_slope : float, optional
        The slope below 0.

    Returns
    -------
    Tensor
        Of ``input``'s shape and dtype, on the tape.

    Raises
    ------
    TypeError
        For another dtype.
    """
    return LeakyReLU.apply(_float_tensor(input, "leaky_relu"), negative_slope=negative_slope)


def sigmoid(input):
    """Elementwise logistic sigmoid ``1 / (1 + exp(-input))`` (``torch.sigmoid``).

    Computed as ``(tanh(input / 2) + 1) / 2``, which cannot overflow.

    Parameters
    ----------
    input : Tensor or array_like
        Any shape, float32 or float64.

    Returns
    -------
    Tensor
        Of ``input``'s shape and dtype, on the tape.

    Raises
    ------
    TypeError
        For another dtype.
    """
    return Sigmoid.apply(_float_tensor(input, "sigmoid"))


def tanh(input):
    """Elementwise hyperbolic tangent (``torch.tanh``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape, float32 or float64.

    Returns
    -------
    Tensor
        Of ``input``'s shape and dtype, on the tape.

    Raises
    ------
    TypeError
        For another dtype.
    """
    return Tanh.apply(_float_tensor(input, "tanh"))


def _dim(dim, x, op):
    nd = x.data.ndim
    if not isinstance(dim, numbers.Integral) or not -max(nd, 1) <= dim < max(nd, 1):
        raise ValueError(f"{op}: dim {dim!r} is out of range for a tensor of shape {x.shape}")
    return int(dim) % max(nd, 1)


def _softmax_dim(dim, x, op):
    """dim, or PyTorch's legacy choice when it is None (with its deprecation warning)."""
    if dim is None:
        warnings.warn(f"Implicit dimension choice for {op} has been deprecated. Change the "
                      "call to include dim=X as an argument.", UserWarning, stacklevel=3)
        dim = 0 if x.data.ndim in (0, 1, 3) else 1
    return _dim(dim, x, op)


def softmax(input, dim=None):
    """exp(input) / sum(exp(input)) along ``dim`` (``torch.nn.functional.softmax``).

    Parameters
    ----------
    input : Tensor or array_like
        float32 or float64.
    dim : int, optional
        The dim that sums to 1.  None picks PyTorch's legacy choice (0 for 0-, 1- and
        3-D input, else 1) with its deprecation warning.

    Returns
    -------
    Tensor
    """
    x = _float_tensor(input, "softmax")
    return Softmax.apply(x, dim=_softmax_dim(dim, x, "softmax"))


def log_softmax(input, dim=None):
    """log(softmax(input)) along ``dim`` (``torch.nn.functional.log_softmax``).

    Computed without taking the log of a probability.

    Parameters
    ----------
    input : Tensor or array_like
        float32 or float64.
    dim : int, optional
        As :func:`softmax`.

    Returns
    -------
    Tensor
    """
    x = _float_tensor(input, "log_softmax")
    return LogSoftmax.apply(x, dim=_softmax_dim(dim, x, "log_softmax"))


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
    """``input @ weight.T + bias`` (``torch.nn.functional.linear``).

    Parameters
    ----------
    input : Tensor or array_like
        Shape ``(*, in_features)``, float32 or float64.
    weight : Tensor or array_like
        Shape (out_features, in_features), input's dtype.
    bias : Tensor or array_like, optional
        Shape (out_features,), input's dtype.

    Returns
    -------
    Tensor
        Shape ``(*, out_features)``, input's dtype; on the tape.  The products are BLAS
        GEMMs (:func:`fastbn.kernels.matmul`).

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, or operands of different dtypes.
    ValueError
        For shapes that do not match.
    """
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
    """Batch Normalization over the channels, axis 1 (``torch.nn.functional.batch_norm``).

    In training the batch's statistics (mean and biased variance over every axis but
    1) normalize, and ``running_mean``/``running_var``, when given, are updated in
    place, ``running = (1 - momentum) * running + momentum * batch`` (unbiased
    variance).  Otherwise the running statistics normalize and the backward treats
    them as constants.  See :func:`fastbn.kernels.batch_norm_forward`.

    Parameters
    ----------
    input : Tensor or array_like
        Shape ``(N, C)`` or ``(N, C, *spatial)``, float32 or float64.
    running_mean : numpy.ndarray, Tensor or None
        Shape (C,).  Updated in place when training: then a writable, C-contiguous
        array of input's dtype (a Tensor's ``data``).  Required when not training.
    running_var : numpy.ndarray, Tensor or None
        Shape (C,), as ``running_mean``.
    weight : Tensor or array_like, optional
        The scale gamma, shape (C,), input's dtype.
    bias : Tensor or array_like, optional
        The shift beta, shape (C,), input's dtype.
    training : bool, optional
        Normalize with the batch's statistics (and update the running ones).
    momentum : float, optional
        In [0, 1]; PyTorch's ``None`` (a cumulative average) belongs to the modules.
    eps : float, optional
        Added to the variance, > 0.

    Returns
    -------
    Tensor
        Of input's shape and dtype, on the tape.

    Raises
    ------
    TypeError
        For a non-float input, weight or bias, operands of different dtypes, or
        running statistics of the wrong type or dtype.
    ValueError
        For shapes that do not match, one value per channel when training, missing
        running statistics when not training, or momentum or eps out of range.
    """
    return _batch_norm("batch_norm", input, running_mean, running_var, weight, bias, training,
                       momentum, eps, False)


def batch_norm_relu(input, running_mean, running_var, weight=None, bias=None, training=False,
                    momentum=0.1, eps=1e-5):
    """``relu(batch_norm(...))`` in one kernel (fastbn's; PyTorch has no such function).

    The forward applies the ReLU as it writes, the backward finds the ReLU's mask
    again from the input, so each direction makes one pass over memory fewer than the
    two ops and nothing extra is stored.

    Parameters
    ----------
    input : Tensor or array_like
        Shape ``(N, C)`` or ``(N, C, *spatial)``, float32 or float64.
    running_mean : numpy.ndarray, Tensor or None
        Shape (C,), as in :func:`batch_norm`.
    running_var : numpy.ndarray, Tensor or None
        Shape (C,), as in :func:`batch_norm`.
    weight : Tensor or array_like, optional
        The scale gamma, shape (C,).
    bias : Tensor or array_like, optional
        The shift beta, shape (C,).
    training : bool, optional
        As :func:`batch_norm`.
    momentum : float, optional
        As :func:`batch_norm`.
    eps : float, optional
        As :func:`batch_norm`.

    Returns
    -------
    Tensor
        Of input's shape and dtype, non-negative, on the tape.

    Raises
    ------
    TypeError
        As :func:`batch_norm`.
    ValueError
        As :func:`batch_norm`.
    """
    return _batch_norm("batch_norm_relu", input, running_mean, running_var, weight, bias,
                       training, momentum, eps, True)


def _affine_inputs(op, x, weight, bias, shape):
    """(x,), (x, w) or (x, w, b) as Tensors of one dtype; a bias without a weight
    gets a weight of ones (the kernels take a bias only with a weight)."""
    w = None if weight is None else _float_tensor(weight, op, "weight")
    b = None if bias is None else _float_tensor(bias, op, "bias")
    _same_dtype(op, ("input", x), ("weight", w), ("bias", b))
    if w is None and b is not None:
        w = Tensor(np.ones(shape, dtype=x.data.dtype))
    return (x,) if w is None else (x, w) if b is None else (x, w, b)


def _check_ndim(op, x, least):
    if x.data.ndim < least:
        raise ValueError(f"{op}: expected input with at least {least} dimensions (N, C, ...), "
                         f"got shape {x.data.shape}")


class GroupNorm(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight=None, bias=None, *, num_groups, eps):
        y, mean, invstd = kernels.group_norm_forward(x, num_groups, weight, bias, eps)
        return y, (x, weight, mean, invstd, num_groups)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, mean, invstd, num_groups = saved
        dx, dw, db = kernels.group_norm_backward(
            g, x, num_groups, weight, mean, invstd, need_input=inputs[0].requires_grad,
            need_weight=_needs(inputs, 1), need_bias=_needs(inputs, 2))
        return (dx, dw, db)[:len(inputs)]


def group_norm(input, num_groups, weight=None, bias=None, eps=1e-5):
    """Group Normalization (PyTorch's ``F.group_norm``; Wu and He, 2018).

    The C channels of ``input`` form ``num_groups`` groups of ``C / num_groups``
    consecutive channels; each sample's group is normalized with its own mean and
    biased variance, then scaled and shifted per channel:
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``.  No running statistics:
    training and evaluation compute the same.

    Parameters
    ----------
    input : Tensor or array_like, shape ``(N, C, *)``
        float32 or float64.
    num_groups : int
        Divides C.
    weight, bias : Tensor or array_like, shape (C,), optional
        The per-channel affine; none by default.
    eps : float, default 1e-5
        Added to the variance; positive.

    Returns
    -------
    Tensor
        The shape and dtype of input.

    Raises
    ------
    ValueError
        For input with fewer than 2 dimensions, num_groups not a positive divisor of
        C, a group of a single value (its variance is undefined), a weight or bias of
        another shape, or an eps that is not positive (NaN included).
    TypeError
        For non-float input, or a weight or bias of another dtype.
    """
    x = _float_tensor(input, "group_norm")
    _check_ndim("group_norm", x, 2)
    inputs = _affine_inputs("group_norm", x, weight, bias, x.data.shape[1])
    return GroupNorm.apply(*inputs, num_groups=num_groups, eps=eps)


class LayerNorm(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight=None, bias=None, *, normalized_shape, eps):
        y, mean, invstd = kernels.layer_norm_forward(x, normalized_shape, weight, bias, eps)
        return y, (x, weight, mean, invstd, normalized_shape)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, mean, invstd, normalized_shape = saved
        dx, dw, db = kernels.layer_norm_backward(
            g, x, normalized_shape, weight, mean, invstd, need_input=inputs[0].requires_grad,
            need_weight=_needs(inputs, 1), need_bias=_needs(inputs, 2))
        return (dx, dw, db)[:len(inputs)]


def layer_norm(input, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer Normalization (PyTorch's ``F.layer_norm``; Ba, Kiros and Hinton, 2016).

    Each sample's last ``len(normalized_shape)`` dimensions are normalized with their
    own mean and biased variance, then scaled and shifted elementwise:
    ``y = (x - mean) / sqrt(var + eps) * weight + bias``.

    Parameters
    ----------
    input : Tensor or array_like, shape ``(*, *normalized_shape)``
        float32 or float64.
    normalized_shape : int or tuple of int
        The trailing shape of input that is normalized.
    weight, bias : Tensor or array_like, shape normalized_shape, optional
        The elementwise affine; none by default.
    eps : float, default 1e-5
        Added to the variance; positive.

    Returns
    -------
    Tensor
        The shape and dtype of input.

    Raises
    ------
    ValueError
        For input whose trailing shape is not normalized_shape, a weight or bias of
        another shape, or an eps that is not positive.
    TypeError
        For non-float input, or a weight or bias of another dtype.
    """
    x = _float_tensor(input, "layer_norm")
    shape = ((normalized_shape,) if isinstance(normalized_shape, numbers.Integral)
             else tuple(normalized_shape))
    inputs = _affine_inputs("layer_norm", x, weight, bias, shape)
    return LayerNorm.apply(*inputs, normalized_shape=shape, eps=eps)


class InstanceNorm(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight=None, bias=None, *, running_mean, running_var, use_input_stats,
                momentum, eps):
        y, mean, invstd = kernels.instance_norm_forward(
            x, weight, bias, running_mean, running_var, use_input_stats, momentum, eps)
        return y, (x, weight, mean, invstd, use_input_stats)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, mean, invstd, use_input_stats = saved
        dx, dw, db = kernels.instance_norm_backward(
            g, x, weight, mean, invstd, use_input_stats, need_input=inputs[0].requires_grad,
            need_weight=_needs(inputs, 1), need_bias=_needs(inputs, 2))
        return (dx, dw, db)[:len(inputs)]


def instance_norm(input, running_mean=None, running_var=None, weight=None, bias=None,
                  use_input_stats=True, momentum=0.1, eps=1e-5):
    """Instance Normalization (PyTorch's ``F.instance_norm``; Ulyanov et al., 2016).

    With ``use_input_stats=True`` each sample's channel is normalized with its own
    mean and biased variance over the spatial positions, and running_mean /
    running_var, when given, are updated in place:
    ``running = (1 - momentum) * running + momentum * stat``, stat the samples'
    average mean and average unbiased variance (PyTorch's rule).  With
    ``use_input_stats=False`` the running statistics normalize, as Batch
    Normalization in eval mode.  Then ``y = xhat * weight + bias`` per channel.

    Parameters
    ----------
    input : Tensor or array_like, shape ``(N, C, *)``
        float32 or float64; more than one spatial position with input statistics.
    running_mean, running_var : ndarray or Tensor, shape (C,), optional
        Of input's dtype; updated in place when ``use_input_stats``.
    weight, bias : Tensor or array_like, shape (C,), optional
    use_input_stats : bool, default True
    momentum : float, default 0.1
    eps : float, default 1e-5

    Returns
    -------
    Tensor
        The shape and dtype of input.

    Raises
    ------
    ValueError
        For input with fewer than 2 dimensions, a single spatial position with input
        statistics, ``use_input_stats=False`` without running statistics, parameters
        of another shape, or a momentum outside [0, 1] or a non-positive eps.
    """
    x = _float_tensor(input, "instance_norm")
    _check_ndim("instance_norm", x, 2)
    inputs = _affine_inputs("instance_norm", x, weight, bias, x.data.shape[1])
    return InstanceNorm.apply(*inputs, running_mean=_stat(running_mean, "running_mean"),
                              running_var=_stat(running_var, "running_var"),
                              use_input_stats=bool(use_input_stats), momentum=momentum, eps=eps)


class BatchRenorm(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight=None, bias=None, *, running_mean, running_var, r_max, d_max,
                momentum, eps):
        y, mean, invstd, r, d = kernels.batch_renorm_forward(
            x, weight, bias, running_mean, running_var, r_max, d_max, momentum, eps)
        return y, (x, weight, mean, invstd, r, d)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, mean, invstd, r, d = saved
        dx, dw, db = kernels.batch_renorm_backward(
            g, x, weight, mean, invstd, r, d, need_input=inputs[0].requires_grad,
            need_weight=_needs(inputs, 1), need_bias=_needs(inputs, 2))
        return (dx, dw, db)[:len(inputs)]


def batch_renorm(input, running_mean, running_var, weight=None, bias=None, r_max=1.0,
                 d_max=0.0, momentum=0.1, eps=1e-5):
    """Batch Renormalization in training (Ioffe, 2017).

    It follows the semantics of Chainer's ``BatchRenormalization``.

    With the batch's mean and ``sigma_B = sqrt(var_B + eps)`` and the running
    statistics before this step's update, ``sigma = sqrt(running_var + eps)``::

        r = clip(sigma_B / sigma, 1 / r_max, r_max)
        d = clip((mean_B - running_mean) / sigma, -d_max, d_max)
        y = ((x - mean_B) / sigma_B * r + d) * weight + bias

    r and d are constants in the backward.  running_mean / running_var are then
    updated as by :func:`batch_norm`.  With r_max = 1 and d_max = 0 this is
    :func:`batch_norm` in training, bit for bit.  In evaluation Batch
    Renormalization is :func:`batch_norm` with the running statistics.

    Parameters
    ----------
    input : Tensor or array_like, shape ``(N, C, *)``
    running_mean, running_var : ndarray or Tensor, shape (C,)
        Of input's dtype; read, then updated in place.
    weight, bias : Tensor or array_like, shape (C,), optional
    r_max : float, default 1.0
        At least 1 (``inf``: no clipping).
    d_max : float, default 0.0
        At least 0.
    momentum : float, default 0.1
    eps : float, default 1e-5

    Returns
    -------
    Tensor
    """
    x = _float_tensor(input, "batch_renorm")
    _check_ndim("batch_renorm", x, 2)
    inputs = _affine_inputs("batch_renorm", x, weight, bias, x.data.shape[1])
    return BatchRenorm.apply(*inputs, running_mean=_stat(running_mean, "running_mean"),
                             running_var=_stat(running_var, "running_var"), r_max=r_max,
                             d_max=d_max, momentum=momentum, eps=eps)


class GhostBatchNorm(Function):
    fresh_grads = True     # new arrays from the kernels (see fastbn.autograd.Function)

    @staticmethod
    def forward(x, weight=None, bias=None, *, running_mean, running_var, virtual_batch_size,
                momentum, eps):
        y, mean, invstd = kernels.ghost_batch_norm_forward(
            x, weight, bias, running_mean, running_var, virtual_batch_size, momentum, eps)
        return y, (x, weight, mean, invstd, virtual_batch_size)

    @staticmethod
    def backward(saved, g, inputs):
        x, weight, mean, invstd, size = saved
        dx, dw, db = kernels.ghost_batch_norm_backward(
            g, x, weight, mean, invstd, size, need_input=inputs[0].requires_grad,
            need_weight=_needs(inputs, 1), need_bias=_needs(inputs, 2))
        return (dx, dw, db)[:len(inputs)]


def ghost_batch_norm(input, virtual_batch_size, running_mean=None, running_var=None,
                     weight=None, bias=None, momentum=0.1, eps=1e-5):
    """Ghost Batch Normalization in training (Hoffer, Hubara and Soudry, 2017).

    The batch is cut into ghost batches of ``virtual_batch_size`` consecutive
    samples (the last one holds what is left), and each is normalized with its
    own statistics, as :func:`batch_norm` would normalize it alone.
    running_mean / running_var, when given, are updated once per call:
    ``running = (1 - momentum) * running + momentum * stat``, stat the ghost
    batches' means, and their unbiased variances, averaged with weights
    proportional to their sizes.  With one ghost batch (``virtual_batch_size``
    at least N) this is :func:`batch_norm` in training, bit for bit.

    Parameters
    ----------
    input : Tensor or array_like, shape ``(N, C, *)``
    virtual_batch_size : int
        Samples per ghost batch.
    running_mean, running_var : ndarray or Tensor, shape (C,), optional
        Of input's dtype; updated in place.
    weight, bias : Tensor or array_like, shape (C,), optional
    momentum : float, default 0.1
    eps : float, default 1e-5

    Returns
    -------
    Tensor

    Raises
    ------
    ValueError
        When a ghost batch has a single value per channel.
    """
    x = _float_tensor(input, "ghost_batch_norm")
    _check_ndim("ghost_batch_norm", x, 2)
    inputs = _affine_inputs("ghost_batch_norm", x, weight, bias, x.data.shape[1])
    return GhostBatchNorm.apply(*inputs, running_mean=_stat(running_mean, "running_mean"),
                                running_var=_stat(running_var, "running_var"),
                                virtual_batch_size=virtual_batch_size, momentum=momentum,
                                eps=eps)


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
    """2-D convolution (cross-correlation) (``torch.nn.functional.conv2d``).

    Winograd F(4x4, 3x3) or im2col with BLAS GEMMs;
    :func:`fastbn.kernels.conv2d_forward` says which runs when.

    Parameters
    ----------
    input : Tensor or array_like
        Shape (N, C_in, H, W), float32 or float64 (made C-contiguous if it is not).
        Only 4-D input: PyTorch's unbatched (C, H, W) form is not accepted.
    weight : Tensor or array_like
        Shape (C_out, C_in / groups, kH, kW), input's dtype.
    bias : Tensor or array_like, optional
        Shape (C_out,), input's dtype.
    stride : int or tuple of int, optional
        Positive; one int or (sH, sW).
    padding : int or tuple of int, optional
        Zero padding on both sides, non-negative; PyTorch's ``'same'``/``'valid'``
        strings are not accepted.
    dilation : int or tuple of int, optional
        Positive.
    groups : int, optional
        Positive; divides C_in and C_out.

    Returns
    -------
    Tensor
        Shape (N, C_out, H_out, W_out), input's dtype, with
        ``H_out = (H + 2 * padding - dilation * (kH - 1) - 1) // stride + 1`` (likewise
        W_out); on the tape.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64, operands of different dtypes, or
        hyper-parameters that are not ints or pairs of ints.
    ValueError
        For shapes that do not match, bad hyper-parameter values or an empty output.
    """
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
    """2-D max pooling, padding counting as -inf (``torch.nn.functional.max_pool2d``).

    PyTorch's ``dilation``, ``ceil_mode`` and ``return_indices`` are not accepted.

    Parameters
    ----------
    input : Tensor or array_like
        Shape (N, C, H, W), float32 or float64 (made C-contiguous if it is not).  Only
        4-D input: PyTorch's unbatched (C, H, W) form is not accepted.
    kernel_size : int or tuple of int
        The window, (kH, kW), positive.
    stride : int or tuple of int, optional
        Positive; None (default) is ``kernel_size``.
    padding : int or tuple of int, optional
        Non-negative, at most half the window.

    Returns
    -------
    Tensor
        Shape (N, C, H_out, W_out), input's dtype, with
        ``H_out = (H + 2 * padding - kH) // stride + 1``; on the tape (the gradient
        goes to each window's maximum).

    Raises
    ------
    TypeError
        For a dtype other than float32/float64 or hyper-parameters that are not ints.
    ValueError
        For input that is not 4-D or has no channels, height or width, bad
        hyper-parameter values or an empty output.
    """
    return MaxPool2d.apply(_float_tensor(input, "max_pool2d"), kernel_size=kernel_size,
                           stride=stride, padding=padding)


def avg_pool2d(input, kernel_size, stride=None, padding=0, count_include_pad=True):
    """2-D average pooling (``torch.nn.functional.avg_pool2d``).

    PyTorch's ``ceil_mode`` (always False here) and ``divisor_override`` are not
    accepted.

    Parameters
    ----------
    input : Tensor or array_like
        Shape (N, C, H, W), float32 or float64 (made C-contiguous if it is not).  Only
        4-D input: PyTorch's unbatched (C, H, W) form is not accepted.
    kernel_size : int or tuple of int
        The window, (kH, kW), positive.
    stride : int or tuple of int, optional
        Positive; None (default) is ``kernel_size``.
    padding : int or tuple of int, optional
        Zero padding, non-negative, at most half the window.
    count_include_pad : bool, optional
        Divide by the whole window (True) or by the input elements in it (False).

    Returns
    -------
    Tensor
        Shape (N, C, H_out, W_out), input's dtype, with
        ``H_out = (H + 2 * padding - kH) // stride + 1``; on the tape.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64 or hyper-parameters that are not ints.
    ValueError
        For input that is not 4-D or has no channels, height or width, bad
        hyper-parameter values or an empty output.
    """
    return AvgPool2d.apply(_float_tensor(input, "avg_pool2d"), kernel_size=kernel_size,
                           stride=stride, padding=padding, count_include_pad=count_include_pad)


def adaptive_avg_pool2d(input, output_size):
    """2-D average pooling to a given output size (``torch.nn.functional.adaptive_avg_pool2d``).

    Output (i, j) averages rows ``[floor(i * H / H_out), ceil((i + 1) * H / H_out))``
    and likewise columns.

    Parameters
    ----------
    input : Tensor or array_like
        Shape (N, C, H, W), float32 or float64 (made C-contiguous if it is not).  Only
        4-D input: PyTorch's unbatched (C, H, W) form is not accepted.
    output_size : int or tuple of int or None
        (H_out, W_out), non-negative; a None entry keeps the input's size.

    Returns
    -------
    Tensor
        Shape (N, C, H_out, W_out), input's dtype; on the tape.

    Raises
    ------
    TypeError
        For a dtype other than float32/float64 or an output size that is not ints.
    ValueError
        For input that is not 4-D or has an empty plane, or a negative size.
    """
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
    """Cross entropy of logits with class indices (``torch.nn.functional.cross_entropy``).

    ``log_softmax`` and the negative log likelihood in one pass: the gradient is
    ``softmax(input) - onehot(target)`` (scaled by the reduction).  Unlike PyTorch:
    no ``weight``, ``ignore_index``, ``label_smoothing``, probability targets or
    unbatched (C,) input (:func:`nll_loss` has weight and ignore_index).

    Parameters
    ----------
    input : Tensor or array_like
        Logits of shape (N, C) or (N, C, d1, ...), float32 or float64.
    target : Tensor or array_like
        Integer class indices in [0, C), shape (N,) or (N, d1, ...).
    reduction : {'mean', 'sum', 'none'}, optional
        Average or sum over the targets, or one loss per target.

    Returns
    -------
    Tensor
        A 0-d loss, or with ``reduction='none'`` one per target (target's shape); input's
        dtype; on the tape.

    Raises
    ------
    TypeError
        For a non-float input or a non-integer target.
    ValueError
        For shapes that do not match, an empty batch, a target out of range or a bad
        reduction.
    """
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


class NLLLoss(Function):
    """Negative log likelihood of log-probabilities (N, C) with class targets: the
    gradient is ``-weight[t] * scale`` at each sample's target, 0 elsewhere."""

    @staticmethod
    def forward(x, rows, cols, w, denom, reduction, out_shape):
        losses = np.zeros(out_shape, dtype=x.dtype).reshape(-1)
        losses[rows] = -(x[rows, cols] * w)
        if reduction == "none":
            out = losses.reshape(out_shape)
        else:
            out = np.add.reduce(losses)
            if reduction == "mean":
                with np.errstate(invalid="ignore"):     # all ignored: NaN, as PyTorch
                    out = out / denom
        return np.asarray(out, dtype=x.dtype), (x.shape, rows, cols, w, denom, reduction)

    @staticmethod
    def backward(saved, g, inputs):
        shape, rows, cols, w, denom, reduction = saved
        gx = np.zeros(shape, dtype=g.dtype)
        if reduction == "none":
            gx[rows, cols] = -w * g.reshape(-1)[rows]
        elif rows.size:
            gx[rows, cols] = -w * (g / denom if reduction == "mean" else g)
        return (gx,)


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    """Negative log likelihood loss (``torch.nn.functional.nll_loss``).

    Parameters
    ----------
    input : Tensor
        Log-probabilities, float32/float64, of shape (N, C), (N, C, d1, ...) or (C,).
    target : Tensor or array_like
        Integer class indices of shape (N,), (N, d1, ...) or () in ``[0, C)``, or
        ``ignore_index``.
    weight : Tensor or array_like, optional
        A rescaling weight per class, shape (C,).
    ignore_index : int, optional
        A target value that contributes neither loss nor gradient.
    reduction : {'mean', 'sum', 'none'}, optional
        ``'mean'`` divides the sum by the total weight of the targets not ignored (NaN
        when every target is ignored, as in PyTorch).

    Returns
    -------
    Tensor
        A 0-d loss, or one loss per target with ``reduction='none'``.

    Raises
    ------
    TypeError
        For a non-integer target.
    ValueError
        For mismatched shapes, a target out of range or a bad reduction.
    """
    x = _float_tensor(input, "nll_loss")
    _check_reduction(reduction, "nll_loss")
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if t.dtype.kind not in "iu":
        raise TypeError(f"nll_loss: target must hold integer class indices, got dtype {t.dtype}")
    xs = x.shape
    unbatched = x.data.ndim == 1
    expected = () if unbatched else xs[:1] + xs[2:]
    if x.data.ndim < 1 or t.shape != expected:
        raise ValueError(f"nll_loss: input of shape {xs} needs a target of shape {expected}, "
                         f"got {t.shape}")
    C = xs[0] if unbatched else xs[1]
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"nll_loss: ignore_index must be an int, got {ignore_index!r}")
    w = None
    if weight is not None:
        w = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
        if w.shape != (C,):
            raise ValueError(f"nll_loss: weight must have shape ({C},), got {w.shape}")
        w = w.astype(x.data.dtype, copy=False)
    flat = t.reshape(-1).astype(np.int64, copy=False)
    rows = np.flatnonzero(flat != ignore_index)
    cols = flat[rows]
    if cols.size and (cols.min() < 0 or cols.max() >= C):
        raise ValueError(f"nll_loss: target values must be in [0, {C}) or ignore_index "
                         f"({ignore_index}), got min {cols.min()} max {cols.max()}")
    wt = np.ones(cols.size, x.data.dtype) if w is None else w[cols]
    denom = np.add.reduce(wt, dtype=x.data.dtype)
    # (samples, classes): a view with the class axis last
    x2 = x if x.data.ndim == 2 else reshape(x, (1, C)) if unbatched else \
        reshape(transpose(x, (0,) + tuple(range(2, x.data.ndim)) + (1,)), (-1, C))
    return NLLLoss.apply(x2, rows=rows, cols=cols, w=wt, denom=denom, reduction=reduction,
                         out_shape=t.shape)


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
    """Mean squared error (``torch.nn.functional.mse_loss``).

    Unlike PyTorch, input and target must have the same shape (no broadcasting).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape, float32 or float64.
    target : Tensor or array_like
        Input's shape, float32 or float64; it gets a gradient too when it requires one.
    reduction : {'mean', 'sum', 'none'}, optional
        Average or sum of the squared differences, or each of them.

    Returns
    -------
    Tensor
        A 0-d loss, or with ``reduction='none'`` input's shape; on the tape.

    Raises
    ------
    TypeError
        For a non-float input or target.
    ValueError
        For shapes that differ, a bad reduction, or the mean of an empty input.
    """
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
manual_seed = _random.manual_seed


class Dropout(Function):
    @staticmethod
    def forward(x, mask):
        return x * mask, mask

    @staticmethod
    def backward(mask, g, inputs):
        return (g * mask,)


def dropout(input, p=0.5, training=True, inplace=False, generator=None):
    """Zero each element with probability p, scale the rest by 1/(1-p) (``F.dropout``).

    Parameters
    ----------
    input : Tensor or array_like
        float32 or float64.
    p : float, optional
        Probability of zeroing, in [0, 1].
    training : bool, optional
        False returns input unchanged.
    inplace : bool, optional
        Accepted for PyTorch's signature; the result is always a new tensor.
    generator : numpy.random.Generator, optional
        Default: fastbn's global generator, seeded by ``fastbn.manual_seed``.

    Returns
    -------
    Tensor
    """
    x = _float_tensor(input, "dropout")
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
        raise ValueError(f"dropout: p must be in [0, 1], got {p!r}")
    if not training or p == 0:
        return x
    rng = _random.default_generator if generator is None else generator
    if p == 1:
        mask = np.zeros(x.shape, dtype=x.dtype)
    else:
        mask = (rng.random(x.shape, dtype=x.dtype) >= p) * x.dtype.type(1 / (1 - p))
    return Dropout.apply(x, mask=mask.astype(x.dtype, copy=False))
