"""Datasets and batching: the embedded digits, MNIST from IDX files, a train/test split,
normalization, TensorDataset and DataLoader.

Images are float32 NCHW arrays scaled to [0, 1]; labels are int64.
"""
import gzip
import hashlib
import math
import numbers
import os
import urllib.error
import urllib.request
import zipfile
import zlib

import numpy as np

from . import random as _random
from ._io import atomic_write
from .autograd import Tensor

__all__ = ["load_digits", "load_mnist", "train_test_split", "normalize", "TensorDataset",
           "DataLoader", "MNIST_MIRROR", "default_cache_dir"]

_DIGITS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "datasets", "digits.npz")

MNIST_MIRROR = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_MNIST_FILES = {  # kind -> ((images file, md5), (labels file, md5))
    "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
              ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
    "t10k": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
             ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
}


def load_digits():
    """The UCI handwritten digits: 1797 8x8 images, 10 classes, shipped with fastbn.

    CC BY 4.0, see fastbn/datasets/README.md.

    Returns
    -------
    images : numpy.ndarray
        float32, shape (1797, 1, 8, 8), values in [0, 1].
    labels : numpy.ndarray
        int64, shape (1797,), values 0..9.

    Raises
    ------
    ValueError
        When the embedded file cannot be read or is not what it should be.
    """
    try:
        with np.load(_DIGITS, allow_pickle=False) as f:
            images, labels = f["images"], f["labels"]
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{_DIGITS}: cannot read the embedded digits ({exc}); "
                         "reinstall fastbn") from None
    for field, a, shape, top in (("images", images, (1797, 8, 8), 16),
                                 ("labels", labels, (1797,), 9)):
        if a.shape != shape or a.dtype != np.uint8 or a.max() > top:
            raise ValueError(f"{_DIGITS}: field {field} is {a.dtype} {a.shape} up to "
                             f"{a.max() if a.size else None}, expected uint8 {shape} up to "
                             f"{top}; reinstall fastbn")
    return (images[:, None].astype(np.float32) / 16.0, labels.astype(np.int64))


# -- MNIST -----------------------------------------------------------------------------------
# IDX: a big-endian magic number 0x0000TTDD (TT the data type, 0x08 for unsigned bytes;
# DD the number of dimensions), DD big-endian uint32 sizes, then the data.
_IDX_UBYTE = 0x08
_IDX_IMAGES = (2051, ("images", "rows", "columns"))
_IDX_LABELS = (2049, ("labels",))
_MNIST_SIDE = 28
_MAX_ITEMS = 1 << 20  # images or labels in one file (MNIST has 70,000, EMNIST 814,255)
_MAX_INFLATION = 1100  # deflate expands a byte 1032 times at most: a bound on gzip's output


def _read_into(f, buffer):
    """Fill buffer from f; returns how many bytes it got (fewer at the end of f)."""
    view, got = memoryview(buffer), 0
    while got < len(view):
        n = f.readinto(view[got:got + (1 << 24)])
        if not n:
            break
        got += n
    return got


def _check_idx_header(path, header, magic, names):
    """The sizes in an IDX header, each field checked: magic number (zero bytes, data
    type, number of dimensions), then each size."""
    ndim = len(names)
    if len(header) < 4:
        raise ValueError(f"{path}: truncated IDX file ({len(header)} bytes, its header needs "
                         f"{4 + 4 * ndim})")
    found = int.from_bytes(header[:4], "big")
    what = f"{' x '.join(names)} of unsigned bytes"
    for field, got, want in (("its first two bytes", found >> 16, 0),
                             ("data type", header[2], _IDX_UBYTE),
                             ("number of dimensions", header[3], ndim)):
        if got != want:
            raise ValueError(f"{path}: IDX magic number is {found}, expected {magic} "
                             f"({what}): {field} {got:#04x}, expected {want:#04x} "
                             "(wrong file, or not an IDX file)")
    if len(header) < 4 + 4 * ndim:
        raise ValueError(f"{path}: truncated IDX file ({len(header)} bytes, its header needs "
                         f"{4 + 4 * ndim})")
    dims = tuple(int.from_bytes(header[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    if not 1 <= dims[0] <= _MAX_ITEMS:
        raise ValueError(f"{path}: IDX size 0 ({names[0]}) is {dims[0]}, expected 1 to "
                         f"{_MAX_ITEMS}")
    for i in range(1, ndim):
        if dims[i] != _MNIST_SIDE:
            raise ValueError(f"{path}: IDX size {i} ({names[i]}) is {dims[i]}, expected "
                             f"{_MNIST_SIDE} (MNIST's images are 28x28)")
    return dims


def _read_idx(path, magic, names):
    """The uint8 array of an IDX file (gzipped or not).  The header is read and checked
    first; then exactly the bytes it declares are read (inflated as a stream, never more
    than that and one byte more), and the file must end there."""
    ndim = len(names)
    gz = False
    try:
        with open(path, "rb") as raw:
            stored = os.fstat(raw.fileno()).st_size
            gz = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            f = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            header = f.read(4 + 4 * ndim)
            dims = _check_idx_header(path, header, magic, names)
            size = math.prod(dims)
            room = (stored * _MAX_INFLATION if gz else stored) - len(header)
            if size > room:
                raise ValueError(f"{path}: truncated IDX file: its header declares {dims} "
                                 f"({size} bytes of data), more than the file "
                                 f"{'can inflate to' if gz else 'holds'}")
            data = np.empty(size, dtype=np.uint8)
            got = _read_into(f, data)
            if got < size:
                raise ValueError(f"{path}: truncated IDX file: its header declares {dims} "
                                 f"({size} bytes of data), the file holds {got}")
            if f.read(1):
                raise ValueError(f"{path}: trailing data after the {size} bytes of data its "
                                 f"header declares for {dims}")
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        what = "corrupt gzip data" if gz else "cannot read"
        raise ValueError(f"{path}: {what} ({exc})") from None
    return data.reshape(dims)


def _find(directory, name):
    """name, or name without .gz, in directory."""
    for candidate in (name, name[:-3]):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    return None


def _download(url, path, md5):
    """Fetch url to path atomically, refusing a file whose md5 differs."""
    try:
        with atomic_write(path) as out, urllib.request.urlopen(url, timeout=60) as src:
            h = hashlib.md5()
            for block in iter(lambda: src.read(1 << 20), b""):
                h.update(block)
                out.write(block)
            if h.hexdigest() != md5:
                raise ValueError(f"{url}: checksum mismatch (md5 {h.hexdigest()}, "
                                 f"expected {md5})")
    except (urllib.error.URLError, OSError) as exc:
        raise OSError(f"cannot download {url}: {exc}") from None


def default_cache_dir():
    """$FASTBN_DATA, else ~/.cache/fastbn: where downloads go."""
    return os.environ.get("FASTBN_DATA") or os.path.join(os.path.expanduser("~"), ".cache",
                                                          "fastbn")


def load_mnist(path=None, kind="t10k", download=False, mirror=MNIST_MIRROR):
    """MNIST from its original IDX files (gzipped or not) in directory ``path``.

    Parameters
    ----------
    path : str or os.PathLike, optional
        The directory holding ``<kind>-images-idx3-ubyte[.gz]`` and
        ``<kind>-labels-idx1-ubyte[.gz]``.  Required unless ``download`` (default then:
        ``default_cache_dir()/mnist``).
    kind : {'t10k', 'train'}, optional
        The 10,000 test images or the 60,000 training images.
    download : bool, optional
        Fetch missing files from ``mirror`` into ``path``, checked against their
        published md5 and written atomically.
    mirror : str, optional
        Base URL of the files (any URL urllib opens, ``file://`` included).

    Returns
    -------
    images : numpy.ndarray
        float32, shape (N, 1, 28, 28), values in [0, 1].
    labels : numpy.ndarray
        int64, shape (N,), values 0..9.

    Raises
    ------
    ValueError
        For an unknown kind, no path without download, a checksum mismatch, or a file
        that is not a well-formed MNIST IDX file (magic number, sizes, truncation,
        trailing data, labels over 9, image and label counts that differ).
    FileNotFoundError
        For a missing file without download.
    OSError
        When a download fails.
    """
    if kind not in _MNIST_FILES:
        raise ValueError(f"kind must be one of {sorted(_MNIST_FILES)}, got {kind!r}")
    if path is None:
        if not download:
            raise ValueError("load_mnist needs the directory of the IDX files "
                             "(or download=True to fetch them)")
        path = os.path.join(default_cache_dir(), "mnist")
    path = os.fspath(path)
    found = []
    for name, md5 in _MNIST_FILES[kind]:
        file = _find(path, name)
        if file is None and download:
            os.makedirs(path, exist_ok=True)
            file = os.path.join(path, name)
            _download(mirror.rstrip("/") + "/" + name, file, md5)
        if file is None:
            raise FileNotFoundError(f"{os.path.join(path, name)} not found (nor without .gz); "
                                    "pass download=True to fetch it")
        found.append(file)
    images = _read_idx(found[0], *_IDX_IMAGES)
    labels = _read_idx(found[1], *_IDX_LABELS)
    if len(images) != len(labels):
        raise ValueError(f"{found[0]} has {len(images)} images but {found[1]} has "
                         f"{len(labels)} labels")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        raise ValueError(f"{found[1]}: label {labels[bad[0]]} (item {bad[0]}) is out of range "
                         "0..9")
    return images[:, None].astype(np.float32) / 255.0, labels.astype(np.int64)


# -- splitting and normalization -------------------------------------------------------------

def train_test_split(*arrays, test_size=0.2, seed=0):
    """Split arrays of equal length by one seeded permutation, as scikit-learn does.

    Parameters
    ----------
    *arrays : numpy.ndarray or Tensor
        Arrays indexed along their first dim, all of one length n.
    test_size : float or int, optional
        A fraction in (0, 1) of the samples (rounded up), or a count; both parts must be
        non-empty.
    seed : int or None, optional
        Seeds the permutation (``numpy.random.default_rng(seed)``); each part keeps the
        samples in their original order.

    Returns
    -------
    list
        ``[a_train, a_test, b_train, b_test, ...]``, each of its array's type and dtype.

    Raises
    ------
    ValueError
        For no arrays, lengths that differ, or a test_size that is not a fraction in
        (0, 1) or a count leaving both parts non-empty.
    """
    if not arrays:
        raise ValueError("train_test_split needs at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"arrays have different lengths {[len(a) for a in arrays]}")
    if isinstance(test_size, numbers.Integral) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, numbers.Real) and 0 < test_size < 1:
        n_test = math.ceil(test_size * n)
    else:
        raise ValueError(f"test_size must be a fraction in (0, 1) or a count, got {test_size!r}")
    if not 0 < n_test < n:
        raise ValueError(f"test_size {test_size!r} leaves an empty split of {n} samples")
    perm = np.random.default_rng(seed).permutation(n)
    train, test = np.sort(perm[n_test:]), np.sort(perm[:n_test])
    return [part for a in arrays for part in (a[train], a[test])]


def normalize(images, mean, std):
    """``(images - mean) / std`` as float32 (use the training set's mean and std).

    Parameters
    ----------
    images : array_like
        Any shape; converted to float32.
    mean : float
        Subtracted.
    std : float
        Divided by, positive.

    Returns
    -------
    numpy.ndarray
        float32, of images' shape.

    Raises
    ------
    ValueError
        For std <= 0.
    """
    if not std > 0:
        raise ValueError(f"std must be positive, got {std}")
    return ((np.asarray(images, dtype=np.float32) - np.float32(mean)) / np.float32(std))


# -- datasets and batching -------------------------------------------------------------------

class TensorDataset:
    """Arrays of equal length indexed together: ``dataset[i] -> (a[i], b[i], ...)``.

    As ``torch.utils.data.TensorDataset``.

    Parameters
    ----------
    *arrays : numpy.ndarray or Tensor
        At least one, each at least 1-D, all with the same first dim (the samples);
        converted with ``numpy.asarray`` (dtype kept).

    Attributes
    ----------
    arrays : tuple of numpy.ndarray
        The arrays.

    Raises
    ------
    ValueError
        For no arrays, a 0-d array, or first dims that differ.
    """

    def __init__(self, *arrays):
        if not arrays:
            raise ValueError("TensorDataset needs at least one array")
        arrays = tuple(np.asarray(a) for a in arrays)
        if any(a.ndim == 0 or len(a) != len(arrays[0]) for a in arrays):
            raise ValueError("TensorDataset arrays must have the same first dimension, got "
                             f"shapes {[a.shape for a in arrays]}")
        self.arrays = arrays

    def __len__(self):
        return len(self.arrays[0])

    def __getitem__(self, index):
        return tuple(a[index] for a in self.arrays)


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


class DataLoader:
    """Batches of a dataset as tuples of Tensors (``torch.utils.data.DataLoader``, in-process).

    Each batch is a tuple with one C-contiguous Tensor per field of the samples, the
    field's dtype kept and the batch as the first dim (``(batch_size, ...)``).

    Parameters
    ----------
    dataset : TensorDataset or sequence of tuples
        Anything with ``len()`` and ``dataset[i] -> tuple of arrays``.
    batch_size : int, optional
        Samples per batch, positive.
    shuffle : bool, optional
        A new order each epoch: with ``seed`` given, from ``seed`` and the epoch number
        alone (so a resumed run sees the same orders; ``set_epoch`` picks the epoch,
        otherwise each iteration advances it); with ``seed=None``, from the global
        generator (``fastbn.manual_seed``).
    drop_last : bool, optional
        Drop the last incomplete batch (a batch of one cannot be batch-normalized in
        training).
    seed : int, optional
        Non-negative; see ``shuffle``.
    sampler : iterable of int, optional
        Gives the order of the indices instead (e.g. a
        :class:`fastbn.distributed.DistributedSampler`); ``set_epoch`` is passed on to
        it.  Not with ``shuffle=True``.

    Raises
    ------
    TypeError
        For a dataset without ``len()`` and indexing; while iterating, for a sampler
        that gives non-integer indices.
    ValueError
        For a batch_size that is not a positive int, a seed that is not a non-negative
        int, or a sampler with ``shuffle=True``; while iterating, for sampler indices
        out of range or fewer or more than its ``len()``.
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, drop_last=False, seed=None,
                 sampler=None):
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"dataset must support len() and indexing, got {type(dataset).__name__}")
        self.dataset = dataset
        self.batch_size = _check_positive_int("batch_size", batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.seed = None if seed is None else _random._check_seed(seed)
        if sampler is not None and self.shuffle:
            raise ValueError("DataLoader: sampler and shuffle=True are mutually exclusive "
                             "(the sampler gives the order)")
        self.sampler = sampler
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(self.epoch)

    def __len__(self):
        n = len(self.dataset) if self.sampler is None else len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self):
        if self.sampler is not None:
            return self._sampled()
        n = len(self.dataset)
        if not self.shuffle:
            return np.arange(n)
        if self.seed is None:
            return _random.default_generator.permutation(n)
        return np.random.default_rng([self.seed, self.epoch]).permutation(n)

    def _sampled(self):
        """The sampler's indices for this epoch, checked before any batch is made."""
        order = np.array(list(self.sampler))
        n, expected = len(self.dataset), len(self.sampler)
        if order.size and (order.ndim != 1 or order.dtype.kind not in "iu"):
            raise TypeError(f"DataLoader: the sampler must give integer indices, got "
                            f"{order.dtype} values of shape {order.shape}")
        if len(order) != expected:
            raise ValueError(f"DataLoader: the sampler gave {len(order)} indices but its "
                             f"len() is {expected}")
        bad = np.flatnonzero((order < 0) | (order >= n))
        if bad.size:
            raise ValueError(f"DataLoader: the sampler gave index {order[bad[0]]}, out of "
                             f"range for a dataset of {n} samples")
        return order.astype(np.intp, copy=False)

    def _fetch(self, index):
        if isinstance(self.dataset, TensorDataset):  # one fancy-indexing gather per array
            return self.dataset[index]
        return tuple(np.stack(column) for column in zip(*(self.dataset[int(i)] for i in index)))

    def __iter__(self):
        order = self._order()
        self.epoch += 1
        for batch in range(len(self)):
            index = order[batch * self.batch_size:(batch + 1) * self.batch_size]
            yield tuple(Tensor(np.ascontiguousarray(a)) for a in self._fetch(index))
