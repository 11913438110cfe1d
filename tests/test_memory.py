"""fastbn.memory: the caching NumPy allocator gives back correct, reused memory."""
import subprocess
import sys
import threading

import numpy as np
import pytest

import fastbn
from fastbn import memory

from concurrency import run_threads

BIG = 1 << 20  # float64 values: 8 MiB, well above the cached block size


def test_installed_on_import_and_reuses_blocks():
    assert memory.is_enabled()
    a = np.full(BIG, 7.0)
    del a
    before = memory.cache_info()
    assert before["cached"] >= 8 * BIG
    b = np.zeros(BIG)          # calloc from a dirty cached block: still zeros
    assert not b.any()
    c = np.empty(BIG)
    assert memory.cache_info()["hits"] >= before["hits"] + 1
    c[:] = 1.5
    b += c
    assert np.all(b == 1.5)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows blocks come from malloc")
def test_new_large_blocks_are_line_aligned():
    """New blocks start on a 64-byte line (glibc's large ones start 16 bytes in)."""
    memory.empty_cache()
    arrays = [np.empty(BIG + 1000 * i, np.float32) for i in range(8)]
    assert [a.ctypes.data % 64 for a in arrays] == [0] * 8
    first = arrays[0].ctypes.data
    del arrays
    b = np.empty(BIG, np.float32)   # the first array's block, from the cache
    assert b.ctypes.data == first


def test_resize_in_place_keeps_the_data():
    a = np.arange(BIG, dtype=np.float64)
    a.resize(3 * BIG, refcheck=False)   # realloc of a cached-size block
    np.testing.assert_array_equal(a[:BIG], np.arange(BIG))
    assert not a[BIG:].any()


def test_limit_and_empty_cache():
    try:
        memory.set_cache_limit(0)
        del_me = np.ones(BIG)
        del del_me
        assert memory.cache_info()["cached"] == 0
        memory.set_cache_limit(16 << 20)
        arrays = [np.ones(BIG) for _ in range(4)]
        del arrays
        info = memory.cache_info()
        assert 0 < info["cached"] <= 16 << 20 and info["limit"] == 16 << 20
        memory.empty_cache()
        assert memory.cache_info()["cached"] == 0
    finally:
        memory.set_cache_limit(memory.DEFAULT_LIMIT)
    for bad in (-1, 1.5, True, "1"):
        with pytest.raises(ValueError, match="cache limit"):
            memory.set_cache_limit(bad)


def test_disable_and_enable():
    try:
        memory.disable()
        assert not memory.is_enabled()
        assert memory.cache_info()["cached"] == 0
        a = np.ones(BIG)
        del a
        assert memory.cache_info()["cached"] == 0
    finally:
        memory.enable()
    assert memory.is_enabled()


def test_threads_allocate_and_free_at_once():
    """Arrays made in one thread and freed in another; every block holds its data."""
    errors, handoff = [], []
    lock = threading.Lock()

    def work(seed):
        memory.enable()   # a new thread starts with NumPy's default allocator
        rng = np.random.default_rng(seed)
        try:
            for i in range(200):
                n = int(rng.integers(BIG // 8, BIG))
                a = np.full(n, float(seed * 1000 + i))
                with lock:
                    handoff.append(a)
                    mine = handoff.pop(0)
                v = mine[0]
                if not np.all(mine == v):
                    errors.append((seed, i))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    run_threads(work, range(4))
    assert not errors


def test_environment_variable_turns_it_off():
    code = "import fastbn; print(fastbn.memory.is_enabled())"
    env = {"FASTBN_CACHING_ALLOCATOR": "0", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True, cwd=fastbn.__path__[0] + "/..")
    assert out.stdout.strip() == "False"
