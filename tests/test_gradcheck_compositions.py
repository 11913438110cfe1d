"""fastbn.gradcheck itself, and gradients of whole small networks."""
import numpy as np
import pytest

import fastbn.nn.functional as F
from fastbn import Tensor, gradcheck
from fastbn.gradcheck import GradcheckError
from fastbn.tensor import Function


@pytest.fixture
def rng():
    return np.random.default_rng(777)


def leaf(rng, *shape, scale=1.0):
    return Tensor(scale * rng.standard_normal(shape), requires_grad=True)


class _WrongSquare(Function):
    """x**2 with a deliberately wrong backward (2x + 0.01)."""

    @staticmethod
    def forward(x):
        return x * x, x

    @staticmethod
    def backward(x, g, inputs):
        return (g * (2 * x + 0.01),)


def test_gradcheck_catches_a_wrong_gradient(rng):
    x = leaf(rng, 3, 2)
    with pytest.raises(GradcheckError, match=r"input 0 \(shape \(3, 2\)\)"):
        gradcheck(lambda t: _WrongSquare.apply(t) * 3.0, [x])
    assert gradcheck(lambda t: t * t * 3.0, [x])


def test_gradcheck_checks_only_inputs_requiring_grad_in_float64(rng):
    x32 = Tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    const = Tensor(rng.standard_normal(4))
    seen = []

    def fn(a, c, k):
        seen.append(a.dtype)
        return (a * c).sum() * k
    assert gradcheck(fn, [x32, const, 2.0])
    assert set(seen) == {np.dtype(np.float64)}
    assert x32.grad is None                     # the caller's tensors are untouched
    with pytest.raises(ValueError, match="requires_grad"):
        gradcheck(fn, [const, const, 2.0])


def test_conv_bn_relu_maxpool_linear_cross_entropy(rng):
    t = rng.integers(0, 5, 3)
    rm, rv = np.zeros(4), np.ones(4)

    def net(x, w, cb, g, b, lw, lb):
        h = F.conv2d(x, w, cb, padding=1)
        h = F.batch_norm(h, rm, rv, g, b, training=True)
        h = F.max_pool2d(F.relu(h), 2)
        return F.cross_entropy(F.linear(F.flatten(h), lw, lb), t)

    params = [leaf(rng, 3, 2, 4, 4), leaf(rng, 4, 2, 3, 3), leaf(rng, 4), leaf(rng, 4),
              leaf(rng, 4), leaf(rng, 5, 16), leaf(rng, 5)]
    assert gradcheck(net, params)


def test_strided_grouped_net_with_eval_bn_avgpool_and_dropout(rng):
    t = rng.integers(0, 3, 2)
    rm, rv = rng.standard_normal(4), rng.random(4) + 0.5

    def net(x, w1, g, b, w2, lw):
        h = F.conv2d(x, w1, stride=2, padding=1, dilation=1, groups=2)
        h = F.leaky_relu(F.batch_norm(h, rm, rv, g, b, training=False), 0.1)
        h = F.dropout(h, 0.25, generator=np.random.default_rng(5))   # same mask every call
        h = F.avg_pool2d(F.conv2d(h, w2, padding=2, dilation=2), 2, count_include_pad=False)
        return F.cross_entropy(F.linear(F.flatten(h), lw), t, reduction="sum")

    params = [leaf(rng, 2, 2, 6, 6), leaf(rng, 4, 1, 3, 3), leaf(rng, 4), leaf(rng, 4),
              leaf(rng, 2, 4, 3, 3), leaf(rng, 3, 2)]
    assert gradcheck(net, params)


def test_residual_block_with_shared_input(rng):
    t = rng.integers(0, 4, 4)
    rm, rv = np.zeros(3), np.ones(3)

    def net(x, w, g, b, lw, lb):
        h = F.relu(F.batch_norm(F.conv2d(x, w, padding=1), rm, rv, g, b, training=True))
        h = h + x                                # x reaches the loss by two paths
        h = F.adaptive_avg_pool2d(h, 1).reshape(4, 3)
        logits = F.linear(F.tanh(h), lw, lb)
        return F.cross_entropy(logits, t) + F.mse_loss(F.softmax(logits, 1), F.sigmoid(logits))

    params = [leaf(rng, 4, 3, 4, 4), leaf(rng, 3, 3, 3, 3), leaf(rng, 3), leaf(rng, 3),
              leaf(rng, 4, 3), leaf(rng, 4)]
    assert gradcheck(net, params)


def test_mlp_with_batch_norm_1d_and_broadcast_ops(rng):
    rm, rv = np.zeros(6), np.ones(6)

    def net(x, w1, g, b, w2, shift):
        h = F.batch_norm(x @ w1, rm, rv, g, b, training=True)
        h = F.sigmoid(h) * 2.0 - shift          # shift broadcasts over the batch
        return (F.log_softmax(h @ w2, 1) ** 2).mean()

    params = [leaf(rng, 5, 4), leaf(rng, 4, 6), leaf(rng, 6), leaf(rng, 6), leaf(rng, 6, 3),
              leaf(rng, 6)]
    assert gradcheck(net, params)
