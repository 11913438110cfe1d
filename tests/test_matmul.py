"""fastbn.kernels.matmul (the tape's linear layers) against a float64 reference,
at one, two and three threads, and its errors."""
import numpy as np
import pytest

import fastbn
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
