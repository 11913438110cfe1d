"""fastbn's thread team (fastbn/_parallel.h): its test hook, a process forked
after the team started, and the thread count the trainer's --threads auto picks.
Results under unusual schedules are checked by each kernel's same-bits test (the
`schedule` fixture in conftest.py)."""
import os
import select
import signal

import numpy as np
import pytest

import fastbn
from fastbn import _config, _parallel
from fastbn.kernels import batch_norm_backward, batch_norm_forward


def test_set_order_rejects_unknown_orders():
    with pytest.raises(ValueError, match="order must be one of"):
        _parallel.set_order("backwards")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_runs_parallel_kernels():
    """The child of a fork has none of the parent's workers: its kernels start
    their own (Linux: the child has a second thread) and give the parent's bits
    (an OpenMP runtime's team can hang there)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 16, 32, 32)).astype(np.float32)
    with fastbn.threads(2):
        y, mean, invstd = batch_norm_forward(x)  # the team is up in this process
        expected = [y, *batch_norm_backward(x, x, None, mean, invstd)]
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, and never return into pytest
            code = 1
            try:
                y, mean, invstd = batch_norm_forward(x)
                got = [y, *batch_norm_backward(x, x, None, mean, invstd)]
                code = 0 if all(np.array_equal(a, b) for a, b in zip(got, expected)) else 2
                if code == 0 and os.path.isdir("/proc/self/task"):
                    code = 0 if len(os.listdir("/proc/self/task")) > 1 else 3
            finally:
                os.write(write, bytes([code]))
                os._exit(0)
    os.close(write)
    try:
        ready, _, _ = select.select([read], [], [], 60)
        if not ready:
            os.kill(pid, signal.SIGKILL)
        answer = os.read(read, 1) if ready else b""
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert answer, "the child hung"
    assert answer != b"\x02", "the child got other bits"
    assert answer != b"\x03", "the child started no worker"
    assert answer == b"\x00"


def test_available_cores_follows_the_affinity_mask(run_fastbn):
    assert 1 <= _config.available_cores() <= (os.cpu_count() or 1)
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    one = min(os.sched_getaffinity(0))
    proc = run_fastbn(code=f"import os; os.sched_setaffinity(0, {{{one}}}); "
                           "from fastbn import _config; "
                           "print(_config.available_cores(), _config.auto_threads())")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "1"]


@pytest.mark.parametrize("v2,files,cpus", [
    (True, {"cpu.max": "150000 100000\n"}, 2),      # --cpus=1.5: rounded up
    (True, {"cpu.max": "max 100000\n"}, None),
    (False, {"cpu.cfs_quota_us": "400000\n", "cpu.cfs_period_us": "100000\n"}, 4),
    (False, {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}, None),
    (True, {}, None),                                # not readable
])
def test_cgroup_quota(tmp_path, v2, files, cpus):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert _config._quota_cpus(str(tmp_path), v2) == cpus


def test_auto_threads_shares_the_cores(monkeypatch):
    monkeypatch.setattr(_config, "available_cores", lambda: 8)
    with fastbn.threads(16):
        assert [_config.auto_threads(p) for p in (1, 2, 3, 8, 9)] == [8, 4, 2, 1, 1]
    with fastbn.threads(2):  # at most fastbn's own count (OMP_NUM_THREADS)
        assert _config.auto_threads() == 2
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="processes must be a positive int"):
            _config.auto_threads(bad)
