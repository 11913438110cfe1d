"""The normalization family's kernels (fastbn.kernels group/layer/instance norm, Batch
Renormalization, ghost batches) against plain float64 NumPy references, and the
properties every kernel promises: robust statistics, the same bits at any thread count,
the GIL released, several Python threads at once."""
import sys
import threading

import numpy as np
import pytest

import fastbn
from fastbn import kernels

from bn_reference import assert_close, random_running_stats, ref_backward_train, ref_forward_train
from concurrency import run_threads
from norm_reference import (ref_batch_renorm, ref_batch_renorm_backward, ref_ghost_batch_norm,
                            ref_group_norm, ref_group_norm_backward, ref_instance_running,
                            ref_layer_norm, ref_layer_norm_backward)

DTYPES = [np.float32, np.float64]
TOL = {np.float32: 2e-5, np.float64: 1e-12}


@pytest.fixture
def rng():
    return np.random.default_rng()


def _data(rng, shape, dtype, C):
    x = (rng.standard_normal(shape) * rng.uniform(0.5, 3) + rng.uniform(-2, 2)).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    w = rng.uniform(0.5, 1.5, C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    return x, dy, w, b


def _random_group_shape(rng):
    """(N, C, *spatial) with C = G * Cg, groups of at least 3 values; spatial sizes
    on both sides of the segment/position paths' boundary (32 values a channel)."""
    G, Cg = int(rng.integers(1, 6)), int(rng.integers(1, 6))
    spatial = [tuple(), (int(rng.integers(2, 9)),), (int(rng.integers(3, 9)),
                                                     int(rng.integers(5, 12))),
               (int(rng.integers(33, 90)),)][int(rng.integers(0, 4))]
    if Cg * int(np.prod(spatial)) < 3:
        Cg += 3
    return (int(rng.integers(1, 7)), G * Cg) + spatial, G


def _check_grads(got, want, dy, x, dtype, scale):
    """dx against the reference norm-wise, relative to `scale` at least (its terms'
    size, invstd * |weight| * |dy|: with few values a group's dx cancels to far
    less); dweight, dbias against the yardstick of a sum (the sum of |terms|)."""
    dx, dw, db = got
    dx_ref, dw_ref, db_ref = want
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype, scale=max(scale, np.max(np.abs(dx_ref))), tol=TOL[dtype])
    assert_close(db, db_ref, dtype, scale=np.abs(dy.astype(np.float64)).sum() + 1e-300,
                 tol=TOL[dtype])
    assert_close(dw, dw_ref, dtype, scale=np.abs(dy.astype(np.float64)).sum() * 4 + 1e-300,
                 tol=TOL[dtype])


# ---------------------------------------------------------------- GroupNorm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trial", range(6))
def test_group_norm_matches_reference(rng, dtype, trial):
    shape, G = _random_group_shape(rng)
    x, dy, w, b = _data(rng, shape, dtype, shape[1])
    y, mean, invstd = kernels.group_norm_forward(x, G, w, b)
    y_ref, mean_ref, _, invstd_ref = ref_group_norm(x, G, w, b)
    assert y.dtype == mean.dtype == dtype and mean.shape == (shape[0], G)
    assert_close(y, y_ref, dtype, tol=TOL[dtype])
    assert_close(mean, mean_ref, dtype, tol=TOL[dtype])
    assert_close(invstd, invstd_ref, dtype, tol=TOL[dtype])
    got = kernels.group_norm_backward(dy, x, G, w, mean, invstd)
    _check_grads(got, ref_group_norm_backward(dy, x, G, w), dy, x, dtype,
                 _terms(dy, w, invstd_ref))


def _terms(dy, w, invstd):
    return np.max(np.abs(dy)) * np.max(np.abs(w)) * np.max(invstd)


@pytest.mark.parametrize("shape,G", [((32, 64, 28, 28), 8), ((4, 6, 3, 3), 3), ((5, 8), 2),
                                     ((3, 12, 40), 12), ((2, 4, 70000), 1)])
def test_group_norm_paths(rng, shape, G):
    """Long and short channels, (N, C) input, one channel a group, long rows."""
    x, dy, w, b = _data(rng, shape, np.float32, shape[1])
    y, mean, invstd = kernels.group_norm_forward(x, G, w, b)
    assert_close(y, ref_group_norm(x, G, w, b)[0], np.float32, tol=TOL[np.float32])
    got = kernels.group_norm_backward(dy, x, G, w, mean, invstd)
    _check_grads(got, ref_group_norm_backward(dy, x, G, w), dy, x, np.float32,
                 _terms(dy, w, invstd.astype(np.float64)))


def test_group_norm_without_affine(rng):
    x, dy, _, _ = _data(rng, (4, 6, 5), np.float64, 6)
    y, mean, invstd = kernels.group_norm_forward(x, 2)
    assert_close(y, ref_group_norm(x, 2, None, None)[0], np.float64)
    dx, dw, db = kernels.group_norm_backward(dy, x, 2, None, mean, invstd)
    assert dw is None and db is None
    assert_close(dx, ref_group_norm_backward(dy, x, 2, None)[0], np.float64)


def _group_or_layer(rng, shape, G, dtype):
    """x, dy, weight, bias, forward, backward and their groups-or-shape argument:
    GroupNorm with G groups for a shape of 3 dimensions, else LayerNorm over the last."""
    if len(shape) == 2:
        x, dy, _, _ = _data(rng, shape, dtype, 1)
        w, b = (rng.uniform(0.5, 1.5, shape[1]).astype(dtype) for _ in range(2))
        return x, dy, w, b, kernels.layer_norm_forward, kernels.layer_norm_backward, shape[1:]
    return (*_data(rng, shape, dtype, shape[1]), kernels.group_norm_forward,
            kernels.group_norm_backward, G)


@pytest.mark.parametrize("need", [(True, False, False), (False, True, False),
                                  (False, False, True), (False, True, True)])
@pytest.mark.parametrize("shape", [(6, 8, 40), (6, 8, 5), (70, 9)])
def test_backward_computes_only_what_is_needed(rng, shape, need):
    """GroupNorm on both paths, and LayerNorm (70, 9): each gradient alone has the bits
    it has beside the others."""
    x, dy, w, b, fwd, bwd, arg = _group_or_layer(rng, shape, 4, np.float32)
    _, mean, invstd = fwd(x, arg, w, b)
    full = bwd(dy, x, arg, w, mean, invstd)
    out = bwd(dy, x, arg, w, mean, invstd, *need)
    for got, want, needed in zip(out, full, need):
        if needed:
            np.testing.assert_array_equal(got, want)
        else:
            assert got is None


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,G", [((40, 8, 50), 4), ((400, 8, 5), 4), ((2500, 7), 1)])
def test_a_sample_gives_the_same_bits_wherever_it_is_in_the_batch(rng, shape, G, dtype):
    """Work units are runs of rows fixed by the shape, so dropping the first sample moves
    every unit's start: the other samples' y, statistics and dx keep their bits."""
    x, dy, w, b, fwd, bwd, arg = _group_or_layer(rng, shape, G, dtype)

    def run(x, dy):
        y, mean, invstd = fwd(x, arg, w, b)
        return y, mean, invstd, bwd(dy, x, arg, w, mean, invstd, True, False, False)[0]
    for whole, part in zip(run(x, dy), run(x[1:].copy(), dy[1:].copy())):
        np.testing.assert_array_equal(whole[1:], part)


# ---------------------------------------------------------------- LayerNorm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,k", [((64, 197, 384), 1), ((7, 5), 1), ((3, 4, 5, 6), 2),
                                     ((2, 3, 9000), 1), ((5, 3, 4), 3), ((11, 2), 1),
                                     ((4000, 3), 1)])
def test_layer_norm_matches_reference(rng, shape, k, dtype):
    norm = shape[len(shape) - k:]
    x, dy, _, _ = _data(rng, shape, dtype, 1)
    w = rng.uniform(0.5, 1.5, norm).astype(dtype)
    b = rng.standard_normal(norm).astype(dtype)
    y, mean, invstd = kernels.layer_norm_forward(x, norm, w, b)
    y_ref, mean_ref, _, invstd_ref = ref_layer_norm(x, norm, w, b)
    assert mean.shape == shape[:len(shape) - k]
    assert_close(y, y_ref, dtype, tol=TOL[dtype])
    assert_close(mean, mean_ref, dtype, tol=TOL[dtype])
    assert_close(invstd, invstd_ref, dtype, tol=TOL[dtype])
    dx, dw, db = kernels.layer_norm_backward(dy, x, norm, w, mean, invstd)
    assert dw.shape == db.shape == norm
    dx_ref, dw_ref, db_ref = ref_layer_norm_backward(dy, x, norm, w)
    _check_grads((dx, dw.ravel(), db.ravel()), (dx_ref, dw_ref.ravel(), db_ref.ravel()), dy, x,
                 dtype, _terms(dy, w, invstd_ref))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_of_large_odd_rows(rng, dtype):
    """16 MiB or more of rows of an odd length, which start at every alignment: the same
    bits at 1 and 3 threads, and the reference's values."""
    shape = (3, 1400, 1001) if dtype == np.float32 else (2, 1025, 1031)
    x, dy, _, _ = _data(rng, shape, dtype, 1)
    w = rng.uniform(0.5, 1.5, shape[-1]).astype(dtype)
    b = rng.standard_normal(shape[-1]).astype(dtype)
    runs = []
    for n in (1, 3):
        with fastbn.threads(n):
            y, mean, invstd = kernels.layer_norm_forward(x, shape[-1], w, b)
            runs.append((y, *kernels.layer_norm_backward(dy, x, shape[-1], w, mean, invstd)))
    for a, b_ in zip(*runs):
        np.testing.assert_array_equal(a, b_)
    y, dx, dw, db = runs[0]
    assert_close(y, ref_layer_norm(x, shape[-1:], w, b)[0], dtype, tol=TOL[dtype])
    dx_ref, dw_ref, db_ref = ref_layer_norm_backward(dy, x, shape[-1:], w)
    _check_grads((dx, dw, db), (dx_ref, dw_ref, db_ref), dy, x, dtype,
                 _terms(dy, w, ref_layer_norm(x, shape[-1:], w, b)[3]))


def test_layer_norm_of_one_value_is_the_bias(rng):
    """normalized_shape (1,): the variance is 0 and y is the bias (PyTorch's too)."""
    x = rng.standard_normal((5, 1)).astype(np.float32)
    b = np.array([0.25], np.float32)
    y, _, _ = kernels.layer_norm_forward(x, (1,), np.array([2.0], np.float32), b)
    assert np.all(y == b)


# ---------------------------------------------------------------- InstanceNorm

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 50), (2, 5, 7, 3), (3, 4, 6)])
def test_instance_norm_matches_reference(rng, shape, dtype):
    N, C = shape[:2]
    x, dy, w, b = _data(rng, shape, dtype, C)
    rm, rv = random_running_stats(rng, C, dtype)
    rm_ref, rv_ref = ref_instance_running(rm.astype(np.float64), rv.astype(np.float64), x, 0.3)
    y, mean, invstd = kernels.instance_norm_forward(x, w, b, rm, rv, True, 0.3)
    y_ref, mean_ref, _, _ = ref_group_norm(x, C, w, b)
    assert mean.shape == (N, C)
    assert_close(y, y_ref, dtype, tol=TOL[dtype])
    assert_close(mean, mean_ref, dtype, tol=TOL[dtype])
    assert_close(rm, rm_ref, dtype, tol=TOL[dtype])
    assert_close(rv, rv_ref, dtype, tol=TOL[dtype])
    got = kernels.instance_norm_backward(dy, x, w, mean, invstd)
    _check_grads(got, ref_group_norm_backward(dy, x, C, w), dy, x, dtype,
                 _terms(dy, w, ref_group_norm(x, C, w, b)[3]))
    # running statistics: Batch Normalization's inference, which leaves them alone
    rm0, rv0 = rm.copy(), rv.copy()
    y, mean, invstd = kernels.instance_norm_forward(x, w, b, rm, rv, False)
    bs = (1, C) + (1,) * (x.ndim - 2)
    y_ref = ((x - rm.reshape(bs)) / np.sqrt(rv.astype(np.float64) + 1e-5).reshape(bs)
             * w.reshape(bs) + b.reshape(bs))
    assert_close(y, y_ref, dtype, tol=TOL[dtype])
    np.testing.assert_array_equal(rm, rm0)
    np.testing.assert_array_equal(rv, rv0)
    dx, _, _ = kernels.instance_norm_backward(dy, x, w, mean, invstd, use_input_stats=False)
    assert_close(dx, dy * (w * invstd).reshape(bs), dtype, tol=TOL[dtype])


# ---------------------------------------------------------------- Batch Renormalization

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(16, 5, 7), (40, 6), (8, 3, 5, 5)])
def test_batch_renorm_with_clipping_matches_reference(rng, shape, dtype):
    """Running statistics far from the batch's: r and d clip on some channels, not on
    others."""
    C = shape[1]
    x, dy, w, b = _data(rng, shape, dtype, C)
    _, mean_b, var_b, _ = ref_forward_train(x, w, b, 1e-5)
    ratio = np.resize([10.0, 1.3, 0.1], C)      # r = 1 / sqrt(ratio): 0.32, 0.88, 3.2
    rv = (var_b * ratio).astype(dtype)
    rm = (mean_b - np.resize([3.0, -0.2], C) * np.sqrt(rv)).astype(dtype)  # d = 3, -0.2
    y_ref, r_ref, d_ref = ref_batch_renorm(x, w, b, rm, rv, 2.0, 1.0)
    assert np.any(np.abs(d_ref) == 1.0) and np.any(np.abs(d_ref) < 1.0)
    assert np.any(np.isin(r_ref, (0.5, 2.0))) and np.any((0.5 < r_ref) & (r_ref < 2.0))
    rm1, rv1 = rm.astype(np.float64), rv.astype(np.float64)
    y, mean, invstd, r, d = kernels.batch_renorm_forward(x, w, b, rm, rv, 2.0, 1.0, 0.1)
    assert_close(y, y_ref, dtype, tol=TOL[dtype])
    np.testing.assert_allclose(r, r_ref, rtol=TOL[dtype] * 10)
    np.testing.assert_allclose(d, d_ref, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    m = x.size // C
    assert_close(rm, 0.9 * rm1 + 0.1 * mean_b, dtype, tol=TOL[dtype])
    assert_close(rv, 0.9 * rv1 + 0.1 * var_b * m / (m - 1), dtype, tol=TOL[dtype])
    got = kernels.batch_renorm_backward(dy, x, w, mean, invstd, r, d)
    _check_grads(got, ref_batch_renorm_backward(dy, x, w, r_ref, d_ref), dy, x, dtype,
                 _terms(dy, w * r_ref, invstd.astype(np.float64)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_renorm_unclipped_equals_batch_norm_exactly(rng, dtype):
    x, dy, w, b = _data(rng, (12, 4, 6, 6), dtype, 4)
    rm, rv = random_running_stats(rng, 4, dtype)
    rm2, rv2 = rm.copy(), rv.copy()
    y, mean, invstd, r, d = kernels.batch_renorm_forward(x, w, b, rm, rv, 1.0, 0.0)
    y_bn, mean_bn, invstd_bn = kernels.batch_norm_forward(x, w, b, rm2, rv2)
    for a, e in ((y, y_bn), (mean, mean_bn), (invstd, invstd_bn), (rm, rm2), (rv, rv2)):
        np.testing.assert_array_equal(a, e)
    for a, e in zip(kernels.batch_renorm_backward(dy, x, w, mean, invstd, r, d),
                    kernels.batch_norm_backward(dy, x, w, mean_bn, invstd_bn)):
        np.testing.assert_array_equal(a, e)


# ---------------------------------------------------------------- Ghost Batch Normalization

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,size", [((10, 3, 4), 4), ((12, 5), 3), ((7, 2, 3, 3), 2)])
def test_ghost_batch_norm_matches_reference(rng, shape, size, dtype):
    C = shape[1]
    x, dy, w, b = _data(rng, shape, dtype, C)
    rm, rv = random_running_stats(rng, C, dtype)
    rm1, rv1 = rm.astype(np.float64), rv.astype(np.float64)
    y, mean, invstd = kernels.ghost_batch_norm_forward(x, w, b, rm, rv, size, 0.2)
    y_ref, stats = ref_ghost_batch_norm(x, w, b, size)
    assert mean.shape == (len(stats), C)
    assert_close(y, y_ref, dtype, tol=TOL[dtype])
    counts = np.array([s[0] for s in stats], float) / shape[0]
    assert_close(rm, 0.8 * rm1 + 0.2 * sum(c * s[1] for c, s in zip(counts, stats)), dtype,
                 tol=TOL[dtype])
    assert_close(rv, 0.8 * rv1 + 0.2 * sum(c * s[2] for c, s in zip(counts, stats)), dtype,
                 tol=TOL[dtype])
    dx, dw, db = kernels.ghost_batch_norm_backward(dy, x, w, mean, invstd, size)
    refs = [ref_backward_train(dy[a:a + size], x[a:a + size], w, 1e-5)
            for a in range(0, shape[0], size)]
    want = (np.concatenate([r[0] for r in refs]), sum(r[1] for r in refs),
            sum(r[2] for r in refs))
    _check_grads((dx, dw, db), want, dy, x, dtype, _terms(dy, w, invstd.astype(np.float64)))


@pytest.mark.parametrize("size", [16, 40])
def test_ghost_batch_norm_of_one_ghost_batch_equals_batch_norm_exactly(rng, size):
    x, dy, w, b = _data(rng, (16, 6, 5, 5), np.float32, 6)
    rm, rv = random_running_stats(rng, 6, np.float32)
    rm2, rv2 = rm.copy(), rv.copy()
    y, mean, invstd = kernels.ghost_batch_norm_forward(x, w, b, rm, rv, size)
    y_bn, mean_bn, invstd_bn = kernels.batch_norm_forward(x, w, b, rm2, rv2)
    for a, e in ((y, y_bn), (mean[0], mean_bn), (invstd[0], invstd_bn), (rm, rm2), (rv, rv2)):
        np.testing.assert_array_equal(a, e)
    for a, e in zip(kernels.ghost_batch_norm_backward(dy, x, w, mean, invstd, size),
                    kernels.batch_norm_backward(dy, x, w, mean_bn, invstd_bn)):
        np.testing.assert_array_equal(a, e)


# ---------------------------------------------------------------- numerics

def _forwards(x, eps=1e-5):
    """(name, y, mean, invstd, reference y, reference variance) of each row norm."""
    shape = x.shape
    C = shape[1]
    G = C // 2
    out = [("group",) + kernels.group_norm_forward(x, G, eps=eps)
           + (ref_group_norm(x, G, None, None, eps)[0], ref_group_norm(x, G, None, None, eps)[2]),
           ("instance",) + kernels.instance_norm_forward(x, eps=eps)
           + (ref_group_norm(x, C, None, None, eps)[0], ref_group_norm(x, C, None, None, eps)[2])]
    norm = shape[1:]
    ln = ref_layer_norm(x, norm, None, None, eps)
    out.append(("layer",) + kernels.layer_norm_forward(x, norm, eps=eps) + (ln[0], ln[2]))
    return out


@pytest.mark.parametrize("offset", [1e4, 1e6])
@pytest.mark.parametrize("shape", [(8, 4, 60), (6, 4, 3, 3), (3, 4, 5000)])
def test_variance_of_large_offset_float32(rng, shape, offset):
    """x = offset + N(0, 1) in float32: each row's variance within 1e-4 (relative) of
    the float64 variance of the same float32 values."""
    x = (offset + rng.standard_normal(shape)).astype(np.float32)
    for name, _, _, invstd, _, var_ref in _forwards(x, eps=1e-12):
        var = 1.0 / invstd.astype(np.float64) ** 2
        np.testing.assert_allclose(var, var_ref, rtol=1e-4, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 6, 40), (5, 6, 3), (4, 6)])
def test_constant_group_gives_exactly_bias(rng, shape, dtype):
    x, _, w, b = _data(rng, shape, dtype, shape[1])
    x[:, 2:4] = dtype(1234.567)   # group 1 of 3 (2 channels each), and instances 2, 3
    for G in (3, 6) if x.ndim > 2 else (3,):
        y, _, _ = kernels.group_norm_forward(x, G, w, b)
        assert np.all(y[:, 2:4] == b[2:4].reshape((1, 2) + (1,) * (x.ndim - 2)))
    x[1] = dtype(-7.25)           # sample 1: a constant LayerNorm row
    wl = rng.uniform(0.5, 1.5, shape[1:]).astype(dtype)
    bl = rng.standard_normal(shape[1:]).astype(dtype)
    y, _, _ = kernels.layer_norm_forward(x, shape[1:], wl, bl)
    assert np.all(y[1] == bl)


# ---------------------------------------------------------------- threads

def _all_kernels(rng, shape, dtype):
    """Every new kernel's outputs on one input, as a flat list of arrays."""
    C = shape[1]
    spatial = len(shape) > 2
    x, dy, w, b = _data(rng, shape, dtype, C)
    norm = shape[1:]
    wl = rng.uniform(0.5, 1.5, norm).astype(dtype)
    bl = rng.standard_normal(norm).astype(dtype)
    rm, rv = random_running_stats(rng, C, dtype)
    rm += 3

    def run():
        out = []
        for G in (1, C // 2, C) if spatial else (1, C // 2):
            y, mean, invstd = kernels.group_norm_forward(x, G, w, b)
            out += [y, mean, invstd, *kernels.group_norm_backward(dy, x, G, w, mean, invstd)]
        y, mean, invstd = kernels.layer_norm_forward(x, norm, wl, bl)
        out += [y, mean, invstd, *kernels.layer_norm_backward(dy, x, norm, wl, mean, invstd)]
        if spatial:
            m, v = rm.copy(), rv.copy()
            y, mean, invstd = kernels.instance_norm_forward(x, w, b, m, v)
            out += [y, mean, invstd, m, v,
                    *kernels.instance_norm_backward(dy, x, w, mean, invstd)]
        m, v = rm.copy(), rv.copy()
        y, mean, invstd, r, d = kernels.batch_renorm_forward(x, w, b, m, v, 1.5, 0.5)
        out += [y, m, v, *kernels.batch_renorm_backward(dy, x, w, mean, invstd, r, d)]
        m, v = rm.copy(), rv.copy()
        y, mean, invstd = kernels.ghost_batch_norm_forward(x, w, b, m, v, 4)
        out += [y, m, v, *kernels.ghost_batch_norm_backward(dy, x, w, mean, invstd, 4)]
        return out
    return run


# large enough to run parallel: segment and position paths, (N, C) rows, long rows
THREAD_SHAPES = [(16, 8, 28, 28), (128, 16, 5, 5), (700, 96), (4, 4, 30000)]


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", THREAD_SHAPES)
def test_same_bits_at_one_two_and_three_threads(rng, shape, dtype, schedule):
    run = _all_kernels(rng, shape, dtype)
    results = []
    for n in (1, 2, 3):
        with fastbn.threads(n):
            results.append(run())
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_four_python_threads_at_once(rng):
    runs = [_all_kernels(rng, s, np.float32) for s in THREAD_SHAPES]
    expected = [run() for run in runs]
    failures = []
    barrier = threading.Barrier(len(runs))

    def work(i):
        barrier.wait()
        for _ in range(3):
            if not all(np.array_equal(a, b) for a, b in zip(runs[i](), expected[i])):
                failures.append(i)

    run_threads(work, range(len(runs)))
    assert not failures


def _compiled_calls(rng):
    """{name: a call of one compiled entry point of fastbn._norm, its arrays ready}."""
    from fastbn import _norm
    N, C, L = 16, 64, 3136
    x, dy, w, b = _data(rng, (N, C, L), np.float32, C)
    y, dx = np.empty_like(x), np.empty_like(x)
    stats = [np.empty(N * C, np.float32) for _ in range(2)]
    _norm.forward(x, N, C, 1, L, w, b, y, *stats, None, 1e-5, 2)
    return {
        "forward": lambda: _norm.forward(x, N, 8, 8, L, w, b, y, *stats, None, 1e-5, 2),
        "backward": lambda: _norm.backward(dy, x, N, C, 1, L, w, *stats, dx, np.empty(C, x.dtype),
                                           np.empty(C, x.dtype), 2),
        "rows": lambda: _norm.forward(x.reshape(-1, 392), N * C * 8, 1, 392, 1, None, None,
                                      y.reshape(-1, 392), np.empty(N * C * 8, x.dtype),
                                      np.empty(N * C * 8, x.dtype), None, 1e-5, 2),
        "channel_affine": lambda: _norm.channel_affine(x, y, w, w, b, 2),
    }


@pytest.mark.parametrize("name", ["forward", "backward", "rows", "channel_affine"])
def test_kernels_release_the_gil(rng, name):
    """With no forced thread switches, this thread gets the GIL back from a thread that
    runs the kernel again and again only when the kernel releases it: before that
    thread is done, unless the kernel held it throughout."""
    call = _compiled_calls(rng)[name]
    started, state = threading.Event(), {"done": False}

    def work():
        started.set()
        for _ in range(20):
            call()
        state["done"] = True

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=work)
        thread.start()
        started.wait()
        done_when_back = state["done"]
        thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not done_when_back


# ---------------------------------------------------------------- bad input

def test_bad_input_is_a_clear_error(rng):
    x = rng.standard_normal((4, 6, 5)).astype(np.float32)
    with pytest.raises(ValueError, match="num_groups=4 must divide"):
        kernels.group_norm_forward(x, 4)
    with pytest.raises(ValueError, match="num_groups must be a positive int"):
        kernels.group_norm_forward(x, 0)
    with pytest.raises(ValueError, match="more than 1 value per group"):
        kernels.group_norm_forward(x[:, :, :1], 6)
    with pytest.raises(ValueError, match="eps"):
        kernels.group_norm_forward(x, 2, eps=float("nan"))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        kernels.group_norm_forward(x[0, 0], 1)
    with pytest.raises(ValueError, match="weight must have shape"):
        kernels.group_norm_forward(x, 2, np.ones(5, np.float32))
    with pytest.raises(ValueError, match="normalized_shape"):
        kernels.layer_norm_forward(x, (6,))
    with pytest.raises(ValueError, match="normalized_shape"):
        kernels.layer_norm_forward(x, (2, 4, 6, 5))
    with pytest.raises(ValueError, match="eps"):
        kernels.layer_norm_forward(x, 5, eps=-1.0)
    with pytest.raises(ValueError, match="spatial"):
        kernels.instance_norm_forward(x[:, :, :1])
    with pytest.raises(ValueError, match="running_mean and running_var are required"):
        kernels.instance_norm_forward(x, use_input_stats=False)
    with pytest.raises(ValueError, match="r_max"):
        kernels.batch_renorm_forward(x, None, None, np.zeros(6, np.float32),
                                     np.ones(6, np.float32), r_max=0.5)
    with pytest.raises(ValueError, match="d_max"):
        kernels.batch_renorm_forward(x, None, None, np.zeros(6, np.float32),
                                     np.ones(6, np.float32), d_max=float("nan"))
    with pytest.raises(ValueError, match="1 value per channel"):
        kernels.ghost_batch_norm_forward(x[:, :, 0], None, None, None, None, 3)
    with pytest.raises(TypeError, match="dtype"):
        kernels.group_norm_forward(x.astype(np.int32), 2)


def test_non_contiguous_input_is_copied(rng):
    """As the Batch Normalization kernels: a strided view gives the result of its copy."""
    base = rng.standard_normal((6, 5, 4)).astype(np.float32)
    x = base.transpose(0, 2, 1)          # (6, 4, 5), not C-contiguous
    dy = rng.standard_normal(x.shape).astype(np.float32)
    xc = np.ascontiguousarray(x)
    for fwd, bwd in ((lambda a: kernels.group_norm_forward(a, 2),
                      lambda g, a, m, s: kernels.group_norm_backward(g, a, 2, None, m, s)),
                     (lambda a: kernels.layer_norm_forward(a, 5),
                      lambda g, a, m, s: kernels.layer_norm_backward(g, a, 5, None, m, s))):
        y, mean, invstd = fwd(x)
        y2, mean2, invstd2 = fwd(xc)
        np.testing.assert_array_equal(y, y2)
        np.testing.assert_array_equal(bwd(dy, x, mean, invstd)[0],
                                      bwd(np.ascontiguousarray(dy), xc, mean2, invstd2)[0])
