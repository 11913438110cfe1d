"""The ops of fastbn.nn.functional: forward against plain float64 NumPy references
(direct loops for conv and pooling), every op's gradient by gradcheck, torch as an
extra oracle when it can be imported, and the errors bad arguments raise."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import fastbn
import fastbn.nn.functional as F
from fastbn import Tensor, gradcheck


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def leaf(rng, *shape, dtype=np.float64):
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


# ---------------------------------------------------------------------------
# independent references
# ---------------------------------------------------------------------------
def conv_ref(x, w, b, stride, padding, dilation, groups, g=None):
    """Direct-loop conv2d; with g also the gradients (dx, dw) of sum(y * g)."""
    N, C, H, W = x.shape
    O, Cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw_) = stride, padding, dilation
    OH = (H + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    OW = (W + 2 * pw - dw_ * (kw - 1) - 1) // sw + 1
    xp = np.zeros((N, C, H + 2 * ph, W + 2 * pw))
    xp[:, :, ph:ph + H, pw:pw + W] = x
    y = np.zeros((N, O, OH, OW))
    dxp, dw = np.zeros_like(xp), np.zeros(w.shape)
    Og = O // groups
    for n in range(N):
        for o in range(O):
            c0 = (o // Og) * Cg
            for i in range(OH):
                for j in range(OW):
                    patch = xp[n, c0:c0 + Cg, i * sh:i * sh + dh * kh:dh,
                               j * sw:j * sw + dw_ * kw:dw_]
                    y[n, o, i, j] = np.sum(patch * w[o]) + (0 if b is None else b[o])
                    if g is not None:
                        dw[o] += g[n, o, i, j] * patch
                        dxp[n, c0:c0 + Cg, i * sh:i * sh + dh * kh:dh,
                            j * sw:j * sw + dw_ * kw:dw_] += g[n, o, i, j] * w[o]
    return y, dxp[:, :, ph:ph + H, pw:pw + W], dw


def pool_ref(x, k, s, p, kind, count_include_pad=True):
    N, C, H, W = x.shape
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    y = np.zeros((N, C, OH, OW))
    for i in range(OH):
        for j in range(OW):
            h0, w0 = i * s - p, j * s - p
            h1, w1 = min(h0 + k, H), min(w0 + k, W)
            win = x[:, :, max(h0, 0):h1, max(w0, 0):w1]
            if kind == "max":
                y[:, :, i, j] = win.max(axis=(2, 3))
            else:
                div = k * k if count_include_pad else win.shape[2] * win.shape[3]
                y[:, :, i, j] = win.sum(axis=(2, 3)) / div
    return y


def adaptive_ref(x, oh, ow):
    N, C, H, W = x.shape
    y = np.zeros((N, C, oh, ow))
    for i in range(oh):
        for j in range(ow):
            h0, h1 = (i * H) // oh, -((-(i + 1) * H) // oh)
            w0, w1 = (j * W) // ow, -((-(j + 1) * W) // ow)
            y[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


# ---------------------------------------------------------------------------
# conv2d
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,rtol", [(np.float64, 1e-10), (np.float32, 1e-4)])
def test_conv2d_forward_and_backward_match_loops(rng, dtype, rtol):
    x, w, b = leaf(rng, 2, 4, 6, 5, dtype=dtype), leaf(rng, 6, 2, 3, 2, dtype=dtype), \
        leaf(rng, 6, dtype=dtype)
    y = F.conv2d(x, w, b, stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2)
    g = rng.standard_normal(y.shape).astype(dtype)
    y.backward(g)
    args = [a.data.astype(np.float64) for a in (x, w, b)]
    ref, dx, dw = conv_ref(*args, (2, 1), (1, 2), (1, 2), 2, g.astype(np.float64))
    assert y.dtype == dtype
    np.testing.assert_allclose(y.data, ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(x.grad, dx, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(w.grad, dw, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(b.grad, g.sum(axis=(0, 2, 3)), rtol=rtol, atol=rtol)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 2), cin_g=st.integers(1, 3), cout_g=st.integers(1, 3),
       groups=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7),
       kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3), sw=st.integers(1, 3),
       ph=st.integers(0, 2), pw=st.integers(0, 2), dh=st.integers(1, 2), dw=st.integers(1, 2),
       bias=st.booleans(), seed=st.integers(0, 2 ** 31))
def test_conv2d_hypothesis(n, cin_g, cout_g, groups, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                           bias, seed):
    if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
        return                                  # no output: covered by the error test
    rng = np.random.default_rng(seed)
    x = leaf(rng, n, cin_g * groups, h, w)
    wt = leaf(rng, cout_g * groups, cin_g, kh, kw)
    b = leaf(rng, cout_g * groups) if bias else None
    y = F.conv2d(x, wt, b, (sh, sw), (ph, pw), (dh, dw), groups)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    ref, dx, dwt = conv_ref(x.data, wt.data, None if b is None else b.data,
                            (sh, sw), (ph, pw), (dh, dw), groups, g)
    np.testing.assert_allclose(y.data, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad, dx, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(wt.grad, dwt, rtol=1e-10, atol=1e-12)
    if b is not None:
        np.testing.assert_allclose(b.grad, g.sum(axis=(0, 2, 3)), rtol=1e-10)


def test_conv2d_gradcheck(rng):
    assert gradcheck(lambda x, w, b: F.conv2d(x, w, b, stride=2, padding=1, groups=2),
                     [leaf(rng, 2, 4, 5, 5), leaf(rng, 4, 2, 3, 3), leaf(rng, 4)])


def test_conv2d_skips_gradients_nobody_needs(rng):
    x = Tensor(rng.standard_normal((2, 3, 5, 5)))
    w = leaf(rng, 4, 3, 3, 3)
    F.conv2d(x, w).sum().backward()
    assert x.grad is None and w.grad is not None


# ---------------------------------------------------------------------------
# pooling
# ---------------------------------------------------------------------------
@pytest.mark.parametrize("k,s,p", [(2, None, 0), (3, 2, 1), (3, 1, 0)])
def test_max_pool2d(rng, k, s, p):
    x = leaf(rng, 2, 3, 7, 6)
    y = F.max_pool2d(x, k, s, p)
    np.testing.assert_array_equal(y.data, pool_ref(x.data, k, s or k, p, "max"))
    assert gradcheck(lambda t: F.max_pool2d(t, k, s, p), [x])


@pytest.mark.parametrize("k,s,p,cip", [(2, None, 0, True), (3, 2, 1, True), (3, 2, 1, False)])
def test_avg_pool2d(rng, k, s, p, cip):
    x = leaf(rng, 2, 3, 7, 6)
    y = F.avg_pool2d(x, k, s, p, count_include_pad=cip)
    np.testing.assert_allclose(y.data, pool_ref(x.data, k, s or k, p, "avg", cip), rtol=1e-12)
    assert gradcheck(lambda t: F.avg_pool2d(t, k, s, p, count_include_pad=cip), [x])


@pytest.mark.parametrize("size", [1, (2, 3), (3, 2)])
def test_adaptive_avg_pool2d(rng, size):
    x = leaf(rng, 2, 3, 5, 7)
    y = F.adaptive_avg_pool2d(x, size)
    oh, ow = (size, size) if isinstance(size, int) else size
    np.testing.assert_allclose(y.data, adaptive_ref(x.data, oh, ow), rtol=1e-12)
    assert gradcheck(lambda t: F.adaptive_avg_pool2d(t, size), [x])


# ---------------------------------------------------------------------------
# batch_norm
# ---------------------------------------------------------------------------
def bn_ref(x, mean, var, w, b, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * w.reshape(shape) \
        + b.reshape(shape)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5), (4, 3, 2, 3)])
@pytest.mark.parametrize("stats_as_tensor", [False, True])
def test_batch_norm_training_forward_and_running_stats(rng, shape, stats_as_tensor):
    x = leaf(rng, *shape)
    w, b = leaf(rng, 3), leaf(rng, 3)
    rm0, rv0 = rng.standard_normal(3), rng.random(3) + 0.5
    rm, rv = rm0.copy(), rv0.copy()
    stats = (Tensor(rm), Tensor(rv)) if stats_as_tensor else (rm, rv)
    y = F.batch_norm(x, *stats, w, b, training=True, momentum=0.2, eps=1e-3)
    axes = (0,) + tuple(range(2, len(shape)))
    m, v = x.data.mean(axis=axes), x.data.var(axis=axes)
    np.testing.assert_allclose(y.data, bn_ref(x.data, m, v, w.data, b.data, 1e-3), rtol=1e-9,
                               atol=1e-12)
    count = x.data.size // 3
    np.testing.assert_allclose(rm, 0.8 * rm0 + 0.2 * m, rtol=1e-12)
    np.testing.assert_allclose(rv, 0.8 * rv0 + 0.2 * v * count / (count - 1), rtol=1e-12)


def test_batch_norm_eval_uses_running_stats_and_frozen_gradient(rng):
    x, w, b = leaf(rng, 6, 3, 4), leaf(rng, 3), leaf(rng, 3)
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    rm0 = rm.copy()
    y = F.batch_norm(x, rm, rv, w, b, training=False, eps=1e-5)
    np.testing.assert_allclose(y.data, bn_ref(x.data, rm, rv, w.data, b.data, 1e-5), rtol=1e-9)
    g = rng.standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_allclose(x.grad, g * (w.data / np.sqrt(rv + 1e-5))[None, :, None],
                               rtol=1e-9)
    np.testing.assert_array_equal(rm, rm0)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", ["both", "none", "bias"])
def test_batch_norm_gradcheck(rng, training, affine):
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    x = leaf(rng, 5, 3, 2, 2)
    w = leaf(rng, 3) if affine == "both" else None
    b = leaf(rng, 3) if affine != "none" else None
    inputs = [x] + [t for t in (w, b) if t is not None]

    def fn(x, *affine_):
        ww = affine_[0] if w is not None else None
        bb = affine_[-1] if b is not None else None
        return F.batch_norm(x, rm.copy(), rv.copy(), ww, bb, training=training)
    assert gradcheck(fn, inputs)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("wanted", ["x", "w", "b", "wb", "xb"])
def test_batch_norm_gradients_of_some_inputs(rng, training, wanted):
    """Only some inputs require grad (a BN on the data, a frozen layer): theirs
    are right, the others get none (the kernel skips what is not needed)."""
    rm, rv = rng.standard_normal(3), rng.random(3) + 0.5
    args = {"x": leaf(rng, 5, 3, 2, 2), "w": leaf(rng, 3), "b": leaf(rng, 3)}
    for name, t in args.items():
        t.requires_grad_(name in wanted)

    def fn(*tensors):
        a = dict(args, **dict(zip(wanted, tensors)))
        return F.batch_norm(a["x"], rm.copy(), rv.copy(), a["w"], a["b"], training=training)
    assert gradcheck(fn, [args[n] for n in wanted])
    fn(*[args[n] for n in wanted]).backward(rng.standard_normal((5, 3, 2, 2)))
    assert all((t.grad is None) == (n not in wanted) for n, t in args.items())


# ---------------------------------------------------------------------------
# linear, activations, softmax
# ---------------------------------------------------------------------------
def test_linear_forward_and_gradcheck(rng):
    x, w, b = leaf(rng, 2, 3, 4), leaf(rng, 5, 4), leaf(rng, 5)
    np.testing.assert_allclose(F.linear(x, w, b).data,
                               np.einsum("abi,oi->abo", x.data, w.data) + b.data, rtol=1e-12)
    assert gradcheck(F.linear, [x, w, b])
    assert gradcheck(F.linear, [leaf(rng, 3, 4), w])


def stable_sigmoid(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) /
                    (1 + np.exp(-np.abs(x))))


@pytest.mark.parametrize("op,ref", [
    (F.relu, lambda x: np.where(x > 0, x, 0.0)),
    (F.sigmoid, stable_sigmoid),
    (F.tanh, np.tanh),
    (lambda t: F.leaky_relu(t, 0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (lambda t: F.softmax(t, 1), lambda x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    (lambda t: F.log_softmax(t, 0), lambda x: x - np.log(np.exp(x).sum(0, keepdims=True))),
    (lambda t: F.log_softmax(t, -1), lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
    (lambda t: t.exp(), np.exp),
    (lambda t: (t * t + 1).log(), lambda x: np.log(x * x + 1)),
])
def test_activations(rng, op, ref):
    x = leaf(rng, 4, 5)
    np.testing.assert_allclose(op(x).data, ref(x.data), rtol=1e-12, atol=1e-15)
    assert gradcheck(op, [x])


def test_sigmoid_and_softmax_are_stable_for_large_inputs():
    x = Tensor(np.array([[-1000.0, 0.0, 1000.0]]))
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        np.testing.assert_allclose(F.sigmoid(x).data, [[0.0, 0.5, 1.0]])
        np.testing.assert_allclose(F.softmax(x, 1).data, [[0.0, 0.0, 1.0]])
        np.testing.assert_allclose(F.log_softmax(x, 1).data, [[-2000.0, -1000.0, 0.0]])


# ---------------------------------------------------------------------------
# losses, flatten, dropout
# ---------------------------------------------------------------------------
def ce_ref(x, t):
    """Per-sample -log softmax(x)[t], x (N, C) float64."""
    m = x.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
    return lse - x[np.arange(len(t)), t]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(rng, reduction):
    x = leaf(rng, 6, 4)
    t = rng.integers(0, 4, 6)
    per = ce_ref(x.data, t)
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    np.testing.assert_allclose(F.cross_entropy(x, t, reduction=reduction).data, want,
                               rtol=1e-12)
    assert gradcheck(lambda a: F.cross_entropy(a, t, reduction=reduction), [x])


def test_cross_entropy_spatial_targets_and_stability(rng):
    x = leaf(rng, 2, 3, 2, 2)
    t = rng.integers(0, 3, (2, 2, 2))
    per = ce_ref(np.moveaxis(x.data, 1, -1).reshape(-1, 3), t.reshape(-1))
    np.testing.assert_allclose(F.cross_entropy(x, t).data, per.mean(), rtol=1e-12)
    assert gradcheck(lambda a: F.cross_entropy(a, t, reduction="none"), [x])
    big = Tensor(np.array([[1000.0, -1000.0], [0.0, 800.0]], dtype=np.float32),
                 requires_grad=True)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        loss = F.cross_entropy(big, np.array([1, 1]), reduction="sum")
        loss.backward()
    np.testing.assert_allclose(loss.item(), 2000.0, rtol=1e-6)
    np.testing.assert_allclose(big.grad, [[1.0, -1.0], [0.0, 0.0]], atol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(rng, reduction):
    x, y = leaf(rng, 3, 4), leaf(rng, 3, 4)
    sq = (x.data - y.data) ** 2
    want = {"mean": sq.mean(), "sum": sq.sum(), "none": sq}[reduction]
    np.testing.assert_allclose(F.mse_loss(x, y, reduction=reduction).data, want, rtol=1e-12)
    assert gradcheck(lambda a, b: F.mse_loss(a, b, reduction=reduction), [x, y])


def test_flatten(rng):
    x = leaf(rng, 2, 3, 4, 5)
    assert F.flatten(x).shape == (2, 60)
    assert F.flatten(x, 1, 2).shape == (2, 12, 5)
    assert x.flatten().shape == (120,)
    assert gradcheck(lambda a: F.flatten(a) * 2.0, [leaf(rng, 2, 2, 3)])


def test_dropout_scales_survivors_and_is_seedable(rng):
    x = leaf(rng, 200, 50)
    y1 = F.dropout(x, 0.3, generator=np.random.default_rng(7))
    y2 = F.dropout(x, 0.3, generator=np.random.default_rng(7))
    np.testing.assert_array_equal(y1.data, y2.data)
    kept = y1.data != 0
    assert abs(kept.mean() - 0.7) < 0.02
    np.testing.assert_allclose(y1.data[kept], x.data[kept] / 0.7, rtol=1e-12)
    y1.backward(np.ones(x.shape))
    np.testing.assert_allclose(x.grad, kept / 0.7, rtol=1e-12)
    F.manual_seed(3)
    a = F.dropout(x, 0.5).data
    F.manual_seed(3)
    np.testing.assert_array_equal(F.dropout(x, 0.5).data, a)
    assert F.dropout(x, 0.5, training=False) is x


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------
def test_bad_arguments_raise_clear_errors(rng):
    x = leaf(rng, 4, 3)
    with pytest.raises(ValueError, match=r"linear.*\(4, 3\).*\(5, 4\)"):
        F.linear(x, leaf(rng, 5, 4))
    with pytest.raises(TypeError, match="linear.*float32"):
        F.linear(x, leaf(rng, 2, 3, dtype=np.float32))
    with pytest.raises(TypeError, match="relu.*int"):
        F.relu(np.arange(3))
    with pytest.raises(TypeError, match="cross_entropy.*integer"):
        F.cross_entropy(x, np.array([0.0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"cross_entropy.*\(4,\)"):
        F.cross_entropy(x, np.array([0, 1]))
    for bad in ([0, 1, 3, 0], [0, -1, 2, 0], [0, -2**62, 2, 0]):  # negatives, one pass
        with pytest.raises(ValueError, match=r"cross_entropy.*\[0, 3\)"):
            F.cross_entropy(x, np.array(bad))
    with pytest.raises(ValueError, match=r"cross_entropy.*\[0, 3\)"):
        F.cross_entropy(x, np.array([0, 1, 2**63 + 1, 0], dtype=np.uint64))
    np.testing.assert_allclose(F.cross_entropy(x, np.array([0, 1, 2, 0], np.uint8)).data,
                               ce_ref(x.data, np.array([0, 1, 2, 0])).mean(), rtol=1e-12)
    with pytest.raises(ValueError, match="reduction"):
        F.cross_entropy(x, np.array([0, 1, 2, 0]), reduction="avg")
    with pytest.raises(ValueError, match=r"mse_loss.*\(4, 3\).*\(3,\)"):
        F.mse_loss(x, leaf(rng, 3))
    with pytest.raises(ValueError, match="softmax.*dim"):
        F.softmax(x, 2)
    with pytest.raises(ValueError, match="conv2d"):
        F.conv2d(leaf(rng, 1, 3, 5, 5), leaf(rng, 4, 2, 3, 3))
    with pytest.raises(TypeError, match="conv2d"):
        F.conv2d(leaf(rng, 1, 3, 5, 5), leaf(rng, 4, 3, 3, 3, dtype=np.float32))
    with pytest.raises(ValueError, match="batch_norm|running_mean"):
        F.batch_norm(leaf(rng, 4, 3), np.zeros(2), np.ones(2), training=True)
    with pytest.raises(ValueError, match="reshape"):
        x.reshape(5, 2)


# ---------------------------------------------------------------------------
# torch as an extra oracle
# ---------------------------------------------------------------------------
def test_against_torch(rng):
    torch = pytest.importorskip("torch")
    x = leaf(rng, 4, 3, 8, 8, dtype=np.float32)
    w, cb = leaf(rng, 6, 3, 3, 3, dtype=np.float32), leaf(rng, 6, dtype=np.float32)
    g, b = leaf(rng, 6, dtype=np.float32), leaf(rng, 6, dtype=np.float32)
    lw, lb = leaf(rng, 5, 6 * 2 * 2, dtype=np.float32), leaf(rng, 5, dtype=np.float32)
    t = rng.integers(0, 5, 4)
    rm, rv = np.zeros(6, np.float32), np.ones(6, np.float32)

    def run(lib, F_, tensors, target, stats):
        x, w, cb, g, b, lw, lb = tensors
        h = F_.conv2d(x, w, cb, stride=1, padding=1, dilation=1, groups=1)
        h = F_.batch_norm(h, *stats, g, b, training=True, momentum=0.1, eps=1e-5)
        h = F_.relu(h)
        h = F_.max_pool2d(h, 2) + F_.avg_pool2d(h, 2) + F_.adaptive_avg_pool2d(h, 4)
        h = F_.max_pool2d(F_.leaky_relu(h, 0.1), 3, 1, 1)
        h = F_.avg_pool2d(h, 3, 2, 1, count_include_pad=False)
        h = F_.linear(h.reshape(4, -1), lw, lb)
        loss = F_.cross_entropy(h, target) + F_.mse_loss(F_.softmax(h, 1), F_.sigmoid(h)) \
            + F_.log_softmax(F_.tanh(h), 1).mean()
        loss.backward()
        return loss

    ours = [x, w, cb, g, b, lw, lb]
    theirs = [torch.tensor(a.data, requires_grad=True) for a in ours]
    trm, trv = torch.zeros(6), torch.ones(6)
    l1 = run(fastbn, F, ours, t, (rm, rv))
    l2 = run(torch, torch.nn.functional, theirs, torch.tensor(t), (trm, trv))
    np.testing.assert_allclose(l1.item(), l2.item(), rtol=1e-4)
    np.testing.assert_allclose(rm, trm.numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rv, trv.numpy(), rtol=1e-4, atol=1e-6)
    for a, ta in zip(ours, theirs):   # (the conv bias's gradient is ~0: BN cancels it)
        scale = max(np.abs(ta.grad.numpy()).max(), 0.1)
        np.testing.assert_allclose(a.grad, ta.grad.numpy(), rtol=1e-3, atol=1e-4 * scale)
