"""PyTorch's dtype and device names: ``fastbn.float32``, ``fastbn.long``, ``fastbn.device``.

A fastbn dtype is a NumPy dtype (``fastbn.float32 is numpy.dtype('float32')``), so
``tensor.dtype == fastbn.float32`` and ``tensor.dtype is fastbn.float32`` both hold as in
PyTorch.  fastbn runs on the CPU only: ``device('cpu')`` is the one device, and any other
device type is refused with an error that says so.
"""
import builtins
import numbers

import numpy as np

_DTYPES = {
    "float32": np.dtype(np.float32), "float": np.dtype(np.float32),
    "float64": np.dtype(np.float64), "double": np.dtype(np.float64),
    "float16": np.dtype(np.float16), "half": np.dtype(np.float16),
    "int8": np.dtype(np.int8), "uint8": np.dtype(np.uint8),
    "int16": np.dtype(np.int16), "short": np.dtype(np.int16),
    "int32": np.dtype(np.int32), "int": np.dtype(np.int32),
    "int64": np.dtype(np.int64), "long": np.dtype(np.int64),
    "bool": np.dtype(np.bool_),
}
# PyTorch's names, `float`, `int` and `bool` among them: below, the builtins are spelt
# builtins.bool etc.
globals().update(_DTYPES)

__all__ = ["device", "is_dtype"] + list(_DTYPES)

_SUPPORTED = frozenset(_DTYPES.values())


def is_dtype(value):
    """Whether ``value`` names a dtype fastbn tensors can hold.

    Parameters
    ----------
    value : object
        A NumPy dtype or scalar type (``fastbn.float32``, ``numpy.int64``, ...).

    Returns
    -------
    bool
    """
    if isinstance(value, np.dtype):
        return value in _SUPPORTED
    return isinstance(value, type) and issubclass(value, np.generic) and \
        np.dtype(value) in _SUPPORTED


def as_dtype(value, name="dtype"):
    """``value`` as a supported NumPy dtype; None stays None.  TypeError names ``name``."""
    if value is None:
        return None
    if is_dtype(value):
        return np.dtype(value)
    if isinstance(value, str) and value in _DTYPES:
        return _DTYPES[value]
    raise TypeError(f"{name} must be a dtype such as fastbn.float32, fastbn.float64 or "
                    f"fastbn.long, got {value!r}")


class device:
    """Where a tensor lives: always the CPU in fastbn (``torch.device``'s interface).

    Parameters
    ----------
    type : str or device
        ``'cpu'``, ``'cpu:0'`` or a device.  Any other type (``'cuda'``, ``'mps'``)
        raises ValueError: fastbn has no accelerator.
    index : int, optional
        The device index; only 0 exists.

    Raises
    ------
    ValueError
        For a device other than the CPU.
    TypeError
        When ``type`` is neither a string nor a device.
    """
    __slots__ = ("type", "index")

    def __init__(self, type, index=None):
        if isinstance(type, device):
            if index is not None:
                raise TypeError("device(): an index cannot be given with a device")
            index = type.index
            type = type.type
        if not isinstance(type, str):
            raise TypeError(f"device must be a string such as 'cpu' or a fastbn.device, "
                            f"got {type!r}")
        kind, sep, number = type.partition(":")
        if sep:
            if index is not None:
                raise ValueError(f"device(): index given twice ({type!r} and {index!r})")
            if not number.isdigit():
                raise ValueError(f"invalid device string {type!r}")
            index = builtins.int(number)
        if kind != "cpu":
            raise ValueError(f"fastbn runs on the CPU only: device {type!r} is not available "
                             "(use 'cpu')")
        if index is not None and (isinstance(index, builtins.bool) or not isinstance(index, numbers.Integral)
                                  or index != 0):
            raise ValueError(f"fastbn has one CPU device, index 0; got index {index!r}")
        object.__setattr__(self, "type", "cpu")
        object.__setattr__(self, "index", None if index is None else 0)

    def __setattr__(self, name, value):
        raise AttributeError("a device is immutable")

    def __eq__(self, other):
        return isinstance(other, device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None else f"{self.type}:{self.index}"

    def __repr__(self):
        index = "" if self.index is None else f", index={self.index}"
        return f"device(type={self.type!r}{index})"

    def __reduce__(self):
        return (device, (self.type, self.index))


CPU = device("cpu")


def check_device(value, name="device"):
    """None, or ``value`` as a device (which is the CPU: anything else raises)."""
    if value is None or isinstance(value, device):
        return value
    if isinstance(value, (str, numbers.Integral)) and not isinstance(value, builtins.bool):
        if isinstance(value, numbers.Integral):     # torch: an int is an accelerator index
            raise ValueError(f"fastbn runs on the CPU only: {name} {value!r} names an "
                             "accelerator (use 'cpu')")
        return device(value)
    raise TypeError(f"{name} must be 'cpu' or a fastbn.device, got {value!r}")


def to_args(args, kwargs, what):
    """The dtype (or None) asked for by ``.to(*args, **kwargs)`` as PyTorch reads them:
    ``to(dtype)``, ``to(device, dtype)``, ``to(tensor)``, ``to(device=..., dtype=...)``,
    plus ``non_blocking`` and ``copy``.  Returns ``(dtype, copy)``."""
    kwargs = dict(kwargs)
    unknown = set(kwargs) - {"device", "dtype", "non_blocking", "copy", "memory_format"}
    if unknown:
        raise TypeError(f"{what}.to() got unexpected keyword arguments {sorted(unknown)}")
    if len(args) > 2:
        raise TypeError(f"{what}.to() takes at most 2 positional arguments, got {len(args)}")
    dtype = None
    for i, arg in enumerate(args):
        if isinstance(arg, (str, device)) or (isinstance(arg, numbers.Integral)
                                               and not isinstance(arg, builtins.bool)):
            if i != 0 or "device" in kwargs:
                raise TypeError(f"{what}.to(): the device must come first and only once")
            check_device(arg)
        elif (hasattr(arg, "dtype") and hasattr(arg, "shape")
              and not isinstance(arg, (np.dtype, type))):     # a tensor or an array
            if len(args) != 1:
                raise TypeError(f"{what}.to(tensor) takes no other positional argument")
            dtype = as_dtype(arg.dtype)
        else:
            if i != len(args) - 1 or "dtype" in kwargs:
                raise TypeError(f"{what}.to(): the dtype must come last and only once, got "
                                f"{arg!r}")
            dtype = as_dtype(arg)
    check_device(kwargs.get("device"))
    if kwargs.get("dtype") is not None:
        dtype = as_dtype(kwargs["dtype"])
    return dtype, builtins.bool(kwargs.get("copy", False))
