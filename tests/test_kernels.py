"""fastbn.kernels against a plain float64 NumPy reference, finite differences and
the properties the kernels promise (robust statistics, thread-count-independent bits)."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbn
from fastbn.kernels import batch_norm_backward, batch_norm_forward

from bn_reference import (DTYPES, SHAPES, THREAD_SHAPES, _axes, _bshape, assert_close,
                          random_case, random_running_stats, ref_backward_train,
                          ref_forward_train, sum_scale)
from concurrency import run_threads


@pytest.fixture
def rng():
    return np.random.default_rng()


# ---------------------------------------------------------------- forward / backward

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_matches_reference(rng, shape, dtype):
    x, w, b = random_case(rng, shape, dtype)
    y, save_mean, save_invstd = batch_norm_forward(x, w, b, training=True, eps=1e-5)
    y_ref, mean, _, invstd = ref_forward_train(x, w, b, 1e-5)
    assert y.dtype == dtype and save_mean.dtype == dtype and y.shape == x.shape
    assert_close(y, y_ref, dtype)
    assert_close(save_mean, mean, dtype)
    assert_close(save_invstd, invstd, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("momentum", [0.1, 0.0, 1.0])
@pytest.mark.parametrize("shape", [(60, 100), (8, 3, 33, 17), (32, 16, 6, 6)])
def test_running_stats_over_several_steps(rng, shape, dtype, momentum):
    C = shape[1]
    rm, rv = random_running_stats(rng, C, dtype)
    rm_ref, rv_ref = rm.astype(np.float64), rv.astype(np.float64)
    m = np.prod(shape) // C
    for _ in range(4):
        x, w, b = random_case(rng, shape, dtype)
        batch_norm_forward(x, w, b, rm, rv, training=True, momentum=momentum)
        _, mean, var, _ = ref_forward_train(x, w, b, 1e-5)
        rm_ref = (1 - momentum) * rm_ref + momentum * mean
        rv_ref = (1 - momentum) * rv_ref + momentum * var * m / (m - 1)
    assert_close(rm, rm_ref, dtype)
    assert_close(rv, rv_ref, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_inference_forward_matches_reference(rng, shape, dtype):
    x, w, b = random_case(rng, shape, dtype)
    C = shape[1]
    rm, rv = random_running_stats(rng, C, dtype)
    rm0, rv0 = rm.copy(), rv.copy()
    y, save_mean, save_invstd = batch_norm_forward(x, w, b, rm, rv, training=False, eps=1e-3)
    bs = _bshape(x)
    invstd = 1 / np.sqrt(rv.astype(np.float64) + 1e-3)
    y_ref = (x - rm.reshape(bs)) * (invstd * w).reshape(bs) + b.reshape(bs)
    assert_close(y, y_ref, dtype)
    assert_close(save_invstd, invstd, dtype)
    np.testing.assert_array_equal(save_mean, rm)
    np.testing.assert_array_equal(rm, rm0)  # inference never touches the running stats
    np.testing.assert_array_equal(rv, rv0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_training_backward_matches_reference(rng, shape, dtype):
    x, w, b = random_case(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _, save_mean, save_invstd = batch_norm_forward(x, w, b)
    dx, dw, db = batch_norm_backward(dy, x, w, save_mean, save_invstd, training=True)
    dx_ref, dw_ref, db_ref = ref_backward_train(dy, x, w, 1e-5)
    xhat = ref_forward_train(x, np.ones_like(w), np.zeros_like(b), 1e-5)[0]
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype)
    assert_close(dw, dw_ref, dtype, scale=sum_scale(dy * xhat, x))
    assert_close(db, db_ref, dtype, scale=sum_scale(dy, x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_inference_backward_matches_reference(rng, shape, dtype):
    x, w, _ = random_case(rng, shape, dtype)
    C = shape[1]
    dy = rng.standard_normal(shape).astype(dtype)
    mean = rng.standard_normal(C).astype(dtype)
    invstd = rng.uniform(0.5, 2, C).astype(dtype)
    dx, dw, db = batch_norm_backward(dy, x, w, mean, invstd, training=False)
    bs = _bshape(x)
    d64 = dy.astype(np.float64)
    xhat = (x - mean.reshape(bs).astype(np.float64)) * invstd.reshape(bs)
    assert_close(dx, d64 * (w * invstd.astype(np.float64)).reshape(bs), dtype)
    assert_close(dw, (d64 * xhat).sum(axis=_axes(x)), dtype, scale=sum_scale(d64 * xhat, x))
    assert_close(db, d64.sum(axis=_axes(x)), dtype, scale=sum_scale(d64, x))


MASKS = [(i, w, b) for i in (True, False) for w in (True, False) for b in (True, False)]


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(60, 100), (131, 7, 3, 3), (40, 24, 8, 8), (16, 8, 24, 24)])
def test_backward_computes_only_what_is_needed(rng, shape, training):
    """need_input / need_weight / need_bias: None where not needed; what is
    computed matches the float64 reference and has the bits of the full call
    (with the fused ReLU too), at any mask."""
    dtype = np.float32
    x, w, b = random_case(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    _, mean, invstd = batch_norm_forward(x, w, b)
    bs = _bshape(x)
    d64 = dy.astype(np.float64)
    xhat = (x - mean.reshape(bs).astype(np.float64)) * invstd.reshape(bs)
    if training:
        dx_ref, dw_ref, db_ref = ref_backward_train(dy, x, w, 1e-5)
    else:
        dx_ref = d64 * (w * invstd.astype(np.float64)).reshape(bs)
        dw_ref, db_ref = (d64 * xhat).sum(axis=_axes(x)), d64.sum(axis=_axes(x))
    scales = (None, sum_scale(d64 * xhat, x), sum_scale(d64, x))
    for relu in (False, True):
        full = batch_norm_backward(dy, x, w, mean, invstd, training, bias=b, relu=relu)
        for mask in MASKS:
            out = batch_norm_backward(dy, x, w, mean, invstd, training, bias=b, relu=relu,
                                      need_input=mask[0], need_weight=mask[1],
                                      need_bias=mask[2])
            for got, want, ref, scale, needed in zip(out, full, (dx_ref, dw_ref, db_ref),
                                                     scales, mask):
                if not needed:
                    assert got is None
                    continue
                np.testing.assert_array_equal(got, want)
                if not relu:
                    assert_close(got, ref, dtype, scale=scale)


def test_without_weight_and_bias(rng):
    x, _, _ = random_case(rng, (8, 4, 5), np.float64)
    y, mean, invstd = batch_norm_forward(x)
    C = x.shape[1]
    y_ref, *_ = ref_forward_train(x, np.ones(C), np.zeros(C), 1e-5)
    assert_close(y, y_ref, np.float64)
    dy = rng.standard_normal(x.shape)
    dx, dw, db = batch_norm_backward(dy, x, None, mean, invstd)
    assert dw is None and db is None
    assert_close(dx, ref_backward_train(dy, x, np.ones(C), 1e-5)[0], np.float64)


def test_finite_difference_gradient_float64(rng):
    """The training backward against central differences of sum(y * g)."""
    shape = (3, 2, 4)
    x, w, b = random_case(rng, shape, np.float64)
    g = rng.standard_normal(shape)

    def loss(x_, w_, b_):
        return float(np.sum(batch_norm_forward(x_, w_, b_)[0] * g))

    _, mean, invstd = batch_norm_forward(x, w, b)
    dx, dw, db = batch_norm_backward(g, x, w, mean, invstd)
    h = 1e-6
    for arr, grad in ((x, dx), (w, dw), (b, db)):
        num = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            old = arr[i]
            arr[i] = old + h
            up = loss(x, w, b)
            arr[i] = old - h
            down = loss(x, w, b)
            arr[i] = old
            num[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(grad, num, rtol=1e-6, atol=1e-7)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 9), c=st.integers(1, 5), spatial=st.lists(st.integers(1, 6), max_size=2),
    dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1),
)
def test_property_shapes_and_dtypes(n, c, spatial, dtype, seed):
    """Any shape with more than one value per channel, including C = 1, L = 1
    and N = 1 with L > 1."""
    shape = (n, c, *spatial)
    if np.prod(shape) // c < 2:
        shape = (n + 1, c, *spatial)
    rng = np.random.default_rng(seed)
    x, w, b = random_case(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, mean, invstd = batch_norm_forward(x, w, b)
    dx, dw, db = batch_norm_backward(dy, x, w, mean, invstd)
    assert_close(y, ref_forward_train(x, w, b, 1e-5)[0], dtype)
    dx_ref, dw_ref, db_ref = ref_backward_train(dy, x, w, 1e-5)
    # dx is a difference of terms of size |w * invstd * dy|; with m = 2 it is ~0,
    # so measure its error against the terms, not against itself.  x - mean carries
    # the rounding of the mean saved in x's dtype (as PyTorch saves it), an error
    # of eps * |mean| * invstd in xhat: large when the values barely differ (two
    # float32 values 0.019 apart near 2.14: invstd 100, dx off by 5e-4 in 2.9).
    terms = np.max(np.abs(w * invstd.astype(np.float64))) * np.max(np.abs(dy))
    cond = 1 + np.max(np.abs(mean.astype(np.float64)) * invstd)
    assert_close(dx, dx_ref, dtype, scale=max(terms * cond, np.max(np.abs(dx_ref))))
    xhat = ref_forward_train(x, np.ones_like(w), np.zeros_like(b), 1e-5)[0]
    assert_close(dw, dw_ref, dtype, scale=sum_scale(dy * xhat, x))
    assert_close(db, db_ref, dtype, scale=sum_scale(dy, x))


def test_large_batch_few_channels(rng):
    """C = 1 with large N*L: the block-parallel path."""
    x, w, b = random_case(rng, (32, 1, 300, 300), np.float32)
    y, mean, invstd = batch_norm_forward(x, w, b)
    y_ref, mean_ref, _, invstd_ref = ref_forward_train(x, w, b, 1e-5)
    assert_close(y, y_ref, np.float32)
    assert_close(mean, mean_ref, np.float32)
    assert_close(invstd, invstd_ref, np.float32)


# ---------------------------------------------------------------- numerics

@pytest.mark.parametrize("spread", [1.0, 0.01])
@pytest.mark.parametrize("shape", [(512, 4), (16, 4, 1000)])
def test_variance_of_large_offset_float32(rng, shape, spread):
    """x = 1e4 + spread * N(0, 1) in float32: E[x^2] - E[x]^2 would lose every digit."""
    x = (1e4 + spread * rng.standard_normal(shape)).astype(np.float32)
    rv = np.zeros(shape[1], np.float32)
    batch_norm_forward(x, running_var=rv, momentum=1.0)  # rv = unbiased batch variance
    truth = x.astype(np.float64).var(axis=_axes(x), ddof=1)
    np.testing.assert_allclose(rv, truth, rtol=1e-4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(50, 3), (4, 3, 100, 100), (6, 2, 9000)])
def test_constant_channel_gives_exactly_bias(rng, shape, dtype):
    x, w, b = random_case(rng, shape, dtype)
    x[:, 1] = dtype(1234.567)
    y, _, _ = batch_norm_forward(x, w, b)
    assert np.all(y[:, 1] == b[1])


def test_nan_propagates_to_its_channel_only(rng):
    x, w, b = random_case(rng, (8, 3, 10), np.float32)
    x[2, 1, 5] = np.nan
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, _, _ = batch_norm_forward(x, w, b, rm, rv)
    assert np.all(np.isnan(y[:, 1]))
    assert np.all(np.isfinite(y[:, [0, 2]]))
    assert np.isnan(rm[1]) and np.isfinite(rm[[0, 2]]).all()


# ---------------------------------------------------------------- threads

# Sizes above the serial threshold, so 2 threads really run in parallel; C = 3
# takes the block-parallel path at 2 threads and the per-channel one at 1.


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
@pytest.mark.parametrize("shape", THREAD_SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_same_bits_at_one_two_and_three_threads(rng, shape, dtype, schedule):
    x, w, b = random_case(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    results = []
    for n in (1, 2, 3):
        with fastbn.threads(n):
            rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
            y, mean, invstd = batch_norm_forward(x, w, b, rm, rv)
            grads = batch_norm_backward(dy, x, w, mean, invstd)
            egrads = batch_norm_backward(dy, x, w, mean, invstd, training=False)
            yeval = batch_norm_forward(x, w, b, rm, rv, training=False)[0]
            results.append((y, mean, invstd, rm, rv, *grads, *egrads, yeval))
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


def test_four_python_threads_at_once(rng):
    cases = [random_case(rng, s, np.float32) for s in ((32, 16, 20, 20), (256, 300),
                                                         (8, 3, 64, 64), (64, 8, 7, 7))]
    expected = []
    for x, w, b in cases:
        y, mean, invstd = batch_norm_forward(x, w, b)
        expected.append((y, batch_norm_backward(x, x, w, mean, invstd)[0]))
    failures = []
    barrier = threading.Barrier(len(cases))

    def work(i):
        x, w, b = cases[i]
        barrier.wait()
        for _ in range(20):
            y, mean, invstd = batch_norm_forward(x, w, b)
            dx = batch_norm_backward(x, x, w, mean, invstd)[0]
            if not (np.array_equal(y, expected[i][0]) and np.array_equal(dx, expected[i][1])):
                failures.append(i)

    run_threads(work, range(len(cases)))
    assert not failures


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
def test_team_smaller_than_asked_for(rng, tmp_path, run_fastbn):
    """OpenMP may start fewer threads than a kernel asks for (OMP_THREAD_LIMIT, a
    nested region): the work is shared among the threads that came, none left out."""
    shapes = [(64, 16, 32, 32), (48, 20, 8, 8), (512, 200)]  # row, wide and (N, C) paths
    cases = {}
    for i, shape in enumerate(shapes):
        x, w, b = random_case(rng, shape, np.float32)
        cases.update({f"x{i}": x, f"w{i}": w, f"b{i}": b,
                      f"dy{i}": rng.standard_normal(shape).astype(np.float32)})
    np.savez(tmp_path / "in.npz", **cases)
    code = f"""
import numpy as np, fastbn
from fastbn.kernels import batch_norm_backward, batch_norm_forward
d, out = np.load({str(tmp_path / "in.npz")!r}), {{}}
fastbn.set_num_threads(2)
for i in range({len(shapes)}):
    x, w, b = d[f"x{{i}}"], d[f"w{{i}}"], d[f"b{{i}}"]
    out[f"y{{i}}"], mean, invstd = batch_norm_forward(x, w, b)
    out[f"dx{{i}}"] = batch_norm_backward(d[f"dy{{i}}"], x, w, mean, invstd)[0]
np.savez({str(tmp_path / "out.npz")!r}, **out)
"""
    proc = run_fastbn(code=code, env={"OMP_THREAD_LIMIT": "1"})
    assert proc.returncode == 0, proc.stderr
    out = np.load(tmp_path / "out.npz")
    for i in range(len(shapes)):
        x, w, b, dy = (cases[f"{k}{i}"] for k in ("x", "w", "b", "dy"))
        assert_close(out[f"y{i}"], ref_forward_train(x, w, b, 1e-5)[0], np.float32)
        assert_close(out[f"dx{i}"], ref_backward_train(dy, x, w, 1e-5)[0], np.float32)


# ---------------------------------------------------------------- edge cases and errors

def test_non_contiguous_input_is_accepted(rng):
    base, w, b = random_case(rng, (6, 8, 10), np.float64)
    x = base[:, ::2, :]  # channels strided
    y, _, _ = batch_norm_forward(x, w[:4], b[:4])
    assert_close(y, ref_forward_train(np.ascontiguousarray(x), w[:4], b[:4], 1e-5)[0],
                 np.float64)


@pytest.mark.parametrize("shape", [(0, 3, 4, 4), (0, 3), (2, 3, 0), (0, 3, 0, 5), (4, 0),
                                   (0, 0, 3)])
def test_zero_size_batch(shape):
    """An empty batch (a rank's empty shard), empty planes or no channels: empty
    outputs, running statistics untouched, zero parameter gradients, no crash."""
    x = np.zeros(shape, np.float32)
    C = shape[1]
    rm, rv = np.ones(C, np.float32), np.full(C, 2.0, np.float32)
    y, _, _ = batch_norm_forward(x, None, None, rm, rv)
    assert y.shape == x.shape
    assert np.all(rm == 1) and np.all(rv == 2)
    y, mean, invstd = batch_norm_forward(x, None, None, rm, rv, training=False, relu=True)
    assert y.shape == x.shape
    np.testing.assert_allclose(invstd, 1 / np.sqrt(2 + 1e-5), rtol=1e-6)
    for training in (True, False):
        dx, dw, db = batch_norm_backward(x, x, np.ones(C, np.float32), rm, rv, training)
        assert dx.shape == x.shape and dw.shape == db.shape == (C,)
        assert np.all(dw == 0) and np.all(db == 0)


def test_one_value_per_channel_is_allowed_in_inference(rng):
    x, w, b = random_case(rng, (1, 5), np.float64)
    y, _, _ = batch_norm_forward(x, w, b, np.zeros(5), np.ones(5), training=False)
    np.testing.assert_allclose(y, x * w / np.sqrt(1 + 1e-5) + b, rtol=1e-12)


GOOD = dict(weight=np.ones(3), bias=np.zeros(3), running_mean=np.zeros(3),
            running_var=np.ones(3))


@pytest.mark.parametrize("x, kwargs, exc, match", [
    (np.ones(5), {}, ValueError, "shape"),
    (np.ones((4, 3), np.int64), {}, TypeError, "float32 and float64"),
    (np.ones((4, 3), bool), {}, TypeError, "float32 and float64"),
    (np.ones((4, 3), np.float16), {}, TypeError, "float32 and float64"),
    (np.ones((4, 3)), {"weight": np.ones(4)}, ValueError, "weight"),
    (np.ones((4, 3)), {"bias": np.ones((3, 1))}, ValueError, "bias"),
    (np.ones((4, 3)), {"running_mean": np.ones(2), "running_var": np.ones(3)}, ValueError,
     "running_mean"),
    (np.ones((4, 3)), {"running_mean": np.zeros(3), "running_var": np.ones(4)}, ValueError,
     "running_var"),
    (np.ones((4, 3)), {"running_mean": np.zeros(3, np.float32)}, TypeError, "dtype"),
    (np.ones((4, 3)), {"eps": 0.0}, ValueError, "eps"),
    (np.ones((4, 3)), {"eps": -1e-5}, ValueError, "eps"),
    (np.ones((4, 3)), {"momentum": 1.5}, ValueError, "momentum"),
    (np.ones((4, 3)), {"momentum": -0.1}, ValueError, "momentum"),
    (np.ones((1, 3)), {}, ValueError, r"Expected more than 1 value per channel when training, "
                                      r"got input size \(1, 3\)"),
    (np.ones((1, 3, 1, 1)), {}, ValueError, "more than 1 value per channel"),
    (np.ones((4, 3)), {"training": False}, ValueError, "running_mean and running_var"),
])
def test_bad_forward_input_raises(x, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        batch_norm_forward(x, **kwargs)


def test_bad_backward_input_raises():
    x = np.ones((4, 3, 2))
    stats = (np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match="grad_output"):
        batch_norm_backward(np.ones((4, 3, 3)), x, None, *stats)
    with pytest.raises(TypeError, match="grad_output"):
        batch_norm_backward(np.ones((4, 3, 2), np.float32), x, None, *stats)
    with pytest.raises(ValueError, match="save_mean"):
        batch_norm_backward(x, x, None, np.zeros(2), np.ones(3))
    with pytest.raises(TypeError, match="float32 and float64"):
        batch_norm_backward(x.astype(np.int32), x.astype(np.int32), None, *stats)
