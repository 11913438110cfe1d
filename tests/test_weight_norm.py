"""fastbn.nn.utils.weight_norm against torch.nn.utils.weight_norm (the classic hook-based
one): parameter names and shapes, state_dict keys, forward and backward, recomputation
before every forward, remove_weight_norm, errors."""
import copy
import warnings

import numpy as np
import pytest

from fastbn import Tensor, nn, no_grad, optim
from fastbn.nn.utils import remove_weight_norm, weight_norm


def _torch():
    torch = pytest.importorskip("torch")
    warnings.filterwarnings("ignore", message=".*weight_norm.*", category=FutureWarning)
    return torch


def _pair(kind, dim, name="weight", seed=0):
    """The same layer (float64, same initial parameters) in fastbn and in torch, both
    weight-normalized on ``name`` with ``dim``."""
    torch = _torch()
    rng = np.random.default_rng(seed)
    if kind == "linear":
        mine, theirs = nn.Linear(5, 4).double(), torch.nn.Linear(5, 4).double()
    else:
        mine = nn.Conv2d(3, 4, 3, padding=1).double()
        theirs = torch.nn.Conv2d(3, 4, 3, padding=1).double()
    for p, q in zip(mine.parameters(), theirs.parameters()):
        p.data[...] = rng.standard_normal(p.shape)
        q.data.copy_(torch.from_numpy(p.data.copy()))
    return weight_norm(mine, name, dim), torch.nn.utils.weight_norm(theirs, name, dim)


CASES = [("linear", 0), ("linear", 1), ("linear", None), ("linear", -1), ("linear", -2),
         ("conv", 0), ("conv", 1), ("conv", 3), ("conv", -2), ("conv", None)]


@pytest.mark.parametrize("kind,dim", CASES)
def test_forward_and_backward_match_torch(kind, dim):
    torch = _torch()
    mine, theirs = _pair(kind, dim)
    assert list(mine.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in mine.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(mine.state_dict()[key], value.numpy(), rtol=1e-12)
    rng = np.random.default_rng(1)
    shape = (6, 5) if kind == "linear" else (2, 3, 5, 5)
    for _ in range(2):  # a changed g and v are picked up by the next forward
        x = rng.standard_normal(shape)
        xt = torch.from_numpy(x).requires_grad_()
        xm = Tensor(x, requires_grad=True)
        out = mine(xm)
        ref = theirs(xt)
        np.testing.assert_allclose(out.data, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        r = rng.standard_normal(out.shape)
        mine.zero_grad()
        theirs.zero_grad()
        (out * Tensor(r)).sum().backward()
        (ref * torch.from_numpy(r)).sum().backward()
        np.testing.assert_allclose(xm.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
        for (name, p), (_, q) in zip(mine.named_parameters(), theirs.named_parameters()):
            np.testing.assert_allclose(p.grad, q.grad.numpy(), rtol=1e-9, atol=1e-12,
                                       err_msg=name)
        with torch.no_grad():
            for p, q in zip(mine.parameters(), theirs.parameters()):
                step = np.asarray(rng.standard_normal(p.shape) * 0.1)
                p.data += step
                q += torch.from_numpy(step)


def test_sgd_steps_match_torch():
    torch = _torch()
    mine, theirs = _pair("conv", 0, seed=3)
    opt = optim.SGD(mine.parameters(), lr=0.1, momentum=0.9)
    topt = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(4)
    for _ in range(4):
        x = rng.standard_normal((2, 3, 4, 4))
        opt.zero_grad()
        (mine(Tensor(x)) ** 2).mean().backward()
        opt.step()
        topt.zero_grad()
        (theirs(torch.from_numpy(x)) ** 2).mean().backward()
        topt.step()
    for key, value in theirs.state_dict().items():
        np.testing.assert_allclose(mine.state_dict()[key], value.numpy(), rtol=1e-9,
                                   atol=1e-12, err_msg=key)


def test_bias_and_weight_both_normalized_and_torch_state_dict_loads():
    torch = _torch()
    theirs = torch.nn.utils.weight_norm(torch.nn.utils.weight_norm(torch.nn.Linear(3, 2)),
                                        "bias")
    mine = weight_norm(weight_norm(nn.Linear(3, 2)), "bias")
    assert list(mine.state_dict()) == list(theirs.state_dict()) == \
        ["weight_g", "weight_v", "bias_g", "bias_v"]
    assert mine.bias_g.shape == (2,)  # a 1-D parameter keeps one norm per element
    mine.load_state_dict(theirs.state_dict())
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    with no_grad():
        np.testing.assert_allclose(mine(Tensor(x)).data,
                                   theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
    remove_weight_norm(mine, "bias")
    assert list(mine.state_dict()) == ["weight_g", "weight_v", "bias"]
    mine.weight_g.data *= 2  # the weight hook still runs before each forward
    with no_grad():
        mine(Tensor(x))
    v = mine.weight_v.data
    np.testing.assert_allclose(mine.weight.data, mine.weight_g.data * v / np.linalg.norm(
        v, axis=1, keepdims=True), rtol=1e-5)


def test_weight_starts_as_before_and_remove_restores_a_parameter():
    layer = nn.Conv2d(2, 3, 3)
    w = layer.weight.data.copy()
    x = Tensor(np.random.default_rng(0).standard_normal((1, 2, 5, 5)).astype(np.float32))
    with no_grad():
        before = layer(x).data
    weight_norm(layer)
    assert layer.weight_g.shape == (3, 1, 1, 1) and layer.weight_v.shape == w.shape
    np.testing.assert_allclose(layer.weight_g.data.ravel(),
                               np.linalg.norm(w.reshape(3, -1), axis=1), rtol=1e-6)
    assert not isinstance(layer.weight, nn.Parameter)  # a computed Tensor, not trained
    with no_grad():
        np.testing.assert_allclose(layer(x).data, before, rtol=1e-5, atol=1e-6)
    layer.weight_g.data[...] = 1.0
    remove_weight_norm(layer)
    assert list(layer.state_dict()) == ["bias", "weight"]
    assert isinstance(layer.weight, nn.Parameter) and "forward" not in vars(layer)
    unit = w / np.linalg.norm(w.reshape(3, -1), axis=1).reshape(3, 1, 1, 1)
    np.testing.assert_allclose(layer.weight.data, unit, rtol=1e-5, atol=1e-7)


def test_deepcopy_keeps_its_own_parameters():
    layer = weight_norm(nn.Linear(3, 2))
    twin = copy.deepcopy(layer)
    twin.weight_g.data[...] = 0.0
    x = Tensor(np.ones((1, 3), np.float32))
    with no_grad():
        assert np.abs(layer(x).data - layer.bias.data).max() > 0
        np.testing.assert_array_equal(twin(x).data, twin.bias.data[None])


def test_errors():
    layer = weight_norm(nn.Linear(3, 2))
    with pytest.raises(RuntimeError, match="two weight_norm hooks"):
        weight_norm(layer)
    with pytest.raises(ValueError, match="weight_norm of 'bias' not found"):
        remove_weight_norm(layer, "bias")
    with pytest.raises(ValueError, match="not found"):
        remove_weight_norm(nn.Linear(3, 2))
    with pytest.raises(AttributeError, match="weigth"):
        weight_norm(nn.Linear(3, 2), "weigth")
    with pytest.raises(TypeError, match="bias is None"):
        weight_norm(nn.Linear(3, 2, bias=False), "bias")
    with pytest.raises(TypeError, match="running_mean is ndarray, not a Parameter"):
        weight_norm(nn.BatchNorm1d(3), "running_mean")
    for dim in (2, -3):
        with pytest.raises(IndexError, match=f"dim {dim} is out of range"):
            weight_norm(nn.Linear(3, 2), dim=dim)
        with pytest.raises(ValueError):
            weight_norm(nn.Linear(3, 2), dim=dim)
    with pytest.raises(TypeError, match="dim must be an int"):
        weight_norm(nn.Linear(3, 2), dim=0.5)
    with pytest.raises(TypeError, match="must be a fastbn.nn.Module"):
        weight_norm(np.ones(3))
    # a failed call changed nothing
    fresh = nn.Linear(3, 2)
    with pytest.raises(IndexError):
        weight_norm(fresh, dim=5)
    assert list(fresh.state_dict()) == ["weight", "bias"]
