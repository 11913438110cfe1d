"""``fastbn.save`` and ``fastbn.load``: ``torch.save``/``torch.load`` for what training
scripts save (state dicts and nested containers of tensors, arrays and numbers).

Files are fastbn checkpoints (``fastbn.checkpoint.save_checkpoint``): a NumPy zip
archive with a JSON header, written atomically and read without pickle, so loading a
file can never run code.  Tensors come back as Tensors (with their ``requires_grad``),
arrays as arrays.
"""
import os

import numpy as np

from ._types import check_device
from .autograd import Tensor
from .checkpoint import load_checkpoint, save_checkpoint

__all__ = ["save", "load"]

_TENSOR = "__fastbn_tensor__"   # the tag of a Tensor in the stored structure


def _path(f, op):
    if not isinstance(f, (str, os.PathLike)):
        raise TypeError(f"{op}: f must be a file path (str or os.PathLike), got "
                        f"{type(f).__name__}; fastbn files are written atomically by path")
    return os.fspath(f)


def _pack(obj, seen):
    """obj with Tensors replaced by tagged dicts of their arrays; containers copied."""
    if isinstance(obj, Tensor):
        return {_TENSOR: obj.data, "requires_grad": obj.requires_grad}
    if callable(getattr(obj, "state_dict", None)):    # a model, optimizer or scheduler
        raise TypeError(f"save: fastbn files hold no code, so a {type(obj).__name__} cannot "
                        "be stored whole; save its state_dict() and restore it with "
                        "load_state_dict()")
    if isinstance(obj, (dict, list, tuple)):
        if id(obj) in seen:
            raise ValueError("save: the object contains itself (a reference cycle)")
        seen.add(id(obj))
        try:
            if isinstance(obj, dict):
                return {k: _pack(v, seen) for k, v in obj.items()}
            items = [_pack(v, seen) for v in obj]
            return tuple(items) if isinstance(obj, tuple) else items
        finally:
            seen.discard(id(obj))
    return obj


def _unpack(obj):
    if isinstance(obj, dict):
        if _TENSOR in obj and set(obj) == {_TENSOR, "requires_grad"}:
            data = obj[_TENSOR]
            if not isinstance(data, np.ndarray) or not isinstance(obj["requires_grad"], bool):
                raise ValueError(f"load: a stored tensor is malformed ({sorted(obj)})")
            return Tensor(data, requires_grad=obj["requires_grad"])
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_unpack(v) for v in obj)
    return obj


def save(obj, f):
    """Save ``obj`` to the file ``f``, atomically (``torch.save``'s signature).

    Parameters
    ----------
    obj : object
        A Tensor, array, number, string, None, or dicts (str or int keys), lists and
        tuples of them, nested: what ``model.state_dict()``, ``optimizer.state_dict()``
        and training scripts' checkpoint dicts hold.
    f : str or os.PathLike
        The file.  It is replaced only once the new one is complete.

    Raises
    ------
    TypeError
        For an object that cannot be stored (a Module, a function...) or a file object.
    """
    save_checkpoint(_path(f, "save"), _pack(obj, set()))


def load(f, map_location=None, *, weights_only=None):
    """The object :func:`save` stored in ``f`` (``torch.load``'s signature).

    Parameters
    ----------
    f : str or os.PathLike
        A file written by :func:`save` (or by fastbn's trainer).
    map_location : str or device, optional
        ``'cpu'`` or None: fastbn has no other device.
    weights_only : bool, optional
        Accepted for PyTorch's signature: fastbn files never hold code, so loading is
        always as safe as PyTorch's ``weights_only=True``.

    Returns
    -------
    object
        Tensors come back as Tensors, arrays as arrays, tuples as tuples.

    Raises
    ------
    fastbn.checkpoint.CheckpointError
        If the file is not a fastbn file (a ValueError).
    FileNotFoundError
        If there is no such file.
    """
    check_device(map_location, "map_location")
    return _unpack(load_checkpoint(_path(f, "load")))
