"""fastbn.nn.L2Norm (ParseNet): forward against a float64 NumPy reference, gradients
against central finite differences, modes, state, errors."""
import numpy as np
import pytest

from fastbn import Tensor, nn, no_grad
from fastbn.gradcheck import gradcheck


def _reference(x, scale, eps):
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=1, keepdims=True) + eps)
    return x / norm * scale.reshape((1, -1) + (1,) * (x.ndim - 2))


@pytest.mark.parametrize("shape", [(5, 4), (3, 4, 6), (2, 4, 3, 5)])
def test_forward_matches_reference(shape):
    rng = np.random.default_rng(0)
    layer = nn.L2Norm(4, init_scale=3.0)
    layer.weight.data[...] = rng.uniform(0.5, 2, 4)
    x = (rng.standard_normal(shape) * 5).astype(np.float32)
    y = layer(Tensor(x))
    assert y.dtype == np.float32 and y.shape == shape
    np.testing.assert_allclose(y.data, _reference(x, layer.weight.data, 1e-10), rtol=1e-5,
                               atol=1e-6)
    # with a scale of 1, each position's channel vector has unit norm
    layer.reset_parameters()
    np.testing.assert_array_equal(layer.weight.data, 3.0)
    layer.weight.data[...] = 1
    with no_grad():
        norms = np.sqrt((layer(Tensor(x)).data.astype(np.float64) ** 2).sum(axis=1))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 2, 3)])
def test_gradients_match_finite_differences(shape):
    rng = np.random.default_rng(1)
    layer = nn.L2Norm(3, init_scale=2.0, eps=1e-3, dtype=np.float64)
    layer.weight.data[...] = rng.uniform(0.5, 2, 3)
    x = Tensor(rng.standard_normal(shape), requires_grad=True)
    gradcheck(layer, [x])  # the input's gradient
    # the scale's gradient, by central differences on the layer's own Parameter
    v = rng.standard_normal(shape)
    layer.zero_grad()
    (layer(x) * Tensor(v)).sum().backward()
    analytic = layer.weight.grad.copy()
    w = layer.weight.data

    def objective():
        with no_grad():
            return float((layer(x).data * v).sum())

    numeric = np.empty(3)
    for c in range(3):
        w[c] += 1e-6
        plus = objective()
        w[c] -= 2e-6
        minus = objective()
        w[c] += 1e-6
        numeric[c] = (plus - minus) / 2e-6
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)


def test_same_in_train_and_eval_and_on_one_sample():
    rng = np.random.default_rng(2)
    layer = nn.L2Norm(5, init_scale=2.0)
    x = rng.standard_normal((1, 5, 2, 2)).astype(np.float32)
    train_out = layer(Tensor(x)).data
    layer.eval()
    np.testing.assert_array_equal(layer(Tensor(x)).data, train_out)
    assert list(layer.state_dict()) == ["weight"]
    assert repr(layer) == "L2Norm(5, init_scale=2.0, eps=1e-10)"
    # zero input: finite output and gradient thanks to eps
    z = Tensor(np.zeros((2, 5), np.float32), requires_grad=True)
    layer(z).sum().backward()
    assert np.isfinite(z.grad).all() and np.isfinite(layer.weight.grad).all()


def test_errors():
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(ValueError, match="num_features"):
            nn.L2Norm(bad)
    for bad in (float("nan"), float("inf"), "1", None):
        with pytest.raises(ValueError, match="init_scale"):
            nn.L2Norm(3, bad)
    with pytest.raises(ValueError, match="eps"):
        nn.L2Norm(3, eps=0)
    with pytest.raises(TypeError, match="float32 and float64"):
        nn.L2Norm(3, dtype=np.int32)
    model = nn.Sequential(nn.Linear(4, 3), nn.L2Norm(3))
    with pytest.raises(ValueError, match=r"layer '1' \(L2Norm\): expected input of shape "
                                         r"\(N, 3, \.\.\.\)"):
        model[1](Tensor(np.ones((2, 4), np.float32)))
    with pytest.raises(ValueError, match="got shape \\(3,\\)"):
        nn.L2Norm(3)(Tensor(np.ones(3, np.float32)))
    with pytest.raises(TypeError, match="dtype float64 but the scale has float32"):
        nn.L2Norm(3)(Tensor(np.ones((2, 3))))
