"""Build configuration, thread control and the `info` command."""
import os
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbn
from fastbn._config import MAX_THREADS

OPENMP = fastbn.show_config(as_dict=True)["openmp"]


def test_show_config_dict_and_print(capsys):
    info = fastbn.show_config(as_dict=True)
    assert info["version"] == fastbn.__version__
    assert isinstance(info["openmp"], bool)
    assert info["num_threads"] == fastbn.get_num_threads()
    flags = info["build_flags"].split()
    assert "-O3" in flags or "/O2" in flags
    assert any(f in ("-fopenmp", "/openmp") for f in flags) == info["openmp"]
    assert "blas" in info["numpy"] and "blas" in info["scipy"]
    assert fastbn.show_config() is None
    out = capsys.readouterr().out
    assert "openmp" in out and fastbn.__version__ in out


def test_gemm_kernels_are_those_threadpoolctl_sees():
    """show_config's gemm_kernels: the core type of the OpenBLAS behind
    scipy.linalg.cython_blas, as threadpoolctl reads it (scipy's own library)."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg.cython_blas as cython_blas
    libs = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(cython_blas.__file__))),
                        "scipy.libs")
    seen = [i["architecture"] for i in threadpoolctl.threadpool_info()
            if i.get("internal_api") == "openblas" and i["filepath"].startswith(libs)]
    if not seen:
        pytest.skip("scipy's BLAS is not a bundled OpenBLAS here")
    assert fastbn.show_config(as_dict=True)["gemm_kernels"] == seen[0]


@pytest.mark.skipif(not OPENMP, reason="serial build")
def test_set_num_threads_and_context_manager():
    default = fastbn.get_num_threads()
    try:
        fastbn.set_num_threads(3)
        assert fastbn.get_num_threads() == 3
        with fastbn.threads(1):
            assert fastbn.get_num_threads() == 1
            seen = []
            t = threading.Thread(target=lambda: seen.append(fastbn.get_num_threads()))
            t.start()
            t.join()
            assert seen == [3]  # the context manager is per Python thread
        assert fastbn.get_num_threads() == 3
    finally:
        fastbn.set_num_threads(None)
    assert fastbn.get_num_threads() == default


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_thread_counts(bad):
    with pytest.raises(ValueError, match="positive int"):
        fastbn.set_num_threads(bad)
    with pytest.raises(ValueError, match="positive int"):
        with fastbn.threads(bad):
            pass


def test_numpy_integer_thread_counts_are_taken_as_ints():
    """torch.set_num_threads(np.int64(2)) works; so does fastbn's, as a Python int."""
    import numpy as np
    default = fastbn.get_num_threads()
    try:
        fastbn.set_num_threads(np.int64(2))
        assert fastbn.get_num_threads() == 2 and type(fastbn.get_num_threads()) is int
        with fastbn.threads(np.int32(3)):
            assert fastbn.get_num_threads() == 3
    finally:
        fastbn.set_num_threads(None)
    assert fastbn.get_num_threads() == default
    with pytest.raises(ValueError, match="positive int"):
        fastbn.set_num_threads(np.float64(2.0))


@settings(max_examples=200, deadline=None)
@given(n=st.one_of(st.integers(-2**70, 2**70), st.integers(MAX_THREADS - 2, MAX_THREADS + 2),
                   st.sampled_from([100000, 2**31, 2**31 - 1, 2**32, 2**63])))
def test_thread_counts_past_the_maximum_are_refused_up_front(n):
    """On main 100000 was accepted, then the next kernel died with signal 11, and
    2**31 made every call raise OverflowError."""
    default = fastbn.get_num_threads()
    if 1 <= n <= MAX_THREADS:
        with fastbn.threads(n):
            assert fastbn.get_num_threads() == n
        return
    with pytest.raises(ValueError, match="at most|positive int"):
        fastbn.set_num_threads(n)
    with pytest.raises(ValueError, match="at most|positive int"):
        with fastbn.threads(n):
            pass
    assert fastbn.get_num_threads() == default


_MAX_THREADS_KERNELS = """
import numpy as np
import fastbn
from fastbn import kernels as K
from fastbn._config import MAX_THREADS
rng = np.random.default_rng()
x = rng.standard_normal((64, 16, 32, 32)).astype(np.float32)
w = rng.standard_normal((16, 16, 3, 3)).astype(np.float32)

def every_kernel():
    y, mean, invstd = K.batch_norm_forward(x)
    out = [K.relu_forward(x), y, K.batch_norm_backward(x, x, None, mean, invstd)[0],
           K.matmul(x.reshape(1024, 1024), x.reshape(1024, 1024)[:512], transpose_b=True),
           *K.max_pool2d_forward(x, 2), K.avg_pool2d_forward(x, 3, 2, 1),
           K.adaptive_avg_pool2d_forward(x, 5)]
    for algorithm in ("winograd", "im2col"):
        y, cols = K.conv2d_forward(x, w, padding=1, algorithm=algorithm)
        out += [y, *K.conv2d_backward(y, x, w, cols, padding=1, algorithm=algorithm)]
    p = x.copy()
    K.sgd_update(p, x, None, 0.1)
    return out + [p]

with fastbn.threads(1):
    ref = every_kernel()
fastbn.set_num_threads(MAX_THREADS)
assert all(np.array_equal(a, b) for a, b in zip(every_kernel(), ref))
print("OK")
"""


@pytest.mark.skipif(not OPENMP, reason="serial build")
def test_every_kernel_runs_at_the_maximum_thread_count(run_fastbn):
    """The largest count accepted works (same bits as one thread), in a subprocess so
    that a crash fails the test."""
    out = run_fastbn(code=_MAX_THREADS_KERNELS, env={"OMP_WAIT_POLICY": "passive"})
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-3000:]


@pytest.mark.skipif(not OPENMP, reason="serial build")
@pytest.mark.parametrize("n", [MAX_THREADS + 1, 100000, 2**31 - 1])
def test_omp_num_threads_past_the_maximum_is_capped(n, run_fastbn):
    """A larger OMP_NUM_THREADS (which the runtime accepts) becomes MAX_THREADS with
    a RuntimeWarning naming it, and every kernel runs there with one thread's bits;
    set_num_threads(None) returns to the capped value."""
    code = _MAX_THREADS_KERNELS.replace(
        "fastbn.set_num_threads(MAX_THREADS)",
        "import warnings\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    fastbn.set_num_threads(None)\n"
        "    assert fastbn.get_num_threads() == MAX_THREADS\n"
        "assert [w.category for w in caught] == [RuntimeWarning], caught\n"
        "assert 'OMP_NUM_THREADS' in str(caught[0].message), caught[0].message\n"
        "fastbn.set_num_threads(None)")
    assert code != _MAX_THREADS_KERNELS
    out = run_fastbn(code=code, env={"OMP_NUM_THREADS": str(n), "OMP_WAIT_POLICY": "passive"})
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-3000:]


@pytest.mark.skipif(not OPENMP, reason="serial build")
@pytest.mark.parametrize("n", ["1", "3"])
def test_omp_num_threads_is_respected(n, run_fastbn):
    out = run_fastbn(code="import fastbn; print(fastbn.get_num_threads())",
                     env={"OMP_NUM_THREADS": n})
    assert out.stdout.strip() == n


@pytest.mark.skipif(not OPENMP, reason="serial build")
def test_threadpoolctl_sees_and_limits_our_openmp():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import fastbn._core  # noqa: F401  (loads the runtime)

    apis = {p["user_api"] for p in threadpoolctl.threadpool_info()}
    assert "openmp" in apis
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fastbn.get_num_threads() == 1


def test_info_command_runs(run_fastbn):
    out = run_fastbn("info", "--repeat", "3", "--shape", "8", "4", "6", "6")
    assert out.returncode == 0, out.stderr
    assert "openmp" in out.stdout and "speed-up" in out.stdout
