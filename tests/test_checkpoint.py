import io
import os
import pickle
import re
import stat
import subprocess
import sys
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastbn
from fastbn import Tensor, checkpoint, nn, optim
from fastbn._io import atomic_write
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


# -- hostile and damaged files ---------------------------------------------------------------

def _write_raw(path, header, **arrays):
    """A checkpoint-shaped npz whose header is the given JSON text (or bytes)."""
    raw = header if isinstance(header, bytes) else header.encode()
    with open(path, "wb") as f:
        np.savez(f, __header__=np.frombuffer(raw, np.uint8), **arrays)


def _header(state_json):
    return '{"format": "fastbn-checkpoint", "version": 1, "state": ' + state_json + "}"


@pytest.mark.parametrize("state", ["[" * 100_000 + "]" * 100_000,
                                   '{"a": ' * 5000 + "1" + "}" * 5000,
                                   "[" * 200 + "]" * 200])
def test_deeply_nested_headers_are_refused(tmp_path, state):
    path = tmp_path / "deep.ckpt"
    _write_raw(path, _header(state))
    with pytest.raises(CheckpointError, match=f"{path}: (field '.*' is )?(header is )?nested "
                                              "too deeply"):
        checkpoint.load_checkpoint(path)


@pytest.mark.parametrize("state, field", [
    ('{"__array__": "a9"}', "state"),
    ('{"x": {"__array__": 3}}', "state.x"),
    ('{"x": {"__tuple__": 5}}', "state.x"),
    ('{"x": {"__items__": [[1.5, 2]]}}', "state.x"),
    ('{"x": [{"__items__": "ab"}]}', "state.x[0]"),
])
def test_bad_placeholders_name_their_field(tmp_path, state, field):
    path = tmp_path / "bad.ckpt"
    _write_raw(path, _header(state), a0=np.zeros(2))
    with pytest.raises(CheckpointError, match=rf"{path}: field '{re.escape(field)}' must be"):
        checkpoint.load_checkpoint(path)


def test_random_bytes_and_foreign_archives(tmp_path):
    path = tmp_path / "x.ckpt"
    path.write_bytes(os.urandom(5000))
    with pytest.raises(CheckpointError) as info:
        checkpoint.load_checkpoint(path)
    assert str(info.value) == f"{path}: not a fastbn checkpoint"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("notes.txt", "hello")
    with pytest.raises(CheckpointError, match="'notes.txt' is not a NumPy array"):
        checkpoint.load_checkpoint(path)
    with open(path, "wb") as f:  # a valid header, compressed: fastbn never writes those
        np.savez_compressed(f, __header__=np.frombuffer(_header("1").encode(), np.uint8))
    with pytest.raises(CheckpointError, match="is compressed or encrypted"):
        checkpoint.load_checkpoint(path)
    checkpoint.save_checkpoint(path, {"x": np.arange(3)})  # marked encrypted (flag bit 0)
    raw = bytearray(path.read_bytes())
    at = 0
    while (at := raw.find(b"PK\x01\x02", at)) >= 0:
        raw[at + 8] |= 1
        at += 4
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="is compressed or encrypted"):
        checkpoint.load_checkpoint(path)
    _write_raw(path, b"\xff\xfe not utf-8")
    with pytest.raises(CheckpointError, match="header is not valid JSON"):
        checkpoint.load_checkpoint(path)
    _write_raw(path, '{"format": "fastbn-checkpoint", "version": 99, "state": 1}')
    with pytest.raises(CheckpointError, match="version 99 is not supported"):
        checkpoint.load_checkpoint(path)


def _bomb(path, declared_bytes, method):
    """A checkpoint whose one array declares declared_bytes of zeros."""
    n = declared_bytes // 4
    npy = io.BytesIO()
    np.lib.format.write_array_header_2_0(npy, {"descr": "<f4", "fortran_order": False,
                                               "shape": (n,)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("__header__.npy", _npy(np.frombuffer(
            _header('{"__array__": "a0"}').encode(), np.uint8)))
        if method == "deflated":
            info = zipfile.ZipInfo("a0.npy")
            info.compress_type = zipfile.ZIP_DEFLATED
            with z.open(info, "w", force_zip64=True) as f:
                f.write(npy.getvalue())
                block = bytes(1 << 20)
                for _ in range(declared_bytes >> 20):
                    f.write(block)
        else:  # the .npy header lies: a small stored member declares a huge array
            z.writestr("a0.npy", npy.getvalue() + bytes(64))


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("method", ["deflated", "stored"])
def test_zip_bombs_are_refused_before_inflating(tmp_path, method):
    path = tmp_path / "bomb.ckpt"
    _bomb(path, 256 << 20, method)
    assert path.stat().st_size < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match="compressed or encrypted|declares"):
            checkpoint.load_checkpoint(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, peak


def test_declared_sizes_larger_than_the_file_are_refused(tmp_path):
    path = tmp_path / "c.ckpt"
    checkpoint.save_checkpoint(path, {"x": np.arange(1000.0)})
    raw = bytearray(path.read_bytes())
    # the central directory's uncompressed and compressed sizes of every member: 1 GiB
    at = 0
    while (at := raw.find(b"PK\x01\x02", at)) >= 0:
        raw[at + 20:at + 28] = (1 << 30).to_bytes(4, "little") * 2
        at += 4
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="more data than the file"):
        checkpoint.load_checkpoint(path)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_damaged_files_raise_checkpoint_error_only(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "c.ckpt"
    rng = np.random.default_rng(0)
    checkpoint.save_checkpoint(path, {"w": rng.standard_normal((8, 4)).astype(np.float32),
                                      "step": 3, "pair": (1, [2.5, None])})
    raw = bytearray(path.read_bytes())
    kind = data.draw(st.sampled_from(["flip", "truncate", "splice"]))
    if kind == "flip":
        for at in data.draw(st.lists(st.integers(0, len(raw) - 1), min_size=1, max_size=8)):
            raw[at] ^= data.draw(st.integers(1, 255))
    elif kind == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    else:
        at = data.draw(st.integers(0, len(raw)))
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=64))
    path.write_bytes(bytes(raw))
    try:
        checkpoint.load_checkpoint(path)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)


# -- training states: every field checked, loads all or nothing ------------------------------

def _training_state(tmp_path):
    fastbn.manual_seed(0)
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    _train_steps(model, opt, np.random.default_rng(0))
    sched.step()
    path = tmp_path / "run.ckpt"
    checkpoint.save(path, model, opt, sched, epoch=1)
    return path


def _fresh():
    fastbn.manual_seed(7)
    model = _model()
    opt = optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    _train_steps(model, opt, np.random.default_rng(5), n=1)  # some momentum state
    sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=4)
    return model, opt, sched


def _snapshot(model, opt, sched):
    return (model.state_dict(), opt.state_dict(), sched.state_dict(),
            fastbn.random.get_rng_state())


def _assert_unchanged(before, after):
    for a, b in zip(before[0].values(), after[0].values()):
        np.testing.assert_array_equal(a, b)
    assert before[1]["param_groups"] == after[1]["param_groups"]
    for k in before[1]["state"]:
        for name, v in before[1]["state"][k].items():
            np.testing.assert_array_equal(v, after[1]["state"][k][name])
    assert before[2] == after[2] and before[3] == after[3]


def test_a_failed_load_changes_nothing(tmp_path):
    path = _training_state(tmp_path)
    state = checkpoint.load_checkpoint(path)
    # the model part fits; the optimizer's momentum buffer has the wrong shape
    key = next(iter(state["optimizer"]["state"]))
    state["optimizer"]["state"][key]["momentum_buffer"] = np.zeros(3, np.float32)
    bad_optimizer = tmp_path / "bad_optimizer.ckpt"
    checkpoint.save_checkpoint(bad_optimizer, state)
    state = checkpoint.load_checkpoint(path)
    state["scheduler"]["surprise"] = 1  # the scheduler, loaded last, refuses it
    bad_scheduler = tmp_path / "bad_scheduler.ckpt"
    checkpoint.save_checkpoint(bad_scheduler, state)

    model, opt, sched = _fresh()
    before = _snapshot(model, opt, sched)
    with pytest.raises(CheckpointError, match=f"{bad_optimizer}: field 'optimizer' does not "
                                              "match"):
        checkpoint.load(bad_optimizer, model, opt, sched)
    _assert_unchanged(before, _snapshot(model, opt, sched))
    with pytest.raises(CheckpointError, match="field 'scheduler' does not match"):
        checkpoint.load(bad_scheduler, model, opt, sched)
    _assert_unchanged(before, _snapshot(model, opt, sched))
    adam = optim.Adam(model.parameters())
    with pytest.raises(CheckpointError, match="its optimizer state is SGD's; this optimizer "
                                              "is Adam"):
        checkpoint.load(path, model, adam)
    _assert_unchanged(before, _snapshot(model, opt, sched))


_JUNK = st.recursive(st.none() | st.booleans() | st.integers(-3, 2 ** 70) | st.floats()
                     | st.text(max_size=4),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=6)


def _paths(obj, prefix=()):
    """Every (path of keys) into nested dicts and lists."""
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, prefix + (k,))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from _paths(v, prefix + (i,))


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_wrong_field_types_give_one_checkpoint_error_and_change_nothing(tmp_path_factory,
                                                                       data):
    tmp_path = tmp_path_factory.mktemp("fields")
    path = _training_state(tmp_path)
    state = checkpoint.load_checkpoint(path)
    where = data.draw(st.sampled_from([p for p in _paths(state) if p]))
    parent = state
    for key in where[:-1]:
        parent = parent[key]
    if isinstance(parent, tuple):
        return
    junk = data.draw(_JUNK | st.just(np.zeros(2)))
    if data.draw(st.booleans()) and isinstance(parent, dict):
        del parent[where[-1]]
    else:
        parent[where[-1]] = junk
    checkpoint.save_checkpoint(path, state)
    model, opt, sched = _fresh()
    before = _snapshot(model, opt, sched)
    try:
        checkpoint.load(path, model, opt, sched)
    except CheckpointError as exc:
        assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
        _assert_unchanged(before, _snapshot(model, opt, sched))


# -- saving: read-only files, symlinks, permissions, stale temporary files -------------------

def test_a_read_only_file_is_not_replaced(tmp_path):
    path = tmp_path / "ro.ckpt"
    checkpoint.save_checkpoint(path, {"x": np.arange(3)})
    os.chmod(path, 0o444)
    with pytest.raises(PermissionError) as info:
        checkpoint.save_checkpoint(path, {"x": np.arange(5)})
    assert info.value.filename == str(path) and "read-only" in str(info.value)
    np.testing.assert_array_equal(checkpoint.load_checkpoint(path)["x"], np.arange(3))
    assert os.listdir(tmp_path) == ["ro.ckpt"] and stat.S_IMODE(path.stat().st_mode) == 0o444


def test_a_symlink_is_written_through(tmp_path):
    target = tmp_path / "store" / "real.ckpt"
    target.parent.mkdir()
    checkpoint.save_checkpoint(target, {"x": np.arange(3)})
    os.chmod(target, 0o600)
    link = tmp_path / "link.ckpt"
    link.symlink_to(target)
    checkpoint.save_checkpoint(link, {"x": np.arange(4)})
    assert link.is_symlink() and os.readlink(link) == str(target)
    np.testing.assert_array_equal(checkpoint.load_checkpoint(target)["x"], np.arange(4))
    assert stat.S_IMODE(target.stat().st_mode) == 0o600  # a replaced file keeps its mode
    dangling = tmp_path / "dangling.ckpt"
    dangling.symlink_to(tmp_path / "store" / "new.ckpt")
    checkpoint.save_checkpoint(dangling, {"x": np.arange(2)})
    assert dangling.is_symlink() and (tmp_path / "store" / "new.ckpt").is_file()
    assert sorted(os.listdir(tmp_path / "store")) == ["new.ckpt", "real.ckpt"]


def test_errors_name_the_path_not_a_temporary_file(tmp_path):
    path = tmp_path / "missing" / "c.ckpt"
    with pytest.raises(FileNotFoundError) as info:
        checkpoint.save_checkpoint(path, {"x": 1})
    assert info.value.filename == str(path) and ".tmp" not in str(info.value)
    with pytest.raises(IsADirectoryError) as info:
        checkpoint.save_checkpoint(tmp_path, {"x": 1})
    assert info.value.filename == str(tmp_path)


_WRITER = """
import sys, time
from fastbn._io import atomic_write
with atomic_write(sys.argv[1]) as f:
    f.write(b"partial")
    f.flush()
    print("writing", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def _writer(path, seconds, env):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(seconds)],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline() == "writing\n"
    return proc


def _temps(folder):
    return sorted(p for p in os.listdir(folder) if p.endswith(".tmp"))


def test_temporary_files_of_killed_writers_are_removed_by_the_next_save(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastbn.__file__)))
    path = tmp_path / "run.ckpt"
    killed = _writer(path, 600, env)
    killed.kill()  # SIGKILL: no cleanup runs
    killed.wait()
    assert [f".{killed.pid}." in p for p in _temps(tmp_path)] == [True]
    alive = _writer(path, 600, env)  # the next write to run.ckpt
    try:
        assert [f".{alive.pid}." in p for p in _temps(tmp_path)] == [True]
        checkpoint.save_checkpoint(path, {"x": np.arange(3)})
        assert [f".{alive.pid}." in p for p in _temps(tmp_path)] == [True]  # a live writer's
        other = tmp_path / "other.ckpt"
        killed = _writer(other, 600, env)
        killed.kill()
        killed.wait()
        checkpoint.save_checkpoint(path, {"x": np.arange(3)})
        assert len(_temps(tmp_path)) == 2  # another target's are not touched
    finally:
        alive.kill()
        alive.wait()
    checkpoint.save_checkpoint(path, {"x": np.arange(3)})
    checkpoint.save_checkpoint(tmp_path / "other.ckpt", {"x": np.arange(3)})
    assert _temps(tmp_path) == []


_SAVER = """
import sys
import numpy as np
from fastbn import checkpoint
x = np.random.default_rng(0).standard_normal(2_000_000)
print("ready", flush=True)
while True:
    checkpoint.save_checkpoint(sys.argv[1], {"x": x})
"""


def test_kill_9_during_saves_loses_nothing_and_leaves_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(fastbn.__file__)))
    path = tmp_path / "run.ckpt"
    rng = np.random.default_rng(1)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-c", _SAVER, str(path)],
                                stdout=subprocess.PIPE, text=True, env=env)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.4))
        proc.kill()
        proc.wait()
        if path.exists():  # the old file or the new one, never part of one
            assert checkpoint.load_checkpoint(path)["x"].shape == (2_000_000,)
    checkpoint.save_checkpoint(path, {"x": np.arange(3)})
    assert os.listdir(tmp_path) == ["run.ckpt"]


def test_a_fifo_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    with atomic_write(fifo) as f:
        f.write(b"metrics")
    reader.join(timeout=30)
    assert received == [b"metrics"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
