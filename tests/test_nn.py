import collections

import numpy as np
import pytest

import fastbn
from fastbn import Tensor, nn


def _bn_reference(x, weight, bias, eps):
    """Batch-statistics BN in float64: output, batch mean, unbiased batch variance."""
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axes)
    var = x.var(axes)
    m = x.size // x.shape[1]
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if weight is not None:
        y = y * weight.reshape(shape) + bias.reshape(shape)
    return y, mean, var * m / (m - 1)


def _eval_reference(x, rm, rv, weight, bias, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - rm.reshape(shape)) / np.sqrt(rv.reshape(shape) + eps)
    return y * weight.reshape(shape) + bias.reshape(shape) if weight is not None else y


BN_CASES = [(nn.BatchNorm1d, (16, 5)), (nn.BatchNorm1d, (8, 4, 6)), (nn.BatchNorm2d, (6, 3, 4, 5))]


@pytest.mark.parametrize("cls,shape", BN_CASES)
@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_batchnorm_running_stats_and_outputs(cls, shape, momentum):
    rng = np.random.default_rng(0)
    C = shape[1]
    bn = cls(C, eps=1e-3, momentum=momentum).double()
    w, b = rng.uniform(0.5, 2, C), rng.standard_normal(C)
    bn.weight.data[...] = w
    bn.bias.data[...] = b
    rm, rv = np.zeros(C), np.ones(C)
    for k in range(1, 5):
        x = rng.standard_normal(shape) * 3 + rng.standard_normal((1, C) + (1,) * (len(shape) - 2))
        y = bn(Tensor(x))
        ref, mean, uvar = _bn_reference(x, w, b, 1e-3)
        factor = 1.0 / k if momentum is None else momentum
        rm = (1 - factor) * rm + factor * mean
        rv = (1 - factor) * rv + factor * uvar
        np.testing.assert_allclose(y.data, ref, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(bn.running_var, rv, rtol=1e-10)
        assert int(bn.num_batches_tracked) == k
    bn.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(bn(Tensor(x)).data, _eval_reference(x, rm, rv, w, b, 1e-3),
                               rtol=1e-10, atol=1e-10)
    # eval mode leaves the running statistics alone
    np.testing.assert_allclose(bn.running_mean, rm, rtol=1e-10, atol=1e-12)
    assert int(bn.num_batches_tracked) == 4


def test_batchnorm_affine_false_and_no_tracking():
    rng = np.random.default_rng(1)
    bn = nn.BatchNorm2d(3, affine=False).double()
    assert bn.weight is None and list(dict(bn.named_parameters())) == []
    assert list(bn.state_dict()) == ["running_mean", "running_var", "num_batches_tracked"]
    x = rng.standard_normal((4, 3, 2, 2)) + 5
    np.testing.assert_allclose(bn(Tensor(x)).data, _bn_reference(x, None, None, 1e-5)[0],
                               atol=1e-10)

    free = nn.BatchNorm1d(4, track_running_stats=False).double().eval()
    assert free.running_mean is None
    assert list(free.state_dict()) == ["weight", "bias"]
    x = rng.standard_normal((10, 4)) * 2 - 1
    # eval without running statistics normalizes with the batch's
    np.testing.assert_allclose(free(Tensor(x)).data,
                               _bn_reference(x, np.ones(4), np.zeros(4), 1e-5)[0], atol=1e-10)


def test_batchnorm_init_and_repr():
    bn = nn.BatchNorm2d(5)
    np.testing.assert_array_equal(bn.weight.data, 1)
    np.testing.assert_array_equal(bn.bias.data, 0)
    np.testing.assert_array_equal(bn.running_var, 1)
    assert bn.num_batches_tracked.dtype == np.int64
    assert repr(bn) == "BatchNorm2d(5, eps=1e-05, momentum=0.1, affine=True, " \
                       "track_running_stats=True)"


def test_batchnorm_batch_of_one_error_names_layer():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with pytest.raises(ValueError) as err:
        model(Tensor(np.ones((1, 3), np.float32)))
    msg = str(err.value)
    assert "layer '1' (BatchNorm1d)" in msg and "training mode" in msg
    assert "drop_last=True" in msg
    assert int(model[1].num_batches_tracked) == 0  # nothing was updated
    model.eval()
    assert model(Tensor(np.ones((1, 3), np.float32))).shape == (1, 4)
    free = nn.Sequential(nn.Sequential(nn.BatchNorm1d(3, track_running_stats=False))).eval()
    with pytest.raises(ValueError, match=r"'0\.0'.*track_running_stats=False"):
        free(Tensor(np.ones((1, 3), np.float32)))


def test_batchnorm_bad_input():
    with pytest.raises(ValueError, match="4D"):
        nn.BatchNorm2d(3)(Tensor(np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match="channels"):
        nn.BatchNorm1d(3)(Tensor(np.ones((2, 4), np.float32)))
    with pytest.raises(ValueError):
        nn.BatchNorm1d(3, momentum=1.5)
    with pytest.raises(ValueError):
        nn.BatchNorm1d(0)


@pytest.mark.parametrize("kind", ["1d", "1d3", "2d"])
@pytest.mark.parametrize("options", [dict(), dict(momentum=None), dict(affine=False),
                                     dict(track_running_stats=False)])
def test_batchnorm_against_torch(kind, options):
    torch = pytest.importorskip("torch")
    shape = {"1d": (12, 6), "1d3": (5, 6, 7), "2d": (4, 6, 3, 5)}[kind]
    ours = (nn.BatchNorm2d if kind == "2d" else nn.BatchNorm1d)(6, **options).double()
    theirs = (torch.nn.BatchNorm2d if kind == "2d" else torch.nn.BatchNorm1d)(6, **options).double()
    rng = np.random.default_rng(2)
    if ours.affine:
        w, b = rng.uniform(0.5, 1.5, 6), rng.standard_normal(6)
        ours.weight.data[...], ours.bias.data[...] = w, b
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(w))
            theirs.bias.copy_(torch.tensor(b))
    for mode in ("train", "train", "train", "eval"):
        getattr(ours, mode)()
        getattr(theirs, mode)()
        x = rng.standard_normal(shape) * 2 + 1
        np.testing.assert_allclose(ours(Tensor(x)).data,
                                   theirs(torch.tensor(x)).detach().numpy(), rtol=1e-9, atol=1e-9)
    theirs_state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    ours_state = ours.state_dict()
    assert list(ours_state) == list(theirs_state)
    for k in ours_state:
        np.testing.assert_allclose(ours_state[k], theirs_state[k], rtol=1e-9, atol=1e-12)


def test_linear_and_conv_init_bounds_and_seed():
    fastbn.manual_seed(3)
    lin = nn.Linear(50, 40)
    conv = nn.Conv2d(6, 20, (3, 2))
    for layer, fan_in in ((lin, 50), (conv, 6 * 3 * 2)):
        bound = 1 / np.sqrt(fan_in)
        for p in (layer.weight.data, layer.bias.data):
            assert p.dtype == np.float32
            assert np.abs(p).max() <= bound and np.abs(p).max() > 0.8 * bound
        # U(-b, b) has std b / sqrt(3)
        assert abs(layer.weight.data.std() - bound / np.sqrt(3)) < 0.1 * bound
    fastbn.manual_seed(3)
    np.testing.assert_array_equal(nn.Linear(50, 40).weight.data, lin.weight.data)
    fastbn.manual_seed(4)
    assert not np.array_equal(nn.Linear(50, 40).weight.data, lin.weight.data)


def test_linear_and_conv_forward_match_reference():
    rng = np.random.default_rng(5)
    lin = nn.Linear(4, 3).double()
    x = rng.standard_normal((5, 4))
    np.testing.assert_allclose(lin(Tensor(x)).data, x @ lin.weight.data.T + lin.bias.data,
                               rtol=1e-12)
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1).double()
    x = rng.standard_normal((2, 2, 5, 6))
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    w = conv.weight.data
    ref = np.zeros((2, 3, 3, 3))
    for i in range(3):
        for j in range(3):
            patch = xp[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            ref[:, :, i, j] = np.einsum("nchw,ochw->no", patch, w) + conv.bias.data
    np.testing.assert_allclose(conv(Tensor(x)).data, ref, rtol=1e-10, atol=1e-12)


def _net():
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 8), nn.BatchNorm1d(8),
                         nn.Tanh(), nn.Linear(8, 3))


def test_module_traversal_modes_and_grads():
    model = _net()
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "1.weight", "1.bias", "5.weight", "5.bias", "6.weight",
                     "6.bias", "8.weight", "8.bias"]
    assert len(list(model.children())) == 9
    assert list(model.parameters())[0] is model[0].weight
    assert all(p.requires_grad for p in model.parameters())
    assert model.eval() is model and not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    x = Tensor(np.random.default_rng(6).standard_normal((4, 1, 4, 4)).astype(np.float32))
    nn.CrossEntropyLoss()(model(x), Tensor(np.array([0, 1, 2, 1]))).backward()
    assert all(p.grad is not None and np.abs(p.grad).sum() > 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    text = repr(model)
    assert "(1): BatchNorm2d(4" in text and "(5): Linear(in_features=16, out_features=8" in text


def test_state_dict_round_trip_and_strict_errors():
    rng = np.random.default_rng(7)
    a, b = _net(), _net()
    x = Tensor(rng.standard_normal((4, 1, 4, 4)).astype(np.float32))
    a(x)  # changes running statistics
    state = a.state_dict()
    assert list(state)[:5] == ["0.weight", "1.weight", "1.bias", "1.running_mean",
                               "1.running_var"]
    state["0.weight"] += 1  # a copy: the model is unaffected
    assert not np.array_equal(state["0.weight"], a[0].weight.data)
    state = a.state_dict()
    b.load_state_dict(state)
    a.eval(), b.eval()
    np.testing.assert_array_equal(a(x).data, b(x).data)
    before = b.state_dict()
    bad = dict(state)
    bad["8.weight"] = np.zeros((2, 8), np.float32)
    del bad["1.bias"]
    bad["extra"] = np.zeros(1)
    with pytest.raises(ValueError) as err:
        b.load_state_dict(bad)
    msg = str(err.value)
    assert "'extra'" in msg and "'1.bias'" in msg and "size mismatch for '8.weight'" in msg
    for k, v in b.state_dict().items():  # nothing was written
        np.testing.assert_array_equal(v, before[k])
    missing, unexpected = b.load_state_dict({"0.weight": state["0.weight"], "x": 1},
                                            strict=False)
    assert "1.bias" in missing and unexpected == ["x"]


def test_load_torch_state_dict():
    torch = pytest.importorskip("torch")
    tnet = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False),
                               torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 8),
                               torch.nn.BatchNorm1d(8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    x = np.random.default_rng(8).standard_normal((5, 1, 4, 4)).astype(np.float32)
    tnet(torch.tensor(x))  # non-trivial running statistics
    tnet.eval()
    ours = _net()
    ours.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    ours.eval()
    np.testing.assert_allclose(ours(Tensor(x)).data, tnet(torch.tensor(x)).detach().numpy(),
                               rtol=1e-5, atol=1e-5)
    assert int(ours[1].num_batches_tracked) == 1


def test_dtype_conversion_in_place():
    model = _net()
    params = list(model.parameters())
    assert model.double() is model
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert model[1].running_mean.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    x = np.random.default_rng(9).standard_normal((3, 1, 4, 4))
    assert model(Tensor(x)).dtype == np.float64
    assert model.to(np.float32) is model and model[6].running_var.dtype == np.float32
    assert model.float().to("cpu") is model
    with pytest.raises(TypeError):
        model.to(np.int32)


def test_dropout_and_activations():
    x = Tensor(np.ones((200, 50), np.float32))
    drop = nn.Dropout(0.25)
    fastbn.manual_seed(11)
    y = drop(x).data
    assert abs((y == 0).mean() - 0.25) < 0.02
    np.testing.assert_allclose(y[y != 0], 1 / 0.75, rtol=1e-6)
    fastbn.manual_seed(11)
    np.testing.assert_array_equal(drop(x).data, y)
    np.testing.assert_array_equal(drop.eval()(x).data, x.data)
    z = np.linspace(-3, 3, 13)
    np.testing.assert_allclose(nn.ReLU()(Tensor(z)).data, np.maximum(z, 0))
    np.testing.assert_allclose(nn.Sigmoid()(Tensor(z)).data, 1 / (1 + np.exp(-z)), rtol=1e-12)
    np.testing.assert_allclose(nn.Tanh()(Tensor(z)).data, np.tanh(z), rtol=1e-12)
    with pytest.raises(ValueError):
        nn.Dropout(1.5)


def test_pooling_flatten_and_cross_entropy():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 4, 6))
    np.testing.assert_allclose(nn.MaxPool2d(2)(Tensor(x)).data,
                               x.reshape(2, 3, 2, 2, 3, 2).max(axis=(3, 5)))
    np.testing.assert_allclose(nn.AvgPool2d(2)(Tensor(x)).data,
                               x.reshape(2, 3, 2, 2, 3, 2).mean(axis=(3, 5)), rtol=1e-12)
    assert nn.Flatten()(Tensor(x)).shape == (2, 72)
    logits, target = rng.standard_normal((6, 4)), rng.integers(0, 4, 6)
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    loss = nn.CrossEntropyLoss()(Tensor(logits), Tensor(target))
    np.testing.assert_allclose(loss.item(), -logp[np.arange(6), target].mean(), rtol=1e-12)


def test_sequential_containers():
    model = nn.Sequential(collections.OrderedDict(a=nn.Linear(2, 3), act=nn.ReLU()))
    assert model.a is model[0] and len(model) == 2 and isinstance(model[-1], nn.ReLU)
    assert len(model[:1]) == 1
    model.append(nn.Linear(3, 1))
    assert model(Tensor(np.ones((2, 2), np.float32))).shape == (2, 1)
    with pytest.raises(IndexError):
        model[5]
    with pytest.raises(TypeError):
        nn.Sequential(nn.ReLU()).add_module("x", 3)


def test_training_steps_match_torch():
    """Modules, ops and SGD together: three momentum steps from the same weights."""
    torch = pytest.importorskip("torch")
    tnet = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False),
                               torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                               torch.nn.Flatten(), torch.nn.Linear(16, 8),
                               torch.nn.BatchNorm1d(8), torch.nn.Tanh(),
                               torch.nn.Linear(8, 3)).double()
    ours = _net().double()
    ours.load_state_dict({k: v.numpy() for k, v in tnet.state_dict().items()})
    topt = torch.optim.SGD(tnet.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = fastbn.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    rng = np.random.default_rng(13)
    for _ in range(3):
        x, y = rng.standard_normal((6, 1, 4, 4)), rng.integers(0, 3, 6)
        opt.zero_grad()
        nn.CrossEntropyLoss()(ours(Tensor(x)), Tensor(y)).backward()
        opt.step()
        topt.zero_grad()
        torch.nn.functional.cross_entropy(tnet(torch.tensor(x)), torch.tensor(y)).backward()
        topt.step()
    theirs = tnet.state_dict()
    for k, v in ours.state_dict().items():
        np.testing.assert_allclose(v, theirs[k].numpy(), rtol=1e-9, atol=1e-11, err_msg=k)


def test_forward_hooks_as_pytorch():
    """Pre-hooks may replace the arguments, hooks the output; handles remove them."""
    rng = np.random.default_rng(0)
    lin = nn.Linear(3, 2)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    plain = lin(fastbn.Tensor(x)).data
    calls = []
    pre = lin.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    post = lin.register_forward_hook(lambda m, args, out: calls.append(args[0].data) or out + 1)
    out = lin(fastbn.Tensor(x)).data
    np.testing.assert_allclose(calls[0], 2 * x)
    expected = x * 2 @ lin.weight.data.T + lin.bias.data + 1
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    pre.remove()
    post.remove()
    post.remove()  # a second remove does nothing
    np.testing.assert_array_equal(lin(fastbn.Tensor(x)).data, plain)
    with pytest.raises(TypeError, match="callable"):
        lin.register_forward_hook(3)
