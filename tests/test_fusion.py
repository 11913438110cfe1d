"""fold_batch_norm: the folded copy computes what the model computes in eval mode, to
rounding, on every model; pairs it cannot prove are left unfolded."""
import numpy as np
import pytest
from hypothesis import example, given, settings, strategies as st

import fastbn
from fastbn import Tensor, nn, no_grad, train
from fastbn.nn.batchnorm import _BatchNorm as _BN
from fastbn.nn.utils import FoldedBatchNorm, fold_batch_norm

TOL = {np.float32: 2e-5, np.float64: 1e-11}  # max |folded - eval| / max |eval|


def _randomize_bn(model, rng):
    """Running statistics and affine parameters far from their initial 0 / 1."""
    for m in model.modules():
        if isinstance(m, _BN) and m.track_running_stats:
            C = m.num_features
            m.running_mean[...] = rng.standard_normal(C)
            m.running_var[...] = rng.uniform(0.3, 3.0, C)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 2.0, C) * rng.choice([-1, 1], C)
                m.bias.data[...] = rng.standard_normal(C)


def _eval_outputs(model, x):
    """(model's eval output, its folded copy's output, the folded copy) on x, as float64."""
    before = {k: v.copy() for k, v in model.state_dict().items()}
    training = model.training
    folded = fold_batch_norm(model)
    assert model.training == training and not folded.training
    for k, v in model.state_dict().items():  # the model is left as it was
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    model.eval()
    with no_grad():
        ref = model(Tensor(x)).data
        out = folded(Tensor(x)).data
    model.train(training)
    assert out.dtype == ref.dtype
    return ref.astype(np.float64), out.astype(np.float64), folded


def _assert_close(ref, out, dtype):
    error = np.abs(out - ref).max() / np.abs(ref).max()
    assert error <= TOL[dtype], error


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bn", [True, False])
@pytest.mark.parametrize("preset", sorted(train.PRESETS))
def test_trainer_presets(preset, bn, dtype):
    rng = np.random.default_rng(0)
    fastbn.manual_seed(0)
    model = train.PRESETS[preset]((1, 8, 8), num_classes=10, bn=bn).to(dtype)
    for _ in range(3):  # real running statistics from training-mode batches
        model(Tensor(rng.standard_normal((32, 1, 8, 8)).astype(dtype)))
    x = rng.standard_normal((64, 1, 8, 8)).astype(dtype)
    ref, out, folded = _eval_outputs(model, x)
    _assert_close(ref, out, dtype)
    assert (out.argmax(1) == ref.argmax(1)).all()
    if bn:  # every BN folded, a fused BN+ReLU's ReLU kept
        assert _count(folded, _BN) == 0
        kept = [m.relu for m in folded.modules() if isinstance(m, FoldedBatchNorm)]
        assert kept == [m._relu for m in model.modules() if isinstance(m, _BN)] and kept
    else:
        assert _count(folded, FoldedBatchNorm) == 0
        np.testing.assert_array_equal(out, ref)


def test_sync_batchnorm_folds_like_batchnorm():
    rng = np.random.default_rng(1)
    model = nn.SyncBatchNorm.convert_sync_batchnorm(train.convnet((1, 8, 8)))
    _randomize_bn(model, rng)
    ref, out, folded = _eval_outputs(model, rng.standard_normal((16, 1, 8, 8)).astype(np.float32))
    _assert_close(ref, out, np.float32)
    assert _count(folded, _BN) == 0 and _count(folded, FoldedBatchNorm) == 2


_CONV_LAYERS = ["conv3", "conv1", "bn", "bnrelu", "relu", "maxpool", "avgpool"]
_FC_LAYERS = ["linear", "linear_nobias", "bn", "bnrelu", "relu"]


def _build(conv_codes, fc_codes, dtype, rng):
    """A Sequential of the coded layers on (N, 3, 8, 8) input; also how many (layer, BN)
    pairs in it are adjacent."""
    layers, C, H, prev, pairs = [], 3, 8, None, 0
    for code in conv_codes:
        if code in ("conv3", "conv1"):
            k = 3 if code == "conv3" else 1
            cout = int(rng.integers(2, 6))
            layers.append(nn.Conv2d(C, cout, k, padding=k // 2, bias=bool(rng.integers(2)),
                                    dtype=dtype))
            C = cout
        elif code in ("bn", "bnrelu"):
            layers.append((nn.BatchNorm2d if code == "bn" else nn.BatchNormReLU2d)(C, dtype=dtype))
            pairs += prev in ("conv3", "conv1")
        elif code == "relu":
            layers.append(nn.ReLU())
        elif H >= 2:
            layers.append(nn.MaxPool2d(2) if code == "maxpool" else nn.AvgPool2d(2))
            H //= 2
        else:  # no room to pool: no layer, so the previous one stays adjacent to the next
            continue
        prev = code
    layers.append(nn.Flatten())
    F, prev = C * H * H, None
    for code in fc_codes:
        if code.startswith("linear"):
            out = int(rng.integers(3, 9))
            layers.append(nn.Linear(F, out, bias=code == "linear", dtype=dtype))
            F = out
        elif code in ("bn", "bnrelu"):
            layers.append((nn.BatchNorm1d if code == "bn" else nn.BatchNormReLU1d)(F, dtype=dtype))
            pairs += prev is not None and prev.startswith("linear")
        else:
            layers.append(nn.ReLU())
        prev = code
    layers.append(nn.Linear(F, 3, dtype=dtype))
    return nn.Sequential(*layers), pairs


@settings(max_examples=60, deadline=None)
@given(conv=st.lists(st.sampled_from(_CONV_LAYERS), max_size=7),
       fc=st.lists(st.sampled_from(_FC_LAYERS), max_size=5),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 31),
       nested=st.booleans())
@example(conv=["conv3", "maxpool", "maxpool", "maxpool", "maxpool", "bn"], fc=[],
         dtype=np.float64, seed=0, nested=False)  # the 1x1 map's pool is skipped
def test_random_sequential_stacks(conv, fc, dtype, seed, nested):
    rng = np.random.default_rng(seed)
    model, pairs = _build(conv, fc, dtype, rng)
    if nested:  # the same stack inside a Sequential inside a custom module
        model = _Wrapper(model)
    _randomize_bn(model, rng)
    x = rng.standard_normal((5, 3, 8, 8)).astype(dtype)
    ref, out, folded = _eval_outputs(model, x)
    _assert_close(ref, out, dtype)
    assert _count(folded, FoldedBatchNorm) == pairs  # every provable pair is folded
    assert _count(folded, _BN) == _count(model, _BN) - pairs


class _Wrapper(nn.Module):
    def __init__(self, body):
        super().__init__()
        self.body = body

    def forward(self, x):
        return self.body(x)


class _BNBeforeConv(nn.Module):
    """Registers conv then bn; its forward applies bn first."""

    def __init__(self, dtype):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, dtype=dtype)
        self.bn = nn.BatchNorm2d(3, dtype=dtype)

    def forward(self, x):
        return self.conv(self.bn(x))


class _ConvThenBN(_BNBeforeConv):
    def forward(self, x):
        return self.bn(self.conv(x))


class _Reversed(nn.Sequential):
    def forward(self, x):
        for m in reversed(list(self)):
            x = m(x)
        return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_order_only_forward_knows_is_never_folded(dtype):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3, 6, 6)).astype(dtype)
    for model in (_BNBeforeConv(dtype), _ConvThenBN(dtype),
                  _Reversed(nn.BatchNorm2d(3, dtype=dtype), nn.Conv2d(3, 3, 3, dtype=dtype))):
        _randomize_bn(model, rng)
        ref, out, folded = _eval_outputs(model, x)
        np.testing.assert_array_equal(out, ref)
        assert _count(folded, _BN) == 1 and _count(folded, FoldedBatchNorm) == 0


def test_shared_layers_and_statless_batchnorm_stay():
    rng = np.random.default_rng(3)
    conv = nn.Conv2d(3, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.BatchNorm2d(3), conv, nn.BatchNorm2d(3),
                          nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3, track_running_stats=False))
    _randomize_bn(model, rng)
    ref, out, folded = _eval_outputs(model, rng.standard_normal((4, 3, 5, 5)).astype(np.float32))
    np.testing.assert_array_equal(out, ref)
    assert _count(folded, FoldedBatchNorm) == 0


def test_folded_linear_refuses_input_it_would_get_wrong():
    # Linear on (N, L, in) gives (N, L, out); BatchNorm1d(out) then normalizes over L, which
    # is out channels only by coincidence: the folded copy must not answer
    rng = np.random.default_rng(4)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNormReLU1d(4))
    _randomize_bn(model, rng)
    ref, out, folded = _eval_outputs(model, rng.standard_normal((6, 5)).astype(np.float32))
    _assert_close(ref, out, np.float32)
    assert repr(folded[1]) == "FoldedBatchNorm(ndim=2, relu=True)"
    x3 = Tensor(rng.standard_normal((6, 4, 5)).astype(np.float32))
    model.eval()
    model(x3)  # the BatchNorm accepts it (over axis 1)
    with pytest.raises(ValueError, match="folded here normalized 2-D input"):
        folded(x3)


def test_fold_batch_norm_matches_eval_model():
    rng = np.random.default_rng(10)
    model = nn.Sequential(nn.Conv2d(2, 5, 3, padding=1, bias=False), nn.BatchNorm2d(5),
                          nn.ReLU(),
                          nn.Sequential(nn.Conv2d(5, 4, 3, bias=True), nn.BatchNorm2d(4)),
                          nn.Flatten(), nn.Linear(16, 6), nn.BatchNorm1d(6, affine=False),
                          nn.ReLU(), nn.Linear(6, 3))
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.2, 3, m.num_features)
            if m.affine:
                m.weight.data[...] = rng.uniform(0.5, 2, m.num_features)
                m.bias.data[...] = rng.standard_normal(m.num_features)
    x = Tensor(rng.standard_normal((3, 2, 4, 4)).astype(np.float32))
    model.eval()
    expected = model(x).data
    model.train()
    folded = fold_batch_norm(model)
    assert model.training and isinstance(model[1], nn.BatchNorm2d)  # unchanged
    assert not folded.training
    assert isinstance(folded[1], FoldedBatchNorm) and isinstance(folded[3][1], FoldedBatchNorm)
    assert isinstance(folded[6], FoldedBatchNorm) and folded[0].bias is not None
    np.testing.assert_allclose(folded(x).data, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batchnorm_without_bias_folds(dtype):
    """BatchNorm(..., bias=False): a learned weight and no shift."""
    rng = np.random.default_rng(1)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5, bias=False),
                          nn.Flatten(), nn.Linear(5 * 6 * 6, 4, bias=False),
                          nn.BatchNorm1d(4, bias=False)).to(dtype)
    for m in model.modules():
        if isinstance(m, _BN):
            m.running_mean[...] = rng.standard_normal(m.num_features)
            m.running_var[...] = rng.uniform(0.3, 3.0, m.num_features)
            m.weight.data[...] = rng.uniform(0.5, 2.0, m.num_features)
    ref, out, folded = _eval_outputs(model, rng.standard_normal((16, 3, 6, 6)).astype(dtype))
    _assert_close(ref, out, dtype)
    assert _count(folded, _BN) == 0
