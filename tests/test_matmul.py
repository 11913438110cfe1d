"""fastbn.kernels.matmul (the tape's linear layers) against a float64 reference,
at one, two and three threads, and its errors; products past the 32-bit BLAS's
sizes, by a lowered size limit on small arrays and for real in subprocesses."""
import contextlib
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbn
from fastbn import _blas
from fastbn import kernels as K

# (m, k, n) of op(a) @ op(b): one call below the serial threshold; above it two
# units split by columns (n > m) or by rows, and many units with a short last one
SHAPES = [(3, 5, 4), (10, 100, 60), (60, 784, 100), (100, 60, 784), (300, 200, 130),
          (520, 256, 200), (7, 4096, 300)]
DTYPES = [np.float32, np.float64]


@pytest.fixture
def rng():
    return np.random.default_rng()


def _operands(rng, m, k, n, ta, tb, dtype):
    """a, b stored so that op(a) is m x k and op(b) is k x n, and op(a), op(b) in float64."""
    A = rng.standard_normal((m, k))
    B = rng.standard_normal((k, n))
    a = (A.T if ta else A).astype(dtype)
    b = (B.T if tb else B).astype(dtype)
    return np.ascontiguousarray(a), np.ascontiguousarray(b), A.astype(dtype).astype(np.float64), \
        B.astype(dtype).astype(np.float64)


def _check_close(out, A, B):
    """Each element within a rounding bound of the float64 sum: k ulps of the sum of
    the magnitudes of its k products."""
    ref = np.einsum("ik,kj->ij", A, B)
    bound = A.shape[1] * np.finfo(out.dtype).eps * np.einsum("ik,kj->ij", abs(A), abs(B))
    assert out.shape == ref.shape and out.dtype in (np.float32, np.float64)
    assert np.all(np.abs(out - ref) <= bound + np.finfo(out.dtype).tiny)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ta,tb", [(False, False), (False, True), (True, False), (True, True)])
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_matches_float64_reference(rng, m, k, n, ta, tb, dtype):
    a, b, A, B = _operands(rng, m, k, n, ta, tb, dtype)
    out = K.matmul(a, b, transpose_a=ta, transpose_b=tb)
    assert out.dtype == dtype
    _check_close(out, A, B)


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
@pytest.mark.parametrize("m,k,n", SHAPES)
def test_same_bits_at_one_two_and_three_threads(rng, m, k, n, schedule):
    a, b, _, _ = _operands(rng, m, k, n, True, False, np.float32)
    outs = []
    for t in (1, 2, 3):
        with fastbn.threads(t):
            outs.append(K.matmul(a, b, transpose_a=True))
    for out in outs[1:]:
        np.testing.assert_array_equal(outs[0], out)


def test_empty_inner_dimension_gives_zeros():
    out = K.matmul(np.empty((3, 0), np.float32), np.empty((0, 4), np.float32))
    assert out.shape == (3, 4) and not out.any()


def test_strided_operands(rng):
    a = rng.standard_normal((40, 90))[:, ::3]
    b = rng.standard_normal((60, 30)).T
    _check_close(K.matmul(a, b), a, b)


@pytest.mark.parametrize("a,b,kw,exc,match", [
    (np.ones((2, 3)), np.ones((4, 2)), {}, ValueError, r"2x3 and op\(b\) is 4x2"),
    (np.ones(3), np.ones((3, 2)), {}, ValueError, "must be 2-D"),
    (np.ones((2, 3), np.float32), np.ones((3, 2)), {}, TypeError, "float32 and float64"),
    (np.ones((2, 3), int), np.ones((3, 2), int), {}, TypeError, "both float32 or both"),
    (np.ones((3, 2)), np.ones((3, 2)), {"transpose_a": True, "transpose_b": True}, ValueError,
     r"2x3 and op\(b\) is 2x3"),
])
def test_bad_operands(a, b, kw, exc, match):
    with pytest.raises(exc, match=match):
        K.matmul(a, b, **kw)


# -- products past the 32-bit BLAS's sizes --------------------------------------------------

@contextlib.contextmanager
def _blas_size_limit(limit):
    """Split products as if the BLAS took sizes and leading dimensions up to limit."""
    previous = _blas.set_size_limit(limit)
    try:
        yield
    finally:
        _blas.set_size_limit(previous)


@settings(max_examples=300, deadline=None)
@given(limit=st.integers(1, 9), m=st.integers(1, 23), k=st.integers(1, 23),
       n=st.integers(1, 23), ta=st.booleans(), tb=st.booleans(),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_split_products_match_float64_reference(limit, m, k, n, ta, tb, dtype, seed):
    """Every path of the splitting: blocks of rows, columns and depth, and operands
    whose rows are longer than the limit (one row per call)."""
    a, b, A, B = _operands(np.random.default_rng(seed), m, k, n, ta, tb, dtype)
    with _blas_size_limit(limit):
        out = K.matmul(a, b, transpose_a=ta, transpose_b=tb)
    _check_close(out, A, B)


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
@pytest.mark.parametrize("ta,tb", [(False, False), (True, True)])
def test_split_products_same_bits_at_any_thread_count(rng, ta, tb):
    a, b, A, B = _operands(rng, 300, 200, 130, ta, tb, np.float32)  # parallel units
    outs = []
    with _blas_size_limit(96):
        for t in (1, 2, 3):
            with fastbn.threads(t):
                outs.append(K.matmul(a, b, transpose_a=ta, transpose_b=tb))
    _check_close(outs[0], A, B)
    for out in outs[1:]:
        np.testing.assert_array_equal(out, outs[0])


def test_size_limit_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        _blas.set_size_limit(0)


# Real sizes, each in a subprocess (a crash fails the test, not the run).  An operand
# of 2**16 x 33792 float32 (> 2**31 elements, so row offsets overflow 32 bits) of
# zeros costs no memory while only read: its rows near the end are random.
_BIG_OPERAND = """
import numpy as np
from fastbn import Tensor
from fastbn import kernels as K
from fastbn.nn import functional as F
rng = np.random.default_rng()
m, k, n = 2**16, 33792, 3
try:
    x = np.zeros((m, k), np.float32)
except MemoryError:
    raise SystemExit("SKIP: no address space for a 9 GB operand")
rows = np.array([0, 2**31 // k, m - 2, m - 1])
x[rows] = rng.standard_normal((len(rows), k))
w = rng.standard_normal((n, k)).astype(np.float32)
for y in (F.linear(Tensor(x), Tensor(w)).numpy(), K.matmul(x, w, transpose_b=True),
          K.matmul(w, x, transpose_b=True).T):
    ref = x[rows].astype(np.float64) @ w.T.astype(np.float64)
    bound = k * np.finfo(np.float32).eps * (abs(x[rows]).astype(np.float64) @ abs(w.T))
    assert np.all(abs(y[rows] - ref) <= bound), "wrong rows"
    y[rows] = 0
    assert not y.any(), "nonzero rows of zeros"
print("OK")
"""

_BIG_OUTPUT = """
import numpy as np
from fastbn import kernels as K
rng = np.random.default_rng()
m, k, n = 2**16, 2, 33792            # an output of 2.2e9 float32 (8.9 GB)
a = rng.standard_normal((m, k)).astype(np.float32)
b = rng.standard_normal((k, n)).astype(np.float32)
y = K.matmul(a, b)
rows = rng.choice(m, 16, replace=False).tolist() + [2**31 // n + 1, m - 1]
ref = a[rows].astype(np.float64) @ b.astype(np.float64)
assert abs(y[rows] - ref).max() <= 4 * np.finfo(np.float32).eps * abs(ref).max()
print("OK")
"""


def _mem_available():
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f
                        if line.startswith("MemAvailable:"))
    except (OSError, StopIteration):
        return 0


def _run_big(run_fastbn, code):
    proc = run_fastbn(code=code, env={"OMP_NUM_THREADS": "2"}, timeout=300)
    if "SKIP:" in proc.stderr:
        pytest.skip(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", \
        f"exit status {proc.returncode}\n{proc.stderr[-3000:]}"


@pytest.mark.skipif(sys.maxsize < 2**32, reason="needs a 64-bit address space")
def test_operand_of_more_than_2_31_elements(run_fastbn):
    _run_big(run_fastbn, _BIG_OPERAND)


@pytest.mark.skipif(_mem_available() < 11 * 2**30,
                    reason="needs 11 GiB of free memory for an 8.9 GB output")
def test_output_of_more_than_2_31_elements(run_fastbn):
    """About 5 s and 9 GB: the only way to check the output's own offsets."""
    _run_big(run_fastbn, _BIG_OUTPUT)
