import gzip
import os

import numpy as np
import pytest

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
    with pytest.raises(ValueError, match="cannot read"):
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
