"""Shared by the kernel tests: a plain float64 NumPy reference of Batch
Normalization, tolerances and random cases (tests/conftest.py puts this
directory on sys.path, so it imports in pytest's importlib mode too)."""
import numpy as np

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
# (N, C), (N, C, L) and NCHW; C = 1 and 3 with large N*L exercise the block-parallel path;
# (131, 7, 3, 3): short rows in two blocks (130 + 1 rows), neither a multiple of 4 or 8;
# (5, 4100): (N, C) rows normalized in runs of 2048 channels, the last one short.
SHAPES = [(60, 100), (7, 3), (16, 5, 9), (4, 6, 5, 7), (3, 1, 40000), (2, 3, 130, 131),
          (40, 24, 8, 8), (9, 2, 3, 2, 4), (131, 7, 3, 3), (5, 4100)]


# ---------------------------------------------------------------- reference

def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _bshape(x):
    return (1, x.shape[1]) + (1,) * (x.ndim - 2)


def ref_forward_train(x, w, b, eps):
    x = x.astype(np.float64)
    mean = x.mean(axis=_axes(x))
    var = ((x - mean.reshape(_bshape(x))) ** 2).mean(axis=_axes(x))
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean.reshape(_bshape(x))) * invstd.reshape(_bshape(x))
    return xhat * w.reshape(_bshape(x)) + b.reshape(_bshape(x)), mean, var, invstd


def ref_backward_train(dy, x, w, eps):
    dy = dy.astype(np.float64)
    _, mean, _, invstd = ref_forward_train(x, np.ones_like(w), np.zeros_like(w), eps)
    xhat = (x - mean.reshape(_bshape(x))) * invstd.reshape(_bshape(x))
    m = x.size // x.shape[1]
    dbias = dy.sum(axis=_axes(x))
    dweight = (dy * xhat).sum(axis=_axes(x))
    dx = (w * invstd).reshape(_bshape(x)) / m * (
        m * dy - dbias.reshape(_bshape(x)) - xhat * dweight.reshape(_bshape(x)))
    return dx, dweight, dbias


def assert_close(actual, expected, dtype, scale=None, tol=None):
    """Norm-wise relative error: max |a - e| <= tol * scale, scale = max |e| by
    default (elementwise relative error is meaningless where e crosses zero)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape
    if not expected.size:
        return
    tol = TOL[dtype] if tol is None else tol
    scale = max(np.max(np.abs(expected)), 1e-300) if scale is None else scale
    err = np.max(np.abs(actual - expected)) / scale
    assert err <= tol, f"relative error {err:.3g} > {tol}"


def sum_scale(terms, x):
    """The yardstick for a floating-point sum: the largest per-channel sum of |terms|
    (a sum's error is bounded relative to it, not to the sum, which may cancel)."""
    return np.max(np.abs(np.asarray(terms, np.float64)).sum(axis=_axes(x)))


def random_case(rng, shape, dtype):
    C = shape[1]
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    return x, w, b


def random_running_stats(rng, C, dtype):
    """Running mean and variance of C channels, as a trained layer might hold."""
    return rng.standard_normal(C).astype(dtype), rng.uniform(0.5, 2, C).astype(dtype)


# Shapes whose bits are compared at 1, 2 and 3 threads (large enough to run parallel).
THREAD_SHAPES = [(64, 16, 32, 32), (16, 3, 64, 64), (2, 1, 70000), (512, 200), (4, 64, 9000),
                 (48, 20, 8, 8), (12, 4100)]
