import gzip
import os
import pathlib
import re
import tempfile
import tracemalloc
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastbn
from fastbn import data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
MNIST = os.path.join(SHARED, "mnist")
needs_mnist = pytest.mark.skipif(not os.path.exists(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz")),
                                 reason="../shared/data/mnist not present")


def _idx(array, magic):
    """An IDX file, written plainly: magic, big-endian sizes, then the bytes."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(directory, n=7, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28))
    labels = rng.integers(0, 10, n)
    for name, blob in (("t10k-images-idx3-ubyte", _idx(images, 2051)),
                       ("t10k-labels-idx1-ubyte", _idx(labels, 2049))):
        path = os.path.join(directory, name + (".gz" if gz else ""))
        with open(path, "wb") as f:
            f.write(gzip.compress(blob) if gz else blob)
    return images, labels


def test_load_digits():
    images, labels = data.load_digits()
    assert images.shape == (1797, 1, 8, 8) and images.dtype == np.float32
    assert labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 1
    # class counts published with the data set
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    source = os.path.join(SHARED, "digits", "digits.csv.gz")
    if os.path.exists(source):
        rows = np.loadtxt(source, delimiter=",")
        np.testing.assert_array_equal(images.reshape(1797, 64) * 16, rows[:, :64])
        np.testing.assert_array_equal(labels, rows[:, 64])


@pytest.mark.parametrize("gz", [True, False])
def test_load_mnist_synthetic(tmp_path, gz):
    images, labels = _write_mnist(tmp_path, gz=gz)
    x, y = data.load_mnist(tmp_path)
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], images / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, labels)


def test_load_mnist_bad_files(tmp_path):
    _write_mnist(tmp_path, gz=False)
    images = tmp_path / "t10k-images-idx3-ubyte"
    blob = images.read_bytes()
    images.write_bytes(blob[:-100])
    with pytest.raises(ValueError, match="truncated"):
        data.load_mnist(tmp_path)
    images.write_bytes(blob[:10])
    with pytest.raises(ValueError, match="truncated"):
        data.load_mnist(tmp_path)
    labels = (tmp_path / "t10k-labels-idx1-ubyte").read_bytes()
    images.write_bytes(labels)  # a labels file where the images should be
    with pytest.raises(ValueError, match="magic number is 2049, expected 2051"):
        data.load_mnist(tmp_path)
    images.write_bytes(_idx(np.zeros((5, 28, 28)), 2051))  # 5 images, 7 labels
    with pytest.raises(ValueError, match="5 images"):
        data.load_mnist(tmp_path)
    images.write_bytes(b"\x1f\x8b" + b"garbage" * 10)  # broken gzip
    with pytest.raises(ValueError, match="corrupt gzip data"):
        data.load_mnist(tmp_path)
    os.remove(images)
    with pytest.raises(FileNotFoundError, match="download=True"):
        data.load_mnist(tmp_path)
    with pytest.raises(ValueError, match="kind"):
        data.load_mnist(tmp_path, kind="test")


@needs_mnist
def test_load_mnist_shared():
    x, y = data.load_mnist(MNIST)
    assert x.shape == (10000, 1, 28, 28)
    assert np.bincount(y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    with gzip.open(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz")) as f:
        raw = np.frombuffer(f.read(), np.uint8, offset=16)
    np.testing.assert_array_equal(np.rint(x.ravel() * 255), raw)


@needs_mnist
def test_download_from_file_url(tmp_path):
    cache = tmp_path / "cache"
    mirror = "file://" + os.path.abspath(MNIST)
    x, y = data.load_mnist(cache, download=True, mirror=mirror)
    assert sorted(os.listdir(cache)) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # cached: a dead mirror is not contacted again
    x2, y2 = data.load_mnist(cache, download=True, mirror="file:///nonexistent")
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)


def test_download_rejects_bad_checksum_and_missing_mirror(tmp_path):
    mirror, cache = tmp_path / "mirror", tmp_path / "cache"
    mirror.mkdir()
    _write_mnist(mirror)  # right names, wrong contents
    with pytest.raises(ValueError, match="checksum mismatch"):
        data.load_mnist(cache, download=True, mirror="file://" + str(mirror))
    assert os.listdir(cache) == []  # nothing half-written is left behind
    with pytest.raises(OSError, match="cannot download"):
        data.load_mnist(cache, download=True, mirror="file://" + str(tmp_path / "nowhere"))
    assert os.listdir(cache) == []


def test_train_test_split_and_normalize():
    a = np.arange(50) * 10
    b = np.arange(50)
    a_tr, a_te, b_tr, b_te = data.train_test_split(a, b, test_size=0.2, seed=3)
    assert len(a_te) == 10 and len(a_tr) == 40
    np.testing.assert_array_equal(a_tr, b_tr * 10)
    assert sorted(np.concatenate([b_tr, b_te]).tolist()) == list(range(50))
    again = data.train_test_split(a, b, test_size=0.2, seed=3)
    np.testing.assert_array_equal(again[1], a_te)
    assert not np.array_equal(data.train_test_split(a, test_size=10, seed=4)[1], a_te)
    with pytest.raises(ValueError):
        data.train_test_split(a, b[:3])
    with pytest.raises(ValueError):
        data.train_test_split(a, test_size=1.5)
    x = np.random.default_rng(0).uniform(0, 1, (5, 1, 2, 2))
    np.testing.assert_allclose(data.normalize(x, 0.5, 0.25), (x - 0.5) / 0.25, rtol=1e-6)


def test_dataloader_batches_and_shuffling():
    x = np.arange(23 * 4, dtype=np.float32).reshape(23, 1, 2, 2)
    y = np.arange(23)
    ds = data.TensorDataset(x, y)
    loader = data.DataLoader(ds, batch_size=5)
    batches = list(loader)
    assert len(loader) == len(batches) == 5 and len(batches[-1][1]) == 3
    assert isinstance(batches[0][0], fastbn.Tensor) and batches[0][0].dtype == np.float32
    assert batches[0][1].dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b[1].data for b in batches]), y)
    np.testing.assert_array_equal(batches[1][0].data, x[5:10])

    dl = data.DataLoader(ds, batch_size=5, shuffle=True, drop_last=True, seed=7)
    assert len(dl) == 4
    epoch0 = np.concatenate([b[1].data for b in dl])
    epoch1 = np.concatenate([b[1].data for b in dl])
    assert len(epoch0) == 20 and len(set(epoch0)) == 20
    assert not np.array_equal(epoch0, epoch1)
    for b in data.DataLoader(ds, batch_size=5, shuffle=True, seed=7):
        np.testing.assert_array_equal(b[0].data[:, 0, 0, 0], b[1].data * 4)  # rows stay paired
    fresh = data.DataLoader(ds, batch_size=5, shuffle=True, drop_last=True, seed=7)
    fresh.set_epoch(1)
    np.testing.assert_array_equal(np.concatenate([b[1].data for b in fresh]), epoch1)

    fastbn.manual_seed(5)
    g0 = np.concatenate([b[1].data for b in data.DataLoader(ds, 4, shuffle=True)])
    fastbn.manual_seed(5)
    g1 = np.concatenate([b[1].data for b in data.DataLoader(ds, 4, shuffle=True)])
    np.testing.assert_array_equal(g0, g1)
    assert not np.array_equal(g0, y)


def test_dataloader_generic_dataset_and_errors():
    class Squares:
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return np.full(2, i, np.float32), i * i

    batches = list(data.DataLoader(Squares(), batch_size=4))
    np.testing.assert_array_equal(batches[1][1].data, [16, 25])
    with pytest.raises(ValueError, match="batch_size"):
        data.DataLoader(Squares(), batch_size=0)
    with pytest.raises(TypeError):
        data.DataLoader(3)
    with pytest.raises(ValueError, match="same first dimension"):
        data.TensorDataset(np.zeros(3), np.zeros(4))


def test_dataloader_takes_its_order_from_a_sampler():
    class Reversed:
        """Yields the indices backwards; shifts them by the epoch it was given."""
        def __init__(self, n):
            self.n, self.epoch = n, 0

        def set_epoch(self, epoch):
            self.epoch = epoch

        def __iter__(self):
            return iter([(i + self.epoch) % self.n for i in reversed(range(self.n))])

        def __len__(self):
            return self.n

    rng = np.random.default_rng()
    x = rng.standard_normal((7, 3)).astype(np.float32)
    y = rng.integers(0, 5, 7)
    sampler = Reversed(7)
    loader = data.DataLoader(data.TensorDataset(x, y), batch_size=3, drop_last=True,
                             sampler=sampler)
    assert len(loader) == 2
    loader.set_epoch(2)
    assert sampler.epoch == 2
    order = [(i + 2) % 7 for i in reversed(range(7))][:6]
    got = np.concatenate([xb.numpy() for xb, _ in loader])
    np.testing.assert_array_equal(got, x[order])
    with pytest.raises(ValueError, match="mutually exclusive"):
        data.DataLoader(data.TensorDataset(x, y), shuffle=True, sampler=sampler)


# -- hostile files: one ValueError naming the file and the field ------------------------------

def _idx_header(magic, dims):
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


_LABELS = _idx_header(2049, (3,)) + bytes([1, 2, 3])


@pytest.mark.parametrize("images, match", [
    (b"\x01\x00\x08\x03" + bytes(12), r"magic number is 16779267.*first two bytes"),
    (_idx_header(0x0D03, (3, 28, 28)) + bytes(4 * 3 * 784), r"data type 0x0d, expected 0x08"),
    (_idx_header(2052, (3, 28, 28, 1)) + bytes(3 * 784), r"number of dimensions 0x04"),
    (_idx_header(2051, (3, 28)), r"truncated IDX file \(12 bytes, its header needs 16\)"),
    (_idx_header(2051, (0, 28, 28)), r"size 0 \(images\) is 0, expected 1 to"),
    (_idx_header(2051, (2**32 - 1, 28, 28)), r"size 0 \(images\) is 4294967295"),
    (_idx_header(2051, (3, 32, 28)) + bytes(3 * 32 * 28), r"size 1 \(rows\) is 32, expected 28"),
    (_idx_header(2051, (3, 28, 0)), r"size 2 \(columns\) is 0, expected 28"),
    (_idx_header(2051, (3, 28, 28)) + bytes(2 * 784), r"declares \(3, 28, 28\) \(2352 bytes"),
    (_idx_header(2051, (3, 28, 28)) + bytes(3 * 784 + 1), r"trailing data after the 2352"),
    (_idx_header(2051, (2, 28, 28)) + bytes(2 * 784), r"has 2 images but .* has 3 labels"),
], ids=["magic", "data-type", "dimensions", "short-header", "no-images", "too-many-images",
        "rows", "columns", "truncated", "trailing-data", "count-mismatch"])
@pytest.mark.parametrize("gz", [False, True])
def test_each_idx_field_is_checked(tmp_path, images, match, gz):
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_LABELS)
    path = tmp_path / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    path.write_bytes(gzip.compress(images) if gz else images)
    with pytest.raises(ValueError, match=match) as err:
        data.load_mnist(tmp_path)
    assert str(err.value).startswith(str(path))


def test_label_out_of_range_names_the_file_and_item(tmp_path):
    _write_mnist(tmp_path, n=3, gz=False)
    labels = tmp_path / "t10k-labels-idx1-ubyte"
    labels.write_bytes(_idx_header(2049, (3,)) + bytes([4, 10, 200]))
    with pytest.raises(ValueError, match=re.escape(f"{labels}: label 10 (item 1) is out of "
                                                   "range 0..9")):
        data.load_mnist(tmp_path)


def _damage(blob, how, at, value):
    """blob cut short, with a byte changed, with bytes inserted, or with bytes appended."""
    at %= len(blob) + 1
    if how == "cut":
        return blob[:at]
    if how == "flip":
        at %= len(blob)
        return blob[:at] + bytes([blob[at] ^ (value or 1)]) + blob[at + 1:]
    if how == "insert":
        return blob[:at] + bytes([value]) * 3 + blob[at:]
    return blob + bytes([value]) * 5


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from(["images", "labels"]), gz=st.booleans(),
       how=st.sampled_from(["cut", "flip", "insert", "append"]),
       at=st.integers(0, 2**20), value=st.integers(0, 255))
def test_damaged_files_load_right_or_raise_one_value_error(tmp_path, which, gz, how, at,
                                                           value):
    """On main a damaged gzip raised zlib.error, and the command line printed its
    traceback.  A file still valid after the damage (a changed pixel or label) loads
    as what it holds."""
    with tempfile.TemporaryDirectory(dir=tmp_path) as d:  # a fresh folder per example
        _check_damaged(pathlib.Path(d), which, gz, how, at, value)


def _check_damaged(folder, which, gz, how, at, value):
    images, labels = _write_mnist(folder, n=3, gz=gz)
    path = folder / (f"t10k-{which}-idx{3 if which == 'images' else 1}-ubyte"
                     + (".gz" if gz else ""))
    blob = gzip.decompress(path.read_bytes()) if gz else path.read_bytes()
    damaged = _damage(path.read_bytes(), how, at, value)
    path.write_bytes(damaged)
    try:
        x, y = data.load_mnist(folder)
    except ValueError as exc:
        assert str(exc).startswith(str(path)), exc
        return
    held = gzip.decompress(damaged) if gz else damaged   # it was valid: it must load it
    assert len(held) == len(blob)
    if which == "images":
        images = np.frombuffer(held, np.uint8, offset=16).reshape(images.shape)
    else:
        labels = np.frombuffer(held, np.uint8, offset=8)
    np.testing.assert_array_equal(np.rint(x[:, 0] * 255), images)
    np.testing.assert_array_equal(y, labels)


def _gzip_stream(*parts, zeros=0):
    """A gzip file of parts followed by `zeros` zero bytes, compressed as a stream."""
    z = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [z.compress(p) for p in parts]
    chunk = bytes(1 << 20)
    for _ in range(zeros >> 20):
        out.append(z.compress(chunk))
    return b"".join(out) + z.flush()


def test_gzip_bomb_is_refused_without_inflating_it(tmp_path):
    """On main the whole file was inflated before its size was checked: this 64 MiB
    bomb (65 KB on disk) cost 64 MiB, a 2 MiB one 4 GiB."""
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_LABELS)
    bomb = tmp_path / "t10k-images-idx3-ubyte.gz"
    bomb.write_bytes(_gzip_stream(_idx_header(2051, (3, 28, 28)), zeros=64 << 20))
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="trailing data"):
            data.load_mnist(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    # a header declaring more than the file can inflate to: refused before allocating
    bomb.write_bytes(_gzip_stream(_idx_header(2051, (2**20, 28, 28)), zeros=1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="more than the file can inflate to"):
            data.load_mnist(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak


def test_corrupt_mnist_on_the_command_line_is_one_line(tmp_path, run_fastbn):
    _write_mnist(tmp_path, n=3)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    blob = bytearray(path.read_bytes())
    blob[10] = 0xFF  # the first deflate block's type: invalid (zlib.error on main)
    path.write_bytes(bytes(blob))
    proc = run_fastbn("train", "--dataset", "mnist", "--data-dir", str(tmp_path),
                      "--epochs", "1")
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"fastbn train: error: {path}: "), \
        proc.stderr


@pytest.mark.parametrize("content, match", [
    (b"not a zip file", "cannot read the embedded digits"),
    ({"images": np.zeros((1797, 8, 8), np.uint8)}, "cannot read the embedded digits"),
    ({"images": np.zeros((1797, 8, 8), np.uint8), "labels": np.full(1797, 10, np.uint8)},
     "field labels is uint8 \\(1797,\\) up to 10, expected uint8 \\(1797,\\) up to 9"),
    ({"images": np.zeros((1797, 64), np.uint8), "labels": np.zeros(1797, np.uint8)},
     "field images"),
])
def test_damaged_embedded_digits(tmp_path, monkeypatch, content, match):
    path = tmp_path / "digits.npz"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)
    monkeypatch.setattr(data, "_DIGITS", str(path))
    with pytest.raises(ValueError, match=match) as err:
        data.load_digits()
    assert str(err.value).startswith(str(path))


class _ListSampler:
    def __init__(self, indices, length=None):
        self.indices = indices
        self.length = len(indices) if length is None else length

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return self.length


@pytest.mark.parametrize("indices, length, exc, match", [
    ([0, 5], None, ValueError, "gave index 5, out of range for a dataset of 5 samples"),
    ([1, -1], None, ValueError, "gave index -1, out of range"),
    ([0.0, 1.0], None, TypeError, "integer indices"),
    ([True], None, TypeError, "integer indices"),
    ([[0, 1]], None, TypeError, "integer indices"),
    ([0, 1, 2], 5, ValueError, "gave 3 indices but its len\\(\\) is 5"),
])
@pytest.mark.parametrize("generic", [False, True])
def test_sampler_out_of_range_is_a_clear_error(indices, length, exc, match, generic):
    """On main: IndexError from NumPy, or batches shorter than len() promised."""
    class Plain:
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full(2, i, np.float32), i

    ds = Plain() if generic else data.TensorDataset(np.zeros((5, 2)), np.arange(5))
    loader = data.DataLoader(ds, batch_size=2, sampler=_ListSampler(indices, length))
    with pytest.raises(exc, match=match):
        next(iter(loader))
