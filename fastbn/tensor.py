"""Tensor: the tape's array (``fastbn.autograd``) with its arithmetic and shape
methods, each one an op of ``fastbn._ops``.

The methods are defined in ``_TensorMethods`` below and installed on the
Tensor class when this module is imported (``import fastbn`` does), so that
the tape imports no op and the ops import no Tensor method: every module
imports only the ones below it.
"""
from . import _ops
from .autograd import (Function, Tensor, enable_grad, is_grad_enabled, no_grad, tensor,
                       zero_grads)

__all__ = ["Tensor", "tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled",
           "zero_grads"]


class _TensorMethods:
    """Tensor's operators and op methods (installed on Tensor below)."""

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
    def __getitem__(self, index): return _ops.getitem(self, index)

    def sum(self, axis=None, keepdims=False): return _ops.sum(self, axis, keepdims)
    def mean(self, axis=None, keepdims=False): return _ops.mean(self, axis, keepdims)
    def exp(self): return _ops.exp(self)
    def log(self): return _ops.log(self)
    def relu(self): return _ops.relu(self)
    def sigmoid(self): return _ops.sigmoid(self)
    def tanh(self): return _ops.tanh(self)

    def reshape(self, *shape):
        return _ops.reshape(self, shape[0] if len(shape) == 1 else shape)

    def view(self, *shape):
        return self.reshape(*shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return _ops.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        """Swap two dims (PyTorch's semantics, not NumPy's permutation)."""
        axes = list(range(self.data.ndim))
        try:
            axes[dim0], axes[dim1] = axes[dim1], axes[dim0]
        except IndexError:
            raise ValueError(f"transpose: dims ({dim0}, {dim1}) are out of range for shape "
                             f"{self.shape}") from None
        return _ops.transpose(self, axes)

    def permute(self, *dims):
        """Reorder the dims: ``permute(2, 0, 1)`` or ``permute((2, 0, 1))``."""
        if len(dims) == 1 and not isinstance(dims[0], int):
            dims = tuple(dims[0])
        return _ops.transpose(self, dims)

    @property
    def T(self):
        """The dims in reverse order."""
        return _ops.transpose(self, None)


for _name, _member in vars(_TensorMethods).items():
    if _name not in ("__module__", "__qualname__", "__doc__", "__dict__", "__weakref__"):
        setattr(Tensor, _name, _member)
del _name, _member
