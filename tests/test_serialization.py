"""fastbn.save / fastbn.load: torch.save/torch.load of state dicts and nested containers,
in fastbn's checkpoint format (no pickle, atomic writes)."""
import collections
import os
import zipfile

import numpy as np
import pytest

import fastbn
from fastbn import nn
from fastbn.checkpoint import CheckpointError


def _model():
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 4 * 4, 3))


def test_state_dict_round_trip(tmp_path):
    fastbn.manual_seed(0)
    model = _model()
    model.train()
    model(fastbn.randn(8, 1, 6, 6))     # running statistics and num_batches_tracked move
    path = tmp_path / "model.pt"
    fastbn.save(model.state_dict(), path)
    loaded = fastbn.load(path)
    assert list(loaded) == list(model.state_dict())
    for k, v in model.state_dict().items():
        assert type(loaded[k]) is np.ndarray and loaded[k].dtype == v.dtype
        np.testing.assert_array_equal(loaded[k], v)
    other = _model()
    other.load_state_dict(loaded)
    x = fastbn.randn(2, 1, 6, 6)
    model.eval(), other.eval()
    np.testing.assert_array_equal(model(x).data, other(x).data)
    assert fastbn.load(str(path), map_location="cpu", weights_only=True).keys() == loaded.keys()
    assert fastbn.load(path, map_location=fastbn.device("cpu")).keys() == loaded.keys()


def test_tensors_and_containers_come_back_as_they_were(tmp_path):
    w = fastbn.randn(3, 2, dtype=fastbn.float64, requires_grad=True)
    obj = {"epoch": 3, "lr": 0.1, "name": "run", "none": None, "flag": True,
           "weights": w, "ints": fastbn.arange(4), "array": np.arange(3, dtype=np.int16),
           "nested": {"list": [fastbn.zeros(2), 1.5, ("a", 2)], 7: "int key"},
           "ordered": collections.OrderedDict(b=1, a=2)}
    fastbn.save(obj, tmp_path / "ckpt")
    back = fastbn.load(tmp_path / "ckpt")
    assert back["epoch"] == 3 and back["lr"] == 0.1 and back["name"] == "run"
    assert back["none"] is None and back["flag"] is True
    assert isinstance(back["weights"], fastbn.Tensor) and back["weights"].requires_grad
    np.testing.assert_array_equal(back["weights"].data, w.data)
    assert back["weights"].dtype == np.float64 and back["ints"].dtype == np.int64
    assert not back["ints"].requires_grad
    assert type(back["array"]) is np.ndarray and back["array"].dtype == np.int16
    assert isinstance(back["nested"]["list"][0], fastbn.Tensor)
    assert back["nested"]["list"][2] == ("a", 2) and back["nested"][7] == "int key"
    assert list(back["ordered"]) == ["b", "a"]
    tensor_only = tmp_path / "t"
    fastbn.save(w, tensor_only)
    np.testing.assert_array_equal(fastbn.load(tensor_only).data, w.data)


def test_file_holds_no_pickle(tmp_path):
    path = tmp_path / "m.pt"
    fastbn.save(_model().state_dict(), path)
    with zipfile.ZipFile(path) as z:
        assert all(name.endswith(".npy") for name in z.namelist())
    with np.load(path, allow_pickle=False) as npz:     # raises on any pickled array
        assert all(not npz[name].dtype.hasobject for name in npz.files)
    # an archive with a pickled object array is refused, never unpickled
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        np.savez(f, __header__=np.frombuffer(b'{"format": "fastbn-checkpoint", "version": 1, '
                                             b'"state": {"__array__": "a0"}}', np.uint8),
                 a0=np.array([object()], dtype=object))
    with pytest.raises(CheckpointError):
        fastbn.load(evil)


def test_save_is_atomic_and_errors_are_clear(tmp_path):
    path = tmp_path / "m.pt"
    fastbn.save({"a": np.ones(2)}, path)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"Sequential.*state_dict\(\)"):
        fastbn.save({"model": _model()}, path)          # not storable: the old file stays
    with pytest.raises(TypeError, match="lambda|function"):
        fastbn.save([lambda: 0], path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.pt"]      # no temporary file left behind
    loop = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="contains itself"):
        fastbn.save(loop, path)
    with open(tmp_path / "f", "wb") as f, pytest.raises(TypeError, match="file path"):
        fastbn.save({}, f)
    with pytest.raises(ValueError, match="CPU only"):
        fastbn.load(path, map_location="cuda:0")
    (tmp_path / "junk").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk"):
        fastbn.load(tmp_path / "junk")
    with pytest.raises(FileNotFoundError):
        fastbn.load(tmp_path / "missing")


def test_state_dict_saved_by_torch_layout_loads_into_both(tmp_path):
    """A fastbn state_dict saved and loaded has PyTorch's keys: it loads into the torch
    definition of the same model, and torch's loads back."""
    torch = pytest.importorskip("torch")
    model = _model().double()
    tmodel = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4),
                                 torch.nn.ReLU(), torch.nn.Flatten(),
                                 torch.nn.Linear(64, 3)).double()
    fastbn.save(model.state_dict(), tmp_path / "m.pt")
    tmodel.load_state_dict({k: torch.from_numpy(v) for k, v in
                            fastbn.load(tmp_path / "m.pt").items()})
    x = np.random.default_rng(0).standard_normal((2, 1, 6, 6))
    model.eval(), tmodel.eval()
    np.testing.assert_allclose(model(fastbn.tensor(x)).data,
                               tmodel(torch.tensor(x)).detach().numpy(), rtol=1e-12)
