"""Tensor and tape semantics: construction, operators' gradients against
hand-derived float64 NumPy formulas, accumulation, retain_graph, no_grad."""
import gc
import threading
import weakref

import numpy as np
import pytest

import fastbn
from fastbn import Tensor
from fastbn.tensor import Function

from concurrency import run_threads


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def leaf(rng, *shape, dtype=np.float64):
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


# -- construction ------------------------------------------------------------
def test_python_data_becomes_float32_and_arrays_keep_dtype():
    assert Tensor(1.5).dtype == np.float32
    assert Tensor([[1, 2], [3, 4]]).dtype == np.float32
    assert fastbn.tensor([1.0, 2.0]).dtype == np.float32
    for dt in (np.float32, np.float64):
        a = np.arange(6, dtype=dt).reshape(2, 3)
        t = Tensor(a)
        assert t.dtype == dt and t.data is a      # no copy
    assert Tensor(np.arange(3)).dtype == np.arange(3).dtype


def test_attributes_and_methods(rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    t = Tensor(a, requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == np.float32
    assert t.size() == (2, 3) and t.size(1) == 3 and t.numel() == 6 and len(t) == 2
    assert t.grad is None and t.requires_grad
    assert t.detach().numpy() is a
    with pytest.raises(RuntimeError, match="detach"):    # as PyTorch
        t.numpy()
    np.testing.assert_array_equal(np.asarray(t), a)
    d = t.detach()
    assert not d.requires_grad and d.data is a
    assert Tensor(np.array([[2.5]])).item() == 2.5
    with pytest.raises(ValueError, match="one-element"):
        t.item()


def test_only_float_tensors_require_grad():
    with pytest.raises(TypeError, match="float32/float64"):
        Tensor(np.arange(3), requires_grad=True)


# -- operators: gradients against hand-derived formulas ----------------------
def test_arithmetic_gradients_with_broadcasting(rng):
    a, b = leaf(rng, 3, 4), leaf(rng, 4)
    c = leaf(rng, 3, 1)
    y = (a * b - c) / (b * b + 1.0) + (-a) ** 2
    g = rng.standard_normal((3, 4))
    y.backward(g)
    A, B, C = a.data, b.data, c.data
    den = B * B + 1.0
    np.testing.assert_allclose(y.data, (A * B - C) / den + A ** 2, rtol=1e-12)
    np.testing.assert_allclose(a.grad, g * (B / den + 2 * A), rtol=1e-10)
    db = g * (A / den - (A * B - C) * 2 * B / den ** 2)
    np.testing.assert_allclose(b.grad, db.sum(axis=0), rtol=1e-10)
    np.testing.assert_allclose(c.grad, (-g / den).sum(axis=1, keepdims=True), rtol=1e-10)
    assert b.grad.shape == (4,) and c.grad.shape == (3, 1)


def test_reflected_operators_with_numbers_and_arrays(rng):
    a = leaf(rng, 5)
    arr = rng.standard_normal(5)
    y = (2.0 - a) + (3.0 / a) + arr * a + (1 + a) + arr / a
    y.sum().backward()
    A = a.data
    np.testing.assert_allclose(a.grad, -1 - 3 / A ** 2 + arr + 1 - arr / A ** 2, rtol=1e-10)


def test_float32_stays_float32_with_python_scalars(rng):
    a = leaf(rng, 4, dtype=np.float32)
    y = (a * 2.0 + 1) / 3.0 - 0.5
    assert y.dtype == np.float32
    y.sum().backward()
    assert a.grad.dtype == np.float32
    np.testing.assert_allclose(a.grad, np.full(4, 2 / 3), rtol=1e-6)


def test_mixed_precision_gradient_is_cast_back(rng):
    a32 = leaf(rng, 3, dtype=np.float32)
    b64 = leaf(rng, 3)
    y = a32 * b64
    assert y.dtype == np.float64
    y.sum().backward()
    assert a32.grad.dtype == np.float32 and b64.grad.dtype == np.float64
    np.testing.assert_allclose(a32.grad, b64.data, rtol=1e-6)


@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                   ((4,), (4,)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2))])
def test_matmul_gradients(rng, sa, sb):
    a, b = leaf(rng, *sa), leaf(rng, *sb)
    y = a @ b
    g = rng.standard_normal(y.shape)
    y.backward(g)
    A, B = a.data, b.data
    np.testing.assert_allclose(y.data, np.matmul(A, B), rtol=1e-12)
    # reference: d<g, A@B>/dA by finite differences on the bilinear form (exact up to fp)
    for x, other, grad in ((A, B, a.grad), (B, A, b.grad)):
        ref = np.zeros_like(x)
        for k in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[k] = 1.0
            ref[k] = np.sum(g * (np.matmul(e, B) if x is A else np.matmul(A, e)))
        np.testing.assert_allclose(grad, ref, rtol=1e-10, atol=1e-12)


def test_matmul_shape_mismatch_names_shapes(rng):
    with pytest.raises(ValueError, match=r"\(3, 4\).*\(5, 2\)"):
        leaf(rng, 3, 4) @ leaf(rng, 5, 2)


def test_sum_mean_reshape_transpose_gradients(rng):
    a = leaf(rng, 2, 3, 4)
    y = (a.sum(axis=1) * 2).mean() + a.mean(axis=(0, 2), keepdims=True).sum() \
        + a.reshape(6, 4).T.sum(axis=0).sum() + a.permute(2, 0, 1).reshape(-1)[:5].sum()
    y.backward()
    ref = np.full(a.shape, 2 / 8) + 1 / 8 + 1
    first5 = np.zeros(a.shape)
    first5.transpose(2, 0, 1)[0, 0, :] = 1      # the first 5 of the (4, 2, 3) flattening
    first5.transpose(2, 0, 1)[0, 1, :2] = 1
    ref += first5
    np.testing.assert_allclose(a.grad, ref, rtol=1e-12)
    np.testing.assert_allclose(y.data, 2 * a.data.sum(axis=1).mean()
                               + a.data.mean(axis=(0, 2)).sum() + a.data.sum()
                               + a.data.transpose(2, 0, 1).reshape(-1)[:5].sum(), rtol=1e-12)


def test_transpose_swaps_two_dims_like_torch(rng):
    a = leaf(rng, 2, 3, 4)
    y = a.transpose(0, 2)
    np.testing.assert_array_equal(y.data, np.swapaxes(a.data, 0, 2))
    np.testing.assert_array_equal(a.permute((1, 2, 0)).data, a.data.transpose(1, 2, 0))
    np.testing.assert_array_equal(a.T.data, a.data.transpose(2, 1, 0))
    g = rng.standard_normal(y.shape)
    y.backward(g)
    np.testing.assert_array_equal(a.grad, np.swapaxes(g, 0, 2))
    with pytest.raises(ValueError, match="transpose"):
        a.transpose(0, 3)
    with pytest.raises(ValueError, match="permutation"):
        a.permute(0, 1)


def test_indexing_with_repeated_integer_arrays_accumulates(rng):
    a = leaf(rng, 5, 3)
    idx = np.array([0, 2, 2, 4, 0, 0])
    g = rng.standard_normal((6, 2))
    a[idx, 1:].backward(g)
    ref = np.zeros((5, 3))
    for r, i in enumerate(idx):
        ref[i, 1:] += g[r]
    np.testing.assert_allclose(a.grad, ref, rtol=1e-12)


def test_indexing_slices_masks_and_lists(rng):
    a = leaf(rng, 4, 5)
    mask = a.data > 0
    y = a[1:3, ::2].sum() + (a[mask] * 2).sum() + a[[3, 3]].sum()
    y.backward()
    ref = np.zeros((4, 5))
    ref[1:3, ::2] += 1
    ref[mask] += 2
    ref[3] += 2
    np.testing.assert_allclose(a.grad, ref)


def test_elementwise_shape_mismatch_names_op_and_shapes(rng):
    with pytest.raises(ValueError, match=r"mul: shapes \(3, 4\) and \(3,\)"):
        leaf(rng, 3, 4) * leaf(rng, 3)


def test_pow_rejects_tensor_exponent(rng):
    with pytest.raises(TypeError, match="exponent"):
        leaf(rng, 3) ** leaf(rng, 3)


# -- tape semantics ----------------------------------------------------------
def test_grads_accumulate_across_backward_calls_and_within_one(rng):
    a = leaf(rng, 3)
    (a * a).sum().backward()
    first = a.grad
    np.testing.assert_allclose(first, 2 * a.data)
    (a * 3.0 + a).sum().backward()             # a is used twice in one graph
    assert a.grad is first                      # later writes add in place
    np.testing.assert_allclose(a.grad, 2 * a.data + 4)


def test_first_gradient_is_a_copy(rng):
    a = leaf(rng, 3)
    g = rng.standard_normal(3)
    a.backward(g)                               # a leaf: grad flows straight in
    assert a.grad is not g
    g[:] = 0
    assert np.all(a.grad != 0)


def test_layer_gradients_kept_without_copy_own_their_memory(rng):
    """Layers' backwards promise new arrays (fresh_grads), kept as the leaves' first
    gradients without a copy: no two leaves, and not the caller's grad, share memory,
    and the next backward adds into each on its own."""
    import fastbn.nn.functional as F
    x = leaf(rng, 4, 3, 5, 5)
    params = [leaf(rng, 6, 3, 3, 3), leaf(rng, 6), leaf(rng, 6), leaf(rng, 6),
              leaf(rng, 2, 150), leaf(rng, 2)]
    cw, cb, bw, bb, lw, lb = params

    def run(g):
        h = F.batch_norm(F.conv2d(x, cw, cb, padding=1), None, None, bw, bb, training=True)
        F.linear(F.relu(h).reshape(4, 150), lw, lb).backward(g)

    g = rng.standard_normal((4, 2))
    run(g)
    grads = [t.grad for t in [x] + params]
    for i, a in enumerate(grads):
        assert not np.shares_memory(a, g)
        for b in grads[i + 1:]:
            assert not np.shares_memory(a, b)
    first = [a.copy() for a in grads]
    run(g)
    for t, a, b in zip([x] + params, grads, first):
        assert t.grad is a                      # added in place
        np.testing.assert_allclose(a, 2 * b, rtol=1e-12, atol=1e-12)


def test_shared_intermediate_sums_its_gradients(rng):
    a = leaf(rng, 4)
    h = a * a
    y = h * h + h                               # dy/da = (2h + 1) * 2a
    y.sum().backward()
    np.testing.assert_allclose(a.grad, (2 * a.data ** 2 + 1) * 2 * a.data, rtol=1e-12)


@pytest.mark.parametrize("fresh_first", [True, False])
def test_residual_join_adds_without_touching_a_shared_gradient(rng, fresh_first):
    """A node reached by a layer's fresh gradient and by one an Add hands to two inputs
    (the same array): the sum goes into the fresh one, whichever arrives first, and the
    other input of the Add still gets the gradient unchanged."""
    import fastbn.nn.functional as F
    x, x2 = leaf(rng, 5, 4), leaf(rng, 5, 4)
    c, d = rng.standard_normal((5, 4)), rng.standard_normal((5, 4))
    u = F.relu(x)
    m = x2 * 1.0
    # the tape runs the newest nodes first: u's gradients come from the ReLU below (a
    # fresh array) and from the Add (the array m gets too), in the order asked for
    if fresh_first:
        added = u + m
        out = (added * d).sum() + (F.relu(F.relu(u)) * c).sum()
    else:
        relu = F.relu(F.relu(u))
        out = (relu * c).sum() + ((u + m) * d).sum()
    out.backward()
    pos = (x.data > 0).astype(float)
    np.testing.assert_allclose(x.grad, (d + c * pos) * pos, rtol=1e-12)
    np.testing.assert_allclose(x2.grad, d, rtol=1e-12)


def test_second_backward_raises_without_retain_graph(rng):
    a = leaf(rng, 3)
    y = (a * a).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph"):
        y.backward()


def test_retain_graph_allows_a_second_backward(rng):
    a = leaf(rng, 3)
    y = (a.exp() * a).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(a.grad, 2 * np.exp(a.data) * (1 + a.data), rtol=1e-12)


class _SavesFresh(Function):
    """x * 2 that saves a buffer nothing else references, to watch it be freed."""
    last_saved = None

    @staticmethod
    def forward(x):
        buf = np.full_like(x, 2.0)
        _SavesFresh.last_saved = weakref.ref(buf)
        return x * buf, buf

    @staticmethod
    def backward(buf, g, inputs):
        return (g * buf,)


def test_saved_buffers_are_freed_after_backward(rng):
    a = leaf(rng, 3)
    y = _SavesFresh.apply(a).sum()
    gc.collect()
    assert _SavesFresh.last_saved() is not None
    y.backward()
    gc.collect()
    assert _SavesFresh.last_saved() is None
    np.testing.assert_allclose(a.grad, 2.0)


def test_no_grad_records_nothing_and_keeps_no_state(rng):
    a = leaf(rng, 3)
    with fastbn.no_grad():
        y = _SavesFresh.apply(a) * a
        gc.collect()
        assert _SavesFresh.last_saved() is None
    assert not y.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.sum().backward()
    z = a * 2.0                                 # recording again after the block
    assert z.requires_grad


def test_enable_grad_inside_no_grad_and_decorator(rng):
    a = leaf(rng, 3)

    @fastbn.no_grad()
    def f(x):
        return x * 2.0

    assert not f(a).requires_grad
    with fastbn.no_grad():
        with fastbn.enable_grad():
            assert (a * 2.0).requires_grad
        assert not (a * 2.0).requires_grad


def test_no_grad_is_thread_local(rng):
    a = leaf(rng, 3)
    inside, done = threading.Event(), threading.Event()
    seen = {}

    def other_thread():
        inside.wait()
        seen["other"] = (a * 2.0).requires_grad    # main thread is inside no_grad now
        done.set()

    th = threading.Thread(target=other_thread)
    th.start()
    with fastbn.no_grad():
        inside.set()
        done.wait()
        seen["main"] = (a * 2.0).requires_grad
    th.join()
    assert seen == {"other": True, "main": False}


def test_backward_argument_checks(rng):
    a = leaf(rng, 2, 2)
    y = a * 2.0
    with pytest.raises(RuntimeError, match="one-element"):
        y.backward()
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        y.backward(np.ones(3))
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(np.ones(2)).sum().backward()


def test_inputs_not_requiring_grad_get_none(rng):
    a = leaf(rng, 3)
    c = Tensor(rng.standard_normal(3))
    (a * c).sum().backward()
    assert c.grad is None
    np.testing.assert_allclose(a.grad, c.data)


def test_long_chain_backward_is_not_recursive(rng):
    a = leaf(rng, 2)
    y = a
    for _ in range(5000):                       # deeper than Python's recursion limit
        y = y * 1.0001
    y.sum().backward()
    np.testing.assert_allclose(a.grad, 1.0001 ** 5000, rtol=1e-9)


def test_concurrent_backwards_accumulate_into_a_shared_leaf(rng):
    # big enough that NumPy drops the GIL inside +=: unlocked, updates get lost
    for _ in range(3):
        w = Tensor(np.zeros(300000), requires_grad=True)
        xs = [rng.integers(-5, 5, 300000).astype(np.float64) for _ in range(2)]

        def work(x):
            for _ in range(10):
                (w * x).sum().backward()

        run_threads(work, xs)
        np.testing.assert_array_equal(w.grad, 10 * (xs[0] + xs[1]))   # integers: exact
