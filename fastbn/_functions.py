"""The ``torch.*`` functions of a training script: factories (``zeros``, ``randn``,
``arange``, ``from_numpy``, ...) and the ops in PyTorch's functional spelling
(``torch.cat``, ``torch.flatten``, ``torch.max``, ...).  ``import fastbn`` puts them
at the top level.

The random factories draw from fastbn's global generator (``fastbn.manual_seed``)
unless given a ``generator`` (a ``numpy.random.Generator``).
"""
import builtins
import numbers
import operator

import numpy as np

from . import _ops
from . import random as _random
from ._types import _DTYPES, as_dtype, check_device
from .autograd import Tensor

__all__ = [
    "zeros", "ones", "full", "empty", "zeros_like", "ones_like", "full_like", "rand", "randn",
    "randint", "randperm", "arange", "from_numpy", "is_tensor", "numel",
    "cat", "concat", "stack", "flatten", "reshape", "unsqueeze", "squeeze", "transpose",
    "permute", "clone", "sum", "mean", "max", "min", "argmax", "argmin", "maximum", "minimum",
    "eq", "ne", "lt", "le", "gt", "ge", "exp", "log", "sqrt", "abs", "absolute", "matmul",
    "relu", "sigmoid", "tanh", "softmax", "log_softmax",
]

_FLOAT32 = _DTYPES["float32"]


def _size(size, op):
    """``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])`` as a tuple of non-negative ints."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    try:
        out = tuple(operator.index(n) for n in size)
    except TypeError:
        raise TypeError(f"{op}(): size must be ints or one tuple of ints, got {size!r}") from None
    if builtins.any(isinstance(n, builtins.bool) for n in size) or builtins.min(out, default=0) < 0:
        raise ValueError(f"{op}(): size must be non-negative ints, got {size!r}")
    return out


def _dtype_or_float32(dtype):
    return _FLOAT32 if dtype is None else as_dtype(dtype)


def _made(array, device, requires_grad):
    check_device(device)
    return Tensor(array, requires_grad=requires_grad)


def _float_dtype(dtype, op):
    dtype = _dtype_or_float32(dtype)
    if dtype.kind != "f":
        raise TypeError(f"{op}(): dtype must be a floating dtype, got {dtype}")
    return dtype


# -- factories -------------------------------------------------------------------------------
_FACTORY_DOC = """

    Parameters
    ----------
    *size : int or tuple of int
        The shape: ``{name}(2, 3)`` or ``{name}((2, 3))``.
    dtype : dtype, optional
        float32 unless given (``fastbn.float64``, ``fastbn.long``, ...).
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Make it a leaf that records operations (float32/float64 only).

    Returns
    -------
    Tensor
    """


def zeros(*size, dtype=None, device=None, requires_grad=False):
    return _made(np.zeros(_size(size, "zeros"), _dtype_or_float32(dtype)), device,
                 requires_grad)


def ones(*size, dtype=None, device=None, requires_grad=False):
    return _made(np.ones(_size(size, "ones"), _dtype_or_float32(dtype)), device,
                 requires_grad)


def empty(*size, dtype=None, device=None, requires_grad=False):
    return _made(np.empty(_size(size, "empty"), _dtype_or_float32(dtype)), device,
                 requires_grad)


zeros.__doc__ = "A tensor of zeros." + _FACTORY_DOC.format(name="zeros")
ones.__doc__ = "A tensor of ones." + _FACTORY_DOC.format(name="ones")
empty.__doc__ = ("A tensor whose values are whatever memory held (as torch.empty)."
                 + _FACTORY_DOC.format(name="empty"))


def full(size, fill_value, *, dtype=None, device=None, requires_grad=False):
    """A tensor filled with ``fill_value``.

    Parameters
    ----------
    size : tuple of int
        The shape.
    fill_value : number
        The value; its kind sets the dtype when none is given (bool, int64, or float32).
    dtype, device, requires_grad
        As :func:`zeros`.

    Returns
    -------
    Tensor
    """
    if dtype is None:
        dtype = (_DTYPES["bool"] if isinstance(fill_value, builtins.bool) else
                 _DTYPES["int64"] if isinstance(fill_value, numbers.Integral) else _FLOAT32)
    return _made(np.full(_size((size,), "full"), fill_value, as_dtype(dtype)), device,
                 requires_grad)


def _like(input, dtype):
    return input.shape, input.dtype if dtype is None else as_dtype(dtype)


def zeros_like(input, *, dtype=None, device=None, requires_grad=False):
    """Zeros of ``input``'s shape and (unless given) dtype (``torch.zeros_like``).

    Parameters
    ----------
    input : Tensor
        Only its shape and dtype are read.
    dtype : dtype, optional
        ``input``'s dtype unless given.
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Make it a leaf that records operations (float32/float64 only).

    Returns
    -------
    Tensor
        Of ``input``'s shape.
    """
    shape, dtype = _like(input, dtype)
    return _made(np.zeros(shape, dtype), device, requires_grad)


def ones_like(input, *, dtype=None, device=None, requires_grad=False):
    """Ones of ``input``'s shape and (unless given) dtype (``torch.ones_like``).

    Parameters
    ----------
    input : Tensor
        Only its shape and dtype are read.
    dtype : dtype, optional
        ``input``'s dtype unless given.
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Make it a leaf that records operations (float32/float64 only).

    Returns
    -------
    Tensor
        Of ``input``'s shape.
    """
    shape, dtype = _like(input, dtype)
    return _made(np.ones(shape, dtype), device, requires_grad)


def full_like(input, fill_value, *, dtype=None, device=None, requires_grad=False):
    """``fill_value`` in ``input``'s shape and (unless given) dtype (``torch.full_like``).

    Parameters
    ----------
    input : Tensor
        Only its shape and dtype are read.
    fill_value : number
        The value, cast to the dtype.
    dtype : dtype, optional
        ``input``'s dtype unless given.
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Make it a leaf that records operations (float32/float64 only).

    Returns
    -------
    Tensor
        Of ``input``'s shape.
    """
    shape, dtype = _like(input, dtype)
    return _made(np.full(shape, fill_value, dtype), device, requires_grad)


def _generator(generator):
    if generator is None:
        return _random.default_generator
    if not isinstance(generator, np.random.Generator):
        raise TypeError(f"generator must be a numpy.random.Generator, got "
                        f"{type(generator).__name__}")
    return generator


def rand(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Uniform samples in [0, 1) from fastbn's global generator (``fastbn.manual_seed``).

    Parameters
    ----------
    *size : int or tuple of int
        The shape.
    generator : numpy.random.Generator, optional
        Draw from this one instead.
    dtype : dtype, optional
        float32 (default) or another floating dtype.
    device, requires_grad
        As :func:`zeros`.

    Returns
    -------
    Tensor
    """
    dtype = _float_dtype(dtype, "rand")
    gen, shape = _generator(generator), _size(size, "rand")
    sample = gen.random(shape, np.float64 if dtype.itemsize < 4 else dtype)
    return _made(sample.astype(dtype, copy=False), device, requires_grad)


def randn(*size, generator=None, dtype=None, device=None, requires_grad=False):
    """Standard normal samples from fastbn's global generator (``fastbn.manual_seed``).

    As ``torch.randn``.

    Parameters
    ----------
    *size : int or tuple of int
        The shape: ``randn(2, 3)`` or ``randn((2, 3))``.
    generator : numpy.random.Generator, optional
        Draw from this one instead of the global generator.
    dtype : dtype, optional
        float32 (default) or another floating dtype (float16 samples are drawn in
        float64 and cast).
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Make it a leaf that records operations.

    Returns
    -------
    Tensor
        Of shape ``size``.

    Raises
    ------
    TypeError
        For a non-floating dtype, a size that is not ints, or a generator that is not a
        ``numpy.random.Generator``.
    ValueError
        For a negative size.
    """
    dtype = _float_dtype(dtype, "randn")
    gen, shape = _generator(generator), _size(size, "randn")
    sample = gen.standard_normal(shape, np.float64 if dtype.itemsize < 4 else dtype)
    return _made(sample.astype(dtype, copy=False), device, requires_grad)


def randint(*args, size=None, generator=None, dtype=None, device=None, requires_grad=False):
    """Integers drawn uniformly from [low, high), from fastbn's global generator.

    ``randint(high, size)`` or ``randint(low, high, size)``, as ``torch.randint``.

    Parameters
    ----------
    *args : int, then tuple of int
        ``high``, or ``low, high`` (low defaults to 0), optionally followed by the
        shape as a tuple or list when ``size`` is not given by keyword.
    size : tuple of int, optional
        The shape (required, here or as the last positional argument).
    generator : numpy.random.Generator, optional
        Draw from this one instead of the global generator.
    dtype : dtype, optional
        int64 unless given.
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Make it a leaf that records operations (float dtypes only).

    Returns
    -------
    Tensor
        Of shape ``size``.

    Raises
    ------
    TypeError
        For arguments in neither form.
    ValueError
        When ``low >= high``, or for a negative size.
    """
    if size is None and args and isinstance(args[-1], (tuple, list)):
        size, args = args[-1], args[:-1]
    if size is None or len(args) not in (1, 2):
        raise TypeError("randint() takes (high, size) or (low, high, size)")
    low, high = (0, args[0]) if len(args) == 1 else args
    low, high = operator.index(low), operator.index(high)
    if low >= high:
        raise ValueError(f"randint(): low ({low}) must be below high ({high})")
    dtype = _DTYPES["int64"] if dtype is None else as_dtype(dtype)
    values = _generator(generator).integers(low, high, _size((size,), "randint"))
    return _made(values.astype(dtype), device, requires_grad)


def randperm(n, *, generator=None, dtype=None, device=None, requires_grad=False):
    """A random permutation of ``range(n)``, from fastbn's global generator.

    As ``torch.randperm``.

    Parameters
    ----------
    n : int
        The length, non-negative.
    generator : numpy.random.Generator, optional
        Draw from this one instead of the global generator.
    dtype : dtype, optional
        int64 unless given.
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Make it a leaf that records operations (float dtypes only).

    Returns
    -------
    Tensor
        Of shape ``(n,)``.

    Raises
    ------
    ValueError
        For a negative ``n``.
    """
    n = operator.index(n)
    if n < 0:
        raise ValueError(f"randperm(): n must be non-negative, got {n}")
    dtype = _DTYPES["int64"] if dtype is None else as_dtype(dtype)
    return _made(_generator(generator).permutation(n).astype(dtype), device, requires_grad)


def arange(start, end=None, step=1, *, dtype=None, device=None, requires_grad=False):
    """Values from ``start`` (default 0) up to ``end`` (excluded) by ``step`` (``torch.arange``).

    ``arange(end)``, ``arange(start, end)`` or ``arange(start, end, step)``.

    Parameters
    ----------
    start, end, step : number
        As Python's range, but numbers may be floats.
    dtype : dtype, optional
        int64 when every argument is an int, else float32 (PyTorch's inference).
    device, requires_grad
        As :func:`zeros`.

    Returns
    -------
    Tensor
    """
    if end is None:
        start, end = 0, start
    bounds = (start, end, step)
    if not builtins.all(isinstance(v, numbers.Real) and not isinstance(v, builtins.bool)
                        for v in bounds):
        raise TypeError(f"arange(): start, end and step must be numbers, got {bounds}")
    if step == 0 or not np.isfinite(bounds).all():
        raise ValueError(f"arange(): step must be non-zero and bounds finite, got {bounds}")
    if dtype is None:
        integral = builtins.all(isinstance(v, numbers.Integral) for v in bounds)
        dtype = _DTYPES["int64"] if integral else _FLOAT32
    # computed in float64 (or int64) and cast once
    values = np.arange(start, end, step)
    return _made(values.astype(as_dtype(dtype)), device, requires_grad)


def from_numpy(ndarray):
    """A tensor sharing ``ndarray``'s memory and dtype (changes to one show in the other).

    Parameters
    ----------
    ndarray : numpy.ndarray
        Of a supported dtype (floating, integer or bool).

    Returns
    -------
    Tensor

    Raises
    ------
    TypeError
        For anything but an ndarray, or an unsupported dtype.
    """
    if not isinstance(ndarray, np.ndarray):
        raise TypeError(f"from_numpy() expects a numpy.ndarray, got {type(ndarray).__name__}")
    as_dtype(ndarray.dtype, "from_numpy(): the array's dtype")
    return Tensor(ndarray)


def is_tensor(obj):
    """Whether ``obj`` is a fastbn Tensor (``torch.is_tensor``).

    Parameters
    ----------
    obj : object
        Anything.

    Returns
    -------
    bool
    """
    return isinstance(obj, Tensor)


def numel(input):
    """The number of elements of ``input`` (``torch.numel``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.

    Returns
    -------
    int
    """
    return _tensor(input).numel()


# -- ops in torch.* spelling -----------------------------------------------------------------
def _tensor(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def cat(tensors, dim=0):
    """Join tensors along an existing dim (``torch.cat``; ``concat`` is the same function).

    See :func:`fastbn.nn.functional.cat`.

    Parameters
    ----------
    tensors : list or tuple of Tensor
        Numeric tensors with the same number of dims (at least 1) and the same sizes
        except along ``dim``.
    dim : int, optional
        The dim to join along, ``-ndim <= dim < ndim``.

    Returns
    -------
    Tensor
        On the tape; the size along ``dim`` is the sum of the inputs'.

    Raises
    ------
    TypeError
        For anything but a list or tuple, or non-numeric tensors.
    ValueError
        For an empty list, 0-d tensors, sizes that do not match or a dim out of range.
    """
    return _ops.cat(tensors, dim)


concat = cat


def stack(tensors, dim=0):
    """Join tensors of one shape along a new dim (``torch.stack``).

    Parameters
    ----------
    tensors : list or tuple of Tensor
        Numeric tensors of one shape.
    dim : int, optional
        Where the new dim goes, ``-ndim - 1 <= dim <= ndim``.

    Returns
    -------
    Tensor
        On the tape; ``ndim + 1`` dims, ``len(tensors)`` along ``dim``.

    Raises
    ------
    TypeError
        For anything but a list or tuple, or non-numeric tensors.
    ValueError
        For an empty list, shapes that differ or a dim out of range.
    """
    return _ops.stack(tensors, dim)


def flatten(input, start_dim=0, end_dim=-1):
    """Merge dims ``start_dim`` .. ``end_dim`` into one (``torch.flatten``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.
    start_dim : int, optional
        First dim to merge (0: from the first, as ``torch.flatten``;
        :func:`fastbn.nn.functional.flatten` starts at 1).
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
    return _ops.flatten(input, start_dim, end_dim)


def reshape(input, shape):
    """``input.reshape(shape)`` (``torch.reshape``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.
    shape : sequence of int
        The new shape; one entry may be -1.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    ValueError
        When the element counts differ.
    """
    return _ops.reshape(input, tuple(shape))


def unsqueeze(input, dim):
    """``input.unsqueeze(dim)``: a new dim of length 1 (``torch.unsqueeze``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.
    dim : int
        Where the new dim goes, ``-ndim - 1 <= dim <= ndim``.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    ValueError
        For a dim out of range.
    """
    return _ops.unsqueeze(input, dim)


def squeeze(input, dim=None):
    """``input.squeeze(dim)``: drop dims of length 1 (``torch.squeeze``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.
    dim : int or tuple of int, optional
        Only these dims (a named dim whose length is not 1 stays, as in PyTorch); all
        when None.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    ValueError
        For a dim out of range or repeated.
    """
    return _ops.squeeze(input, dim)


def transpose(input, dim0, dim1):
    """``input.transpose(dim0, dim1)``: swap two dims (``torch.transpose``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.
    dim0, dim1 : int
        The dims to swap.

    Returns
    -------
    Tensor
        On the tape (a view of the data).

    Raises
    ------
    ValueError
        For a dim out of range.
    """
    return _tensor(input).transpose(dim0, dim1)


def permute(input, dims):
    """``input.permute(dims)``: reorder the dims (``torch.permute``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.
    dims : sequence of int
        A permutation of ``range(ndim)`` (negative dims count from the end).

    Returns
    -------
    Tensor
        On the tape (a view of the data).

    Raises
    ------
    ValueError
        When ``dims`` is not a permutation of the dims.
    """
    return _ops.transpose(input, tuple(dims))


def clone(input):
    """``input.clone()``: a copy that owns its data (``torch.clone``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape and dtype.

    Returns
    -------
    Tensor
        On the tape: the gradient flows through unchanged.
    """
    return _ops.clone(input)


def sum(input, dim=None, keepdim=False, **aliases):
    """``input.sum(dim, keepdim)`` (``torch.sum``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape; the sum keeps the dtype.
    dim : int or tuple of int, optional
        The dims to sum over; all when None.
    keepdim : bool, optional
        Keep the summed dims with length 1.
    **aliases
        NumPy's spelling, ``axis`` and ``keepdims``, which PyTorch accepts too.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    TypeError
        For an unknown keyword, or both ``dim`` and ``axis``.
    ValueError
        For a dim out of range or repeated.
    """
    return _tensor(input).sum(dim, keepdim, **aliases)


def mean(input, dim=None, keepdim=False, **aliases):
    """``input.mean(dim, keepdim)`` (``torch.mean``).

    Parameters
    ----------
    input : Tensor or array_like
        Any shape; float32 stays float32.
    dim : int or tuple of int, optional
        The dims to average over; all when None.
    keepdim : bool, optional
        Keep the averaged dims with length 1.
    **aliases
        NumPy's spelling, ``axis`` and ``keepdims``, which PyTorch accepts too.

    Returns
    -------
    Tensor
        On the tape.

    Raises
    ------
    TypeError
        For an unknown keyword, or both ``dim`` and ``axis``.
    ValueError
        For a dim out of range or repeated, or an average over no elements.
    """
    return _tensor(input).mean(dim, keepdim, **aliases)


def max(input, dim=None, keepdim=False):
    """``input.max(dim, keepdim)``: ``torch.max``'s three forms.

    Parameters
    ----------
    input : Tensor or array_like
        A non-empty tensor.
    dim : int or Tensor, optional
        None: the largest element, as a 0-d tensor (ties share the gradient evenly).
        An int: ``(values, indices)`` along that dim.  A Tensor: the elementwise
        maximum of ``input`` and it (:func:`maximum`).
    keepdim : bool, optional
        Keep the reduced dim with length 1.

    Returns
    -------
    Tensor or MaxResult
        With an int ``dim``, the named tuple ``(values, indices)``: values on the tape,
        int64 indices without gradient.  NaN counts as the largest, as in PyTorch.

    Raises
    ------
    ValueError
        For an empty tensor or a dim out of range.
    """
    return _tensor(input).max(dim, keepdim)


def min(input, dim=None, keepdim=False):
    """``input.min(dim, keepdim)``: ``torch.min``'s three forms (as :func:`max`).

    Parameters
    ----------
    input : Tensor or array_like
        A non-empty tensor.
    dim : int or Tensor, optional
        None: the smallest element; an int: ``(values, indices)`` along that dim; a
        Tensor: the elementwise minimum (:func:`minimum`).
    keepdim : bool, optional
        Keep the reduced dim with length 1.

    Returns
    -------
    Tensor or MaxResult

    Raises
    ------
    ValueError
        For an empty tensor or a dim out of range.
    """
    return _tensor(input).min(dim, keepdim)


def argmax(input, dim=None, keepdim=False):
    """``input.argmax(dim, keepdim)``: indices of the largest values (``torch.argmax``).

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
    return _ops.argmax(input, dim, keepdim)


def argmin(input, dim=None, keepdim=False):
    """``input.argmin(dim, keepdim)``: indices of the smallest values (``torch.argmin``).

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
    return _ops.argmin(input, dim, keepdim)


maximum, minimum = _ops.maximum, _ops.minimum
eq, ne, lt, le, gt, ge = _ops.eq, _ops.ne, _ops.lt, _ops.le, _ops.gt, _ops.ge
exp, log, sqrt, matmul = _ops.exp, _ops.log, _ops.sqrt, _ops.matmul
abs = absolute = _ops.absolute
relu, sigmoid, tanh = _ops.relu, _ops.sigmoid, _ops.tanh
softmax, log_softmax = _ops.softmax, _ops.log_softmax
