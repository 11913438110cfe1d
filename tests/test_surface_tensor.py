"""PyTorch's tensor surface: dtype and device names, factories, the torch.* functions,
Tensor methods and the new tape ops (cat, stack, max/min, view, clone, casts, ...).

Forward results are compared with NumPy and with torch when it imports; every op that
carries a gradient is checked by gradcheck (float64 finite differences) and against
torch's autograd."""
import numpy as np
import pytest

import fastbn
from fastbn import Tensor, gradcheck


@pytest.fixture
def rng():
    return np.random.default_rng(20260521)


def leaf(rng, *shape, dtype=np.float64):
    return Tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)


def torch_or_skip():
    return pytest.importorskip("torch")


# -- dtypes and devices ------------------------------------------------------------------------
def test_dtype_names_are_numpy_dtypes():
    assert fastbn.float32 is np.dtype(np.float32) and fastbn.float is fastbn.float32
    assert fastbn.float64 is fastbn.double is np.dtype(np.float64)
    assert fastbn.long is fastbn.int64 is np.dtype(np.int64)
    assert fastbn.int is fastbn.int32 and fastbn.half is fastbn.float16
    assert fastbn.bool is np.dtype(np.bool_) and fastbn.uint8 is np.dtype(np.uint8)
    t = fastbn.zeros(2)
    assert t.dtype == fastbn.float32 and t.dtype is fastbn.float32


def test_device_is_the_cpu_only():
    d = fastbn.device("cpu")
    assert d.type == "cpu" and d.index is None and str(d) == "cpu"
    assert repr(d) == "device(type='cpu')"
    assert fastbn.device("cpu:0") == fastbn.device("cpu", 0) != d
    assert fastbn.device(d) == d and hash(fastbn.device("cpu")) == hash(d)
    assert fastbn.zeros(1).device == d and not fastbn.zeros(1).is_cuda
    for bad in ("cuda", "cuda:0", "mps"):
        with pytest.raises(ValueError, match="CPU only"):
            fastbn.device(bad)
    with pytest.raises(ValueError, match="index"):
        fastbn.device("cpu", 1)
    with pytest.raises(TypeError, match="device"):
        fastbn.device(3.5)
    assert not fastbn.cuda.is_available() and fastbn.cuda.device_count() == 0
    assert not fastbn.accelerator.is_available()
    assert fastbn.accelerator.current_accelerator() is None


def test_device_matches_torch():
    torch = torch_or_skip()
    for spec in ("cpu", "cpu:0"):
        assert str(fastbn.device(spec)) == str(torch.device(spec))
        assert repr(fastbn.device(spec)) == repr(torch.device(spec))


def test_tensor_to_device_and_dtype(rng):
    x = leaf(rng, 3, 4, dtype=np.float32)
    assert x.to("cpu") is x and x.to(fastbn.device("cpu")) is x and x.cpu() is x
    assert x.to(fastbn.float32) is x and x.float() is x
    assert x.to("cpu", copy=True) is not x
    for y in (x.to(fastbn.float64), x.to("cpu", fastbn.float64), x.double(),
              x.to(dtype=fastbn.float64, device="cpu"), x.to(fastbn.zeros(1, dtype=fastbn.double))):
        assert y.dtype == np.float64 and y.requires_grad
        np.testing.assert_array_equal(y.data, x.data.astype(np.float64))
    # the cast is on the tape: the gradient comes back in float32
    (x.double() * 2).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, np.full((3, 4), 2, np.float32))
    ints = x.long()
    assert ints.dtype == np.int64 and not ints.requires_grad
    np.testing.assert_array_equal(ints.data, x.data.astype(np.int64))
    assert x.int().dtype == np.int32 and x.bool().dtype == np.bool_ and x.half().dtype == np.float16
    assert fastbn.tensor([1, 2]).float().dtype == np.float32
    assert x.type_as(fastbn.zeros(1, dtype=fastbn.long)).dtype == np.int64
    with pytest.raises(ValueError, match="CPU only"):
        x.to("cuda")
    with pytest.raises(ValueError, match="CPU only"):
        x.cuda()
    with pytest.raises(TypeError, match="dtype"):
        x.to(np.complex64)
    with pytest.raises(TypeError, match="unexpected keyword"):
        x.to(dtpe=fastbn.float64)


def test_tensor_to_against_torch(rng):
    torch = torch_or_skip()
    a = rng.standard_normal((2, 3))
    ours, theirs = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    (ours.float() * ours.float()).sum().backward()
    (theirs.float() * theirs.float()).sum().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-6)


# -- factories -----------------------------------------------------------------------------------
def test_factories_shapes_dtypes_and_values():
    for make, value in ((fastbn.zeros, 0), (fastbn.ones, 1)):
        for args in ((2, 3), ((2, 3),), ([2, 3],)):
            t = make(*args)
            assert t.shape == (2, 3) and t.dtype == np.float32 and not t.requires_grad
            assert (t.data == value).all()
        assert make(4, dtype=fastbn.float64, requires_grad=True).requires_grad
        assert make(4, dtype=fastbn.long).dtype == np.int64
        assert make(0).shape == (0,) and make(()).shape == ()
    assert fastbn.empty(2, 2).shape == (2, 2)
    assert fastbn.full((2, 2), 7).dtype == np.int64 and fastbn.full((2,), 1.5).dtype == np.float32
    assert fastbn.full((2,), True).dtype == np.bool_
    x = fastbn.ones(2, 3, dtype=fastbn.float64)
    assert fastbn.zeros_like(x).dtype == np.float64 and fastbn.ones_like(x).shape == (2, 3)
    assert (fastbn.full_like(x, 3).data == 3).all()
    assert fastbn.zeros_like(x, dtype=fastbn.long).dtype == np.int64
    with pytest.raises(ValueError, match="non-negative"):
        fastbn.zeros(-1)
    with pytest.raises(TypeError, match="size"):
        fastbn.ones(2.5)
    with pytest.raises(ValueError, match="CPU only"):
        fastbn.zeros(2, device="cuda")
    with pytest.raises(TypeError, match="float32/float64"):
        fastbn.zeros(2, dtype=fastbn.long, requires_grad=True)


def test_factories_against_torch():
    torch = torch_or_skip()
    cases = [((5,), {}), ((2, 7), {}), ((1, 4, 0.5), {}), ((0.0, 1.0, 0.1), {}),
             ((10, 0, -3), {}), ((3,), {"dtype": "float64"})]
    for args, kw in cases:
        ours = fastbn.arange(*args, **{k: getattr(fastbn, v) for k, v in kw.items()})
        theirs = torch.arange(*args, **{k: getattr(torch, v) for k, v in kw.items()})
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", ""), args
        np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=1e-7)
    assert fastbn.tensor([1, 2]).dtype == np.int64 == torch.tensor([1, 2]).numpy().dtype
    assert fastbn.tensor([True]).dtype == np.bool_
    assert fastbn.tensor([1.0, 2]).dtype == np.float32
    assert fastbn.tensor(3.0).shape == () and fastbn.tensor(np.arange(3.0)).dtype == np.float64


def test_tensor_copies_and_from_numpy_shares():
    a = np.arange(6.0).reshape(2, 3)
    t = fastbn.tensor(a, dtype=fastbn.float32, requires_grad=True)
    assert t.dtype == np.float32 and t.requires_grad and t.data is not a
    shared = fastbn.from_numpy(a)
    a[0, 0] = 42
    assert shared.data[0, 0] == 42 and shared.dtype == np.float64
    copied = fastbn.tensor(a)
    a[0, 0] = 0
    assert copied.data[0, 0] == 42
    with pytest.raises(TypeError, match="ndarray"):
        fastbn.from_numpy([1, 2])
    with pytest.raises(TypeError):
        fastbn.from_numpy(np.array(["a"]))
    with pytest.raises(TypeError, match="numbers"):
        fastbn.tensor(["a", "b"])


def test_random_factories_follow_manual_seed():
    fastbn.manual_seed(5)
    a, b = fastbn.randn(3, 4), fastbn.rand(2, dtype=fastbn.float64)
    c, d = fastbn.randint(0, 10, (50,)), fastbn.randperm(6)
    fastbn.manual_seed(5)
    np.testing.assert_array_equal(fastbn.randn(3, 4).data, a.data)
    np.testing.assert_array_equal(fastbn.rand(2, dtype=fastbn.float64).data, b.data)
    np.testing.assert_array_equal(fastbn.randint(10, (50,)).data, c.data)
    np.testing.assert_array_equal(fastbn.randperm(6).data, d.data)
    assert a.dtype == np.float32 and b.dtype == np.float64 and c.dtype == np.int64
    assert (0 <= b.data).all() and (b.data < 1).all() and c.data.min() >= 0 and c.data.max() < 10
    assert sorted(d.data.tolist()) == list(range(6))
    # a fresh draw differs, and the draws look like their distributions
    fastbn.manual_seed(6)
    big = fastbn.randn(20000, dtype=fastbn.float64).data
    assert not np.array_equal(big[:12], a.data.reshape(-1))
    assert abs(big.mean()) < 0.05 and abs(big.std() - 1) < 0.05
    u = fastbn.rand(20000).data
    assert abs(u.mean() - 0.5) < 0.02
    gen = np.random.default_rng(1)
    np.testing.assert_array_equal(fastbn.randn(3, generator=gen).data,
                                  np.random.default_rng(1).standard_normal(3, np.float32))
    with pytest.raises(TypeError, match="floating"):
        fastbn.randn(2, dtype=fastbn.long)
    with pytest.raises(ValueError, match="low"):
        fastbn.randint(5, 5, (2,))


# -- Tensor methods ------------------------------------------------------------------------------
def test_small_methods(rng):
    a = rng.standard_normal((2, 3))
    t = Tensor(a)
    assert t.size() == (2, 3) and t.dim() == 2 and t.numel() == 6 and fastbn.numel(t) == 6
    assert t.tolist() == a.tolist() and Tensor(np.float64(2.5)).tolist() == 2.5
    assert t.sum().item() == pytest.approx(a.sum())
    assert float(Tensor([3.5])) == 3.5 and int(Tensor(np.array([7]))) == 7
    assert bool(Tensor([1.0])) and not bool(Tensor(0.0))
    with pytest.raises(RuntimeError, match="one-element"):
        bool(t)
    assert list(range(10))[Tensor(np.array(3))] == 3
    with pytest.raises(TypeError, match="integer"):
        [0, 1][Tensor(1.0)]
    assert fastbn.is_tensor(t) and not fastbn.is_tensor(a)
    assert t.t().shape == (3, 2) and Tensor(np.ones(3)).t().shape == (3,)
    with pytest.raises(ValueError, match="<= 2"):
        Tensor(np.ones((2, 2, 2))).t()
    z = Tensor(a.copy())
    assert z.zero_() is z and (z.data == 0).all()
    assert (z.fill_(2.5).data == 2.5).all()
    w = leaf(rng, 2)
    with pytest.raises(RuntimeError, match="in place"):
        w.zero_()
    with fastbn.no_grad():
        w.zero_()
    assert (w.data == 0).all()
    c = Tensor(a).T
    assert not c.data.flags.c_contiguous and c.contiguous().data.flags.c_contiguous
    assert Tensor(a).contiguous() is not None
    {t: 1}       # hashable by identity, as torch tensors


def test_reductions_accept_torch_and_numpy_spellings(rng):
    a = rng.standard_normal((3, 4, 5))
    t = Tensor(a)
    np.testing.assert_allclose(t.sum(dim=1, keepdim=True).data, a.sum(1, keepdims=True))
    np.testing.assert_allclose(t.sum(axis=(0, 2)).data, a.sum((0, 2)))
    np.testing.assert_allclose(t.mean(1).data, a.mean(1))
    np.testing.assert_allclose(fastbn.mean(t, dim=-1, keepdims=True).data, a.mean(-1, keepdims=True))
    np.testing.assert_allclose(fastbn.sum(t, 0).data, a.sum(0))
    with pytest.raises(TypeError, match="same argument"):
        t.sum(1, axis=1)


def test_comparisons_are_bool_tensors_without_grad(rng):
    a = leaf(rng, 4, 5)
    b = rng.standard_normal((4, 5))
    b[0] = a.data[0]
    for op, ref in ((fastbn.Tensor.eq, np.equal), (fastbn.Tensor.ne, np.not_equal),
                    (fastbn.Tensor.lt, np.less), (fastbn.Tensor.le, np.less_equal),
                    (fastbn.Tensor.gt, np.greater), (fastbn.Tensor.ge, np.greater_equal)):
        out = op(a, Tensor(b))
        assert out.dtype == np.bool_ and not out.requires_grad
        np.testing.assert_array_equal(out.data, ref(a.data, b))
    np.testing.assert_array_equal((a == Tensor(b)).data, a.data == b)
    np.testing.assert_array_equal((a > 0).data, a.data > 0)
    np.testing.assert_array_equal((0.5 <= a).data, 0.5 <= a.data)
    np.testing.assert_array_equal(fastbn.eq(a, b).data, a.data == b)
    assert (a == None) is False and (a != "x") is True      # noqa: E711
    pred = Tensor(np.array([[1], [2], [0]]))
    target = Tensor(np.array([1, 0, 0]))
    assert pred.eq(target.view_as(pred)).sum().item() == 2
    assert isinstance(pred.eq(target.view_as(pred)).sum().item(), int)
    with pytest.raises(ValueError, match="broadcast"):
        a.eq(Tensor(np.ones(3)))


def test_comparisons_against_torch(rng):
    torch = torch_or_skip()
    a = np.round(rng.standard_normal((3, 4)), 1)
    b = np.round(rng.standard_normal((3, 4)), 1)
    b[1] = a[1]
    for name in ("eq", "ne", "lt", "le", "gt", "ge"):
        np.testing.assert_array_equal(getattr(Tensor(a), name)(Tensor(b)).data,
                                      getattr(torch.tensor(a), name)(torch.tensor(b)).numpy())


def test_argmax_argmin_against_numpy_and_torch(rng):
    a = rng.standard_normal((3, 4, 5))
    t = Tensor(a, requires_grad=True)
    for dim in (0, 1, 2, -1):
        for keep in (False, True):
            got = t.argmax(dim=dim, keepdim=keep)
            assert got.dtype == np.int64 and not got.requires_grad
            np.testing.assert_array_equal(got.data, np.argmax(a, dim, keepdims=keep))
            np.testing.assert_array_equal(fastbn.argmin(t, dim, keep).data,
                                          np.argmin(a, dim, keepdims=keep))
    assert t.argmax().item() == np.argmax(a) and t.argmax().shape == ()
    assert t.argmax(keepdim=True).shape == (1, 1, 1)
    with pytest.raises(ValueError, match="out of range"):
        t.argmax(3)
    with pytest.raises(ValueError, match="empty"):
        fastbn.zeros(0).argmax()
    torch = pytest.importorskip("torch")
    tt = torch.tensor(a)
    for dim in (None, 0, 2):
        for keep in (False, True):
            np.testing.assert_array_equal(t.argmax(dim, keep).data, tt.argmax(dim, keep).numpy())
            assert t.argmin(dim, keep).shape == tuple(tt.argmin(dim, keep).shape)


def test_max_min_forms_and_gradients(rng):
    a = rng.standard_normal((3, 4, 5))
    t = Tensor(a, requires_grad=True)
    values, indices = t.max(1)
    np.testing.assert_array_equal(values.data, a.max(1))
    np.testing.assert_array_equal(indices.data, a.argmax(1))
    res = fastbn.min(t, dim=2, keepdim=True)
    assert res.values.shape == (3, 4, 1) and res.indices.dtype == np.int64
    np.testing.assert_array_equal(res.values.data, a.min(2, keepdims=True))
    assert t.max().item() == a.max() and fastbn.min(t).item() == a.min()
    # with a tensor: the elementwise maximum
    b = rng.standard_normal((3, 4, 5))
    np.testing.assert_array_equal(t.max(Tensor(b)).data, np.maximum(a, b))
    np.testing.assert_array_equal(fastbn.minimum(t, Tensor(b)).data, np.minimum(a, b))
    for dim in (0, 1, -1):
        for keep in (False, True):
            assert gradcheck(lambda x: x.max(dim, keep).values * 1.0, [leaf(rng, 3, 4, 5)])
            assert gradcheck(lambda x: x.min(dim, keep)[0] * 1.0, [leaf(rng, 3, 4, 5)])
    assert gradcheck(lambda x: x.max() * 2.0, [leaf(rng, 3, 4)])
    assert gradcheck(lambda x: x.min() * 2.0, [leaf(rng, 6)])
    assert gradcheck(lambda x, y: fastbn.maximum(x, y), [leaf(rng, 3, 4), leaf(rng, 4)])
    assert gradcheck(lambda x, y: fastbn.minimum(x, y), [leaf(rng, 3, 1), leaf(rng, 4)])
    assert fastbn.max(Tensor(np.float64(2.0)), 0).values.item() == 2.0


def test_max_ties_and_gradients_against_torch(rng):
    torch = torch_or_skip()
    a = np.array([[1.0, 3.0, 3.0], [2.0, 2.0, -1.0]])
    g = rng.standard_normal(2)
    ours = Tensor(a, requires_grad=True)
    theirs = torch.tensor(a, requires_grad=True)
    ours.max().backward()
    theirs.max().backward()
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy())        # ties share evenly
    b = rng.standard_normal((4, 6))
    ours, theirs = Tensor(b, requires_grad=True), torch.tensor(b, requires_grad=True)
    ours.max(1)[0].backward(g.repeat(2))
    theirs.max(1)[0].backward(torch.tensor(g.repeat(2)))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy())
    x, y = np.array([1.0, 2.0, 3.0]), np.array([1.0, 5.0, 0.0])
    ox, oy = Tensor(x, requires_grad=True), Tensor(y, requires_grad=True)
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    fastbn.maximum(ox, oy).sum().backward()
    torch.maximum(tx, ty).sum().backward()
    np.testing.assert_allclose(ox.grad, tx.grad.numpy())
    np.testing.assert_allclose(oy.grad, ty.grad.numpy())


# -- shape ops on the tape -------------------------------------------------------------------------
def test_view_view_as_reshape_forms(rng):
    x = leaf(rng, 2, 3, 4)
    for shape in ((6, 4), (-1,), (2, -1, 2)):
        assert x.view(*shape).shape == np.empty((2, 3, 4)).reshape(shape).shape
        assert x.view(shape).shape == x.reshape(list(shape)).shape
    assert x.view_as(Tensor(np.zeros((4, 6)))).shape == (4, 6)
    assert x.reshape_as(np.zeros((24,))).shape == (24,)
    assert gradcheck(lambda a: a.view(4, -1) * 3.0, [leaf(rng, 2, 3, 4)])
    assert gradcheck(lambda a: a.view_as(Tensor(np.zeros((6, 4)))) ** 2, [leaf(rng, 2, 3, 4)])
    with pytest.raises(ValueError, match="cannot reshape"):
        x.view(5, 5)


def test_unsqueeze_squeeze_flatten_transpose(rng):
    x = leaf(rng, 2, 1, 3)
    assert x.unsqueeze(0).shape == (1, 2, 1, 3) and x.unsqueeze(-1).shape == (2, 1, 3, 1)
    assert fastbn.unsqueeze(x, 3).shape == (2, 1, 3, 1)
    assert x.squeeze().shape == (2, 3) and x.squeeze(0).shape == (2, 1, 3)
    assert x.squeeze(1).shape == (2, 3) and x.squeeze((0, 1)).shape == (2, 3)
    assert fastbn.flatten(leaf(rng, 2, 3, 4)).shape == (24,)
    assert fastbn.flatten(leaf(rng, 2, 3, 4), 1).shape == (2, 12)
    assert fastbn.transpose(x, 0, 2).shape == (3, 1, 2)
    assert fastbn.permute(x, (2, 0, 1)).shape == (3, 2, 1)
    with pytest.raises(ValueError, match="out of range"):
        x.unsqueeze(5)
    assert gradcheck(lambda a: a.unsqueeze(1).squeeze() * 2.0, [leaf(rng, 2, 1, 3)])
    assert gradcheck(lambda a: fastbn.flatten(a, 1) ** 2, [leaf(rng, 2, 3, 2)])
    torch = pytest.importorskip("torch")
    t = torch.zeros(2, 1, 3)
    for dim in (None, 0, 1, (0, 1)):
        ours = x.squeeze() if dim is None else x.squeeze(dim)
        theirs = t.squeeze() if dim is None else t.squeeze(dim)
        assert ours.shape == tuple(theirs.shape)


def test_cat_and_stack_forward_backward(rng):
    a, b, c = leaf(rng, 2, 3), leaf(rng, 4, 3), leaf(rng, 1, 3)
    out = fastbn.cat([a, b, c])
    np.testing.assert_array_equal(out.data, np.concatenate([a.data, b.data, c.data]))
    assert fastbn.cat((a, a), dim=1).shape == (2, 6) and fastbn.concat([a, a], -1).shape == (2, 6)
    assert gradcheck(lambda x, y, z: fastbn.cat([x, y, z]) ** 2, [a, b, c])
    assert gradcheck(lambda x, y: fastbn.cat([x, y], dim=1), [leaf(rng, 2, 3, 2),
                                                             leaf(rng, 2, 1, 2)])
    assert gradcheck(lambda x, y: fastbn.stack([x, y], dim=1) ** 2, [leaf(rng, 2, 3),
                                                                      leaf(rng, 2, 3)])
    assert gradcheck(lambda x, y: fastbn.stack((x, y, x), dim=-1), [leaf(rng, 3), leaf(rng, 3)])
    # a constant among the inputs gets no gradient, the others theirs
    const = Tensor(rng.standard_normal((2, 3)))
    x = leaf(rng, 2, 3)
    (fastbn.stack([const, x]) * 3.0).sum().backward()
    np.testing.assert_array_equal(x.grad, np.full((2, 3), 3.0))
    assert const.grad is None
    # dtypes promote, gradients come back in each input's dtype
    y32 = leaf(rng, 2, 3, dtype=np.float32)
    mixed = fastbn.cat([y32, x])
    assert mixed.dtype == np.float64
    mixed.sum().backward()
    assert y32.grad.dtype == np.float32
    with pytest.raises(ValueError, match="does not match"):
        fastbn.cat([a, leaf(rng, 2, 4)])
    with pytest.raises(ValueError, match="all must be equal"):
        fastbn.stack([a, b])
    with pytest.raises(ValueError, match="non-empty"):
        fastbn.cat([])
    with pytest.raises(TypeError, match="list or tuple"):
        fastbn.cat(a)
    with pytest.raises(ValueError, match="zero-dimensional"):
        fastbn.cat([Tensor(1.0), Tensor(2.0)])


def test_cat_stack_against_torch(rng):
    torch = torch_or_skip()
    arrays = [rng.standard_normal((2, k, 3)) for k in (1, 2, 4)]
    ours = [Tensor(x, requires_grad=True) for x in arrays]
    theirs = [torch.tensor(x, requires_grad=True) for x in arrays]
    g = rng.standard_normal((2, 7, 3))
    fastbn.cat(ours, 1).backward(g)
    torch.cat(theirs, 1).backward(torch.tensor(g))
    for o, t in zip(ours, theirs):
        np.testing.assert_array_equal(o.grad, t.grad.numpy())
    same = [rng.standard_normal((2, 3)) for _ in range(3)]
    for dim in (0, 1, 2, -1, -3):
        np.testing.assert_array_equal(fastbn.stack([Tensor(s) for s in same], dim).data,
                                      torch.stack([torch.tensor(s) for s in same], dim).numpy())


def _ref_pad(x, pad, value=0.0):
    """F.pad's constant mode written plainly: np.pad for the positive sides, then
    slicing for the negative ones, dims from the last backwards."""
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    out = np.pad(x, [(max(a, 0), max(b, 0)) for a, b in widths], constant_values=value)
    return out[tuple(slice(max(-a, 0), out.shape[d] - max(-b, 0))
                     for d, (a, b) in enumerate(widths))]


@pytest.mark.parametrize("shape,pad", [((2, 3, 4, 5), (1, 2)), ((2, 3, 4, 5), (0, 0, 0, 0, 2, 2)),
                                       ((3, 4), (-1, 2, 3, -2)), ((5,), (2, -3)),
                                       ((2, 3, 4), (1, 1, 1, 1, 1, 1)), ((2, 3), ())])
def test_pad_forward_backward(rng, shape, pad):
    import fastbn.nn.functional as F
    x = leaf(rng, *shape)
    out = F.pad(x, pad, value=1.5)
    np.testing.assert_array_equal(out.data, _ref_pad(x.data, pad, 1.5))
    g = rng.standard_normal(out.shape)
    out.backward(g)
    # the gradient: the output's, where the input landed (the padding pushed back off)
    np.testing.assert_array_equal(x.grad, _ref_pad(g, tuple(-p for p in pad)))
    assert gradcheck(lambda t: F.pad(t, pad) ** 2, [leaf(rng, *shape)])


def test_pad_shortcut_and_errors(rng):
    import fastbn.nn.functional as F
    x = Tensor(rng.standard_normal((2, 4, 6, 6)).astype(np.float32), requires_grad=True)
    y = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, 2, 2))   # ResNet-20's option A shortcut
    assert y.shape == (2, 8, 3, 3) and y.dtype == np.float32
    np.testing.assert_array_equal(y.data[:, 2:6], x.data[:, :, ::2, ::2])
    assert not y.data[:, :2].any() and not y.data[:, 6:].any()
    with pytest.raises(ValueError, match="divisible by 2"):
        F.pad(x, (1, 2, 3))
    with pytest.raises(ValueError, match="padding length 10 and input of dimension 4"):
        F.pad(x, (1,) * 10)
    with pytest.raises(ValueError, match="negative output size in dim 3"):
        F.pad(x, (-4, -3))
    with pytest.raises(NotImplementedError, match="'reflect' is not implemented"):
        F.pad(x, (1, 1), mode="reflect")
    with pytest.raises(ValueError, match="unknown padding mode 'mirror'"):
        F.pad(x, (1, 1), mode="mirror")
    with pytest.raises(TypeError, match="sizes must be ints"):
        F.pad(x, (1.5, 1))


def test_pad_against_torch(rng):
    torch = torch_or_skip()
    import fastbn.nn.functional as F
    for shape, pad in [((2, 3, 4, 5), (1, 2, -1, 3)), ((2, 6, 3, 3), (0, 0, 0, 0, 3, 3)),
                       ((4, 5), (2, 0))]:
        x = rng.standard_normal(shape)
        ours, theirs = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        out = F.pad(ours, pad, value=-2.0)
        tout = torch.nn.functional.pad(theirs, pad, value=-2.0)
        np.testing.assert_array_equal(out.data, tout.detach().numpy())
        g = rng.standard_normal(out.shape)
        out.backward(g)
        tout.backward(torch.tensor(g))
        np.testing.assert_array_equal(ours.grad, theirs.grad.numpy())


def test_clone_sqrt_abs_and_softmax_methods(rng):
    x = leaf(rng, 3, 4)
    y = x.clone()
    assert y.data is not x.data and y.requires_grad
    assert gradcheck(lambda a: a.clone() * a, [leaf(rng, 3)])
    assert gradcheck(lambda a: (a * a + 1.0).sqrt(), [leaf(rng, 3, 2)])
    assert gradcheck(lambda a: abs(a) * 2.0, [leaf(rng, 5)])
    assert gradcheck(lambda a: a.softmax(1), [leaf(rng, 2, 4)])
    assert gradcheck(lambda a: a.log_softmax(0), [leaf(rng, 2, 4)])
    np.testing.assert_allclose(fastbn.abs(x).data, np.abs(x.data))


def test_methods_against_torch(rng):
    torch = torch_or_skip()
    a = rng.standard_normal((3, 4))
    g = rng.standard_normal((4, 3))
    ours, theirs = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    fo = (ours.t().abs().sqrt() + ours.t().clone().mul(2.0)).softmax(1)
    ft = (theirs.t().abs().sqrt() + theirs.t().clone().mul(2.0)).softmax(1)
    np.testing.assert_allclose(fo.data, ft.detach().numpy(), rtol=1e-12)
    fo.backward(g)
    ft.backward(torch.tensor(g))
    np.testing.assert_allclose(ours.grad, theirs.grad.numpy(), rtol=1e-10, atol=1e-12)
