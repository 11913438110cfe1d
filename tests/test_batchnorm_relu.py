"""Fused BatchNorm + ReLU: kernels against the float64 reference followed by a
ReLU, the tape against finite differences, the modules against BatchNorm + ReLU."""
import numpy as np
import pytest

import fastbn
import fastbn.nn.functional as F
from fastbn import Tensor, nn
from fastbn.gradcheck import gradcheck
from fastbn.kernels import batch_norm_backward, batch_norm_forward

from bn_reference import (DTYPES, SHAPES, THREAD_SHAPES, _axes, _bshape, assert_close,
                          random_case, random_running_stats, ref_backward_train,
                          ref_forward_train, sum_scale)


@pytest.fixture
def rng():
    return np.random.default_rng()


def _clear_of_kink(pre, y, dtype):
    """The kernel's mask (y > 0) agrees with the float64 reference's pre-activation
    wherever the latter is clear of zero by more than the forward's rounding."""
    clear = np.abs(pre) > 1e-4 * max(np.max(np.abs(pre)), 1) if dtype == np.float32 else pre != 0
    np.testing.assert_array_equal((y > 0)[clear], (pre > 0)[clear])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_is_relu_of_reference(rng, shape, dtype):
    x, w, b = random_case(rng, shape, dtype)
    rm, rv = np.zeros(shape[1], dtype), np.ones(shape[1], dtype)
    y, mean, invstd = batch_norm_forward(x, w, b, rm, rv, relu=True)
    pre, mean_ref, var_ref, invstd_ref = ref_forward_train(x, w, b, 1e-5)
    assert y.dtype == dtype and y.shape == x.shape
    assert np.all(y >= 0)
    assert_close(y, np.maximum(pre, 0), dtype, scale=np.max(np.abs(pre)))
    assert_close(mean, mean_ref, dtype, scale=np.max(np.abs(x)))
    assert_close(invstd, invstd_ref, dtype)
    m = x.size // shape[1]  # the running statistics do not see the ReLU
    assert_close(rv, 0.9 + 0.1 * var_ref * m / (m - 1), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_training_backward_is_bn_backward_of_masked_grad(rng, shape, dtype):
    x, w, b = random_case(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    y, mean, invstd = batch_norm_forward(x, w, b, relu=True)
    _clear_of_kink(ref_forward_train(x, w, b, 1e-5)[0], y, dtype)
    dx, dw, db = batch_norm_backward(dy, x, w, mean, invstd, bias=b, relu=True)
    g = np.where(y > 0, dy.astype(np.float64), 0.0)
    dx_ref, dw_ref, db_ref = ref_backward_train(g, x, w, 1e-5)
    xhat = ref_forward_train(x, np.ones_like(w), np.zeros_like(b), 1e-5)[0]
    assert dx.dtype == dw.dtype == db.dtype == dtype
    assert_close(dx, dx_ref, dtype, scale=max(np.max(np.abs(dx_ref)), np.max(np.abs(w * invstd))))
    assert_close(dw, dw_ref, dtype, scale=sum_scale(g * xhat, x) + 1)
    assert_close(db, db_ref, dtype, scale=sum_scale(g, x) + 1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_inference_forward_and_backward(rng, shape, dtype):
    x, w, b = random_case(rng, shape, dtype)
    C = shape[1]
    rm, rv = random_running_stats(rng, C, dtype)
    y, mean, invstd = batch_norm_forward(x, w, b, rm, rv, training=False, relu=True)
    bs = _bshape(x)
    scale = (w / np.sqrt(rv.astype(np.float64) + 1e-5)).reshape(bs)
    pre = (x - rm.reshape(bs).astype(np.float64)) * scale + b.reshape(bs)
    assert_close(y, np.maximum(pre, 0), dtype, scale=np.max(np.abs(pre)))
    _clear_of_kink(pre, y, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    dx, dw, db = batch_norm_backward(dy, x, w, mean, invstd, training=False, bias=b, relu=True)
    g = np.where(y > 0, dy.astype(np.float64), 0.0)
    xhat = (x - rm.reshape(bs).astype(np.float64)) * invstd.reshape(bs)
    assert_close(dx, g * scale, dtype, scale=np.max(np.abs(dy * scale)))
    assert_close(dw, (g * xhat).sum(axis=_axes(x)), dtype, scale=sum_scale(g * xhat, x) + 1)
    assert_close(db, g.sum(axis=_axes(x)), dtype, scale=sum_scale(g, x) + 1)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(60, 100), (16, 5, 9), (2, 3, 130, 131), (40, 24, 8, 8)])
def test_fused_equals_batch_norm_then_relu(rng, shape, dtype, training):
    """The two ops composed: the forward bit for bit, the backward with the same
    mask.  The backward's sums may differ in the last bits: the plain sums add
    their vector lanes in another order (fastbn/_simd.h, FASTBN_SUMS)."""
    x, w, b = random_case(rng, shape, dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    stats = [rng.standard_normal(shape[1]).astype(dtype), rng.uniform(0.5, 2, shape[1]).astype(dtype)]
    y1, m1, s1 = batch_norm_forward(x, w, b, *[s.copy() for s in stats], training, relu=True)
    y0, m0, s0 = batch_norm_forward(x, w, b, *[s.copy() for s in stats], training)
    np.testing.assert_array_equal(y1, np.maximum(y0, 0))
    fused = batch_norm_backward(dy, x, w, m1, s1, training, bias=b, relu=True)
    g = np.where(y0 > 0, dy, 0).astype(dtype)
    plain = batch_norm_backward(g, x, w, m0, s0, training)
    # a wrong mask changes some dx by about |w * invstd * dy|, far above these
    tol = 64 * np.finfo(dtype).eps
    xhat = (x - m0.reshape(_bshape(x))) * s0.reshape(_bshape(x))
    assert_close(fused[0], plain[0], dtype, tol=tol)
    assert_close(fused[1], plain[1], dtype, scale=sum_scale(g * xhat, x) + 1, tol=tol)
    assert_close(fused[2], plain[2], dtype, scale=sum_scale(g, x) + 1, tol=tol)
    if not training:  # dx = g * w * invstd: no sums, the same bits
        np.testing.assert_array_equal(fused[0], plain[0])


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
@pytest.mark.parametrize("shape", THREAD_SHAPES)
def test_same_bits_at_one_two_and_three_threads(rng, shape, schedule):
    x, w, b = random_case(rng, shape, np.float32)
    dy = rng.standard_normal(shape).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with fastbn.threads(n):
            y, mean, invstd = batch_norm_forward(x, w, b, relu=True)
            results.append((y, *batch_norm_backward(dy, x, w, mean, invstd, bias=b, relu=True)))
    for other in results[1:]:
        for a, e in zip(results[0], other):
            np.testing.assert_array_equal(a, e)


def test_nan_stays_in_its_channel(rng):
    x, w, b = random_case(rng, (8, 3, 5, 5), np.float32)
    x[2, 1, 3, 3] = np.nan
    y, mean, invstd = batch_norm_forward(x, w, b, relu=True)
    assert np.all(np.isnan(y[:, 1])) and np.all(np.isfinite(y[:, [0, 2]]))
    dx, _, _ = batch_norm_backward(np.ones_like(x), x, w, mean, invstd, bias=b, relu=True)
    assert np.all(np.isfinite(dx[:, [0, 2]]))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(6, 4), (3, 2, 4, 3)])
def test_tape_gradients_match_finite_differences(rng, shape, training):
    # A draw qualifies when the ReLU both clips and passes and no pre-activation
    # sits within finite differences' reach of the kink (there the derivative
    # jumps).  The running mean is the batch's, so that in inference too about
    # half the values are clipped.
    for _ in range(100):
        x, w, b = random_case(rng, shape, np.float64)
        rm = x.mean(axis=_axes(x))
        rv = rng.uniform(0.5, 2, shape[1])
        inputs = [Tensor(a, requires_grad=True) for a in (x, w, b)]

        def fn(x_, w_, b_):  # running stats copied: each call sees the same ones
            return F.batch_norm_relu(x_, rm.copy(), rv.copy(), w_, b_, training)

        pre = F.batch_norm(inputs[0], rm.copy(), rv.copy(), inputs[1], inputs[2], training).data
        if np.any(pre < 0) and np.any(pre > 0) and np.min(np.abs(pre)) > 1e-4:
            break
    else:
        pytest.fail("no qualifying random draw in 100")
    gradcheck(fn, inputs)


@pytest.mark.parametrize("fused, plain, shape", [
    (nn.BatchNormReLU2d, nn.BatchNorm2d, (8, 5, 6, 6)),
    (nn.BatchNormReLU1d, nn.BatchNorm1d, (16, 7)),
    (nn.BatchNormReLU1d, nn.BatchNorm1d, (16, 7, 3)),
])
def test_module_equals_batchnorm_then_relu(rng, fused, plain, shape):
    C = shape[1]
    a, b = fused(C, momentum=0.2), plain(C, momentum=0.2)
    assert list(a.state_dict()) == list(b.state_dict())
    for m in (a, b):
        m.weight.data[:] = rng.uniform(0.5, 1.5, C)
        m.bias.data[:] = rng.standard_normal(C)
    b.weight.data[:], b.bias.data[:] = a.weight.data, a.bias.data
    for training in (True, True, False):
        a.train(training)
        b.train(training)
        x = rng.standard_normal(shape).astype(np.float32)
        xa, xb = Tensor(x, requires_grad=True), Tensor(x, requires_grad=True)
        ya, yb = a(xa), F.relu(b(xb))
        np.testing.assert_array_equal(ya.data, yb.data)
        dy = rng.standard_normal(shape).astype(np.float32)
        ya.backward(dy)
        yb.backward(dy)
        np.testing.assert_array_equal(xa.grad, xb.grad)
        np.testing.assert_array_equal(a.weight.grad, b.weight.grad)
        a.zero_grad()
        b.zero_grad()
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert "BatchNormReLU" in repr(a)


def test_convert_sync_batchnorm_keeps_the_relu(rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNormReLU2d(3))
    x = Tensor(rng.standard_normal((4, 2, 5, 5)).astype(np.float32))
    expected = model(x).data
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert isinstance(synced[1], nn.SyncBatchNorm) and "relu=True" in repr(synced[1])
    np.testing.assert_array_equal(synced(x).data, expected)
    assert np.all(expected >= 0) and np.any(expected == 0)
