"""Module, Parameter and the containers (Sequential, ModuleList, ModuleDict) every layer
and model builds on.

A Module keeps three ordered registries, filled by attribute assignment as in PyTorch:
parameters (``Parameter`` Tensors), buffers (NumPy arrays such as BatchNorm's running
statistics, or None) and child modules.
"""
import collections
import collections.abc
import numbers

import numpy as np

from .._types import as_dtype, check_device, to_args
from ..autograd import Tensor, zero_grads

__all__ = ["Parameter", "Module", "Sequential", "ModuleList", "ModuleDict", "Identity"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Parameter(Tensor):
    """A Tensor that a Module registers as a parameter (``torch.nn.Parameter``).

    Assigning one to a Module attribute registers it (``Module.parameters()``,
    ``state_dict()``).

    Parameters
    ----------
    data : array_like or Tensor
        Any shape, float32 or float64; a NumPy array keeps its dtype and is not copied,
        Python numbers and lists become float32.
    requires_grad : bool, optional
        Whether the tape records operations on it (True, unlike a plain Tensor).

    Raises
    ------
    TypeError
        For a dtype other than float32/float64.
    """

    def __init__(self, data, requires_grad=True):
        super().__init__(data, requires_grad=requires_grad)
        if self.data.dtype not in _FLOATS:
            raise TypeError(f"a Parameter must be float32 or float64, got {self.data.dtype}")

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()


def _as_numpy(value):
    """A state_dict value as an ndarray: NumPy arrays, fastbn Tensors, torch tensors."""
    if hasattr(value, "detach") and not isinstance(value, Tensor):  # torch.Tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _check_dtype(dtype):
    dtype = as_dtype(dtype)
    if dtype not in _FLOATS:
        raise TypeError(f"modules support float32 and float64, got {dtype}")
    return dtype


def factory_dtype(device, dtype):
    """The dtype of a layer built with PyTorch's factory keywords ``device=`` (the CPU
    only) and ``dtype=`` (float32 when None)."""
    check_device(device)
    return np.dtype(np.float32) if dtype is None else _check_dtype(dtype)


def _check_buffer(name, value):
    if value is not None and not isinstance(value, np.ndarray):
        raise TypeError(f"buffer '{name}' must be a NumPy array or None, "
                        f"got {type(value).__name__}")


class Module:
    """Base class of layers and models (``torch.nn.Module``).

    Subclasses set attributes in ``__init__`` (after ``super().__init__()``) and define
    ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_path", "")
        object.__setattr__(self, "_forward_pre_hooks", {})
        object.__setattr__(self, "_forward_hooks", {})
        object.__setattr__(self, "training", True)

    # -- registration ------------------------------------------------------------------------
    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                 "assigning attributes")
        if isinstance(value, Parameter):
            target = self._parameters
        elif isinstance(value, Module):
            target = self._modules
            value._set_path(f"{self._path}.{name}" if self._path else name)
        elif name in self._buffers:
            _check_buffer(name, value)
            target = self._buffers
        elif value is None and name in self._parameters:
            target = self._parameters
        elif value is None and name in self._modules:
            target = self._modules
        else:
            target = self.__dict__
        for registry in (self._parameters, self._buffers, self._modules, self.__dict__):
            if registry is not target:
                registry.pop(name, None)
        target[name] = value  # an existing key keeps its place: module order is preserved

    def __getattr__(self, name):  # only called when normal lookup fails
        for registry in ("_parameters", "_buffers", "_modules"):
            entries = self.__dict__.get(registry)
            if entries is not None and name in entries:
                return entries[name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                del registry[name]
                return
        object.__delattr__(self, name)

    def _set_path(self, path):
        """Record the dotted name of this module (and its descendants) in the model, for
        error messages."""
        object.__setattr__(self, "_path", path)
        for name, child in self._modules.items():
            child._set_path(f"{path}.{name}")

    def register_buffer(self, name, array):
        """A named array saved in state_dict but not trained (None: declared, absent)."""
        _check_buffer(name, array)
        self._buffers[name] = None
        setattr(self, name, array)

    def register_parameter(self, name, param):
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"'{name}' must be a Parameter or None, got {type(param).__name__}")
        self._parameters[name] = None
        setattr(self, name, param)

    def add_module(self, name, module):
        """Register ``module`` (or None) as the child ``name``, as attribute assignment does."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module")
        if not isinstance(name, str):
            raise TypeError(f"module name should be a string, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"module name can't be empty or contain '.', got {name!r}")
        if name not in self._modules and hasattr(self, name):
            raise KeyError(f"attribute {name!r} already exists")
        setattr(self, name, module)

    # -- traversal ---------------------------------------------------------------------------
    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_children(self):
        return ((n, m) for n, m in self._modules.items() if m is not None)

    def children(self):
        return (m for _, m in self.named_children())

    def _named_members(self, registry, recurse):
        seen = set()
        modules = self.named_modules() if recurse else [("", self)]
        for prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                seen.add(id(value))
                yield (f"{prefix}.{name}" if prefix else name), value

    def named_parameters(self, recurse=True):
        return self._named_members("_parameters", recurse)

    def parameters(self, recurse=True):
        return (p for _, p in self.named_parameters(recurse))

    def named_buffers(self, recurse=True):
        return self._named_members("_buffers", recurse)

    def buffers(self, recurse=True):
        return (b for _, b in self.named_buffers(recurse))

    # -- modes and gradients -----------------------------------------------------------------
    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        zero_grads(self.parameters(), set_to_none)

    def requires_grad_(self, requires_grad=True):
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    # -- state -------------------------------------------------------------------------------
    def _state_items(self):
        """(key, live array) for every parameter and buffer, PyTorch's order and names."""
        for prefix, module in self.named_modules():
            dot = prefix + "." if prefix else ""
            for name, p in module._parameters.items():
                if p is not None:
                    yield dot + name, p.data
            for name, b in module._buffers.items():
                if b is not None:
                    yield dot + name, b

    def state_dict(self):
        """An ordered dict of copies of every parameter and buffer, under PyTorch's keys."""
        return collections.OrderedDict((k, v.copy()) for k, v in self._state_items())

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (NumPy, fastbn or torch tensors) into the parameters and buffers in
        place, cast to their dtype.  Everything is checked before anything is written.
        ``strict``: missing or unexpected keys are errors.  Returns
        ``(missing_keys, unexpected_keys)``."""
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        own = dict(self._state_items())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        errors = []
        if strict and unexpected:
            errors.append("unexpected key(s) " + ", ".join(map(repr, unexpected)))
        if strict and missing:
            errors.append("missing key(s) " + ", ".join(map(repr, missing)))
        updates = []
        for key, target in own.items():
            if key not in state_dict:
                continue
            value = _as_numpy(state_dict[key])
            if value.shape != target.shape:
                errors.append(f"size mismatch for {key!r}: the state_dict has shape "
                              f"{value.shape}, the model has {target.shape}")
            elif not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
                errors.append(f"{key!r} has non-numeric dtype {value.dtype}")
            else:
                updates.append((target, value))
        if errors:
            raise ValueError(f"error(s) loading state_dict into {type(self).__name__}: "
                             + "; ".join(errors))
        for target, value in updates:
            target[...] = value
        return _IncompatibleKeys(missing, unexpected)

    def to(self, *args, **kwargs):
        """Convert floating parameters (and their grads) and buffers to a dtype, in place;
        returns self.  PyTorch's forms: ``to(dtype)``, ``to(device)``,
        ``to(device, dtype)``, ``to(tensor)``, ``to(device=..., dtype=...)``.

        Raises
        ------
        ValueError
            For a device other than the CPU (fastbn runs on the CPU only).
        TypeError
            For a dtype other than float32 or float64.
        """
        dtype, _ = to_args(args, kwargs, type(self).__name__)
        if dtype is None:
            return self
        dtype = _check_dtype(dtype)
        for module in self.modules():
            for p in module._parameters.values():
                if p is not None:
                    p.data = p.data.astype(dtype, copy=False)
                    if p.grad is not None:
                        p.grad = p.grad.astype(dtype, copy=False)
            for name, b in module._buffers.items():
                if b is not None and b.dtype in _FLOATS:
                    module._buffers[name] = b.astype(dtype, copy=False)
        return self

    def cpu(self):
        """self: fastbn modules live on the CPU."""
        return self

    def cuda(self, device=None):
        """Refused: fastbn runs on the CPU only."""
        check_device("cuda" if device is None else device)

    def apply(self, fn):
        """Call ``fn(module)`` on every submodule, children first, then on self (as
        PyTorch's, e.g. ``model.apply(init_weights)``); returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def float(self):
        return self.to(np.float32)

    def double(self):
        return self.to(np.float64)

    # -- calling and printing ----------------------------------------------------------------
    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    def register_forward_pre_hook(self, hook):
        """Call ``hook(module, args)`` before every forward, as PyTorch: a return value
        other than None replaces the positional arguments (a tuple, or one argument).

        Parameters
        ----------
        hook : callable

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        return RemovableHandle(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook):
        """Call ``hook(module, args, output)`` after every forward, as PyTorch: a return
        value other than None replaces the output.

        Parameters
        ----------
        hook : callable

        Returns
        -------
        RemovableHandle
            ``handle.remove()`` unregisters the hook.
        """
        return RemovableHandle(self._forward_hooks, hook)

    def __call__(self, *args, **kwargs):
        if not (self._forward_pre_hooks or self._forward_hooks):  # every layer's path
            return self.forward(*args, **kwargs)
        for hook in list(self._forward_pre_hooks.values()):
            result = hook(self, args)
            if result is not None:
                args = result if isinstance(result, tuple) else (result,)
        output = self.forward(*args, **kwargs)
        for hook in list(self._forward_hooks.values()):
            result = hook(self, args, output)
            if result is not None:
                output = result
        return output

    def _layer_name(self):
        """How errors name this module: its dotted path in the model, and its class."""
        return f"layer '{self._path}' ({type(self).__name__})" if self._path else type(self).__name__

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(child).replace("\n", "\n  ")
                 for name, child in self.named_children()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"


class RemovableHandle:
    """What ``register_forward_pre_hook`` / ``register_forward_hook`` return:
    ``remove()`` unregisters the hook (a second call does nothing)."""
    _next_id = 0

    def __init__(self, hooks, hook):
        if not callable(hook):
            raise TypeError(f"a hook must be callable, got {type(hook).__name__}")
        self.hooks_dict_ref = hooks
        self.id = RemovableHandle._next_id
        RemovableHandle._next_id += 1
        hooks[self.id] = hook

    def remove(self):
        self.hooks_dict_ref.pop(self.id, None)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


class Sequential(Module):
    """Modules applied in order, each to the previous one's output (``torch.nn.Sequential``).

    ``Sequential(a, b)`` registers the children as ``'0'``, ``'1'``, ...;
    ``Sequential(OrderedDict([('conv', a), ('bn', b)]))`` under the given names (the
    state_dict keys follow, e.g. ``'0.weight'`` or ``'conv.weight'``).

    Parameters
    ----------
    *modules : Module or collections.OrderedDict
        The modules in order, or one OrderedDict of names to modules.

    Raises
    ------
    TypeError
        For a child that is not a Module (or None), or a name that is not a string.
    KeyError
        For a name that is empty, contains '.' or shadows an attribute.

    Notes
    -----
    Shape:

    - Input: what the first module takes.
    - Output: what the last module returns (the input itself when empty).
    """

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], collections.OrderedDict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for i, module in enumerate(modules):
                self.add_module(str(i), module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        if isinstance(index, slice):
            return Sequential(collections.OrderedDict(list(self._modules.items())[index]))
        if isinstance(index, numbers.Integral):
            items = list(self._modules.values())
            if not -len(items) <= index < len(items):
                raise IndexError(f"index {index} is out of range for a Sequential of "
                                 f"{len(items)} modules")
            return items[index]
        raise TypeError(f"Sequential indices must be integers or slices, got {type(index).__name__}")

    def append(self, module):
        self.add_module(str(len(self)), module)
        return self

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input


class ModuleList(Module):
    """Modules held in a list, registered as children ``'0'``, ``'1'``, ... (``nn.ModuleList``).

    Their parameters are the list's.  It has no forward: the module that owns it
    decides how to call them.

    Parameters
    ----------
    modules : iterable of Module, optional
        The initial modules.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _index(self, idx):
        if isinstance(idx, bool) or not isinstance(idx, numbers.Integral):
            raise TypeError(f"ModuleList indices must be integers or slices, got "
                            f"{type(idx).__name__}")
        n = len(self._modules)
        if not -n <= idx < n:
            raise IndexError(f"index {idx} is out of range for a ModuleList of {n} modules")
        return str(int(idx) % n)

    def _renumber(self, modules):
        self._modules.clear()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return type(self)(list(self._modules.values())[idx])
        return self._modules[self._index(idx)]

    def __setitem__(self, idx, module):
        self.add_module(self._index(idx), module)

    def __delitem__(self, idx):
        modules = list(self._modules.values())
        if isinstance(idx, slice):
            del modules[idx]
        else:
            del modules[int(self._index(idx))]
        self._renumber(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return type(self)(list(self) + list(other))

    def append(self, module):
        """Add a module at the end; returns self."""
        self.add_module(str(len(self)), module)
        return self

    def extend(self, modules):
        """Append every module of an iterable; returns self."""
        if not isinstance(modules, collections.abc.Iterable):
            raise TypeError(f"ModuleList.extend takes an iterable of modules, got a "
                            f"{type(modules).__name__}")
        for m in list(modules):
            self.append(m)
        return self

    def insert(self, index, module):
        """Insert a module before ``index``."""
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)

    def pop(self, idx=-1):
        """Remove and return the module at ``idx``."""
        module = self[idx]
        del self[idx]
        return module


class ModuleDict(Module):
    """Modules in an ordered dict, registered as children under their keys (``nn.ModuleDict``).

    It has no forward.

    Parameters
    ----------
    modules : mapping or iterable of (str, Module) pairs, optional
        The initial modules.
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key):
        try:
            return self._modules[key]
        except KeyError:
            raise KeyError(f"ModuleDict has no module {key!r}") from None

    def __setitem__(self, key, module):
        self.add_module(key, module)

    def __delitem__(self, key):
        self[key]       # the KeyError naming the key
        del self._modules[key]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        """The keys, in insertion order."""
        return self._modules.keys()

    def items(self):
        """(key, module) pairs, in insertion order."""
        return self._modules.items()

    def values(self):
        """The modules, in insertion order."""
        return self._modules.values()

    def clear(self):
        """Remove every module."""
        self._modules.clear()

    def pop(self, key):
        """Remove and return the module under ``key``."""
        module = self[key]
        del self[key]
        return module

    def update(self, modules):
        """Add (or replace) modules from a mapping or an iterable of (key, module) pairs."""
        if isinstance(modules, (collections.abc.Mapping, ModuleDict)):
            pairs = list(modules.items())
        else:
            pairs = []
            for i, pair in enumerate(modules):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise TypeError(f"ModuleDict.update: element {i} should be a (key, module) "
                                    f"pair, got {pair!r}")
                pairs.append(tuple(pair))
        for key, module in pairs:
            self[key] = module


class Identity(Module):
    """Returns its input."""

    def forward(self, input):
        return input
