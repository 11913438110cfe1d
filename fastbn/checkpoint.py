"""Checkpoints: nested dicts of NumPy arrays and JSON values in one .npz file.

The file is a NumPy zip archive: the arrays, plus ``__header__``, a JSON document (as
uint8) holding the structure with ``{"__array__": name}`` placeholders.  Loading uses
``allow_pickle=False`` and ``json``, so a checkpoint can never run code.  Writes go to a
temporary file in the same directory, then ``os.replace``: a crash leaves the old file.
"""
import io
import json
import os
import zipfile

import numpy as np

from ._io import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "save", "load"]

FORMAT = "fastbn-checkpoint"
VERSION = 1
_HEADER = "__header__"


class CheckpointError(ValueError):
    """A file that is not a readable fastbn checkpoint, or one that does not fit."""


def _encode(obj, arrays):
    """obj with arrays replaced by placeholders; tuples and dicts with non-str keys tagged
    so that they come back as they were."""
    if isinstance(obj, np.ndarray):
        name = f"a{len(arrays)}"
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, arrays) for k, v in obj.items()}
        if not all(isinstance(k, (str, int)) for k in obj):
            raise TypeError(f"checkpoint dict keys must be str or int, got {list(obj)}")
        return {"__items__": [[k, _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, list):
        return [_encode(v, arrays) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store a {type(obj).__name__} in a checkpoint "
                    "(arrays, numbers, strings, lists, tuples and dicts only)")


def _decode(obj, arrays):
    if isinstance(obj, list):
        return [_decode(v, arrays) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__array__" in obj:
        return arrays[obj["__array__"]]
    if "__tuple__" in obj:
        return tuple(_decode(v, arrays) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, arrays) for k, v in obj["__items__"]}
    return {k: _decode(v, arrays) for k, v in obj.items()}


def save_checkpoint(path, state):
    """Write a dict of arrays, numbers, strings, lists, tuples and dicts to path atomically."""
    arrays = {}
    header = {"format": FORMAT, "version": VERSION, "state": _encode(state, arrays)}
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def load_checkpoint(path):
    """The dict saved by :func:`save_checkpoint`; CheckpointError if path is not one."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        header = json.loads(arrays.pop(_HEADER).tobytes().decode())
        if header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a fastbn checkpoint")
        if header.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {header.get('version')} is not "
                                  f"supported (this fastbn reads version {VERSION})")
        return _decode(header["state"], arrays)
    except CheckpointError:
        raise
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, AttributeError,
            UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable fastbn checkpoint (corrupt or "
                              f"truncated?): {type(exc).__name__}: {exc}") from None


def save(path, model, optimizer=None, scheduler=None, epoch=0, **extra):
    """Save a training run: the model's (and optimizer's, scheduler's) state_dict, the
    epoch, the global RNG state, and any extra JSON-able values."""
    from . import random

    state = {"model": model.state_dict(), "epoch": int(epoch), "rng": random.get_rng_state(),
             "extra": extra}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    if scheduler is not None:
        state["scheduler"] = scheduler.state_dict()
    save_checkpoint(path, state)


def load(path, model, optimizer=None, scheduler=None):
    """Restore what :func:`save` wrote into model (strictly), optimizer, scheduler and the
    global RNG; returns the checkpoint dict (``epoch``, ``extra``, ...)."""
    from . import random

    state = load_checkpoint(path)
    wanted = ["model", "epoch", "rng"] + [name for name, obj in
                                          (("optimizer", optimizer), ("scheduler", scheduler))
                                          if obj is not None]
    missing = [k for k in wanted if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint has no {', '.join(missing)} state")
    try:
        model.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        random.set_rng_state(state["rng"])
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint does not match: {exc}") from None
    return state
