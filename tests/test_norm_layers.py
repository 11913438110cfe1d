"""The normalization family's layers and ops (nn.GroupNorm, LayerNorm, InstanceNorm1d-3d,
BatchNorm3d, BatchRenorm1d/2d, GhostBatchNorm1d/2d; F.group_norm ...; nn.utils.update_bn)
against PyTorch when it imports, against float64 NumPy references, and against finite
differences (gradcheck)."""
import math
import warnings

import numpy as np
import pytest

import fastbn
import fastbn.nn.functional as F
from fastbn import Tensor, gradcheck, nn

from bn_reference import ref_forward_train
from norm_reference import ref_batch_renorm, ref_ghost_batch_norm, ref_group_norm

TOL = {np.float32: 3e-5, np.float64: 1e-10}


@pytest.fixture
def rng():
    return np.random.default_rng()


def _close(a, e, dtype, scale=None):
    a = np.asarray(a, np.float64)
    e = np.asarray(e, np.float64)
    assert a.shape == e.shape
    scale = max(np.max(np.abs(e)), 1e-30) if scale is None else scale
    err = np.max(np.abs(a - e)) / scale if e.size else 0.0
    assert err <= TOL[dtype], f"relative error {err:.3g}"


def _step(lib, layer, x, dy):
    """One forward and backward of layer; returns (y, dx, {param name: grad})."""
    if lib == "torch":
        import torch
        xt = torch.tensor(x, requires_grad=True)
        y = layer(xt)
        y.backward(torch.tensor(dy))
        return (y.detach().numpy(), xt.grad.numpy(),
                {n: p.grad.numpy() for n, p in layer.named_parameters()})
    xt = Tensor(x, requires_grad=True)
    y = layer(xt)
    y.backward(dy)
    return y.detach().numpy(), xt.grad, {n: p.grad for n, p in layer.named_parameters()}


def _copy_params(layer, torch_layer, rng):
    """Random parameters (and running statistics) in both layers."""
    import torch
    for name, p in layer.named_parameters():
        p.data[...] = rng.uniform(0.5, 1.5, p.shape) if name == "weight" else \
            rng.standard_normal(p.shape)
    with torch.no_grad():
        for name, value in layer.state_dict().items():
            getattr(torch_layer, name).copy_(torch.from_numpy(np.array(value)))


def _compare_with_torch(layer, torch_layer, shapes, dtype, rng, modes=("train", "eval")):
    """Steps in each mode on fresh inputs: outputs, gradients and the state_dicts
    (parameters, running statistics, num_batches_tracked) agree."""
    torch = pytest.importorskip("torch")
    torch_layer.to(torch.float64 if dtype == np.float64 else torch.float32)
    _copy_params(layer, torch_layer, rng)
    assert list(layer.state_dict()) == list(torch_layer.state_dict())
    for mode in modes:
        layer.train(mode == "train")
        torch_layer.train(mode == "train")
        for shape in shapes:
            x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
            dy = rng.standard_normal(shape).astype(dtype)
            for p in list(layer.parameters()) + list(torch_layer.parameters()):
                p.grad = None
            y, dx, grads = _step("fastbn", layer, x, dy)
            y_t, dx_t, grads_t = _step("torch", torch_layer, x, dy)
            assert y.dtype == dtype and dx.dtype == dtype
            _close(y, y_t, dtype)
            _close(dx, dx_t, dtype)
            for name in grads_t:
                _close(grads[name], grads_t[name], dtype,
                       scale=np.abs(dy.astype(np.float64)).sum() / grads_t[name].size + 1e-30)
            for name, value in torch_layer.state_dict().items():
                mine = layer.state_dict()[name]
                if value.dtype == torch.int64:
                    assert int(mine) == int(value), name
                else:
                    _close(mine, value.numpy(), dtype)


# ---------------------------------------------------------------- against PyTorch

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("trial", range(3))
def test_group_norm_matches_torch(rng, dtype, trial):
    torch = pytest.importorskip("torch")
    G, Cg = int(rng.integers(1, 5)), int(rng.integers(1, 5))
    C = G * Cg
    spatial = [(), (int(rng.integers(3, 40)),), (int(rng.integers(2, 9)),
                                                 int(rng.integers(2, 9)))][trial]
    if Cg * math.prod(spatial) < 3:
        spatial = (3,)
    affine = bool(rng.integers(0, 2)) or trial == 0
    shapes = [(int(rng.integers(1, 6)), C) + spatial for _ in range(2)]
    _compare_with_torch(nn.GroupNorm(G, C, eps=1e-4, affine=affine, dtype=dtype),
                        torch.nn.GroupNorm(G, C, eps=1e-4, affine=affine), shapes, dtype, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("norm,lead,affine,bias", [((7,), (5,), True, True),
                                                   ((3, 5), (2, 4), True, False),
                                                   ((2, 3, 4), (3,), False, False),
                                                   ((33,), (2, 3, 2), True, True)])
def test_layer_norm_matches_torch(rng, dtype, norm, lead, affine, bias):
    torch = pytest.importorskip("torch")
    _compare_with_torch(nn.LayerNorm(norm, elementwise_affine=affine, bias=bias, dtype=dtype),
                        torch.nn.LayerNorm(norm, elementwise_affine=affine, bias=bias),
                        [lead + norm, (1,) + norm], dtype, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("dims,affine,track", [(1, False, False), (1, True, True),
                                               (2, True, False), (2, False, True),
                                               (3, True, True)])
def test_instance_norm_matches_torch(rng, dtype, dims, affine, track):
    """Training (the running statistics updated from the instances'), then eval mode
    (the running statistics normalize when tracked, else the instances')."""
    torch = pytest.importorskip("torch")
    C = int(rng.integers(1, 6))
    spatial = (int(rng.integers(3, 7)),) + tuple(int(rng.integers(1, 4)) for _ in range(dims - 1))
    ours = getattr(nn, f"InstanceNorm{dims}d")(C, momentum=0.3, affine=affine,
                                                 track_running_stats=track, dtype=dtype)
    theirs = getattr(torch.nn, f"InstanceNorm{dims}d")(C, momentum=0.3, affine=affine,
                                                        track_running_stats=track)
    _compare_with_torch(ours, theirs, [(3, C) + spatial, (2, C) + spatial, (C,) + spatial],
                        dtype, rng)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_norm_3d_matches_torch(rng, dtype):
    torch = pytest.importorskip("torch")
    _compare_with_torch(nn.BatchNorm3d(4, momentum=None, dtype=dtype),
                        torch.nn.BatchNorm3d(4, momentum=None),
                        [(3, 4, 2, 5, 3), (2, 4, 3, 1, 4)], dtype, rng)


def test_reprs_match_torch():
    torch = pytest.importorskip("torch")
    for ours, theirs in ((nn.GroupNorm(2, 6, affine=False), torch.nn.GroupNorm(2, 6, affine=False)),
                         (nn.LayerNorm([3, 4]), torch.nn.LayerNorm([3, 4])),
                         (nn.InstanceNorm2d(5), torch.nn.InstanceNorm2d(5)),
                         (nn.BatchNorm3d(7), torch.nn.BatchNorm3d(7))):
        assert repr(ours) == repr(theirs)


# ---------------------------------------------------------------- Batch Renormalization

def _twins(rng, cls, other, shape, **kwargs):
    """Two layers with the same random parameters and running statistics."""
    a, b = cls(shape[1], **kwargs), other(shape[1])
    for name, p in a.named_parameters():
        p.data[...] = rng.uniform(0.5, 1.5, p.shape)
    b.load_state_dict(a.state_dict())
    return a, b


def _same_steps(rng, a, b, shape, steps=3):
    """a and b give the same bits over training steps and then in eval mode."""
    for step in range(steps + 1):
        train = step < steps
        a.train(train)
        b.train(train)
        x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
        dy = rng.standard_normal(shape).astype(np.float32)
        ra, rb = _step("fastbn", a, x, dy), _step("fastbn", b, x, dy)
        np.testing.assert_array_equal(ra[0], rb[0])
        np.testing.assert_array_equal(ra[1], rb[1])
        for name in ra[2]:
            np.testing.assert_array_equal(ra[2][name], rb[2][name])
        for (name, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
            np.testing.assert_array_equal(va, vb, err_msg=name)
        for p in list(a.parameters()) + list(b.parameters()):
            p.grad = None


@pytest.mark.parametrize("cls,bn,shape", [(nn.BatchRenorm1d, nn.BatchNorm1d, (12, 5)),
                                          (nn.BatchRenorm1d, nn.BatchNorm1d, (6, 5, 7)),
                                          (nn.BatchRenorm2d, nn.BatchNorm2d, (6, 3, 5, 5))])
def test_batch_renorm_with_r_max_1_d_max_0_is_batch_norm_exactly(rng, cls, bn, shape):
    a, b = _twins(rng, cls, bn, shape)
    assert (a.r_max, a.d_max) == (1.0, 0.0)  # Chainer's defaults
    _same_steps(rng, a, b, shape)


def test_batch_renorm_follows_its_schedule_and_the_reference(rng):
    """A schedule sees the training step; the output is Chainer's formula with the
    running statistics before each step, and they update as BatchNorm's."""
    seen = []

    def r_max(step):
        seen.append(step)
        return 1.0 + 0.5 * step

    layer = nn.BatchRenorm1d(4, momentum=0.5, r_max=r_max, d_max=lambda t: 0.25 * t,
                             dtype=np.float64)
    rm, rv = np.zeros(4), np.ones(4)
    for step in range(3):
        x = rng.standard_normal((16, 4)) * rng.uniform(0.2, 5, 4) + rng.uniform(-3, 3, 4)
        y = layer(Tensor(x)).detach().numpy()
        y_ref, _, _ = ref_batch_renorm(x, np.ones(4), np.zeros(4), rm, rv, 1.0 + 0.5 * step,
                                       0.25 * step)
        _close(y, y_ref, np.float64)
        _, mean, var, _ = ref_forward_train(x, np.ones(4), np.zeros(4), 1e-5)
        rm, rv = 0.5 * rm + 0.5 * mean, 0.5 * rv + 0.5 * var * 16 / 15
        _close(layer.running_mean, rm, np.float64)
        _close(layer.running_var, rv, np.float64)
    assert seen == [0, 1, 2]
    assert layer.limits() == (2.5, 0.75)
    layer.eval()
    x = rng.standard_normal((5, 4))
    y_bn = F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias)
    np.testing.assert_array_equal(layer(Tensor(x)).detach().numpy(), y_bn.detach().numpy())


# ---------------------------------------------------------------- Ghost Batch Normalization

@pytest.mark.parametrize("size", [12, 100])
@pytest.mark.parametrize("cls,bn,shape", [(nn.GhostBatchNorm1d, nn.BatchNorm1d, (12, 5)),
                                          (nn.GhostBatchNorm2d, nn.BatchNorm2d, (12, 3, 4, 4))])
def test_ghost_batch_norm_of_the_whole_batch_is_batch_norm_exactly(rng, cls, bn, shape, size):
    a = cls(shape[1], size)
    b = bn(shape[1])
    for name, p in a.named_parameters():
        p.data[...] = rng.uniform(0.5, 1.5, p.shape)
    b.load_state_dict(a.state_dict())
    _same_steps(rng, a, b, shape)


def test_ghost_batch_norm_layer_uses_ghost_batches(rng):
    layer = nn.GhostBatchNorm2d(3, 4, momentum=None, dtype=np.float64)
    x = rng.standard_normal((10, 3, 2, 2)) * 3 + 1
    y = layer(Tensor(x)).detach().numpy()
    y_ref, stats = ref_ghost_batch_norm(x, np.ones(3), np.zeros(3), 4)
    _close(y, y_ref, np.float64)
    counts = np.array([s[0] for s in stats], float) / 10
    _close(layer.running_mean, sum(c * s[1] for c, s in zip(counts, stats)), np.float64)
    _close(layer.running_var, sum(c * s[2] for c, s in zip(counts, stats)), np.float64)
    assert int(layer.num_batches_tracked) == 1
    layer.eval()
    np.testing.assert_array_equal(
        layer(Tensor(x)).detach().numpy(),
        F.batch_norm(x, layer.running_mean, layer.running_var, layer.weight,
                     layer.bias).detach().numpy())
    assert "virtual_batch_size=4" in repr(layer)


# ---------------------------------------------------------------- gradcheck

def _gradcheck_cases(rng):
    t = lambda *s: Tensor(rng.standard_normal(s), requires_grad=True)  # noqa: E731
    w = lambda c: Tensor(rng.uniform(0.5, 1.5, c), requires_grad=True)  # noqa: E731
    rm, rv = rng.standard_normal(3) + 8, rng.uniform(16, 25, 3)  # r, d clip: 1 / 1.5, -0.5
    return {
        "group_norm": (lambda x, w_, b: F.group_norm(x, 2, w_, b), (t(3, 4, 5), w(4), t(4))),
        "group_norm_positions": (lambda x, w_, b: F.group_norm(x, 3, w_, b),
                                 (t(2, 6, 2), w(6), t(6))),
        "layer_norm": (lambda x, w_, b: F.layer_norm(x, (3, 4), w_, b),
                       (t(2, 3, 4), Tensor(rng.uniform(0.5, 1.5, (3, 4)), requires_grad=True),
                        t(3, 4))),
        "instance_norm": (lambda x, w_, b: F.instance_norm(x, weight=w_, bias=b),
                          (t(2, 3, 5), w(3), t(3))),
        "instance_norm_running": (
            lambda x, w_, b: F.instance_norm(x, rm, rv, w_, b, use_input_stats=False),
            (t(2, 3, 5), w(3), t(3))),
        "batch_renorm_clipped": (
            lambda x, w_, b: F.batch_renorm(x, rm.copy(), rv.copy(), w_, b, r_max=1.5,
                                            d_max=0.5, momentum=0.0),
            (t(6, 3, 2), w(3), t(3))),
        "ghost_batch_norm": (lambda x, w_, b: F.ghost_batch_norm(x, 3, None, None, w_, b),
                             (t(7, 3, 2), w(3), t(3))),
    }


@pytest.mark.parametrize("name", ["group_norm", "group_norm_positions", "layer_norm",
                                  "instance_norm", "instance_norm_running",
                                  "batch_renorm_clipped", "ghost_batch_norm"])
def test_gradcheck(rng, name):
    fn, inputs = _gradcheck_cases(rng)[name]
    assert gradcheck(fn, inputs)


# ---------------------------------------------------------------- update_bn

def _model(lib, rng):
    m = lib.Sequential(lib.Linear(6, 5), lib.BatchNorm1d(5, momentum=0.3), lib.ReLU(),
                       lib.Linear(5, 4), lib.BatchNorm1d(4))
    return m


def test_update_bn_matches_torch(rng):
    torch = pytest.importorskip("torch")
    from torch.optim.swa_utils import update_bn as torch_update_bn
    ours, theirs = _model(nn, rng).double(), _model(torch.nn, rng).double()
    for p in ours.parameters():
        p.data[...] = rng.standard_normal(p.shape)
    theirs.load_state_dict({k: torch.from_numpy(np.array(v))
                            for k, v in ours.state_dict().items()})
    batches = [rng.standard_normal((int(rng.integers(3, 9)), 6)) * 2 + 1 for _ in range(5)]
    ours.eval()
    theirs.eval()
    nn.utils.update_bn([(b, np.zeros(len(b))) for b in batches], ours)
    torch_update_bn([(torch.from_numpy(b), torch.zeros(len(b))) for b in batches], theirs)
    for (name, value), expected in zip(ours.state_dict().items(),
                                       theirs.state_dict().values()):
        np.testing.assert_allclose(value, expected.numpy(), rtol=1e-10, atol=1e-12,
                                   err_msg=name)
    assert not ours.training and ours[1].momentum == 0.3 and ours[4].momentum == 0.1


def test_update_bn_covers_the_variants_and_leaves_the_others(rng):
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchRenorm1d(4, r_max=3.0, d_max=5.0),
                          nn.GhostBatchNorm1d(4, 2), nn.LayerNorm(4),
                          nn.BatchNorm1d(4, track_running_stats=False))
    x = rng.standard_normal((8, 3)) * 4
    before = model.state_dict()
    nn.utils.update_bn([Tensor(x.astype(np.float32))], model)
    h = model[0](Tensor(x.astype(np.float32))).detach().numpy()
    _close(model[1].running_mean, h.astype(np.float64).mean(axis=0), np.float32)
    assert int(model[1].num_batches_tracked) == 1 and model[1].r_max == 3.0
    assert model[1].d_max == 5.0 and model[2].momentum == 0.1
    for key in ("3.weight", "3.bias"):
        np.testing.assert_array_equal(model.state_dict()[key], before[key])
    model2 = nn.Sequential(nn.Linear(2, 2), nn.GroupNorm(1, 2))
    nn.utils.update_bn(iter(()), model2)  # nothing to recompute: the loader is not read
    with pytest.raises(ValueError, match="cpu"):
        nn.utils.update_bn([], model, device=0)


# ---------------------------------------------------------------- bad input

def test_bad_input_is_a_clear_error(rng):
    x = Tensor(rng.standard_normal((4, 6, 5)).astype(np.float32))
    with pytest.raises(ValueError, match="must be divisible by num_groups"):
        nn.GroupNorm(4, 6)
    with pytest.raises(ValueError, match="eps"):
        nn.GroupNorm(2, 6, eps=float("nan"))
    with pytest.raises(ValueError, match="eps"):
        nn.LayerNorm(5, eps=float("nan"))
    with pytest.raises(ValueError, match="eps"):
        nn.InstanceNorm1d(6, eps=float("nan"))
    with pytest.raises(ValueError, match="expected input of shape"):
        nn.GroupNorm(2, 6)(Tensor(np.ones(6, np.float32)))
    with pytest.raises(ValueError, match=r"\(N, 6, \*\)"):
        nn.GroupNorm(2, 6)(Tensor(np.ones((4, 5, 3), np.float32)))
    with pytest.raises(ValueError, match="more than 1 value per group"):
        nn.GroupNorm(6, 6)(Tensor(np.ones((4, 6), np.float32)))
    with pytest.raises(ValueError, match="normalized_shape"):
        nn.LayerNorm((6, 4))(x)
    with pytest.raises(ValueError, match="2D .unbatched. or 3D"):
        nn.InstanceNorm1d(6)(Tensor(np.ones((2, 6, 5, 5), np.float32)))
    with pytest.raises(ValueError, match="spatial"):
        nn.InstanceNorm1d(6)(Tensor(np.ones((2, 6, 1), np.float32)))
    with pytest.raises(ValueError, match="num_features"):
        nn.InstanceNorm1d(5, affine=True)(x)
    with pytest.warns(UserWarning, match="num_features"):
        nn.InstanceNorm1d(5)(x)
    with pytest.raises(ValueError, match="5D"):
        nn.BatchNorm3d(6)(x)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nn.BatchRenorm1d(6)(Tensor(np.ones((1, 6), np.float32)))
    with pytest.raises(ValueError, match="r_max"):
        nn.BatchRenorm1d(6, r_max=0.9)
    with pytest.raises(ValueError, match="schedule returned"):
        nn.BatchRenorm1d(6, d_max=lambda t: -1.0)(x)
    with pytest.raises(ValueError, match="virtual_batch_size"):
        nn.GhostBatchNorm1d(6, 0)
    with pytest.raises(ValueError, match="1 value per channel"):
        nn.GhostBatchNorm1d(6, 3)(Tensor(np.ones((4, 6), np.float32)))
    with pytest.raises(TypeError, match="dtype"):
        nn.GroupNorm(2, 6)(Tensor(np.ones((4, 6, 3))))
    with pytest.raises(ValueError, match="num_groups"):
        F.group_norm(x, 4)


def test_non_contiguous_input_is_accepted(rng):
    base = rng.standard_normal((4, 5, 6)).astype(np.float32)
    x = base.transpose(0, 2, 1)
    for layer in (nn.GroupNorm(3, 6), nn.LayerNorm(5), nn.InstanceNorm1d(6)):
        np.testing.assert_array_equal(layer(Tensor(x)).detach().numpy(),
                                      layer(Tensor(np.ascontiguousarray(x))).detach().numpy())


def test_one_sample_is_fine_for_group_and_layer_norm(rng):
    """No batch statistics: a batch of one sample normalizes as in a larger batch."""
    x = rng.standard_normal((5, 6, 4)).astype(np.float32)
    for layer in (nn.GroupNorm(3, 6), nn.LayerNorm((6, 4))):
        whole = layer(Tensor(x)).detach().numpy()
        np.testing.assert_allclose(layer(Tensor(x[2:3])).detach().numpy(), whole[2:3], rtol=1e-6,
                                   atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = nn.InstanceNorm1d(6)(Tensor(x[0])).detach().numpy()  # unbatched (C, L)
    _close(y, ref_group_norm(x[:1], 6, None, None)[0][0], np.float32)
