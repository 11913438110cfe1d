"""fastbn.kernels.relu_forward / add_relu_forward / relu_backward (and F.relu,
F.add_relu on the tape) against np.where written plainly: ReLU is exact, and the ReLU
of a sum one IEEE addition, so every bit must match, at any thread count and from
several Python threads at once."""
import numpy as np
import pytest

import fastbn
import fastbn.nn.functional as F
from fastbn import Tensor
from fastbn.kernels import add_relu_forward, relu_backward, relu_forward

from concurrency import run_threads

DTYPES = [np.float32, np.float64]
# 0-d, 1-d, (N, C), NCHW below and above the parallel thresholds (64K, 128K values),
# one not a multiple of the parallel block, empty
SHAPES = [(), (7,), (60, 100), (4, 3, 5, 5), (64, 32, 28, 28), (3, 5, 97, 101), (0, 4)]


@pytest.fixture
def rng():
    return np.random.default_rng()


def ref_forward(x):
    return np.where(x < 0, 0, x).astype(x.dtype)   # NaN and -0.0 kept, as torch.relu


def ref_backward(dy, y):
    return np.where(y <= 0, 0, dy).astype(y.dtype)   # torch's threshold_backward


def with_specials(rng, shape, dtype):
    """Normal values, and where there is room, NaN, +-inf, +-0 at random places."""
    x = rng.standard_normal(shape).astype(dtype)
    if x.size >= 6:
        flat = x.reshape(-1)
        at = rng.choice(flat.size, 6, replace=False)
        flat[at] = [np.nan, np.inf, -np.inf, 0.0, -0.0, np.nan]
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_reference(rng, shape, dtype):
    x = with_specials(rng, shape, dtype)
    dy = with_specials(rng, shape, dtype)
    y = relu_forward(x)
    assert y.shape == x.shape and y.dtype == dtype
    np.testing.assert_array_equal(y, ref_forward(x))
    dx = relu_backward(dy, y)
    assert dx.shape == x.shape and dx.dtype == dtype
    np.testing.assert_array_equal(dx, ref_backward(dy, y))


def test_nan_kept_and_nonfinite_gradient_masked():
    x = np.array([np.nan, -1.0, 2.0, -np.inf, np.inf, -0.0], np.float32)
    y = relu_forward(x)
    np.testing.assert_array_equal(y, [np.nan, 0, 2, 0, np.inf, 0])
    assert np.signbit(y[-1])   # relu(-0.0) is -0.0, as in torch
    dy = np.array([1.0, np.inf, 3.0, np.nan, 5.0, np.inf], np.float32)
    # a NaN output passes dy; dy * (y > 0) would give NaN for the inf and the NaN
    # where y <= 0
    np.testing.assert_array_equal(relu_backward(dy, y), [1, 0, 3, 0, 5, 0])


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_and_list_inputs(rng, dtype):
    x = rng.standard_normal((40, 30, 50)).astype(dtype).transpose(2, 0, 1)[:, ::2]
    np.testing.assert_array_equal(relu_forward(x), ref_forward(x))
    dy = rng.standard_normal(x.shape).astype(dtype)[::-1]
    y = relu_forward(x)
    np.testing.assert_array_equal(relu_backward(dy, y[:, ::-1][:, ::-1]), ref_backward(dy, y))
    np.testing.assert_array_equal(relu_forward([[-1.5, 2.5]]), [[0.0, 2.5]])


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
@pytest.mark.parametrize("dtype", DTYPES)
def test_parallel_path_matches_reference(rng, dtype, schedule):
    x = with_specials(rng, (3, 5, 97, 101), dtype)  # 146,955 values: 9 blocks, a short last
    dy = with_specials(rng, x.shape, dtype)
    for n in (1, 2, 3):
        with fastbn.threads(n):
            y = relu_forward(x)
            np.testing.assert_array_equal(y, ref_forward(x))
            np.testing.assert_array_equal(relu_backward(dy, y), ref_backward(dy, y))


def test_several_python_threads_at_once(rng):
    cases = [(with_specials(rng, (64, 16, 24, 24), np.float32),
              with_specials(rng, (64, 16, 24, 24), np.float32)) for _ in range(4)]
    out = [None] * len(cases)

    def work(i):
        x, dy = cases[i]
        for _ in range(5):
            y = relu_forward(x)
            out[i] = (y, relu_backward(dy, y))

    run_threads(work, range(len(cases)))
    for (x, dy), (y, dx) in zip(cases, out):
        np.testing.assert_array_equal(y, ref_forward(x))
        np.testing.assert_array_equal(dx, ref_backward(dy, ref_forward(x)))


def test_bad_input():
    with pytest.raises(TypeError, match="input has dtype int64"):
        relu_forward(np.arange(4))
    y = relu_forward(np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match="grad_output has dtype float64 but the output has float32"):
        relu_backward(np.ones((2, 3)), y)
    with pytest.raises(ValueError, match=r"grad_output has shape \(3, 2\)"):
        relu_backward(np.ones((3, 2), np.float32), y)
    with pytest.raises(TypeError, match="output has dtype bool"):
        relu_backward(np.ones((2, 3), np.float32), y > 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tape_relu_gradient(rng, dtype):
    x = Tensor(with_specials(rng, (8, 4, 6, 6), dtype), requires_grad=True)
    g = with_specials(rng, x.shape, dtype)
    y = F.relu(x)
    np.testing.assert_array_equal(y.data, ref_forward(x.data))
    y.backward(g)
    np.testing.assert_array_equal(x.grad, ref_backward(g, ref_forward(x.data)))


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = with_specials(rng, (16, 8, 10, 10), np.float32)
    g = with_specials(rng, x.shape, np.float32)
    tx = torch.from_numpy(x.copy()).requires_grad_()
    ty = torch.relu(tx)
    ty.backward(torch.from_numpy(g))
    y = relu_forward(x)
    np.testing.assert_array_equal(y, ty.detach().numpy())
    np.testing.assert_array_equal(relu_backward(g, y), tx.grad.numpy())


# ---------------------------------------------------------------- the ReLU of a sum

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_add_relu_matches_reference(rng, shape, dtype):
    a, b = with_specials(rng, shape, dtype), with_specials(rng, shape, dtype)
    y = add_relu_forward(a, b)
    assert y.shape == a.shape and y.dtype == dtype
    with np.errstate(invalid="ignore"):         # inf + -inf
        np.testing.assert_array_equal(y, ref_forward(a + b))


@pytest.mark.skipif(not fastbn.show_config(as_dict=True)["openmp"], reason="serial build")
@pytest.mark.parametrize("dtype", DTYPES)
def test_add_relu_parallel_path_and_python_threads(rng, dtype, schedule):
    cases = [tuple(with_specials(rng, (3, 5, 97, 101), dtype) for _ in range(2))
             for _ in range(4)]
    want = [ref_forward(a + b) for a, b in cases]
    for n in (1, 2, 3):
        with fastbn.threads(n):
            for (a, b), w in zip(cases, want):
                np.testing.assert_array_equal(add_relu_forward(a, b), w)
    out = [None] * len(cases)

    def work(i):
        for _ in range(3):
            out[i] = add_relu_forward(*cases[i])

    run_threads(work, range(len(cases)))
    for got, w in zip(out, want):
        np.testing.assert_array_equal(got, w)


def test_add_relu_bad_input():
    a = np.ones((2, 3), np.float32)
    with pytest.raises(TypeError, match="other has dtype int64"):
        add_relu_forward(a, np.ones((2, 3), np.int64))
    with pytest.raises(TypeError, match="other has dtype float64 but input has float32"):
        add_relu_forward(a, np.ones((2, 3)))
    with pytest.raises(ValueError, match=r"other has shape \(3, 2\) but input has \(2, 3\)"):
        add_relu_forward(a, np.ones((3, 2), np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
def test_tape_add_relu_equals_relu_of_add(rng, dtype):
    """The fused op gives relu(a + b)'s bits and gradients: both inputs get the ReLU's
    gradient; other operands (broadcasting, numbers) take add then relu."""
    a = Tensor(with_specials(rng, (8, 4, 6, 6), dtype), requires_grad=True)
    b = Tensor(rng.standard_normal(a.shape).astype(dtype), requires_grad=True)
    g = with_specials(rng, a.shape, dtype)
    y = F.add_relu(a, b)
    want = ref_forward(a.data + b.data)
    np.testing.assert_array_equal(y.data, want)
    y.backward(g)
    np.testing.assert_array_equal(a.grad, ref_backward(g, want))
    np.testing.assert_array_equal(b.grad, ref_backward(g, want))
    c = Tensor(rng.standard_normal((4, 1, 1)).astype(dtype), requires_grad=True)
    y = F.add_relu(b, c)                        # broadcast: the composition
    np.testing.assert_array_equal(y.data, ref_forward(b.data + c.data))
    g = rng.standard_normal(a.shape).astype(dtype)  # finite: c's gradient is a sum
    y.backward(g)
    np.testing.assert_allclose(c.grad, ref_backward(g, y.data).sum(axis=(0, 2, 3),
                                                                   keepdims=True)[0],
                               rtol=1e-5)
    np.testing.assert_array_equal(F.add_relu(b, 0.5).data, ref_forward(b.data + dtype(0.5)))


def test_add_relu_matches_torch(rng):
    torch = pytest.importorskip("torch")
    a, b = (with_specials(rng, (16, 8, 10, 10), np.float32) for _ in range(2))
    g = with_specials(rng, a.shape, np.float32)
    ta, tb = (torch.from_numpy(v.copy()).requires_grad_() for v in (a, b))
    torch.relu(ta + tb).backward(torch.from_numpy(g))
    x, y = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    out = F.add_relu(x, y)
    out.backward(g)
    np.testing.assert_array_equal(out.data, torch.relu(ta + tb).detach().numpy())
    np.testing.assert_array_equal(x.grad, ta.grad.numpy())
    np.testing.assert_array_equal(y.grad, tb.grad.numpy())
