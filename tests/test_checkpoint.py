import os
import pickle

import numpy as np
import pytest

import fastbn
from fastbn import Tensor, checkpoint, nn, optim
from fastbn.checkpoint import CheckpointError


def _model():
    return nn.Sequential(nn.Linear(4, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(),
                         nn.Linear(6, 3))


def _train_steps(model, opt, rng, n=3):
    for _ in range(n):
        x = Tensor(rng.standard_normal((8, 4)).astype(np.float32))
        y = Tensor(rng.integers(0, 3, 8))
        loss = nn.CrossEntropyLoss()(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_round_trip_of_nested_values(tmp_path):
    rng = np.random.default_rng(0)
    state = {"a": rng.standard_normal((3, 2)).astype(np.float32),
             "nested": {"b": rng.standard_normal(4), "n": np.array(7, np.int64),
                        "list": [1, 2.5, None, True, "s"], "pair": (0.9, 0.999)},
             "int_keys": {0: {"momentum_buffer": rng.standard_normal(2)}, 3: {"step": 4}},
             "big": 2 ** 100 + 1}
    path = tmp_path / "c.ckpt"
    checkpoint.save_checkpoint(path, state)
    back = checkpoint.load_checkpoint(path)
    assert back["a"].dtype == np.float32
    np.testing.assert_array_equal(back["a"], state["a"])
    np.testing.assert_array_equal(back["nested"]["b"], state["nested"]["b"])
    assert back["nested"]["n"].dtype == np.int64 and int(back["nested"]["n"]) == 7
    assert back["nested"]["list"] == [1, 2.5, None, True, "s"]
    assert back["nested"]["pair"] == (0.9, 0.999)
    assert sorted(back["int_keys"]) == [0, 3] and back["int_keys"][3] == {"step": 4}
    assert back["big"] == 2 ** 100 + 1


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "c.ckpt"
    checkpoint.save_checkpoint(path, {"x": np.arange(3)})
    with pytest.raises(TypeError, match="object"):
        checkpoint.save_checkpoint(path, {"x": object()})
    np.testing.assert_array_equal(checkpoint.load_checkpoint(path)["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["c.ckpt"]  # no temporary left behind


def test_corrupt_and_foreign_files(tmp_path):
    path = tmp_path / "c.ckpt"
    checkpoint.save_checkpoint(path, {"x": np.arange(1000.0)})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.load_checkpoint(path)
    path.write_bytes(os.urandom(256))
    with pytest.raises(CheckpointError):
        checkpoint.load_checkpoint(path)
    np.savez(path.with_suffix(".npz"), x=np.zeros(2))  # a plain npz, no header
    with pytest.raises(CheckpointError):
        checkpoint.load_checkpoint(path.with_suffix(".npz"))
    with pytest.raises(FileNotFoundError):
        checkpoint.load_checkpoint(tmp_path / "missing.ckpt")


class _Evil:
    def __reduce__(self):
        return (open, (os.environ["FASTBN_TEST_MARKER"], "w"))


def test_pickled_objects_are_never_loaded(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    monkeypatch.setenv("FASTBN_TEST_MARKER", str(marker))
    path = tmp_path / "evil.ckpt"
    header = np.frombuffer(b'{"format": "fastbn-checkpoint", "version": 1, '
                           b'"state": {"__array__": "a0"}}', np.uint8)
    evil = np.empty(1, dtype=object)
    evil[0] = _Evil()
    with open(path, "wb") as f:
        np.savez(f, __header__=header, a0=evil)
    pickle.dumps(evil)  # it really is a pickle payload
    with pytest.raises(CheckpointError):
        checkpoint.load_checkpoint(path)
    assert not marker.exists()


def test_save_load_training_state(tmp_path):
    rng = np.random.default_rng(1)
    fastbn.manual_seed(0)
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _train_steps(model, opt, rng)
    sched.step()
    fastbn.manual_seed(42)
    path = tmp_path / "run.ckpt"
    checkpoint.save(path, model, opt, sched, epoch=3, note="hi")
    draw = fastbn.random.default_generator.random(3)

    fastbn.manual_seed(1)
    other = _model()
    opt2 = optim.SGD(other.parameters(), lr=1.0, momentum=0.9)
    sched2 = optim.lr_scheduler.StepLR(opt2, step_size=1, gamma=0.5)
    state = checkpoint.load(path, other, opt2, sched2)
    assert state["epoch"] == 3 and state["extra"] == {"note": "hi"}
    for (k, a), b in zip(model.state_dict().items(), other.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=k)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"] == 0.05
    assert sched2.last_epoch == 1
    np.testing.assert_array_equal(fastbn.random.default_generator.random(3), draw)
    # both continue identically
    _train_steps(model, opt, np.random.default_rng(2))
    _train_steps(other, opt2, np.random.default_rng(2))
    for a, b in zip(model.parameters(), other.parameters()):
        np.testing.assert_array_equal(a.data, b.data)


def test_mismatched_checkpoint(tmp_path):
    path = tmp_path / "run.ckpt"
    model = _model()
    checkpoint.save(path, model)
    wrong = nn.Sequential(nn.Linear(4, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, 3))
    with pytest.raises(CheckpointError, match="does not match.*size mismatch"):
        checkpoint.load(path, wrong)
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="no optimizer"):
        checkpoint.load(path, model, opt)
