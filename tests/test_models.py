"""fastbn.models against the PyTorch definitions they follow (tests/torch_models.py, written
from the published sources): state_dict keys and shapes both ways, and in float64 the
outputs, the input's and every parameter's gradient and the running statistics after a
step, to 1e-10 relative, in training mode (batch statistics) and in eval mode.  Then the
models' own checks, and the trainer's presets."""
import numpy as np
import pytest

import fastbn
from fastbn import models, nn, optim
from fastbn import train as trainer

TOL = 1e-10


def assert_rel(actual, expected, what):
    """Equal to TOL relative to expected's largest magnitude (element-wise rtol too)."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    scale = float(np.abs(expected).max()) if expected.size else 0.0
    assert scale > 0 or not expected.size or what.endswith("num_batches_tracked"), \
        f"{what}: the reference is all zeros, the comparison would prove nothing"
    np.testing.assert_allclose(actual, expected, rtol=TOL, atol=TOL * scale, err_msg=what)


def _torch():
    torch = pytest.importorskip("torch")
    import torch_models
    return torch, torch_models


# name -> (fastbn constructor, PyTorch constructor name, input shape (C, H, W))
CASES = {
    "resnet20": (models.resnet20, "resnet20", (3, 16, 16)),
    "inception": (models.inception_bn, "InceptionBN", (1, 28, 28)),
    "resnet18": (models.resnet18, "resnet18", (3, 32, 32)),  # its avg_pool2d(4) needs 32
}
BATCH = {"resnet20": 4, "inception": 4, "resnet18": 2}


def _pair(name, **kwargs):
    """(fastbn model, PyTorch model) in float64, PyTorch's holding fastbn's weights."""
    torch, tm = _torch()
    build, torch_name, shape = CASES[name]
    fastbn.manual_seed(0)
    torch.manual_seed(0)
    ours = build(in_channels=shape[0], **kwargs).double()
    theirs = getattr(tm, torch_name)(in_channels=shape[0], **kwargs).double()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    return ours, theirs


def _batch(name, seed=1):
    shape = CASES[name][2]
    return np.random.default_rng(seed).standard_normal((BATCH[name],) + shape)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_round_trip_both_ways(name):
    torch, tm = _torch()
    build, torch_name, shape = CASES[name]
    ours = build(in_channels=shape[0])
    theirs = getattr(tm, torch_name)(in_channels=shape[0])
    ref = theirs.state_dict()
    mine = ours.state_dict()
    assert list(mine) == list(ref)  # the same keys, in the same order
    assert {k: v.shape for k, v in mine.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    assert (sum(p.data.size for p in ours.parameters())
            == sum(p.numel() for p in theirs.parameters()))
    # PyTorch -> fastbn: every value arrives as it was
    ours.load_state_dict(ref)
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v, ref[k].numpy(), err_msg=k)
    # fastbn -> PyTorch, after fastbn changed every value
    rng = np.random.default_rng(2)
    changed = {k: (v + rng.uniform(0.5, 1.5, v.shape).astype(v.dtype)) if v.dtype.kind == "f"
               else v + 3 for k, v in ours.state_dict().items()}
    ours.load_state_dict(changed)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for k, v in theirs.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), changed[k], err_msg=k)


def _forward_backward(ours, theirs, x, seed):
    """Outputs, input gradient and every parameter gradient compared; returns nothing."""
    torch, _ = _torch()
    xf = fastbn.Tensor(x.copy(), requires_grad=True)
    xt = torch.from_numpy(x.copy()).requires_grad_()
    yf, yt = ours(xf), theirs(xt)
    assert_rel(yf.data, yt.detach().numpy(), "output")
    dy = np.random.default_rng(seed).standard_normal(yf.shape)
    ours.zero_grad()
    theirs.zero_grad()
    yf.backward(dy)
    yt.backward(torch.from_numpy(dy))
    assert_rel(xf.grad, xt.grad.numpy(), "input gradient")
    theirs_params = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert names == list(theirs_params)
    for n, p in ours.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert_rel(p.grad, theirs_params[n].grad.numpy(), f"gradient of {n}")


def _assert_buffers_equal(ours, theirs):
    ref = dict(theirs.named_buffers())
    mine = dict(ours.named_buffers())
    assert list(mine) == list(ref)
    for n, b in mine.items():
        assert_rel(b, ref[n].numpy(), n)


@pytest.mark.parametrize("name", list(CASES))
def test_training_step_matches_pytorch_float64(name):
    """Training mode: batch statistics; after the forward the running statistics;
    after an SGD step (momentum, weight decay) a second step's outputs and gradients."""
    torch, _ = _torch()
    ours, theirs = _pair(name)
    ours.train()
    theirs.train()
    opt_f = optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    opt_t = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for step in range(2):
        _forward_backward(ours, theirs, _batch(name, seed=10 + step), seed=20 + step)
        _assert_buffers_equal(ours, theirs)
        opt_f.step()
        opt_t.step()
    theirs_params = dict(theirs.named_parameters())
    for n, p in ours.named_parameters():
        assert_rel(p.data, theirs_params[n].detach().numpy(), f"{n} after two steps")


@pytest.mark.parametrize("name", ["resnet20", "inception"])
def test_eval_mode_matches_pytorch_float64(name):
    """Eval mode: the running statistics normalize (after two training forwards moved
    them), and gradients flow through them as constants."""
    torch, _ = _torch()
    ours, theirs = _pair(name)
    with fastbn.no_grad(), torch.no_grad():
        for seed in (3, 4):
            ours(fastbn.Tensor(_batch(name, seed)))
            theirs(torch.from_numpy(_batch(name, seed)))
    ours.eval()
    theirs.eval()
    _forward_backward(ours, theirs, _batch(name, seed=5), seed=6)
    _assert_buffers_equal(ours, theirs)


@pytest.mark.parametrize("kwargs", [{"bn": False}, {"activation": "sigmoid"},
                                    {"bn": False, "activation": "sigmoid"},
                                    {"dropout": 0.4}])
def test_inception_variants_match_pytorch_float64(kwargs):
    """The variants of the BN paper's Inception experiments: without BN (convolutions
    with biases), sigmoid, and dropout (compared in eval mode, where it is the
    identity; in training its random mask differs between the libraries)."""
    ours, theirs = _pair("inception", **kwargs)
    if kwargs.get("dropout"):
        ours.eval()
        theirs.eval()
    _forward_backward(ours, theirs, _batch("inception", seed=7), seed=8)
    if ours.training and kwargs.get("bn", True):
        _assert_buffers_equal(ours, theirs)


def test_resnet20_without_bn_matches_pytorch_float64():
    """bn=False: no BatchNorm, biases on the convolutions (no PyTorch counterpart in the
    source: compared with the definition's BatchNorms replaced by identities)."""
    torch, tm = _torch()
    ours = models.resnet20(bn=False).double()
    theirs = tm.resnet20().double()
    for module in list(theirs.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, torch.nn.BatchNorm2d):
                setattr(module, child_name, torch.nn.Identity())
            elif isinstance(child, torch.nn.Conv2d):
                child.bias = torch.nn.Parameter(torch.zeros(child.out_channels,
                                                            dtype=torch.float64))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours_state = {k: v + (0.01 if k.endswith("bias") else 0)
                  for k, v in ours.state_dict().items()}
    ours.load_state_dict(ours_state)
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours_state.items()})
    _forward_backward(ours, theirs, np.random.default_rng(9).standard_normal((3, 3, 8, 8)), 9)


def test_parameter_counts():
    assert sum(p.data.size for p in models.resnet20().parameters()) == 269_722
    assert sum(p.data.size for p in models.resnet18().parameters()) == 11_173_962
    assert sum(p.data.size for p in models.inception_bn().parameters()) == 647_146


def test_resnet20_init_is_kaiming_normal():
    """akamaster's init: N(0, 2 / fan_in) for every convolution and the Linear layer."""
    fastbn.manual_seed(0)
    model = models.resnet20()
    weights = [m.weight.data for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for w in weights:
        fan_in = w[0].size
        # the std of several thousand draws, within 10% (the smallest layer: 432 draws)
        assert abs(w.std() * np.sqrt(fan_in / 2) - 1) < (0.15 if w.size < 1000 else 0.05)


@pytest.mark.parametrize("build", [models.resnet20, models.resnet18, models.inception_bn])
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_models_take_the_datasets_shapes(build, shape):
    if build is models.resnet18 and shape != (1, 8, 8):
        pytest.skip("the largest model: one shape is enough")
    model = build(in_channels=shape[0], num_classes=7)
    out = model(fastbn.Tensor(np.random.default_rng(0).standard_normal((2,) + shape)
                              .astype(np.float32)))
    assert out.shape == (2, 7) and out.dtype == np.float32
    assert np.isfinite(out.data).all()


def test_fused_bn_relu_where_bn_is_followed_by_relu():
    """BatchNorm -> ReLU with nothing between is the fused layer; the BatchNorm before
    the residual addition is not."""
    block = models.resnet20().layer1[0]
    assert type(block.bn1) is nn.BatchNormReLU2d and type(block.bn2) is nn.BatchNorm2d
    unit = models.inception_bn().conv1
    assert type(unit.bn) is nn.BatchNormReLU2d
    unit = models.inception_bn(activation="sigmoid").conv1
    assert type(unit.bn) is nn.BatchNorm2d


@pytest.mark.parametrize("call, message", [
    (lambda: models.inception_bn(activation="tanh"), "activation"),
    (lambda: models.inception_bn(dropout=1.5), "dropout"),
    (lambda: models.inception_bn(num_classes=0), "num_classes"),
    (lambda: models.resnet20(in_channels=0), "in_channels"),
    (lambda: models.resnet18(num_classes=2.5), "num_classes"),
    (lambda: models.ResNet((1, 1), (16,)), "same length"),
    (lambda: models.BasicBlock(16, 32, 2, shortcut="C"), "shortcut"),
    (lambda: models.BasicBlock(16, 33, 2, shortcut="A"), "pads channels"),
    (lambda: models.Inception(8, 4, 4, 4, 4, 4, "min", 4), "pool"),
    (lambda: models.Inception(8, 4, 4, 4, 4, 4, "avg", 4, stride=3), "stride"),
    (lambda: models.Inception(8, -1, 4, 4, 4, 4, "avg", 4), "ch1x1"),
])
def test_bad_arguments_are_value_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_bn_must_be_a_bool():
    with pytest.raises(TypeError, match="bn"):
        models.inception_bn(bn="yes")


def test_inception_module_output_channels():
    x = fastbn.Tensor(np.ones((2, 48, 14, 14), np.float32))
    for name, *widths, pool, proj, stride in models.INCEPTION_MODULES[:3]:
        module = models.Inception(x.shape[1], *widths, pool, proj, stride)
        x = module(x)
        assert x.shape[1] == module.out_channels
    assert x.shape == (2, 144, 7, 7)


# ------------------------------------------------------------------ the trainer's presets
@pytest.mark.parametrize("name", sorted(trainer.PRESETS))
def test_trainer_presets_take_image_shape_num_classes_bn(name):
    """The presets' signature, (image_shape, num_classes=10, bn=True), which --no-bn and
    model conversions rely on."""
    for bn in (True, False):
        model = trainer.PRESETS[name]((1, 8, 8), 10, bn=bn)
        has_bn = any(isinstance(m, nn.BatchNorm2d) or isinstance(m, nn.BatchNorm1d)
                     for m in model.modules())
        assert has_bn is bn
        out = model(fastbn.Tensor(np.zeros((3, 1, 8, 8), np.float32)))
        assert out.shape == (3, 10)


def test_trainer_keeps_its_convnet_and_mlp():
    """The presets moved to fastbn.models; the trainer's names are the same functions."""
    assert trainer.convnet is models.convnet and trainer.mlp is models.mlp
    assert trainer.PRESETS["convnet"] is models.convnet
    keys = list(models.convnet((1, 8, 8)).state_dict())
    assert keys == ["0.weight", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                    "1.num_batches_tracked", "3.weight", "4.weight", "4.bias",
                    "4.running_mean", "4.running_var", "4.num_batches_tracked", "7.weight",
                    "7.bias"]


@pytest.mark.parametrize("name", ["resnet20", "inception"])
def test_train_command_trains_the_model(name, run_fastbn, tmp_path):
    """Two epochs on the digits learn (far above chance; the run gives the same bits at
    any thread count), and write a checkpoint that load_model rebuilds."""
    ckpt = tmp_path / "run.ckpt"
    result = run_fastbn("train", "--model", name, "--epochs", "2", "--quiet",
                        "--checkpoint", str(ckpt))
    assert result.returncode == 0, result.stderr
    accuracy = float(result.stdout.split("held-out accuracy ")[1].split("%")[0])
    assert accuracy > 50
    model = trainer.load_model(ckpt)
    assert type(model) is (models.ResNet if name == "resnet20" else models.InceptionBN)
