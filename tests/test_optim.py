import math
import threading

import numpy as np
import pytest

import fastbn
from fastbn import kernels as K
from fastbn import optim
from fastbn.optim import lr_scheduler

from concurrency import run_threads


class P:
    """A bare parameter: the optimizers need only .data and .grad."""

    def __init__(self, data, dtype=np.float64):
        self.data = np.array(data, dtype=dtype)
        self.grad = None


def _grads(rng, shapes, steps):
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def _run(opt, params, grads):
    for step in grads:
        for p, g in zip(params, step):
            p.grad = g.astype(p.data.dtype)
        opt.step()
    return [p.data.copy() for p in params]


SHAPES = [(3, 4), (5,)]
# with a parameter above the kernels' serial cut-off, cut into blocks for threads
UPDATE_CASES = [(np.float64, SHAPES, 1e-12), (np.float32, SHAPES + [(70001,)], 2e-5)]


@pytest.mark.parametrize("dtype,shapes,tol", UPDATE_CASES)
@pytest.mark.parametrize("momentum,dampening,nesterov,wd", [
    (0.0, 0.0, False, 0.0), (0.9, 0.0, False, 0.0), (0.9, 0.3, False, 1e-2),
    (0.8, 0.0, True, 5e-3)])
def test_sgd_matches_formula(momentum, dampening, nesterov, wd, dtype, shapes, tol):
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s) for s in shapes]
    grads = _grads(rng, shapes, 5)
    params = [P(x, dtype) for x in init]
    opt = optim.SGD(params, lr=0.05, momentum=momentum, dampening=dampening,
                    weight_decay=wd, nesterov=nesterov)
    got = _run(opt, params, grads)
    for i, x0 in enumerate(init):
        x, buf = x0.copy(), None
        for t, step in enumerate(grads):
            d = step[i] + wd * x
            if momentum:
                buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
                d = d + momentum * buf if nesterov else buf
            x = x - 0.05 * d
        assert got[i].dtype == dtype
        np.testing.assert_allclose(got[i], x, rtol=tol, atol=tol)
        assert not np.allclose(got[i], x0)


@pytest.mark.parametrize("dtype,shapes,tol", UPDATE_CASES)
@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_formula(wd, dtype, shapes, tol):
    rng = np.random.default_rng(2)
    init = [rng.standard_normal(s) for s in shapes]
    grads = _grads(rng, shapes, 6)
    params = [P(x, dtype) for x in init]
    b1, b2, eps, lr = 0.8, 0.95, 1e-6, 0.01
    got = _run(optim.Adam(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd),
               params, grads)
    for i, x0 in enumerate(init):
        x, m, v = x0.copy(), 0.0, 0.0
        for t, step in enumerate(grads, start=1):
            g = step[i] + wd * x
            m = b1 * m + (1 - b1) * g
            v = b2 * v + (1 - b2) * g * g
            mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
            x = x - lr * mhat / (np.sqrt(vhat) + eps)
        assert got[i].dtype == dtype
        np.testing.assert_allclose(got[i], x, rtol=tol * 100, atol=tol)


def test_against_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = _grads(rng, SHAPES, 5)
    for make, kwargs in [(("SGD",), dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
                         (("Adam",), dict(lr=0.01, betas=(0.85, 0.99), weight_decay=1e-2))]:
        params = [P(x) for x in init]
        got = _run(getattr(optim, make[0])(params, **kwargs), params, grads)
        tparams = [torch.tensor(x, requires_grad=True) for x in init]
        topt = getattr(torch.optim, make[0])(tparams, **kwargs)
        for step in grads:
            for p, g in zip(tparams, step):
                p.grad = torch.tensor(g)
            topt.step()
        for a, b in zip(got, tparams):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)


def _updates(threads, strided=False):
    """Three SGD and three Adam steps on a large float32 parameter (and a small one):
    the parameters and states after them."""
    rng = np.random.default_rng(5)
    shapes = [(300, 400), (7,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = _grads(rng, shapes, 3)
    out = []
    with fastbn.threads(threads):
        for cls, kw in [(optim.SGD, dict(lr=0.1, momentum=0.9, weight_decay=1e-3)),
                        (optim.Adam, dict(lr=0.01, weight_decay=1e-2))]:
            params = [P(x, np.float32) for x in init]
            if strided:  # a transposed view of a C-contiguous array: updated in place
                params[0].data = np.ascontiguousarray(init[0].T).T
            opt = cls(params, **kw)
            out += _run(opt, params, grads)
            out += [v for s in opt.state.values() for v in s.values()
                    if isinstance(v, np.ndarray)]
    return out


def test_updates_same_bits_at_any_thread_count_schedule_and_layout(schedule):
    one = _updates(1)
    for got in (_updates(2), _updates(3), _updates(1, strided=True)):
        assert len(got) == len(one)
        for a, b in zip(one, got):
            np.testing.assert_array_equal(a, b)


def test_updates_from_python_threads_at_once():
    """Each update touches only its own arrays: four Python threads get the serial bits."""
    expected = _updates(2)
    barrier, failures = threading.Barrier(4), []

    def work(i):
        barrier.wait()
        if not all(np.array_equal(a, b) for a, b in zip(_updates(2), expected)):
            failures.append(i)

    run_threads(work, range(4))
    assert not failures


def test_update_errors_leave_parameter_and_state_alone():
    p = P(np.ones(3))
    opt = optim.SGD([p], lr=0.5, momentum=0.9)
    p.grad = np.ones(4)
    with pytest.raises(ValueError, match="gradient of shape"):
        opt.step()
    np.testing.assert_array_equal(p.data, 1)
    assert opt.state == {}
    p.grad = np.full(3, 2.0)       # the first real step starts the buffer from this gradient
    opt.step()
    opt.step()
    np.testing.assert_allclose(p.data, 1 - 0.5 * 2 - 0.5 * (0.9 * 2 + 2))
    frozen = P(np.ones(2))
    frozen.data.flags.writeable = False
    frozen.grad = np.ones(2)
    with pytest.raises(ValueError, match="read-only"):
        optim.Adam([frozen]).step()
    with pytest.raises(TypeError, match="float32 or float64"):
        K.sgd_update(np.ones(2, np.int64), np.ones(2), None, 0.1)
    with pytest.raises(ValueError, match="optimizer state"):
        K.adam_update(np.ones(2), np.ones(2), np.zeros(2, np.float32), np.zeros(2), 1, 0.1,
                      0.9, 0.99, 1e-8)
    with pytest.raises(ValueError, match="step"):
        K.adam_update(np.ones(2), np.ones(2), np.zeros(2), np.zeros(2), 0, 0.1, 0.9, 0.99,
                      1e-8)


@pytest.mark.parametrize("cls,kwargs", [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                        (optim.Adam, dict(lr=0.01))])
def test_bad_gradient_in_a_group_leaves_every_parameter_alone(cls, kwargs):
    """A group's parameters are updated in one call: the last one's bad gradient
    raises before the first one changes."""
    a, b = P(np.ones(3)), P(np.ones(2))
    opt = cls([a, b], **kwargs)
    a.grad, b.grad = np.ones(3), np.ones(5)
    with pytest.raises(ValueError, match="gradient of shape"):
        opt.step()
    np.testing.assert_array_equal(a.data, 1)
    np.testing.assert_array_equal(b.data, 1)
    assert all(s.get("step", 0) == 0 and "momentum_buffer" not in s for s in opt.state.values())


@pytest.mark.parametrize("checked", [False, True])
def test_group_of_mixed_dtypes_layouts_and_gradients(checked):
    """One group holding float32 and float64 parameters follows the formula,
    each parameter on its own: in the one-call path (plain arrays), and with a
    strided view and gradients given as a list and a Fortran-ordered array
    (checked=True: the path that checks each operand and copies)."""
    rng = np.random.default_rng(7)
    x32 = rng.standard_normal((4, 6)).astype(np.float32)
    x64 = rng.standard_normal(5)
    base = rng.standard_normal((6, 4))
    params = [P(x32, np.float32), P(x64), P(base)]
    grads = [rng.standard_normal((4, 6)).astype(np.float32), rng.standard_normal(5),
             rng.standard_normal((6, 4))]
    if checked:
        params[2].data = np.ascontiguousarray(base.T).T      # strided, updated in place
        grads[0] = np.asfortranarray(grads[0])
        grads[1] = list(grads[1])
    arrays = [p.data for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=0.01).step()
    for p, x0, g, tol in zip(params, (x32, x64, base), grads, (1e-6, 1e-15, 1e-15)):
        np.testing.assert_allclose(p.data, x0 - 0.1 * (np.asarray(g) + 0.01 * x0), rtol=tol,
                                   atol=tol)
    assert all(p.data is a for p, a in zip(params, arrays))
    assert params[0].data.dtype == np.float32


def test_update_lists_must_match():
    with pytest.raises(ValueError, match="2 parameters"):
        K.sgd_updates([np.ones(2), np.ones(2)], [np.ones(2)], [None, None], 0.1)
    with pytest.raises(ValueError, match="1 parameters"):
        K.adam_updates([np.ones(2)], [np.ones(2)], [np.zeros(2)], [np.zeros(2)], [1, 1], 0.1,
                       0.9, 0.99, 1e-8)


def test_skips_params_without_grad_and_zero_grad():
    a, b = P(np.ones(3)), P(np.ones(2))
    opt = optim.SGD([a, b], lr=1.0, momentum=0.5)
    a.grad = np.array([1.0, 2.0, 3.0])
    opt.step()
    np.testing.assert_array_equal(a.data, [0.0, -1.0, -2.0])
    np.testing.assert_array_equal(b.data, [1.0, 1.0])
    opt.zero_grad(set_to_none=False)
    np.testing.assert_array_equal(a.grad, 0)
    assert b.grad is None
    opt.zero_grad()
    assert a.grad is None


def test_param_groups_use_their_own_options():
    a, b = P(np.zeros(2)), P(np.zeros(2))
    opt = optim.SGD([{"params": [a]}, {"params": [b], "lr": 0.5}], lr=0.1)
    a.grad, b.grad = np.ones(2), np.ones(2)
    opt.step()
    np.testing.assert_allclose(a.data, -0.1)
    np.testing.assert_allclose(b.data, -0.5)


@pytest.mark.parametrize("cls,kwargs", [(optim.SGD, dict(lr=0.1, momentum=0.9)),
                                        (optim.Adam, dict(lr=0.01))])
def test_state_dict_round_trip_continues_identically(cls, kwargs):
    rng = np.random.default_rng(4)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = _grads(rng, SHAPES, 6)
    ref = [P(x) for x in init]
    expected = _run(cls(ref, **kwargs), ref, grads)

    params = [P(x) for x in init]
    opt = cls(params, **kwargs)
    _run(opt, params, grads[:3])
    state = opt.state_dict()
    resumed = [P(p.data) for p in params]
    opt2 = cls(resumed, lr=123.0)
    opt2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == kwargs["lr"]
    got = _run(opt2, resumed, grads[3:])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)
    # the saved state is a copy: stepping the old optimizer does not change it
    before = [v.copy() for s in state["state"].values() for v in s.values()
              if isinstance(v, np.ndarray)]
    _run(opt, params, grads[3:])
    after = [v for s in state["state"].values() for v in s.values() if isinstance(v, np.ndarray)]
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x, y)


def test_load_state_dict_rejects_mismatch():
    opt = optim.SGD([P(np.zeros(3))], lr=0.1, momentum=0.9)
    other = optim.SGD([P(np.zeros(3)), P(np.zeros(2))], lr=0.1)
    with pytest.raises(ValueError, match="parameters"):
        opt.load_state_dict(other.state_dict())
    with pytest.raises(ValueError, match="state_dict"):
        opt.load_state_dict({"bogus": 1})


@pytest.mark.parametrize("bad", [dict(lr=-1.0), dict(lr=0.1, momentum=-0.1),
                                 dict(lr=0.1, nesterov=True), dict(lr=0.1, weight_decay=-1)])
def test_sgd_bad_hyperparameters(bad):
    with pytest.raises(ValueError):
        optim.SGD([P(np.zeros(2))], **bad)


def test_bad_params():
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD(P(np.zeros(2)), lr=0.1)
    with pytest.raises(TypeError):
        optim.SGD([np.zeros(2)], lr=0.1)
    with pytest.raises(ValueError, match="beta"):
        optim.Adam([P(np.zeros(2))], betas=(0.9, 1.0))
    p = P(np.zeros(2))
    with pytest.raises(ValueError, match="more than once"):
        optim.SGD([p, P(np.zeros(3)), p], lr=0.1)
    with pytest.raises(ValueError, match="more than one parameter group"):
        optim.SGD([{"params": [p]}, {"params": [p]}], lr=0.1)


def _lrs(sched, n):
    out = []
    for _ in range(n):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


def test_schedulers_match_formulas():
    n, base = 12, 0.3
    mk = lambda: optim.SGD([P(np.zeros(1))], lr=base)  # noqa: E731
    assert _lrs(lr_scheduler.StepLR(mk(), step_size=4, gamma=0.5), n) == \
        pytest.approx([base * 0.5 ** (e // 4) for e in range(n)])
    assert _lrs(lr_scheduler.ExponentialLR(mk(), gamma=0.9), n) == \
        pytest.approx([base * 0.9 ** e for e in range(n)])
    assert _lrs(lr_scheduler.CosineAnnealingLR(mk(), T_max=10, eta_min=0.01), n) == \
        pytest.approx([0.01 + (base - 0.01) * (1 + math.cos(math.pi * e / 10)) / 2
                       for e in range(n)])


def test_schedulers_against_torch():
    torch = pytest.importorskip("torch")
    for name, kwargs in [("StepLR", dict(step_size=3, gamma=0.3)),
                         ("ExponentialLR", dict(gamma=0.8)),
                         ("CosineAnnealingLR", dict(T_max=7, eta_min=0.001))]:
        ours = getattr(lr_scheduler, name)(optim.SGD([P(np.zeros(1))], lr=0.2), **kwargs)
        topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.2)
        theirs = getattr(torch.optim.lr_scheduler, name)(topt, **kwargs)
        expected = []
        for _ in range(9):
            expected.append(theirs.get_last_lr()[0])
            topt.step()
            theirs.step()
        assert _lrs(ours, 9) == pytest.approx(expected, rel=1e-12), name


def test_scheduler_state_dict_resumes():
    opt = optim.SGD([P(np.zeros(1))], lr=1.0)
    sched = lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    _lrs(sched, 3)
    state = sched.state_dict()
    rest = _lrs(sched, 4)
    opt2 = optim.SGD([P(np.zeros(1))], lr=1.0)
    sched2 = lr_scheduler.CosineAnnealingLR(opt2, T_max=8)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == rest[0]
    assert _lrs(sched2, 4) == rest
    with pytest.raises(ValueError):
        lr_scheduler.StepLR(opt, step_size=0)
