"""conv2d and 2-D pooling kernels (fastbn.kernels) against plain NumPy loops,
finite differences and, when installed, PyTorch."""
import itertools
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastbn
from fastbn import kernels as K

from concurrency import run_threads


def _pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def _rand(rng, shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------- plain references

def _out(n, k, s, p, d):
    return (n + 2 * p - d * (k - 1) - 1) // s + 1


def ref_conv(x, w, b, stride, padding, dilation, groups):
    """y[n, o, oh, ow] = b[o] + sum_{c, i, j} x_pad[n, g*Cg + c, oh*sh + i*dh, ow*sw + j*dw] w[o, c, i, j]."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    OH, OW = _out(H, kh, sh, ph, dh), _out(W, kw, sw, pw, dw)
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    y = np.zeros((N, O, OH, OW))
    for o in range(O):
        g = o // Og
        for oh in range(OH):
            for ow in range(OW):
                for c in range(Cg):
                    for i in range(kh):
                        for j in range(kw):
                            y[:, o, oh, ow] += (xp[:, g * Cg + c, oh * sh + i * dh, ow * sw + j * dw]
                                                * w[o, c, i, j])
        if b is not None:
            y[:, o] += b[o]
    return y


def ref_conv_backward(dy, x, w, stride, padding, dilation, groups):
    """The adjoint of ref_conv's loops: every product's two factors get dy times the other."""
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    Og = O // groups
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    dxp = np.zeros_like(xp)
    dw_ = np.zeros(w.shape)
    for o in range(O):
        g = o // Og
        for oh in range(dy.shape[2]):
            for ow in range(dy.shape[3]):
                for c in range(Cg):
                    for i in range(kh):
                        for j in range(kw):
                            r, s = oh * sh + i * dh, ow * sw + j * dw
                            dxp[:, g * Cg + c, r, s] += dy[:, o, oh, ow] * w[o, c, i, j]
                            dw_[o, c, i, j] += np.sum(dy[:, o, oh, ow] * xp[:, g * Cg + c, r, s])
    return dxp[:, :, ph:ph + H, pw:pw + W], dw_, dy.sum(axis=(0, 2, 3))


def _windows(H, W, kernel, stride, padding):
    """(oh, ow, rows, cols, padded window size) of each pooling window, clipped to the input."""
    (kh, kw), (ph, pw) = _pair(kernel), _pair(padding)
    sh, sw = _pair(kernel if stride is None else stride)
    for oh in range(_out(H, kh, sh, ph, 1)):
        for ow in range(_out(W, kw, sw, pw, 1)):
            h0, w0 = oh * sh - ph, ow * sw - pw
            h1, w1 = min(h0 + kh, H + ph), min(w0 + kw, W + pw)
            rows = range(max(h0, 0), min(h1, H))
            cols = range(max(w0, 0), min(w1, W))
            yield oh, ow, rows, cols, (h1 - h0) * (w1 - w0)


def ref_max_pool(x, kernel, stride, padding):
    N, C, H, W = x.shape
    win = list(_windows(H, W, kernel, stride, padding))
    OH, OW = win[-1][0] + 1, win[-1][1] + 1
    y = np.empty((N, C, OH, OW))
    idx = np.empty((N, C, OH, OW), dtype=np.int64)
    for n, c in itertools.product(range(N), range(C)):
        for oh, ow, rows, cols, _ in win:
            flat = [(x[n, c, r, s], r * W + s) for r in rows for s in cols]
            best = max(v for v, _ in flat)
            y[n, c, oh, ow] = best
            idx[n, c, oh, ow] = next(i for v, i in flat if v == best)  # first maximum
    return y, idx


def ref_avg_pool(x, kernel, stride, padding, count_include_pad):
    N, C, H, W = x.shape
    win = list(_windows(H, W, kernel, stride, padding))
    y = np.empty((N, C, win[-1][0] + 1, win[-1][1] + 1))
    for oh, ow, rows, cols, padded in win:
        patch = x[:, :, rows.start:rows.stop, cols.start:cols.stop]
        y[:, :, oh, ow] = patch.sum(axis=(2, 3)) / (padded if count_include_pad else patch[0, 0].size)
    return y


def ref_adaptive(x, out):
    N, C, H, W = x.shape
    OH, OW = _pair(out)
    y = np.empty((N, C, OH, OW))
    for oh in range(OH):
        for ow in range(OW):
            h0, h1 = (oh * H) // OH, -((-(oh + 1) * H) // OH)
            w0, w1 = (ow * W) // OW, -((-(ow + 1) * W) // OW)
            y[:, :, oh, ow] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def _fd_grad(f, x, dy, eps=1e-6):
    """d(sum(f(x) * dy))/dx by central differences."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        fp = np.sum(f(x) * dy)
        x[i] = old - eps
        fm = np.sum(f(x) * dy)
        x[i] = old
        g[i] = (fp - fm) / (2 * eps)
    return g


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- conv2d

CONV_CASES = [
    # (N, C, H, W, O, kernel, stride, padding, dilation, groups)
    (2, 3, 7, 6, 4, 3, 1, 1, 1, 1),
    (2, 4, 8, 7, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2),
    (1, 6, 9, 9, 6, 3, 2, 2, 2, 3),
    (3, 2, 5, 5, 4, 1, 1, 0, 1, 1),          # 1x1: columns are the input itself
    (2, 2, 6, 5, 2, 2, 3, 1, 1, 2),          # stride > kernel: skipped pixels
    (1, 4, 4, 4, 8, (1, 3), 1, (0, 2), (1, 3), 4),
    (2, 1, 3, 3, 3, 3, 1, 0, 1, 1),          # 1x1 output
    (2, 3, 5, 6, 2, 3, (1, 2), 2, 1, 1),     # padding > 1: all-zero column rows
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_loops(case, dtype):
    N, C, H, W, O, k, s, p, d, g = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x = _rand(rng, (N, C, H, W), dtype)
    w = _rand(rng, (O, C // g) + _pair(k), dtype)
    b = _rand(rng, (O,), dtype)
    y, cols = K.conv2d_forward(x, w, b, s, p, d, g)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, ref_conv(x, w, b, s, p, d, g), **_tol(dtype))
    dy = _rand(rng, y.shape, dtype)
    dx, dw, db = K.conv2d_backward(dy, x, w, cols, s, p, d, g)
    rdx, rdw, rdb = ref_conv_backward(dy.astype(np.float64), x.astype(np.float64),
                                      w.astype(np.float64), s, p, d, g)
    for got, ref in ((dx, rdx), (dw, rdw), (db, rdb)):
        assert got.dtype == dtype
        np.testing.assert_allclose(got, ref, **_tol(dtype))


def test_conv_backward_finite_differences():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 4, 5, 6))
    w = rng.standard_normal((2, 2, 3, 2))
    b = rng.standard_normal(2)
    args = ((2, 1), 1, (1, 2), 2)
    y, cols = K.conv2d_forward(x, w, b, *args)
    dy = rng.standard_normal(y.shape)
    dx, dw, db = K.conv2d_backward(dy, x, w, cols, *args)
    np.testing.assert_allclose(dx, _fd_grad(lambda v: K.conv2d_forward(v, w, b, *args)[0], x, dy),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dw, _fd_grad(lambda v: K.conv2d_forward(x, v, b, *args)[0], w, dy),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(db, _fd_grad(lambda v: K.conv2d_forward(x, w, v, *args)[0], b, dy),
                               rtol=1e-6, atol=1e-7)


def test_conv_backward_options_and_recomputed_cols():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3))
    y, cols = K.conv2d_forward(x, w, None, 2, 1)
    dy = rng.standard_normal(y.shape)
    full = K.conv2d_backward(dy, x, w, cols, 2, 1)
    dx, dw, db = K.conv2d_backward(dy, x, w, None, 2, 1, need_input=False, need_bias=False)
    assert dx is None and db is None
    np.testing.assert_array_equal(dw, full[1])
    dx, dw, db = K.conv2d_backward(dy, x, w, None, 2, 1, need_weight=False)
    assert dw is None
    np.testing.assert_array_equal(dx, full[0])


def test_conv_noncontiguous_input():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 7, 8))[::2, :, :, ::-1]
    w = np.asfortranarray(rng.standard_normal((3, 3, 2, 3)))
    assert not x.flags.c_contiguous and not w.flags.c_contiguous
    y, _ = K.conv2d_forward(x, w, None, 1, 1)
    np.testing.assert_allclose(y, ref_conv(x, w, None, 1, 1, 1, 1), rtol=1e-10, atol=1e-10)


# ---------------------------------------------- conv2d by Winograd F(2x2, 3x3) and F(4x4, 3x3)

WINOGRAD_CASES = [
    # (N, C, H, W, O, padding)
    (2, 3, 7, 6, 4, 1),         # odd height: the last tile row is cut
    (3, 8, 5, 8, 9, 0),
    (1, 5, 6, 7, 3, (2, 1)),    # odd width, padding 2: the input gradient has none
    (2, 9, 1, 1, 8, 1),         # one tile, mostly padding
    (4, 2, 3, 3, 2, 2),
    (5, 16, 14, 14, 12, 1),     # several images per chunk, chunks cut at N
    (20, 2, 30, 29, 3, 1),      # weight parts of two chunks each
    (2, 35, 9, 10, 17, 1),      # more than one block of 16 channels, each side
]
WINOGRADS = ["winograd", "winograd4"]


def _winograd_tol(dtype, algorithm, ref):
    """F(4x4, 3x3) in float32 errs up to about 1e-5 of the result's largest magnitude
    (benchmarks/winograd_error.py; F(2x2) and im2col: 5e-7): allowed 3e-5 of it."""
    if dtype == np.float32 and algorithm == "winograd4":
        return dict(rtol=1e-4, atol=3e-5 * float(np.abs(ref).max()))
    return _tol(dtype)


@pytest.mark.parametrize("algorithm", WINOGRADS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", WINOGRAD_CASES)
def test_winograd_matches_loops(case, dtype, algorithm):
    N, C, H, W, O, p = case
    rng = np.random.default_rng(hash(case) % 2**32)
    x, w, b = _rand(rng, (N, C, H, W), dtype), _rand(rng, (O, C, 3, 3), dtype), _rand(rng, O, dtype)
    y, cols = K.conv2d_forward(x, w, b, 1, p, algorithm=algorithm)
    assert cols is None and y.dtype == dtype
    ref = ref_conv(x, w, b, 1, p, 1, 1)
    np.testing.assert_allclose(y, ref, **_winograd_tol(dtype, algorithm, ref))
    dy = _rand(rng, y.shape, dtype)
    got = K.conv2d_backward(dy, x, w, None, 1, p, algorithm=algorithm)
    refs = ref_conv_backward(dy.astype(np.float64), x.astype(np.float64),
                             w.astype(np.float64), 1, p, 1, 1)
    for a, r in zip(got, refs):
        assert a.dtype == dtype
        np.testing.assert_allclose(a, r, **_winograd_tol(dtype, algorithm, r))
    dx, dw, db = K.conv2d_backward(dy, x, w, None, 1, p, need_input=False, need_bias=False,
                                   algorithm=algorithm)
    assert dx is None and db is None
    np.testing.assert_array_equal(dw, got[1])
    dx, dw, _ = K.conv2d_backward(dy, x, w, None, 1, p, need_weight=False, algorithm=algorithm)
    assert dw is None
    np.testing.assert_array_equal(dx, got[0])


@pytest.mark.parametrize("algorithm", WINOGRADS)
def test_winograd_finite_differences(algorithm):
    rng = np.random.default_rng(10)
    x, w, b = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(2)

    def conv(x, w, b):
        return K.conv2d_forward(x, w, b, 1, 1, algorithm=algorithm)[0]

    dy = rng.standard_normal(conv(x, w, b).shape)
    dx, dw, db = K.conv2d_backward(dy, x, w, None, 1, 1, algorithm=algorithm)
    tol = {"rtol": 1e-6, "atol": 1e-7}
    np.testing.assert_allclose(dx, _fd_grad(lambda v: conv(v, w, b), x, dy), **tol)
    np.testing.assert_allclose(dw, _fd_grad(lambda v: conv(x, v, b), w, dy), **tol)
    np.testing.assert_allclose(db, _fd_grad(lambda v: conv(x, w, v), b, dy), **tol)


def test_conv_algorithm_choice():
    rng = np.random.default_rng(11)
    x8, w8 = rng.standard_normal((2, 8, 6, 6)), rng.standard_normal((8, 8, 3, 3))
    assert K.conv2d_forward(x8, w8, padding=1)[1] is None          # auto: Winograd
    assert K.conv2d_forward(x8, w8, padding=1, algorithm="im2col")[1] is not None
    assert K.conv2d_forward(x8[:, :3], w8[:, :3], padding=1)[1] is not None  # too few channels
    assert K.conv2d_forward(x8, w8, stride=2, padding=1)[1] is not None     # does not apply
    for kwargs in ({"stride": 2}, {"dilation": 2}, {"padding": 3}):
        for algorithm in WINOGRADS:
            with pytest.raises(ValueError, match=algorithm):
                K.conv2d_forward(x8, w8, algorithm=algorithm, **kwargs)
    with pytest.raises(ValueError, match="winograd"):
        K.conv2d_forward(x8, w8[:, :, :2], algorithm="winograd")
    with pytest.raises(ValueError, match="winograd"):
        K.conv2d_forward(x8, w8[:, :4], groups=2, algorithm="winograd")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        K.conv2d_forward(x8, w8, algorithm="fft")
    with pytest.raises(ValueError, match="algorithm must be one of"):
        K.conv2d_backward(np.zeros((2, 8, 4, 4)), x8, w8, None, algorithm="direct")


@settings(max_examples=25, deadline=None)
@given(N=st.integers(1, 2), g=st.integers(1, 3), cg=st.integers(1, 2), og=st.integers(1, 2),
       H=st.integers(1, 7), W=st.integers(1, 7), kh=st.integers(1, 3), kw=st.integers(1, 3),
       sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2),
       dh=st.integers(1, 2), dw=st.integers(1, 2), seed=st.integers(0, 2**31))
def test_conv_hypothesis(N, g, cg, og, H, W, kh, kw, sh, sw, ph, pw, dh, dw, seed):
    if _out(H, kh, sh, ph, dh) < 1 or _out(W, kw, sw, pw, dw) < 1:
        with pytest.raises(ValueError, match="output size"):
            K.conv2d_forward(np.zeros((N, g * cg, H, W)), np.zeros((g * og, cg, kh, kw)),
                             None, (sh, sw), (ph, pw), (dh, dw), g)
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, g * cg, H, W))
    w = rng.standard_normal((g * og, cg, kh, kw))
    args = ((sh, sw), (ph, pw), (dh, dw), g)
    y, cols = K.conv2d_forward(x, w, None, *args)
    np.testing.assert_allclose(y, ref_conv(x, w, None, *args), rtol=1e-10, atol=1e-10)
    dy = rng.standard_normal(y.shape)
    got = K.conv2d_backward(dy, x, w, cols, *args)
    for a, r in zip(got, ref_conv_backward(dy, x, w, *args)):
        np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- pooling

POOL_CASES = [
    # (shape, kernel, stride, padding)
    ((2, 3, 7, 6), 2, None, 0),
    ((2, 2, 9, 8), 3, 2, 1),
    ((1, 3, 8, 9), (3, 2), (2, 1), (1, 1)),
    ((2, 1, 5, 5), (2, 4), (3, 1), (1, 2)),
    ((1, 2, 4, 4), 4, 1, 2),
    ((2, 3, 7, 6), 3, 1, 1),    # 3x3 stride 1 padding 1: its own paths (box filter)
    ((1, 2, 1, 5), 3, 1, 1),
    ((1, 1, 2, 3), 3, 1, 1),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_matches_windows(case, dtype):
    shape, k, s, p = case
    rng = np.random.default_rng(4)
    x = _rand(rng, shape, dtype)
    x[0, 0, 0, :2] = x[0, 0, 0, 2]  # ties: the first maximum wins
    y, idx = K.max_pool2d_forward(x, k, s, p)
    ry, ridx = ref_max_pool(x, k, s, p)
    np.testing.assert_array_equal(y, ry.astype(dtype))
    np.testing.assert_array_equal(idx, ridx)
    dy = _rand(rng, y.shape, dtype)
    dx = K.max_pool2d_backward(dy, idx, x.shape)
    rdx = np.zeros(shape)
    for n, c, oh, ow in np.ndindex(y.shape):
        rdx[n, c].flat[ridx[n, c, oh, ow]] += dy[n, c, oh, ow]
    np.testing.assert_allclose(dx, rdx, **_tol(dtype))


def test_max_pool_nan_propagates():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    x[0, 0, 1, 0] = np.nan
    y, idx = K.max_pool2d_forward(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and idx[0, 0, 0, 0] == 4
    assert y[0, 0, 1, 1] == 15


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(2, 3, 9, 23), (1, 2, 16, 10), (1, 1, 2, 2), (2, 3, 15, 14),
                                   (3, 2, 14, 28), (4, 9, 6, 4), (3, 100, 8, 8)])
def test_max_pool_2x2_ties_nans_infs(shape, dtype):
    """Kernel 2 stride 2 (even widths: its own vectorized path, over runs of small
    planes of even height at once, (3, 100, 8, 8) in several runs over threads;
    an odd last row or column is left out): ties,
    -inf, +inf and NaNs (the last NaN of a window in row-major order wins, as
    in PyTorch), checked against a plain loop."""
    rng = np.random.default_rng(10)
    x = rng.integers(-3, 3, shape).astype(dtype)  # small integers: many ties
    flat = x.reshape(-1)
    for v, frac in ((-np.inf, 0.05), (np.inf, 0.03), (np.nan, 0.08)):
        flat[rng.random(flat.size) < frac] = v
    y, idx = K.max_pool2d_forward(x, 2)
    W = shape[3]
    for n, c, oh, ow in np.ndindex(y.shape):
        taps = [(2 * oh + i) * W + 2 * ow + j for i in (0, 1) for j in (0, 1)]
        vals = x[n, c].reshape(-1)[taps]
        nans = [t for t, v in zip(taps, vals) if np.isnan(v)]
        want = nans[-1] if nans else taps[int(np.argmax(vals))]  # argmax: first maximum
        assert idx[n, c, oh, ow] == want
        np.testing.assert_array_equal(y[n, c, oh, ow], x[n, c].reshape(-1)[want])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("shape", [(2, 3, 9, 23), (1, 2, 16, 10), (1, 1, 2, 2), (2, 3, 15, 14),
                                   (1, 1, 1, 1), (1, 1, 1, 5), (2, 2, 7, 7), (1, 1, 4, 3),
                                   (1, 1, 5, 1), (3, 100, 4, 4), (1, 2, 70, 65)])
def test_max_pool_3x3_ties_nans_infs(shape, stride, dtype):
    """Kernel 3 padding 1, stride 1 or 2 (the inception modules' pooling: its own
    path, rows then columns over runs of planes, (3, 100, 4, 4) in several runs,
    (1, 2, 70, 65) a plane per run): ties, -inf, +inf and NaNs, checked against a
    plain loop over the taps inside the image."""
    rng = np.random.default_rng(11)
    x = rng.integers(-3, 3, shape).astype(dtype)
    flat = x.reshape(-1)
    for v, frac in ((-np.inf, 0.05), (np.inf, 0.03), (np.nan, 0.08)):
        flat[rng.random(flat.size) < frac] = v
    y, idx = K.max_pool2d_forward(x, 3, stride, 1)
    H, W = shape[2:]
    for n, c, oh, ow in np.ndindex(y.shape):
        taps = [h * W + w for h in range(oh * stride - 1, oh * stride + 2)
                for w in range(ow * stride - 1, ow * stride + 2) if 0 <= h < H and 0 <= w < W]
        vals = x[n, c].reshape(-1)[taps]
        nans = [t for t, v in zip(taps, vals) if np.isnan(v)]
        want = nans[-1] if nans else taps[int(np.argmax(vals))]  # argmax: first maximum
        assert idx[n, c, oh, ow] == want
        np.testing.assert_array_equal(y[n, c, oh, ow], x[n, c].reshape(-1)[want])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 100, 4, 4), (2, 3, 1, 9), (2, 3, 9, 1), (1, 2, 70, 65)])
def test_avg_pool_3x3_box_filter(shape, dtype):
    """3x3 stride 1 padding 1 counting the padding (the inception modules' average:
    its own path over runs of planes, (3, 100, 4, 4) in several runs): forward and
    backward against the sum of the nine shifted copies of the zero-padded input."""
    rng = np.random.default_rng(12)
    x = _rand(rng, shape, dtype)
    dy = _rand(rng, shape, dtype)

    def box(a):
        H, W = shape[2:]
        p = np.pad(a.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
        return sum(p[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3)) / 9

    np.testing.assert_allclose(K.avg_pool2d_forward(x, 3, 1, 1, True), box(x), **_tol(dtype))
    np.testing.assert_allclose(K.avg_pool2d_backward(dy, shape, 3, 1, 1, True), box(dy),
                               **_tol(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("include", [True, False])
@pytest.mark.parametrize("case", POOL_CASES)
def test_avg_pool_matches_windows(case, include, dtype):
    shape, k, s, p = case
    rng = np.random.default_rng(5)
    x = _rand(rng, shape, dtype)
    y = K.avg_pool2d_forward(x, k, s, p, include)
    np.testing.assert_allclose(y, ref_avg_pool(x.astype(np.float64), k, s, p, include),
                               **_tol(dtype))
    dy = rng.standard_normal(y.shape)
    dx = K.avg_pool2d_backward(dy.astype(dtype), shape, k, s, p, include)
    rdx = _fd_grad(lambda v: ref_avg_pool(v, k, s, p, include), x.astype(np.float64), dy)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4 if dtype == np.float32 else 1e-6, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,out", [((2, 3, 7, 5), (3, 2)), ((1, 2, 4, 6), 1),
                                       ((2, 1, 5, 5), (5, 5)), ((1, 2, 3, 4), (5, 7)),
                                       ((1, 1, 9, 6), (4, None))])
def test_adaptive_avg_pool(shape, out, dtype):
    rng = np.random.default_rng(6)
    x = _rand(rng, shape, dtype)
    y = K.adaptive_avg_pool2d_forward(x, out)
    full = (out[0], shape[3]) if isinstance(out, tuple) and out[1] is None else out
    np.testing.assert_allclose(y, ref_adaptive(x.astype(np.float64), full), **_tol(dtype))
    dy = rng.standard_normal(y.shape)
    dx = K.adaptive_avg_pool2d_backward(dy.astype(dtype), shape, out)
    rdx = _fd_grad(lambda v: ref_adaptive(v, full), x.astype(np.float64), dy)
    np.testing.assert_allclose(dx, rdx, rtol=1e-4 if dtype == np.float32 else 1e-6, atol=1e-5)


def test_max_pool_backward_finite_differences():
    rng = np.random.default_rng(7)
    x = rng.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) * 0.1  # distinct: smooth locally
    y, idx = K.max_pool2d_forward(x, 3, 2, 1)
    dy = rng.standard_normal(y.shape)
    dx = K.max_pool2d_backward(dy, idx, x.shape)
    np.testing.assert_allclose(dx, _fd_grad(lambda v: K.max_pool2d_forward(v, 3, 2, 1)[0], x, dy,
                                            eps=1e-3), rtol=1e-7, atol=1e-9)


# ---------------------------------------------------------------- threads, torch, errors

def test_same_bits_at_one_two_and_three_threads(schedule):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((8, 6, 20, 19)).astype(np.float32)  # above the serial cut-off
    w = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        with fastbn.threads(n):
            y, cols = K.conv2d_forward(x, w, b, 1, 1, 1, 2)
            dy = np.cos(y)
            out = [y, *K.conv2d_backward(dy, x, w, cols, 1, 1, 1, 2)]
            for algorithm in WINOGRADS:
                y, _ = K.conv2d_forward(x, w[:, :2].repeat(3, 1), b, padding=1,
                                        algorithm=algorithm)
                out += [y, *K.conv2d_backward(np.cos(y), x, w[:, :2].repeat(3, 1), None,
                                              padding=1, algorithm=algorithm)]
            for s in (1, 2):  # 3x3 padding 1: stride 1 and 2 by rows then columns
                ym, idx = K.max_pool2d_forward(x, 3, s, 1)
                out += [ym, idx, K.max_pool2d_backward(np.cos(ym), idx, x.shape)]
            ya = K.avg_pool2d_forward(x, 3, 2, 1, False)
            out += [ya, K.avg_pool2d_backward(np.cos(ya), x.shape, 3, 2, 1, False)]
            ya = K.avg_pool2d_forward(x, 3, 1, 1, True)  # the box filter
            out += [ya, K.avg_pool2d_backward(np.cos(ya), x.shape, 3, 1, 1, True)]
            yd = K.adaptive_avg_pool2d_forward(x, (5, 7))
            out += [yd, K.adaptive_avg_pool2d_backward(np.cos(yd), x.shape, (5, 7))]
        results.append(out)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            np.testing.assert_array_equal(a, b)


def test_python_threads_at_once():
    """Each call holds its own scratch: several Python threads get the serial bits."""
    rng = np.random.default_rng(12)
    x = rng.standard_normal((6, 8, 12, 12)).astype(np.float32)
    w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((6, 16, 12, 12)).astype(np.float32)

    def run(algorithm):
        y, cols = K.conv2d_forward(x, w, None, padding=1, algorithm=algorithm)
        return [y, *K.conv2d_backward(dy, x, w, cols, padding=1, algorithm=algorithm)]

    algorithms = ["winograd", "im2col", "winograd4", "im2col"]
    expected = {a: run(a) for a in set(algorithms)}
    barrier, failures = threading.Barrier(len(algorithms)), []

    def work(algorithm):
        barrier.wait()
        for _ in range(10):
            if not all(np.array_equal(a, b) for a, b in zip(run(algorithm), expected[algorithm])):
                failures.append(algorithm)

    run_threads(work, algorithms)
    assert not failures


def test_empty_batch():
    x = np.zeros((0, 3, 5, 5))
    for w, p, algorithm in ((np.ones((4, 3, 1, 1)), 0, "auto"),  # 1x1: no im2col
                            (np.ones((4, 3, 3, 3)), 1, "im2col"),
                            (np.ones((4, 3, 3, 3)), 1, "winograd"),
                            (np.ones((4, 3, 3, 3)), 1, "winograd4")):
        y, cols = K.conv2d_forward(x, w, np.ones(4), padding=p, algorithm=algorithm)
        assert y.shape == (0, 4, 5, 5)
        dx, dw, db = K.conv2d_backward(y, x, w, cols, padding=p, algorithm=algorithm)
        assert dx.shape == x.shape and dw.shape == w.shape and not dw.any() and not db.any()
    y, idx = K.max_pool2d_forward(x, 2)
    assert K.max_pool2d_backward(y, idx, x.shape).shape == x.shape
    assert K.avg_pool2d_backward(K.avg_pool2d_forward(x, 2), x.shape, 2).shape == x.shape


def test_against_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 6, 11, 10))
    w = rng.standard_normal((4, 3, 3, 2))
    b = rng.standard_normal(4)
    args = ((2, 1), (1, 1), (2, 1), 2)
    y, cols = K.conv2d_forward(x, w, b, *args)
    tx, tw, tb = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    ty = F.conv2d(tx, tw, tb, *args)
    dy = rng.standard_normal(y.shape)
    ty.backward(torch.tensor(dy))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-10)
    for got, t in zip(K.conv2d_backward(dy, x, w, cols, *args), (tx, tw, tb)):
        np.testing.assert_allclose(got, t.grad.numpy(), rtol=1e-10, atol=1e-10)
    tx = torch.tensor(x)
    ty, tidx = F.max_pool2d(tx, 3, 2, 1, return_indices=True)
    y, idx = K.max_pool2d_forward(x, 3, 2, 1)
    np.testing.assert_array_equal(y, ty.numpy())
    np.testing.assert_array_equal(idx, tidx.numpy())
    for include in (True, False):
        np.testing.assert_allclose(K.avg_pool2d_forward(x, (3, 2), (2, 1), 1, include),
                                   F.avg_pool2d(tx, (3, 2), (2, 1), 1,
                                                count_include_pad=include).numpy(), rtol=1e-12)
    np.testing.assert_allclose(K.adaptive_avg_pool2d_forward(x, (4, 3)),
                               F.adaptive_avg_pool2d(tx, (4, 3)).numpy(), rtol=1e-12)


@pytest.mark.parametrize("call,exc,match", [
    (lambda x, w: K.conv2d_forward(x.astype(np.int32), w), TypeError, "dtype"),
    (lambda x, w: K.conv2d_forward(x, w.astype(np.float32)), TypeError, "weight has dtype"),
    (lambda x, w: K.conv2d_forward(x[0], w), ValueError, "4-D"),
    (lambda x, w: K.conv2d_forward(x, w, groups=2), ValueError, "groups"),
    (lambda x, w: K.conv2d_forward(x, w, groups=0), ValueError, "groups"),
    (lambda x, w: K.conv2d_forward(x, w[:, :2]), ValueError, "channels"),
    (lambda x, w: K.conv2d_forward(x, w, stride=0), ValueError, "stride"),
    (lambda x, w: K.conv2d_forward(x, w, dilation=(1, 0)), ValueError, "dilation"),
    (lambda x, w: K.conv2d_forward(x, w, padding=-1), ValueError, "padding"),
    (lambda x, w: K.conv2d_forward(x, w, stride=1.5), TypeError, "stride"),
    (lambda x, w: K.conv2d_forward(x, w, padding=(1, 1, 1)), TypeError, "padding"),
    (lambda x, w: K.conv2d_forward(x, w, dilation=5), ValueError, "output size"),
    (lambda x, w: K.conv2d_forward(x, w, np.zeros(3)), ValueError, "bias"),
    (lambda x, w: K.conv2d_backward(np.zeros((2, 4, 3, 3)), x, w, None), ValueError,
     "grad_output"),
    (lambda x, w: K.conv2d_backward(np.zeros((2, 4, 4, 5)), x, w, np.zeros(3)), ValueError,
     "cols"),
    (lambda x, w: K.max_pool2d_forward(x, 2, padding=2), ValueError, "half"),
    (lambda x, w: K.max_pool2d_forward(x, 0), ValueError, "kernel_size"),
    (lambda x, w: K.max_pool2d_forward(x, 7), ValueError, "output size"),
    (lambda x, w: K.max_pool2d_forward(x.astype(np.float16), 2), TypeError, "dtype"),
    (lambda x, w: K.max_pool2d_backward(np.zeros((2, 3, 3, 3)),
                                        np.full((2, 3, 3, 3), 99), x.shape), ValueError,
     "indices"),
    (lambda x, w: K.max_pool2d_backward(np.zeros((2, 3, 3, 3)),
                                        np.full((2, 3, 3, 3), 42), x.shape), ValueError,
     "out of range"),  # one past the last of a 6x7 plane
    (lambda x, w: K.max_pool2d_backward(np.zeros((2, 3, 3, 3)),
                                        -np.ones((2, 3, 3, 3), np.int64), x.shape), ValueError,
     "out of range"),
    (lambda x, w: K.avg_pool2d_forward(x, 3, stride=-1), ValueError, "stride"),
    (lambda x, w: K.avg_pool2d_backward(np.zeros((2, 3, 2, 2)), x.shape, 2), ValueError,
     "grad_output"),
    (lambda x, w: K.adaptive_avg_pool2d_forward(x, -1), ValueError, "output_size"),
    (lambda x, w: K.adaptive_avg_pool2d_forward(x[0], 2), ValueError, "4-D"),
])
def test_bad_input(call, exc, match):
    x = np.zeros((2, 3, 6, 7))
    w = np.zeros((4, 3, 3, 3))
    with pytest.raises(exc, match=match):
        call(x, w)


# ---------------------------------------------------------------- hostile shapes, as torch

def _torch_or_error(f):
    """f()'s result as NumPy arrays, or None when torch refuses the arguments."""
    try:
        return f()
    except RuntimeError:
        return None


@settings(max_examples=300, deadline=None)
@given(shape=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 5),
                       st.integers(0, 5)),
       kernel=st.integers(1, 4), stride=st.integers(1, 3), padding=st.integers(0, 2),
       kind=st.sampled_from(["max", "avg", "avg_exclude"]), seed=st.integers(0, 2**32 - 1))
def test_pooling_refuses_what_torch_refuses(shape, kernel, stride, padding, kind, seed):
    """Empty channels or planes (padded or not), windows past the input, padding over
    half the kernel: an error where torch raises one, torch's values elsewhere.  On
    main a 0x0 input with padding gave -inf (max) or 0 / NaN (avg)."""
    torch = pytest.importorskip("torch")
    TF = torch.nn.functional
    x = np.random.default_rng(seed).standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_()
    if kind == "max":
        expect = _torch_or_error(lambda: TF.max_pool2d(xt, kernel, stride, padding))
        ours = lambda: K.max_pool2d_forward(x, kernel, stride, padding)  # noqa: E731
    else:
        cip = kind == "avg"
        expect = _torch_or_error(lambda: TF.avg_pool2d(xt, kernel, stride, padding,
                                                       count_include_pad=cip))
        ours = lambda: (K.avg_pool2d_forward(x, kernel, stride, padding, cip),)  # noqa: E731
    if expect is None:
        with pytest.raises(ValueError):
            ours()
        return
    y = ours()
    np.testing.assert_allclose(y[0], expect.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = np.cos(np.arange(expect.numel())).reshape(expect.shape)
    expect.backward(torch.from_numpy(dy))
    dx = (K.max_pool2d_backward(dy, y[1], shape) if kind == "max" else
          K.avg_pool2d_backward(dy, shape, kernel, stride, padding, kind == "avg"))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@settings(max_examples=200, deadline=None)
@given(shape=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 5),
                       st.integers(0, 5)),
       out=st.one_of(st.integers(-1, 4), st.tuples(st.one_of(st.none(), st.integers(-1, 4)),
                                                   st.one_of(st.none(), st.integers(-1, 4)))),
       seed=st.integers(0, 2**32 - 1))
def test_adaptive_pooling_refuses_what_torch_refuses(shape, out, seed):
    """Empty planes and negative sizes refused; an output size of 0 gives an empty
    output (and a zero gradient), as torch.  Empty planes are refused whatever the
    output size: torch's shortcut for an output of 1 averages them to NaN."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(seed).standard_normal(shape)
    xt = torch.from_numpy(x).requires_grad_()
    expect = _torch_or_error(lambda: torch.nn.functional.adaptive_avg_pool2d(xt, out))
    if expect is None or min(shape[2:]) == 0:
        with pytest.raises(ValueError):
            K.adaptive_avg_pool2d_forward(x, out)
        return
    y = K.adaptive_avg_pool2d_forward(x, out)
    np.testing.assert_allclose(y, expect.detach().numpy(), rtol=1e-12, atol=1e-12)
    dy = np.cos(np.arange(expect.numel())).reshape(expect.shape)
    dx = K.adaptive_avg_pool2d_backward(dy, shape, out)
    if expect.numel() == 0:  # torch's backward refuses what its forward gave
        assert dx.shape == shape and not dx.any()
        return
    expect.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("call, match", [
    (lambda x: K.max_pool2d_forward(x, 2**40, 1, 2**39), "kernel_size must be at most"),
    (lambda x: K.avg_pool2d_forward(x, 2**31, 1, 2**30), "kernel_size must be at most"),
    (lambda x: K.avg_pool2d_forward(x, 2, 2**63), "stride must be at most 2147483647"),
    (lambda x: K.max_pool2d_forward(x, 2, 2**31), "stride must be at most"),
    (lambda x: K.avg_pool2d_backward(np.ones((1, 1, 6, 6)), x.shape, 2**40, 1, 2**39),
     "kernel_size must be at most"),
    (lambda x: K.avg_pool2d_backward(np.ones((1, 1, 2, 2)), (1, 1, 5.5, 5), 2),
     "input_shape must be"),
    (lambda x: K.max_pool2d_backward(np.ones((1, 1, 1, 1)), np.zeros((1, 1, 1, 1), np.int64),
                                     (1, 1, True, 2)), "input_shape must be"),
    (lambda x: K.conv2d_forward(x, np.ones((1, 1, 2, 2)), stride=2**63), "stride must be at most"),
])
def test_hyper_parameters_past_c_ints_are_refused(call, match):
    """On main a 2**40 window averaged to inf (its divisor overflowed) and a 2**63 stride
    raised OverflowError; torch refuses pooling sizes past a C int."""
    with pytest.raises(ValueError, match=match):
        call(np.random.default_rng().random((1, 1, 5, 5)))


@pytest.mark.parametrize("k", [2**20, 2**31 - 1])
def test_windows_of_billions_of_pixels(k):
    """The largest windows accepted, each covering the whole padded input."""
    x = np.random.default_rng().random((1, 1, 5, 5))
    p = k // 2
    y = K.avg_pool2d_forward(x, k, 1, p)
    np.testing.assert_allclose(y, x.sum() / float(k) ** 2, rtol=1e-12)
    np.testing.assert_allclose(K.avg_pool2d_forward(x, k, 1, p, False), x.mean(), rtol=1e-12)
    ym, idx = K.max_pool2d_forward(x, k, 1, p)
    assert np.all(ym == x.max()) and np.all(idx == x.argmax())
    dx = K.avg_pool2d_backward(np.ones_like(y), x.shape, k, 1, p)
    np.testing.assert_allclose(dx, y.size / float(k) ** 2, rtol=1e-12)
