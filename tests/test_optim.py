import math

import numpy as np
import pytest

from fastbn import optim
from fastbn.optim import lr_scheduler


class P:
    """A bare parameter: the optimizers need only .data and .grad."""

    def __init__(self, data):
        self.data = np.array(data, dtype=np.float64)
        self.grad = None


def _grads(rng, shapes, steps):
    return [[rng.standard_normal(s) for s in shapes] for _ in range(steps)]


def _run(opt, params, grads):
    for step in grads:
        for p, g in zip(params, step):
            p.grad = g.copy()
        opt.step()
    return [p.data.copy() for p in params]


SHAPES = [(3, 4), (5,)]


@pytest.mark.parametrize("momentum,dampening,nesterov,wd", [
    (0.0, 0.0, False, 0.0), (0.9, 0.0, False, 0.0), (0.9, 0.3, False, 1e-2),
    (0.8, 0.0, True, 5e-3)])
def test_sgd_matches_formula(momentum, dampening, nesterov, wd):
    rng = np.random.default_rng(1)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = _grads(rng, SHAPES, 5)
    params = [P(x) for x in init]
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
        np.testing.assert_allclose(got[i], x, rtol=1e-12, atol=1e-12)
        assert not np.allclose(got[i], x0)


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_adam_matches_formula(wd):
    rng = np.random.default_rng(2)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = _grads(rng, SHAPES, 6)
    params = [P(x) for x in init]
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
        np.testing.assert_allclose(got[i], x, rtol=1e-10, atol=1e-12)


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
