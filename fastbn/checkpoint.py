"""Checkpoints: nested dicts of NumPy arrays and JSON values in one .npz file.

The file is a NumPy zip archive, stored uncompressed: the arrays, plus ``__header__``, a
JSON document (as uint8) holding the structure with ``{"__array__": name}`` placeholders.
Reading never unpickles and never inflates: the sizes every member declares (in the zip
directory and in its .npy header) are checked against each other and against the file
before an array of that size is filled, block by block; the JSON's nesting and every
placeholder are checked.  A file that fails any check raises one CheckpointError naming
the file and what is wrong, and :func:`load` applies a checkpoint all or nothing.  Writes
go through :func:`fastbn._io.atomic_write`: a crash leaves the old file.
"""
import contextlib
import json
import math
import numbers
import os
import zipfile

import numpy as np

from ._io import atomic_write

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "save", "load", "restore"]

FORMAT = "fastbn-checkpoint"
VERSION = 1
_HEADER = "__header__"
_MAX_HEADER_BYTES = 64 << 20
_MAX_DEPTH = 64        # nesting of the stored structure (training states use 6)
_BLOCK = 1 << 20       # bytes read at a time into an array


class CheckpointError(ValueError):
    """A file that is not a readable fastbn checkpoint, or one that does not fit."""

    @classmethod
    def bad_field(cls, path, field, expected, value):
        """The error for a field of the checkpoint at path that is not what it must be."""
        return cls(f"{path}: field '{field}' must be {expected}, got {_shown(value)}")


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


_bad = CheckpointError.bad_field


def _field(parent, key):
    """How a message names parent's entry key: ``parent.key`` or ``parent[key]``."""
    if isinstance(key, str) and key.isidentifier():
        return f"{parent}.{key}"
    return f"{parent}[{key!r}]"


def _shown(value):
    """value as an error message shows it: short."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (dict, list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _decode(obj, arrays, path, field="state", depth=0):
    """The stored structure with placeholders resolved, checked as it goes."""
    if isinstance(obj, list):
        if depth >= _MAX_DEPTH:
            raise CheckpointError(f"{path}: field '{field}' is nested too deeply")
        return [v if not isinstance(v, (list, dict)) else
                _decode(v, arrays, path, f"{field}[{i}]", depth + 1) for i, v in enumerate(obj)]
    if not isinstance(obj, dict):
        return obj
    if depth >= _MAX_DEPTH:
        raise CheckpointError(f"{path}: field '{field}' is nested too deeply")
    if "__array__" in obj:
        name = obj["__array__"]
        if len(obj) != 1 or not isinstance(name, str) or name not in arrays:
            raise _bad(path, field, "a stored array", obj)
        return arrays[name]
    if "__tuple__" in obj:
        if len(obj) != 1 or not isinstance(obj["__tuple__"], list):
            raise _bad(path, field, "a tuple", obj)
        return tuple(_decode(obj["__tuple__"], arrays, path, field, depth + 1))
    if "__items__" in obj:
        items = obj["__items__"]
        if (len(obj) != 1 or not isinstance(items, list) or not all(
                isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int))
                and not isinstance(kv[0], bool) for kv in items)):
            raise _bad(path, field, "a list of [key, value] pairs", obj)
        return {k: _decode(v, arrays, path, _field(field, k), depth + 1) for k, v in items}
    return {k: _decode(v, arrays, path, _field(field, k), depth + 1) for k, v in obj.items()}


def save_checkpoint(path, state):
    """Write a dict of arrays, numbers, strings, lists, tuples and dicts to path atomically.

    Parameters
    ----------
    path : str or os.PathLike
        The file (a symlink is written through; a read-only file is refused).
    state : dict
        Arrays (numeric or bool dtype), numbers, strings, None, and lists, tuples and
        dicts (str or int keys) of them.

    Raises
    ------
    TypeError
        state holds something else; path is then left as it was.
    OSError
        path cannot be written (see :func:`fastbn._io.atomic_write`).
    """
    arrays = {}
    header = {"format": FORMAT, "version": VERSION, "state": _encode(state, arrays)}
    for name, array in arrays.items():
        if array.dtype.kind not in "biufc":
            raise TypeError(f"cannot store an array of dtype {array.dtype} in a checkpoint "
                            "(numbers and bools only)")
    arrays[_HEADER] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    with atomic_write(path) as f:
        np.savez(f, **arrays)


def _read_array(archive, info, path):
    """The .npy member info, its declared sizes checked before it is read."""
    where = f"{path}: member {info.filename!r}"
    with archive.open(info) as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise CheckpointError(f"{where}: .npy format version {version} is not supported")
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        if dtype.kind not in "biufc" or dtype.fields is not None:
            raise CheckpointError(f"{where}: arrays of dtype {dtype} are not loaded "
                                  "(numbers and bools only)")
        nbytes = math.prod(shape) * dtype.itemsize
        if f.tell() + nbytes != info.file_size:
            raise CheckpointError(f"{where}: its header declares {nbytes} bytes of data, the "
                                  f"archive {info.file_size - f.tell()}")
        array = np.empty(shape[::-1] if fortran else shape, dtype)
        buffer = memoryview(array.reshape(-1).view(np.uint8))
        for start in range(0, nbytes, _BLOCK):
            chunk = buffer[start:start + _BLOCK]
            if f.readinto(chunk) != len(chunk):
                raise CheckpointError(f"{where}: truncated")
        f.read(1)  # at the end: the CRC is checked
    return array.T if fortran else array


def _read_archive(f, path):
    """``(header dict, arrays)`` of the open checkpoint file f."""
    size = os.fstat(f.fileno()).st_size
    with zipfile.ZipFile(f) as archive:
        infos, total = {}, 0
        for info in archive.infolist():
            name = info.filename
            if not name.endswith(".npy"):
                raise CheckpointError(f"{path}: member {name!r} is not a NumPy array")
            if name[:-4] in infos:
                raise CheckpointError(f"{path}: member {name!r} appears twice")
            if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
                raise CheckpointError(f"{path}: member {name!r} is compressed or encrypted; "
                                      "fastbn checkpoints are stored as they are")
            total += info.compress_size
            if info.file_size != info.compress_size or total > size:
                raise CheckpointError(f"{path}: the archive declares more data than the "
                                      f"file's {size} bytes")
            infos[name[:-4]] = info
        if _HEADER not in infos:
            raise CheckpointError(f"{path}: not a fastbn checkpoint (no {_HEADER})")
        if infos[_HEADER].file_size > _MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: header of {infos[_HEADER].file_size} bytes, more "
                                  f"than the {_MAX_HEADER_BYTES} allowed")
        raw = _read_array(archive, infos.pop(_HEADER), path)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError(f"{path}: not a fastbn checkpoint (header is not text)")
        try:
            header = json.loads(raw.tobytes().decode("utf-8"))
        except RecursionError:
            raise CheckpointError(f"{path}: header is nested too deeply") from None
        except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError included
            raise CheckpointError(f"{path}: header is not valid JSON ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a fastbn checkpoint")
        if header.get("version") != VERSION:
            raise CheckpointError(f"{path}: checkpoint version {_shown(header.get('version'))} "
                                  f"is not supported (this fastbn reads version {VERSION})")
        arrays = {name: _read_array(archive, info, path) for name, info in infos.items()}
    return header, arrays


def load_checkpoint(path):
    """The dict saved by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    dict

    Raises
    ------
    FileNotFoundError
        No file at path.
    CheckpointError
        (a ValueError) path is not a fastbn checkpoint, or a corrupt, truncated or
        hostile one: the message names the file and what is wrong.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        try:
            header, arrays = _read_archive(f, path)
        except CheckpointError:
            raise
        except zipfile.BadZipFile as exc:
            f.seek(0)
            if f.read(4) != b"PK\x03\x04":
                raise CheckpointError(f"{path}: not a fastbn checkpoint") from None
            raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({exc})") from None
        except (ValueError, EOFError, NotImplementedError, OSError) as exc:
            raise CheckpointError(f"{path}: corrupt or truncated checkpoint "
                                  f"({type(exc).__name__}: {exc})") from None
    return _decode(header.get("state"), arrays, path)


def save(path, model, optimizer=None, scheduler=None, epoch=0, **extra):
    """Save a training run: the model's (and optimizer's, scheduler's) state_dict, the
    epoch, the global RNG state, and any extra values.

    Parameters
    ----------
    path : str or os.PathLike
    model : fastbn.nn.Module
    optimizer : fastbn.optim.Optimizer, optional
    scheduler : fastbn.optim.lr_scheduler.LRScheduler, optional
    epoch : int
    **extra
        Values :func:`save_checkpoint` can store, returned by :func:`load` under
        ``"extra"``.
    """
    from . import random

    state = {"model": model.state_dict(), "epoch": int(epoch), "rng": random.get_rng_state(),
             "extra": extra}
    for name, obj in (("optimizer", optimizer), ("scheduler", scheduler)):
        if obj is not None:
            state[name] = obj.state_dict()
            state[name + "_type"] = type(obj).__name__
    save_checkpoint(path, state)


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_like(saved, live, path, field):
    """saved has the kind of value live has (a number, a bool, a list of numbers...)."""
    if isinstance(live, (bool, str)):
        ok, what = type(saved) is type(live), f"a {type(live).__name__}"
    elif _is_number(live):
        ok, what = _is_number(saved) and saved == saved, "a number"  # NaN is none
    elif isinstance(live, (list, tuple)):
        ok = isinstance(saved, (list, tuple)) and len(saved) == len(live)
        what = f"a list of {len(live)}"
        if ok:
            for i, (s, v) in enumerate(zip(saved, live)):
                _check_like(s, v, path, f"{field}[{i}]")
    elif isinstance(live, np.ndarray):
        ok, what = isinstance(saved, np.ndarray), "an array"
    else:  # None (an option left unset) and anything else: the object's own checks
        return
    if not ok:
        raise _bad(path, field, what, saved)


def _check_optimizer(saved, live, path):
    """An optimizer state_dict against the live optimizer's: its groups' options of the
    same kinds, its per-parameter state arrays and numbers."""
    if not isinstance(saved, dict) or not isinstance(saved.get("state"), dict):
        raise _bad(path, "optimizer", "a dict with a 'state' dict", saved)
    groups = saved.get("param_groups")
    if not isinstance(groups, list) or len(groups) != len(live["param_groups"]):
        raise _bad(path, "optimizer.param_groups",
                   f"a list of {len(live['param_groups'])} parameter groups", groups)
    for i, (group, own) in enumerate(zip(groups, live["param_groups"])):
        field = f"optimizer.param_groups[{i}]"
        if not isinstance(group, dict):
            raise _bad(path, field, "a dict", group)
        params = group.get("params")
        if not isinstance(params, list) or not all(_is_int(p) for p in params):
            raise _bad(path, field + ".params", "a list of parameter indices", params)
        for key, value in own.items():
            if key != "params" and key in group:
                _check_like(group[key], value, path, _field(field, key))
    for key, entry in saved["state"].items():
        if not _is_int(key) or not isinstance(entry, dict) or not all(
                isinstance(v, np.ndarray) or _is_number(v) for v in entry.values()):
            raise _bad(path, _field("optimizer.state", key),
                       "a parameter index's dict of arrays and numbers", entry)


def _check_state(state, path, optimizer, scheduler):
    """Every field of a training state that will be used, checked against the objects it
    is loaded into (the objects' own load_state_dict checks names and shapes)."""
    if not isinstance(state, dict):
        raise _bad(path, "state", "a dict", state)
    parts = {"optimizer": optimizer, "scheduler": scheduler}
    missing = [k for k in ("model", "epoch", "rng", *(k for k, v in parts.items() if v))
               if k not in state]
    if missing:
        raise CheckpointError(f"{path}: checkpoint has no {', '.join(missing)} state")
    if not isinstance(state["model"], dict) or not all(
            isinstance(v, np.ndarray) for v in state["model"].values()):
        raise _bad(path, "model", "a dict of arrays", state["model"])
    if not _is_int(state["epoch"]) or state["epoch"] < 0:
        raise _bad(path, "epoch", "an int >= 0", state["epoch"])
    rng = state["rng"]
    if not (isinstance(rng, dict) and set(rng) == {"bit_generator", "state", "has_uint32",
                                                   "uinteger"}
            and isinstance(rng["bit_generator"], str) and rng["bit_generator"] == "PCG64"
            and isinstance(rng["state"], dict) and set(rng["state"]) == {"state", "inc"}
            and all(_is_int(v) and v >= 0 for v in rng["state"].values())
            and _is_int(rng["has_uint32"]) and 0 <= rng["has_uint32"] <= 1
            and _is_int(rng["uinteger"]) and rng["uinteger"] >= 0):
        raise _bad(path, "rng", "a PCG64 generator state", rng)
    for name, obj in parts.items():
        if obj is None:
            continue
        saved_type = state.get(name + "_type", type(obj).__name__)
        if not isinstance(saved_type, str):
            raise _bad(path, name + "_type", "a class name", saved_type)
        if saved_type != type(obj).__name__:
            raise CheckpointError(f"{path}: its {name} state is {saved_type}'s; this {name} "
                                  f"is {type(obj).__name__}")
    if optimizer is not None:
        _check_optimizer(state["optimizer"], optimizer.state_dict(), path)
    if scheduler is not None:
        saved = state["scheduler"]
        if not isinstance(saved, dict):
            raise _bad(path, "scheduler", "a dict", saved)
        for key, value in scheduler.state_dict().items():
            if key in saved:
                _check_like(saved[key], value, path, _field("scheduler", key))


def restore(state, model, optimizer=None, scheduler=None, *, path="checkpoint"):
    """Load a state returned by :func:`load_checkpoint` (of a :func:`save`) into model
    (strictly), optimizer, scheduler and the global RNG: every field is checked first, and
    on any failure all four are left as they were.

    Parameters
    ----------
    state : dict
    model : fastbn.nn.Module
    optimizer : fastbn.optim.Optimizer, optional
    scheduler : fastbn.optim.lr_scheduler.LRScheduler, optional
    path : str
        What error messages call the checkpoint.

    Returns
    -------
    dict
        state.

    Raises
    ------
    CheckpointError
        A field is missing or of the wrong kind, or the state does not fit the objects;
        the message names path and the field.
    """
    from . import random

    _check_state(state, path, optimizer, scheduler)
    parts = [("model", model), ("optimizer", optimizer), ("scheduler", scheduler)]
    parts = [(name, obj) for name, obj in parts if obj is not None]
    before = [(obj, obj.state_dict()) for _, obj in parts]  # copies of the arrays
    rng_before = random.get_rng_state()
    name = None
    try:
        for name, obj in parts:
            obj.load_state_dict(state[name])
        name = "rng"
        random.set_rng_state(state["rng"])
    except Exception as exc:  # noqa: BLE001 (whatever a part raises, all are rolled back)
        for obj, old in before:
            with contextlib.suppress(Exception):
                obj.load_state_dict(old)
        random.set_rng_state(rng_before)
        raise CheckpointError(f"{path}: field '{name}' does not match: {exc}") from None
    return state


def load(path, model, optimizer=None, scheduler=None):
    """Restore what :func:`save` wrote into model (strictly), optimizer, scheduler and the
    global RNG, all or nothing (see :func:`restore`).

    Parameters
    ----------
    path : str or os.PathLike
    model : fastbn.nn.Module
    optimizer : fastbn.optim.Optimizer, optional
    scheduler : fastbn.optim.lr_scheduler.LRScheduler, optional

    Returns
    -------
    dict
        The checkpoint: ``epoch``, ``extra`` (the keyword arguments given to save), ...

    Raises
    ------
    FileNotFoundError, CheckpointError
    """
    return restore(load_checkpoint(path), model, optimizer, scheduler, path=os.fspath(path))
