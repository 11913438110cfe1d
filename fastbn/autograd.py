"""The reverse-mode tape: Tensor's storage and graph, Function, grad modes.

This is the bottom of the autodiff stack: it imports no op.  The ops
(``fastbn._ops``) build on it, and ``fastbn.tensor`` gives Tensor its
arithmetic and shape methods in terms of those ops, so that every module
imports only the ones below it.

A Tensor wraps a NumPy array.  An op (a ``Function`` subclass in
``fastbn._ops``) computes its output with NumPy or the kernels and,
when grad mode is on and an input requires grad, the output Tensor becomes a
node of the graph: it keeps the op, its input Tensors, the buffers the op's
backward needs, and a sequence number.  Creation order is a topological order
(a Wengert list), so ``backward`` collects the nodes reachable from the root
and runs them by decreasing sequence number, once.

An op is one class with two static methods::

    forward(*arrays, **params) -> (out, saved)
    backward(saved, grad_out, inputs) -> one gradient (ndarray or None) per input

``inputs`` are the input Tensors, so a backward can skip gradients no input
needs (``inputs[i].requires_grad``).  A backward must not modify ``grad_out``
in place.  Gradients whose shape or dtype differ from their input's (NumPy
broadcasting, mixed precision) are summed and cast back by the tape itself, in
``_fit``: no op undoes broadcasting on its own.
"""
import itertools
import operator
import threading

import numpy as np

from ._types import CPU, as_dtype, check_device, is_dtype

__all__ = ["Tensor", "tensor", "Function", "no_grad", "enable_grad", "is_grad_enabled"]


class _GradMode(threading.local):
    enabled = True          # class default: every new thread starts with grad on


_mode = _GradMode()
_seq = itertools.count()    # next() on a count is atomic under the GIL
_leaf_lock = threading.Lock()


def is_grad_enabled():
    """Whether ops on this thread record on the tape."""
    return _mode.enabled


class _SetGradMode:
    """Context manager (and decorator) that sets this thread's grad mode."""
    _enabled = None

    def __enter__(self):
        self._previous = _mode.enabled
        _mode.enabled = self._enabled

    def __exit__(self, *exc):
        _mode.enabled = self._previous

    def __call__(self, func):
        import functools

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            with type(self)():
                return func(*args, **kwargs)
        return wrapper


class no_grad(_SetGradMode):
    """``with fastbn.no_grad():`` ops on this thread record nothing (``torch.no_grad``).

    They keep no backward state either.  Also usable as a function decorator."""
    _enabled = False


class enable_grad(_SetGradMode):
    """Turn recording back on inside a ``no_grad`` block (this thread only)."""
    _enabled = True


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def _as_array(data, dtype):
    dtype = as_dtype(dtype)
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, np.ndarray):
        return data if dtype is None else data.astype(dtype, copy=False)
    if isinstance(data, np.generic):        # NumPy scalar: keeps its dtype
        return np.asarray(data, dtype=dtype)
    # Python numbers and (nested) lists: float32 unless told otherwise
    return np.asarray(data, dtype=np.float32 if dtype is None else dtype)


def zero_grads(tensors, set_to_none=True):
    """Drop each tensor's .grad (or zero it in place): what Module.zero_grad and
    Optimizer.zero_grad both do."""
    for t in tensors:
        if t.grad is None:
            continue
        if set_to_none:
            t.grad = None
        else:
            t.grad[...] = 0


class Tensor:
    """An ndarray plus what reverse-mode differentiation needs (``torch.Tensor``).

    ``Tensor(data, requires_grad=False, dtype=None)``.  Operations on tensors that
    require grad are recorded on the tape; ``backward()`` fills the leaves' ``.grad``.
    Methods and operators follow PyTorch (``fastbn.tensor`` binds them to the ops of
    :mod:`fastbn.nn.functional`).  Unlike ``torch.tensor``, a NumPy array is not copied.

    Parameters
    ----------
    data : array_like or Tensor
        Any shape.  NumPy arrays and NumPy scalars keep their dtype (arrays are not
        copied unless ``dtype`` converts them); Python numbers and (nested) lists
        become float32; a Tensor gives its array.
    requires_grad : bool, optional
        Make it a leaf whose gradient is computed (float32/float64 only).
    dtype : dtype, optional
        Convert ``data`` to it (``fastbn.float64``, ``numpy.int64``, ``'float32'``,
        ...).

    Attributes
    ----------
    data : numpy.ndarray
        The values.
    grad : numpy.ndarray or None
        The gradient after ``backward()``, of data's shape and dtype.
    requires_grad : bool
        Whether operations on it are recorded.

    Raises
    ------
    TypeError
        For ``requires_grad=True`` on a dtype other than float32/float64, or a dtype
        fastbn does not support.
    """
    __slots__ = ("data", "grad", "requires_grad", "_op", "_inputs", "_saved", "_seq", "_g",
                 "_g_own", "__weakref__")
    __array_priority__ = 1000   # ndarray (op) Tensor defers to Tensor's reflected operator

    def __init__(self, data, requires_grad=False, dtype=None):
        data = _as_array(data, dtype)
        if requires_grad and data.dtype not in _FLOATS:
            raise TypeError(f"only float32/float64 tensors can require grad, got dtype "
                            f"{data.dtype}")
        self.data = data
        self.grad = None
        self.requires_grad = bool(requires_grad)
        self._op = None
        self._inputs = None
        self._saved = None
        self._g = None

    # -- array-like ----------------------------------------------------------
    shape = property(lambda self: self.data.shape)
    dtype = property(lambda self: self.data.dtype)
    ndim = property(lambda self: self.data.ndim)

    def size(self, dim=None):
        """The shape, or one dim's length (PyTorch's spelling; ``numel()`` counts)."""
        return self.data.shape if dim is None else self.data.shape[dim]

    def numel(self):
        """The number of elements."""
        return self.data.size

    def dim(self):
        """The number of dimensions (``ndim``)."""
        return self.data.ndim

    device = property(lambda self: CPU, doc="Where the data lives: always the CPU.")
    is_cuda = property(lambda self: False, doc="False: fastbn runs on the CPU only.")

    def __len__(self):
        return len(self.data)

    def numpy(self):
        """The underlying array (shared, not copied), like ``torch.Tensor.numpy``.

        Raises
        ------
        RuntimeError
            If the tensor requires grad (as PyTorch: use ``detach().numpy()``).
        """
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on a Tensor that requires grad. Use "
                               "tensor.detach().numpy() instead.")
        return self.data

    def __array__(self, dtype=None, copy=None):
        if copy:
            return np.array(self.data, dtype=dtype, copy=True)
        return self.data if dtype is None else self.data.astype(dtype, copy=False)

    def item(self):
        """The value of a one-element tensor as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted to a "
                             f"Python scalar, got shape {self.shape}")
        return self.data.item()

    def detach(self):
        """A new leaf sharing this tensor's data, outside any graph."""
        return Tensor(self.data)

    def requires_grad_(self, requires_grad=True):
        """Set requires_grad in place and return self (PyTorch's spelling)."""
        if requires_grad and self.data.dtype not in _FLOATS:
            raise TypeError(f"only float32/float64 tensors can require grad, got dtype "
                            f"{self.data.dtype}")
        self.requires_grad = bool(requires_grad)
        return self

    @property
    def is_leaf(self):
        return self._op is None

    def __repr__(self):
        extra = ", requires_grad=True" if self.requires_grad else ""
        return f"tensor({np.array2string(self.data, separator=', ')}, dtype={self.dtype}{extra})"

    # -- the tape ------------------------------------------------------------
    def backward(self, grad=None, retain_graph=False):
        """Accumulate d(self)/d(leaf) into the ``.grad`` of every leaf that
        requires grad, walking the recorded ops in reverse, once.

        grad: the gradient flowing into self (default 1 for a one-element
        tensor).  Saved buffers are freed afterwards unless retain_graph=True.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no "
                               "graph (was it computed under no_grad, or from inputs that "
                               "do not require grad?)")
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward(): grad can be implied only for one-element "
                                   f"tensors; pass grad= for shape {self.shape}")
            grad = np.ones_like(self.data)
        else:
            grad = np.asarray(grad.data if isinstance(grad, Tensor) else grad)
            if grad.shape != self.shape:
                raise ValueError(f"backward(): grad has shape {grad.shape} but the tensor has "
                                 f"shape {self.shape}")
            grad = grad.astype(self.dtype, copy=False)
        nodes = _reachable(self)
        _accumulate(self, grad)
        for node in nodes:
            g = node._g
            node._g = None
            inputs = node._inputs
            if g is not None:
                op = node._op
                grads = op.backward(node._saved, g, inputs)
                for t, gi in zip(inputs, grads):
                    if gi is not None and t.requires_grad:
                        _accumulate(t, gi, op.fresh_grads)
            if not retain_graph:
                node._inputs = node._saved = None


def tensor(data, *, dtype=None, device=None, requires_grad=False):
    """A new tensor holding a copy of ``data``, with PyTorch's dtype inference.

    Parameters
    ----------
    data : array_like or Tensor
        Python numbers and (nested) lists, NumPy arrays, or a Tensor.  Arrays keep
        their dtype; Python floats become float32, ints int64 and bools bool, as
        ``torch.tensor`` infers them.
    dtype : dtype, optional
        The tensor's dtype (``fastbn.float32``, ``fastbn.long``, ...).
    device : str or device, optional
        ``'cpu'`` (fastbn has no other device).
    requires_grad : bool, optional
        Record operations on it for ``backward`` (float32/float64 only).

    Returns
    -------
    Tensor
        A leaf that owns its data.

    Raises
    ------
    TypeError
        For data that is not numeric or an unsupported dtype.
    """
    check_device(device)
    dtype = as_dtype(dtype)
    if isinstance(data, Tensor):
        data = data.data
    if isinstance(data, (np.ndarray, np.generic)):
        array = np.array(data, dtype=dtype)
    else:
        array = np.array(data)
        if dtype is None:
            kind = array.dtype.kind
            if kind not in "biuf":
                raise TypeError(f"tensor(): data must be numbers, lists of numbers or arrays, "
                                f"got {type(data).__name__} of NumPy dtype {array.dtype}")
            dtype = {"b": np.bool_, "f": np.float32}.get(kind, np.int64)
        array = array.astype(dtype, copy=False)
    if not is_dtype(array.dtype):
        raise TypeError(f"tensor(): unsupported dtype {array.dtype}")
    return Tensor(array, requires_grad)


def _reachable(root):
    """Recorded nodes reachable from root, in reverse creation order.  Raises
    before anything is touched if one was freed by an earlier backward."""
    nodes = []
    seen = {id(root)}
    stack = [root]
    while stack:
        t = stack.pop()
        if t._op is None:
            continue
        inputs = t._inputs
        if inputs is None:
            raise RuntimeError(
                "Trying to backward through the graph a second time: its saved buffers "
                "were freed by the first backward. Pass retain_graph=True to the first "
                "backward() to keep them.")
        nodes.append(t)
        for i in inputs:
            if i.requires_grad and id(i) not in seen:
                seen.add(id(i))
                stack.append(i)
    nodes.sort(key=_seq_key, reverse=True)
    return nodes


_seq_key = operator.attrgetter("_seq")


def _accumulate(t, g, fresh=False):
    """Add gradient g into tensor t: leaves keep it in .grad (the first write
    stores a copy, or g itself when it is fresh: made by the op's backward and
    held by nobody else; later writes add in place), nodes in ._g until their
    turn (added in place into whichever of the two is the tape's own)."""
    d = t.data
    if g.dtype is not d.dtype or g.shape != d.shape:   # builtin dtypes are singletons
        g = _fit(g, d)
    if t._op is None:
        _leaf_lock.acquire()    # leaves (parameters) may be shared by backwards on other threads
        try:
            if t.grad is None:
                # g has t's dtype (_fit); ops on 0-d arrays give NumPy scalars
                if type(g) is not np.ndarray:
                    g = np.array(g, dtype=d.dtype)
                elif not (fresh and g.flags.c_contiguous):
                    g = g.copy()
                t.grad = g
            else:
                t.grad += g
        finally:
            _leaf_lock.release()
    elif t._g is None:
        t._g = g
        t._g_own = fresh and type(g) is np.ndarray
    elif t._g_own:          # the tape's own array: add in place, not into a new one
        np.add(t._g, g, out=t._g)
    elif fresh and type(g) is np.ndarray:
        t._g = np.add(g, t._g, out=g)
        t._g_own = True
    else:
        t._g = t._g + g
        t._g_own = type(t._g) is np.ndarray


def _fit(g, like):
    """Undo broadcasting (sum over the axes NumPy broadcast) and cast to like's dtype."""
    if g.shape != like.shape:
        lead = g.ndim - like.ndim
        if lead < 0:
            raise RuntimeError(f"gradient of shape {g.shape} cannot flow into a tensor of "
                               f"shape {like.shape}")
        axes = tuple(range(lead)) + tuple(
            lead + i for i, n in enumerate(like.shape) if n == 1 and g.shape[lead + i] != 1)
        g = g.sum(axis=axes, keepdims=True) if axes else g
        if lead:
            g = g.reshape(g.shape[lead:])
        if g.shape != like.shape:
            raise RuntimeError(f"gradient of shape {g.shape} cannot flow into a tensor of "
                               f"shape {like.shape}")
    return np.asarray(g, dtype=like.dtype)


def _node(out, op, inputs, saved):
    """Wrap op's output array; record it on the tape when grad mode is on and an
    input requires grad.  ``inputs`` is the tuple of input Tensors."""
    t = _new(Tensor)
    t.data = out if type(out) is np.ndarray else np.asarray(out)
    t.grad = None
    t._g = None
    if _mode.enabled:
        for i in inputs:
            if i.requires_grad:
                t.requires_grad = True
                t._op = op
                t._inputs = inputs
                t._saved = saved
                t._seq = next(_seq)
                return t
    t.requires_grad = False
    t._op = t._inputs = t._saved = None
    return t


_new = object.__new__


class Function:
    """Base of the ops.  Subclasses define ``forward`` and ``backward`` (see the
    module docstring); ``apply(*tensors, **params)`` runs and records one.

    ``fresh_grads = True`` promises that every array backward returns was made
    by that call and is held by nothing else (no view of grad_out or of a saved
    buffer, no array returned twice): a leaf then keeps its first gradient
    without a copy (a layer's weight gradient: a copy per step).
    """
    fresh_grads = False

    @staticmethod
    def forward(*arrays, **params):
        raise NotImplementedError

    @staticmethod
    def backward(saved, grad_out, inputs):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        n = len(inputs)         # unrolled: this is on every op's path
        if n == 1:
            out, saved = cls.forward(inputs[0].data, **params)
        elif n == 2:
            out, saved = cls.forward(inputs[0].data, inputs[1].data, **params)
        else:
            out, saved = cls.forward(*[t.data for t in inputs], **params)
        return _node(out, cls, inputs, saved)

