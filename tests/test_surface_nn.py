"""PyTorch's nn surface: ModuleList, ModuleDict, AdaptiveAvgPool2d, Softmax, LogSoftmax,
NLLLoss / F.nll_loss, BatchNorm's bias=False and eval-mode rule, the device=/dtype=
factory keywords, Module.to(device).  Compared with torch when it imports, and with
float64 NumPy references and finite differences."""
import collections
import warnings

import numpy as np
import pytest

import fastbn
import fastbn.nn.functional as F
from fastbn import Tensor, gradcheck, nn


@pytest.fixture
def rng():
    return np.random.default_rng(777)


def leaf(rng, *shape, dtype=np.float64):
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


# -- containers ----------------------------------------------------------------------------------
def _blocks(lib):
    """The same model in fastbn.nn or torch.nn: a ModuleList stack and ModuleDict heads."""
    class Blocks(lib.Module):
        def __init__(self):
            super().__init__()
            self.layers = lib.ModuleList([lib.Linear(4, 4) for _ in range(3)])
            self.heads = lib.ModuleDict({"a": lib.Linear(4, 2), "b": lib.Linear(4, 3)})

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.heads["a"](x), self.heads["b"](x)
    return Blocks()


def test_module_list_behaves_as_a_list():
    ml = nn.ModuleList([nn.ReLU(), nn.Tanh()])
    assert len(ml) == 2 and isinstance(ml[1], nn.Tanh) and isinstance(ml[-1], nn.Tanh)
    ml.append(nn.Linear(2, 2)).extend([nn.Sigmoid()])
    ml += [nn.ReLU()]
    assert [type(m).__name__ for m in ml] == ["ReLU", "Tanh", "Linear", "Sigmoid", "ReLU"]
    assert list(ml._modules) == ["0", "1", "2", "3", "4"]
    ml.insert(0, nn.Identity())
    del ml[1]
    assert [type(m).__name__ for m in ml][:2] == ["Identity", "Tanh"]
    assert list(ml._modules) == [str(i) for i in range(5)]
    assert isinstance(ml.pop(), nn.ReLU) and len(ml) == 4
    ml[0] = nn.Sigmoid()
    assert isinstance(ml[0], nn.Sigmoid) and isinstance(ml[1:], nn.ModuleList)
    assert len(ml + nn.ModuleList([nn.ReLU()])) == 5
    assert sum(p.numel() for p in ml.parameters()) == 6
    with pytest.raises(IndexError):
        ml[10]
    with pytest.raises(TypeError, match="Module"):
        ml.append(3)
    with pytest.raises(NotImplementedError):
        ml(Tensor(np.ones(2)))


def test_module_dict_behaves_as_a_dict():
    md = nn.ModuleDict([("x", nn.ReLU()), ("y", nn.Linear(2, 3))])
    assert list(md) == ["x", "y"] and "y" in md and len(md) == 2
    md["z"] = nn.Tanh()
    md.update({"x": nn.Sigmoid()})
    assert isinstance(md["x"], nn.Sigmoid) and list(md.keys()) == ["x", "y", "z"]
    assert [type(m).__name__ for m in md.values()] == ["Sigmoid", "Linear", "Tanh"]
    assert isinstance(md.pop("z"), nn.Tanh) and "z" not in md
    with pytest.raises(KeyError, match="'q'"):
        md["q"]
    with pytest.raises(KeyError, match="'.'"):
        md["a.b"] = nn.ReLU()
    with pytest.raises(KeyError, match="already exists"):
        md["train"] = nn.ReLU()
    with pytest.raises(TypeError, match="pair"):
        md.update([nn.ReLU()])
    md.clear()
    assert len(md) == 0


def test_containers_state_dict_keys_match_torch(rng):
    torch = pytest.importorskip("torch")
    ours, theirs = _blocks(nn).double(), _blocks(torch.nn).double()
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = rng.standard_normal((5, 4))
    for o, t in zip(ours(Tensor(x)), theirs(torch.tensor(x))):
        np.testing.assert_allclose(o.data, t.detach().numpy(), rtol=1e-12)


# -- layers --------------------------------------------------------------------------------------
def test_adaptive_avg_pool2d_module(rng):
    x = rng.standard_normal((2, 3, 7, 5))
    for size in (1, 3, (2, 4), (None, 2), (7, None)):
        out = nn.AdaptiveAvgPool2d(size)(Tensor(x))
        oh, ow = (size, size) if isinstance(size, int) else (
            7 if size[0] is None else size[0], 5 if size[1] is None else size[1])
        ref = np.empty((2, 3, oh, ow))
        for i in range(oh):
            for j in range(ow):
                r0, r1 = (i * 7) // oh, -(-((i + 1) * 7) // oh)
                c0, c1 = (j * 5) // ow, -(-((j + 1) * 5) // ow)
                ref[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
        np.testing.assert_allclose(out.data, ref, rtol=1e-12)
    assert gradcheck(lambda a: nn.AdaptiveAvgPool2d((2, 3))(a), [leaf(rng, 1, 2, 5, 4)])
    assert repr(nn.AdaptiveAvgPool2d((1, 1))) == "AdaptiveAvgPool2d(output_size=(1, 1))"
    for bad in (0, (1, 2, 3), (1, -1), 1.5):
        with pytest.raises(ValueError, match="output_size"):
            nn.AdaptiveAvgPool2d(bad)
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d((None, 3))(Tensor(x)).data,
                               torch.nn.AdaptiveAvgPool2d((None, 3))(torch.tensor(x)).numpy(),
                               rtol=1e-12)


def test_softmax_modules(rng):
    x = leaf(rng, 3, 5)
    np.testing.assert_allclose(nn.Softmax(dim=1)(x).data.sum(1), np.ones(3), rtol=1e-12)
    np.testing.assert_allclose(nn.LogSoftmax(1)(x).data, np.log(F.softmax(x, 1).data), rtol=1e-12)
    assert gradcheck(lambda a: nn.LogSoftmax(dim=0)(a), [leaf(rng, 3, 4)])
    with pytest.warns(UserWarning, match="Implicit dimension"):
        implicit = nn.Softmax()(x)          # a 2-D input: dim 1, as PyTorch picks
    np.testing.assert_allclose(implicit.data, F.softmax(x, 1).data)
    torch = pytest.importorskip("torch")
    x3 = rng.standard_normal((2, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dim in (None, 0, 2):
            np.testing.assert_allclose(nn.LogSoftmax(dim)(Tensor(x3)).data,
                                       torch.nn.LogSoftmax(dim)(torch.tensor(x3)).numpy(),
                                       rtol=1e-12)
    assert repr(nn.Softmax(dim=1)) == repr(torch.nn.Softmax(dim=1))


def nll_reference(logp, target, weight, ignore_index, reduction):
    """Plain float64 loops."""
    C = logp.shape[1]
    lp = np.moveaxis(logp, 1, -1).reshape(-1, C)
    t = target.reshape(-1)
    w = np.ones(C) if weight is None else weight
    losses = np.zeros(t.size)
    total = 0.0
    for i, c in enumerate(t):
        if c != ignore_index:
            losses[i] = -w[c] * lp[i, c]
            total += w[c]
    if reduction == "none":
        return losses.reshape(target.shape)
    return losses.sum() / total if reduction == "mean" else losses.sum()


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 2, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nll_loss_against_reference_and_finite_differences(rng, shape, reduction, weighted):
    C = shape[1]
    target = rng.integers(0, C, (shape[0],) + shape[2:])
    target.reshape(-1)[::3] = -100
    weight = rng.uniform(0.5, 2, C) if weighted else None
    x = leaf(rng, *shape)
    logp = F.log_softmax(x, 1)
    out = F.nll_loss(logp, Tensor(target), weight=weight, reduction=reduction)
    np.testing.assert_allclose(out.data, nll_reference(logp.data, target, weight, -100,
                                                       reduction), rtol=1e-12)
    assert gradcheck(lambda a: F.nll_loss(F.log_softmax(a, 1), target, weight=weight,
                                          reduction=reduction), [x])
    module = nn.NLLLoss(weight=weight, reduction=reduction)
    np.testing.assert_allclose(module(logp, target).data, out.data)
    assert ("weight" in module.state_dict()) == weighted


def test_nll_loss_against_torch(rng):
    torch = pytest.importorskip("torch")
    for shape, kw in (((8, 5), {}), ((8, 5), {"reduction": "sum", "ignore_index": 2}),
                      ((4, 3, 5), {"weight": True}), ((5,), {}),
                      ((6, 4), {"reduction": "none", "weight": True, "ignore_index": 0})):
        C = shape[1] if len(shape) > 1 else shape[0]
        x = rng.standard_normal(shape)
        target = rng.integers(0, C, shape[:1] + shape[2:] if len(shape) > 1 else ())
        w = rng.uniform(0.5, 2, C)
        ours_kw = dict(kw, weight=w) if kw.get("weight") else kw
        theirs_kw = dict(kw, weight=torch.tensor(w)) if kw.get("weight") else kw
        ox, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        o = F.nll_loss(F.log_softmax(ox, -1 if len(shape) == 1 else 1), Tensor(target), **ours_kw)
        t = torch.nn.functional.nll_loss(torch.log_softmax(tx, -1 if len(shape) == 1 else 1),
                                         torch.tensor(target), **theirs_kw)
        np.testing.assert_allclose(o.data, t.detach().numpy(), rtol=1e-12)
        g = rng.standard_normal(o.shape)
        o.backward(g)
        t.backward(torch.tensor(g))
        np.testing.assert_allclose(ox.grad, tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    # every target ignored: NaN, as PyTorch
    assert np.isnan(F.nll_loss(Tensor(np.zeros((2, 3))), np.array([-100, -100])).item())


def test_nll_loss_errors(rng):
    x = leaf(rng, 4, 3)
    with pytest.raises(TypeError, match="integer"):
        F.nll_loss(x, np.zeros(4))
    with pytest.raises(ValueError, match=r"target of shape \(4,\)"):
        F.nll_loss(x, np.zeros(3, np.int64))
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        F.nll_loss(x, np.array([0, 1, 3, 0]))
    with pytest.raises(ValueError, match="weight"):
        F.nll_loss(x, np.zeros(4, np.int64), weight=np.ones(2))
    with pytest.raises(ValueError, match="reduction"):
        F.nll_loss(x, np.zeros(4, np.int64), reduction="avg")
    with pytest.raises(ValueError, match="deprecated"):
        nn.NLLLoss(size_average=True)


# -- BatchNorm -----------------------------------------------------------------------------------
def test_batchnorm_bias_false_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for ours_cls, theirs_cls, shape in ((nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 5, 5)),
                                        (nn.BatchNorm1d, torch.nn.BatchNorm1d, (6, 3))):
        ours = ours_cls(3, bias=False, dtype=fastbn.float64)
        theirs = theirs_cls(3, bias=False, dtype=torch.float64)
        assert ours.bias is None and ours.weight is not None
        assert list(ours.state_dict()) == list(theirs.state_dict())
        w = rng.uniform(0.5, 2, 3)
        ours.weight.data[...] = w
        with torch.no_grad():
            theirs.weight.copy_(torch.tensor(w))
        x = rng.standard_normal(shape)
        g = rng.standard_normal(shape)
        ox, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        oy, ty = ours(ox), theirs(tx)
        np.testing.assert_allclose(oy.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        oy.backward(g)
        ty.backward(torch.tensor(g))
        np.testing.assert_allclose(ox.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-9)
    assert nn.BatchNormReLU2d(3, bias=False).bias is None
    assert nn.BatchNorm2d(3, affine=False, bias=True).weight is None
    with pytest.raises(TypeError):
        nn.BatchNorm2d(3, 1e-5, 0.1, True, True, None, None, False)    # bias is keyword-only


@pytest.mark.parametrize("training", [False, True])
def test_batchnorm_tracking_turned_off_after_construction_matches_torch(rng, training):
    """PyTorch: eval normalizes with the running statistics whenever the layer has them;
    training with track_running_stats=False leaves them alone."""
    torch = pytest.importorskip("torch")
    ours = nn.BatchNorm2d(3, dtype=fastbn.float64)
    theirs = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    ours.running_mean[...], ours.running_var[...] = rm, rv
    with torch.no_grad():
        theirs.running_mean.copy_(torch.tensor(rm))
        theirs.running_var.copy_(torch.tensor(rv))
    for m in (ours, theirs):
        m.track_running_stats = False
        m.train(training)
    x = rng.standard_normal((4, 3, 2, 2)) * 3 + 1
    ox, tx = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    oy, ty = ours(ox), theirs(tx)
    np.testing.assert_allclose(oy.data, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    if not training:   # the running statistics normalize: an affine map of x
        np.testing.assert_allclose(oy.data, (x - rm[:, None, None]) / np.sqrt(
            rv[:, None, None] + 1e-5), rtol=1e-12)
    np.testing.assert_array_equal(ours.running_mean, rm)
    np.testing.assert_array_equal(ours.running_var, rv)
    np.testing.assert_array_equal(theirs.running_mean.numpy(), rm)
    g = rng.standard_normal(x.shape)
    oy.backward(g)
    ty.backward(torch.tensor(g))
    np.testing.assert_allclose(ox.grad, tx.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_batchnorm_eval_without_buffers_uses_the_batch(rng):
    bn = nn.BatchNorm1d(2, track_running_stats=False, dtype=fastbn.float64).eval()
    x = rng.standard_normal((5, 2))
    np.testing.assert_allclose(bn(Tensor(x)).data, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5),
                               rtol=1e-10)


# -- factory keywords and Module.to --------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda **kw: nn.Linear(3, 2, **kw), lambda **kw: nn.Conv2d(2, 4, 3, **kw),
    lambda **kw: nn.BatchNorm1d(3, **kw), lambda **kw: nn.BatchNorm2d(3, **kw),
    lambda **kw: nn.BatchNormReLU2d(3, **kw), lambda **kw: nn.SyncBatchNorm(3, **kw)])
def test_factory_keywords_on_layers_with_parameters(make):
    assert all(v.dtype == np.float32 for v in make().state_dict().values() if v.dtype.kind == "f")
    for dtype in (fastbn.float64, np.float64, "float64"):
        layer = make(device="cpu", dtype=dtype)
        floats = [v for v in layer.state_dict().values() if v.dtype.kind == "f"]
        assert floats and all(v.dtype == np.float64 for v in floats)
    assert make(device=fastbn.device("cpu")) is not None
    with pytest.raises(ValueError, match="CPU only"):
        make(device="cuda")
    with pytest.raises(TypeError, match="float32 and float64"):
        make(dtype=fastbn.long)


def test_factory_keywords_match_torch_signatures():
    torch = pytest.importorskip("torch")
    import inspect

    for name in ("Linear", "Conv2d", "BatchNorm1d", "BatchNorm2d", "SyncBatchNorm", "NLLLoss",
                 "ReLU", "Dropout", "Softmax", "LogSoftmax", "AdaptiveAvgPool2d", "ModuleList",
                 "ModuleDict"):
        ours = inspect.signature(getattr(nn, name).__init__).parameters
        theirs = inspect.signature(getattr(torch.nn, name).__init__).parameters
        # same names in the same order, same defaults
        assert list(ours) == list(theirs), name
        for p in theirs.values():
            if p.default is not inspect.Parameter.empty:
                assert ours[p.name].default == p.default, (name, p.name)
            assert ours[p.name].kind == p.kind, (name, p.name)


def test_module_to_device_and_dtype():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    assert model.to("cpu") is model and model.to(fastbn.device("cpu")) is model
    assert model.cpu() is model
    assert model.to("cpu", fastbn.float64) is model and model[0].weight.dtype == np.float64
    assert model.to(dtype=fastbn.float32)[1].running_mean.dtype == np.float32
    model.to(fastbn.zeros(1, dtype=fastbn.float64))
    assert model[1].weight.dtype == np.float64
    assert model[1].num_batches_tracked.dtype == np.int64
    with pytest.raises(ValueError, match="CPU only"):
        model.to("cuda")
    with pytest.raises(ValueError, match="CPU only"):
        model.cuda()
    with pytest.raises(TypeError, match="float32 and float64"):
        model.to(fastbn.long)


def test_module_apply_visits_children_first():
    seen = []
    model = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen == ["Linear", "ReLU", "Sequential", "Sequential"]


def test_inplace_keywords_and_dropout_generator(rng):
    assert repr(nn.ReLU(inplace=True)) == "ReLU(inplace=True)"
    x = leaf(rng, 50, 40)
    np.testing.assert_array_equal(nn.ReLU(inplace=True)(x).data, np.maximum(x.data, 0))
    np.testing.assert_array_equal(F.relu(x, inplace=True).data, np.maximum(x.data, 0))
    # F.dropout and nn.Dropout draw from the global generator: manual_seed repeats them
    fastbn.manual_seed(11)
    a = F.dropout(x, 0.5).data
    b = nn.Dropout(0.5, inplace=True)(x).data
    fastbn.manual_seed(11)
    np.testing.assert_array_equal(F.dropout(x, 0.5, True, True).data, a)
    np.testing.assert_array_equal(nn.Dropout(0.5)(x).data, b)
    assert not np.array_equal(a, b)


def test_state_dict_of_tensors_loads():
    model = nn.Linear(3, 2)
    other = nn.Linear(3, 2)
    model.load_state_dict(collections.OrderedDict(
        (k, Tensor(v)) for k, v in other.state_dict().items()))
    np.testing.assert_array_equal(model.weight.data, other.weight.data)


# -- pooling modules' PyTorch keywords -------------------------------------------------------------
def _avg_pool_reference(x, k, s, p, count_include_pad):
    """Plain float64 average pooling over a zero-padded copy, dividing by the window or
    by the number of the input's values in it."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ones = np.pad(np.ones((h, w)), p)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * s:i * s + k, j * s:j * s + k]
            div = k * k if count_include_pad else ones[i * s:i * s + k, j * s:j * s + k].sum()
            out[:, :, i, j] = win.sum(axis=(2, 3)) / div
    return out


@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool2d_module_count_include_pad(rng, count_include_pad):
    x = rng.standard_normal((2, 3, 7, 6))
    pool = nn.AvgPool2d(3, 2, 1, count_include_pad=count_include_pad)
    np.testing.assert_allclose(pool(Tensor(x)).data,
                               _avg_pool_reference(x, 3, 2, 1, count_include_pad), rtol=1e-12)
    torch = pytest.importorskip("torch")
    ref = torch.nn.AvgPool2d(3, 2, 1, count_include_pad=count_include_pad)(torch.from_numpy(x))
    np.testing.assert_allclose(pool(Tensor(x)).data, ref.numpy(), rtol=1e-12)


def test_pool_modules_take_pytorchs_keywords_at_their_defaults(rng):
    x = Tensor(rng.standard_normal((1, 2, 6, 6)))
    np.testing.assert_array_equal(
        nn.MaxPool2d(2, 2, 0, 1, False, False)(x).data, nn.MaxPool2d(2)(x).data)
    np.testing.assert_array_equal(
        nn.AvgPool2d(2, 2, 0, False, True, None)(x).data, nn.AvgPool2d(2)(x).data)
    for make in (lambda: nn.MaxPool2d(2, dilation=2), lambda: nn.MaxPool2d(2, ceil_mode=True),
                 lambda: nn.MaxPool2d(2, return_indices=True),
                 lambda: nn.AvgPool2d(2, ceil_mode=True),
                 lambda: nn.AvgPool2d(2, divisor_override=3)):
        with pytest.raises(ValueError, match="not supported"):
            make()


# -- hyperparameters as PyTorch keeps, prints and checks them -------------------------------------
LAYERS = {"MaxPool2d(2)": lambda nn: nn.MaxPool2d(2),
          "MaxPool2d((2, 3), 1, (1, 0))": lambda nn: nn.MaxPool2d((2, 3), stride=1, padding=(1, 0)),
          "AvgPool2d(3, 2, 1)": lambda nn: nn.AvgPool2d(3, 2, 1),
          "AvgPool2d((3, 2))": lambda nn: nn.AvgPool2d(kernel_size=(3, 2), stride=None),
          "Conv2d": lambda nn: nn.Conv2d(3, 4, (3, 5), stride=2, padding=1)}


@pytest.mark.parametrize("make", LAYERS.values(), ids=LAYERS.keys())
def test_layer_hyperparameters_and_repr_as_torchs(make):
    torch = pytest.importorskip("torch")
    ours, theirs = make(nn), make(torch.nn)
    assert repr(ours) == repr(theirs)
    for name in ("kernel_size", "stride", "padding", "dilation", "ceil_mode",
                 "count_include_pad", "divisor_override", "return_indices"):
        if hasattr(theirs, name):
            assert getattr(ours, name) == getattr(theirs, name), name


# sizes of the wrong type raise TypeError, as torch does (at its first call at the latest);
# sizes of the right type out of range raise ValueError
BAD_SIZES = [("Linear(2.5, 3)", TypeError), ("Linear(0, 3)", ValueError),
             ("GroupNorm(2.0, 4)", TypeError), ("GroupNorm(0, 4)", ValueError),
             ("LayerNorm(4.0)", TypeError), ("LayerNorm((4, 0))", ValueError),
             ("Conv2d(3, 4, 3, stride=1.5)", TypeError), ("Conv2d(3, 4, 2.0)", TypeError),
             ("Conv2d(3, 4, 3, stride=0)", ValueError), ("Conv2d(3, 4, 3, padding=-1)", ValueError),
             ("Conv2d(3, 4, 3, padding=(1, 2, 3))", TypeError),
             ("MaxPool2d(2.5)", TypeError), ("AvgPool2d(2, stride='a')", TypeError),
             ("MaxPool2d(2, padding=0.5)", TypeError), ("MaxPool2d(0)", ValueError),
             ("AvgPool2d(2, padding=2)", ValueError)]


@pytest.mark.parametrize("ctor, error", BAD_SIZES)
def test_bad_layer_sizes_raise_pytorchs_error_class(ctor, error):
    with pytest.raises(error):
        eval("nn." + ctor)
