"""Tensor: the tape's array (``fastbn.autograd``) with its arithmetic and shape
methods, each one an op of ``fastbn._ops``.

The methods are defined in ``_TensorMethods`` below and installed on the
Tensor class when this module is imported (``import fastbn`` does), so that
the tape imports no op and the ops import no Tensor method: every module
imports only the ones below it.
"""
import builtins

import numpy as np

from . import _ops
from ._types import _DTYPES, check_device, to_args
from .autograd import (Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor,
                       zero_grads)

__all__ = ["Tensor", "tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled",
           "zero_grads"]


def _dim_args(dim, keepdim, aliases, op):
    """PyTorch's ``dim``/``keepdim``, or NumPy's ``axis``/``keepdims`` (PyTorch accepts
    both spellings)."""
    unknown = set(aliases) - {"axis", "keepdims"}
    if unknown:
        raise TypeError(f"{op}() got unexpected keyword arguments {sorted(unknown)}")
    if "axis" in aliases:
        if dim is not None:
            raise TypeError(f"{op}(): dim and axis name the same argument; give one")
        dim = aliases["axis"]
    if "keepdims" in aliases:
        keepdim = aliases["keepdims"]
    return dim, bool(keepdim)


def _shape_args(shape, op):
    """``f(2, 3)``, ``f((2, 3))`` or ``f([2, 3])`` as a tuple."""
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return shape


class _TensorMethods:
    """Tensor's operators and op methods (installed on Tensor below)."""

    # __eq__ below would otherwise make tensors unhashable; like PyTorch's they hash by
    # identity (optimizers and modules key their state on parameters)
    __hash__ = object.__hash__

    def __add__(self, other): return _ops.add(self, other)
    def __radd__(self, other): return _ops.add(other, self)
    def __sub__(self, other): return _ops.sub(self, other)
    def __rsub__(self, other): return _ops.sub(other, self)
    def __mul__(self, other): return _ops.mul(self, other)
    def __rmul__(self, other): return _ops.mul(other, self)
    def __truediv__(self, other): return _ops.div(self, other)
    def __rtruediv__(self, other): return _ops.div(other, self)
    def __matmul__(self, other): return _ops.matmul(self, other)
    def __rmatmul__(self, other): return _ops.matmul(other, self)
    def __pow__(self, exponent): return _ops.pow(self, exponent)
    def __neg__(self): return _ops.neg(self)
    def __abs__(self): return _ops.absolute(self)
    def __getitem__(self, index): return _ops.getitem(self, index)

    def add(self, other): return _ops.add(self, other)
    def sub(self, other): return _ops.sub(self, other)
    def mul(self, other): return _ops.mul(self, other)
    def div(self, other): return _ops.div(self, other)
    def matmul(self, other): return _ops.matmul(self, other)
    def pow(self, exponent): return _ops.pow(self, exponent)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def sqrt(self): return _ops.sqrt(self)
    def abs(self): return _ops.absolute(self)
    def relu(self): return _ops.relu(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def tanh(self): return _ops.tanh(self)
    def softmax(self, dim): return _ops.softmax(self, dim)
    def log_softmax(self, dim): return _ops.log_softmax(self, dim)

    # -- comparisons: bool tensors without gradient ------------------------------------------
    def _compare(op):
        def method(self, other):
            if not isinstance(other, (Tensor, np.ndarray, np.generic, builtins.int,
                                      builtins.float, builtins.bool)):
                return NotImplemented   # e.g. tensor == None is False, as in PyTorch
            return op(self, other)
        method.__doc__ = op.__doc__
        return method

    __eq__ = eq = _compare(_ops.eq)
    __ne__ = ne = _compare(_ops.ne)
    __lt__ = lt = _compare(_ops.lt)
    __le__ = le = _compare(_ops.le)
    __gt__ = gt = _compare(_ops.gt)
    __ge__ = ge = _compare(_ops.ge)
    del _compare

    # -- Python scalars ----------------------------------------------------------------------
    def _scalar(kind):
        def method(self):
            if self.data.size != 1:
                raise RuntimeError(f"only a one-element tensor can be converted to a Python "
                                   f"{kind.__name__}, got shape {self.shape}")
            return kind(self.data.reshape(()).item())
        method.__doc__ = f"The value of a one-element tensor as a Python {kind.__name__}."
        return method

    __bool__ = _scalar(builtins.bool)     # builtins: this class defines float(), int() ...
    __float__ = _scalar(builtins.float)
    __int__ = _scalar(builtins.int)
    del _scalar

    def __index__(self):
        """The value of a one-element integer tensor, for indexing and ``range``."""
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError(f"only one-element integer tensors can be used as an index, got "
                            f"dtype {self.dtype} and shape {self.shape}")
        return int(self.data.reshape(()).item())

    def tolist(self):
        """The data as (nested) Python lists of Python numbers; a number for a 0-d tensor."""
        return self.data.tolist()

    # -- reductions --------------------------------------------------------------------------
    def sum(self, dim=None, keepdim=False, **aliases):
        """Sum over ``dim`` (an int or a tuple; all dims when None)."""
        dim, keepdim = _dim_args(dim, keepdim, aliases, "sum")
        return _ops.sum(self, dim, keepdim)

    def mean(self, dim=None, keepdim=False, **aliases):
        """Mean over ``dim`` (an int or a tuple; all dims when None)."""
        dim, keepdim = _dim_args(dim, keepdim, aliases, "mean")
        return _ops.mean(self, dim, keepdim)

    def max(self, dim=None, keepdim=False):
        """The largest element (0-d), ``(values, indices)`` along ``dim``, or with a tensor
        argument the elementwise maximum (``torch.Tensor.max``'s three forms)."""
        if isinstance(dim, Tensor):
            return _ops.maximum(self, dim)
        return _ops.extremum(self, dim, keepdim, largest=True)

    def min(self, dim=None, keepdim=False):
        """The smallest element, or ``(values, indices)`` along ``dim``, or the elementwise
        minimum with a tensor (as :meth:`max`)."""
        if isinstance(dim, Tensor):
            return _ops.minimum(self, dim)
        return _ops.extremum(self, dim, keepdim, largest=False)

    def argmax(self, dim=None, keepdim=False):
        """Indices of the largest values along ``dim`` (of the flattened tensor when None)."""
        return _ops.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        """Indices of the smallest values along ``dim`` (of the flattened tensor when None)."""
        return _ops.argmin(self, dim, keepdim)

    # -- shapes ------------------------------------------------------------------------------
    def reshape(self, *shape):
        """The data in a new shape (one dim may be -1)."""
        return _ops.reshape(self, _shape_args(shape, "reshape"))

    def view(self, *shape):
        """The data in a new shape, on the tape (as ``reshape``: NumPy views the data
        where the layout allows and copies otherwise)."""
        return _ops.reshape(self, _shape_args(shape, "view"))

    def view_as(self, other):
        """``view(other.shape)``."""
        return _ops.reshape(self, tuple(other.shape))

    def reshape_as(self, other):
        """``reshape(other.shape)``."""
        return _ops.reshape(self, tuple(other.shape))

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge dims start_dim..end_dim into one (all of them by default)."""
        return _ops.flatten(self, start_dim, end_dim)

    def unsqueeze(self, dim):
        """A new dim of length 1 at ``dim``."""
        return _ops.unsqueeze(self, dim)

    def squeeze(self, dim=None):
        """Drop the dims of length 1 (all, or those among ``dim``)."""
        return _ops.squeeze(self, dim)

    def transpose(self, dim0, dim1):
        """Swap two dims (PyTorch's semantics, not NumPy's permutation)."""
        axes = list(range(self.data.ndim))
        try:
            axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        except IndexError:
            raise ValueError(f"transpose: dims ({dim0}, {dim1}) are out of range for shape "
                             f"{self.shape}") from None
        return _ops.transpose(self, axes)

    def t(self):
        """The transpose of a 2-D tensor; 0-D and 1-D tensors are returned as they are."""
        if self.data.ndim > 2:
            raise ValueError(f"t() expects a tensor with <= 2 dimensions, got shape {self.shape}")
        return self if self.data.ndim < 2 else _ops.transpose(self, (1, 0))

    def permute(self, *dims):
        """Reorder the dims: ``permute(2, 0, 1)`` or ``permute((2, 0, 1))``."""
        return _ops.transpose(self, _shape_args(dims, "permute"))

    @property
    def T(self):
        """The dims in reverse order."""
        return _ops.transpose(self, None)

    def clone(self):
        """A copy that owns its data; gradients flow through it."""
        return _ops.clone(self)

    def contiguous(self):
        """self if its data is C-contiguous, otherwise a contiguous copy on the tape."""
        return self if self.data.flags.c_contiguous else _ops.clone(self)

    # -- dtype and device --------------------------------------------------------------------
    def to(self, *args, **kwargs):
        """This tensor in another dtype: ``to(dtype)``, ``to(device)``, ``to(device, dtype)``,
        ``to(other)`` or keywords ``device=``, ``dtype=``, ``copy=`` (PyTorch's forms).

        The device can only be the CPU.  Returns self when nothing changes (unless
        ``copy=True``); a floating-point conversion stays on the tape.

        Raises
        ------
        ValueError
            For a device other than the CPU.
        TypeError
            For an unsupported dtype or argument.
        """
        dtype, copy = to_args(args, kwargs, "Tensor")
        if dtype is None:
            return _ops.clone(self) if copy else self
        return _ops.to_dtype(self, dtype, copy)

    def type_as(self, other):
        """This tensor in ``other``'s dtype."""
        return _ops.to_dtype(self, other.dtype)

    def float(self): return _ops.to_dtype(self, _DTYPES["float32"])
    def double(self): return _ops.to_dtype(self, _DTYPES["float64"])
    def half(self): return _ops.to_dtype(self, _DTYPES["float16"])
    def long(self): return _ops.to_dtype(self, _DTYPES["int64"])
    def int(self): return _ops.to_dtype(self, _DTYPES["int32"])
    def bool(self): return _ops.to_dtype(self, _DTYPES["bool"])

    def cpu(self):
        """self: the data is already on the CPU."""
        return self

    def cuda(self, device=None, non_blocking=False):
        """Refused: fastbn runs on the CPU only."""
        check_device("cuda" if device is None else device)

    # -- in place (outside the tape) ---------------------------------------------------------
    def _check_in_place(self, op):
        if self._op is not None or (self.requires_grad and is_grad_enabled()):
            raise RuntimeError(f"{op}: a tensor that requires grad or is part of a graph "
                               "cannot be modified in place (wrap it in fastbn.no_grad(), or "
                               "modify a detach()ed copy)")

    def zero_(self):
        """Set every element to 0 in place; returns self."""
        return self.fill_(0)

    def fill_(self, value):
        """Set every element to ``value`` in place; returns self."""
        self._check_in_place("fill_")
        self.data[...] = value.item() if isinstance(value, Tensor) else value
        return self


for _name in ("float", "double", "half", "long", "int", "bool"):
    getattr(_TensorMethods, _name).__doc__ = (
        f"This tensor as {_name} (``to(fastbn.{_name})``): self when it already is.")

for _name, _member in vars(_TensorMethods).items():
    if _name not in ("__module__", "__qualname__", "__doc__", "__dict__", "__weakref__"):
        setattr(Tensor, _name, _member)
del _name, _member
