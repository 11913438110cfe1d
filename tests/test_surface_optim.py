"""AdamW, RMSprop, Adadelta, the schedulers MultiStepLR, LinearLR, OneCycleLR, SequentialLR
and ReduceLROnPlateau, clip_grad_norm_, and the optimizers' validation: each against a
plainly written float64 NumPy version of PyTorch's rule and against torch when it imports."""
import math

import numpy as np
import pytest

import fastbn
from fastbn import nn, optim
from fastbn.optim import lr_scheduler


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


def _lerp(a, b, w):
    return a + w * (b - a)


def adamw_ref(x, grads, lr, betas, eps, weight_decay, amsgrad):
    b1, b2 = betas
    m = v = vmax = np.zeros_like(x)
    for t, g in enumerate(grads, start=1):
        x = x * (1 - lr * weight_decay)
        m = _lerp(m, g, 1 - b1)
        v = b2 * v + (1 - b2) * g * g
        vmax = np.maximum(vmax, v)
        vh = (vmax if amsgrad else v) / (1 - b2 ** t)
        x = x - lr * (m / (1 - b1 ** t)) / (np.sqrt(vh) + eps)
    return x


def rmsprop_ref(x, grads, lr, alpha, eps, weight_decay, momentum, centered):
    sq = ga = buf = np.zeros_like(x)
    for g in grads:
        g = g + weight_decay * x
        sq = alpha * sq + (1 - alpha) * g * g
        if centered:
            ga = _lerp(ga, g, 1 - alpha)
            avg = np.sqrt(sq - ga * ga) + eps
        else:
            avg = np.sqrt(sq) + eps
        if momentum > 0:
            buf = momentum * buf + g / avg
            x = x - lr * buf
        else:
            x = x - lr * g / avg
    return x


def adadelta_ref(x, grads, lr, rho, eps, weight_decay):
    sq = acc = np.zeros_like(x)
    for g in grads:
        g = g + weight_decay * x
        sq = rho * sq + (1 - rho) * g * g
        delta = np.sqrt(acc + eps) / np.sqrt(sq + eps) * g
        acc = rho * acc + (1 - rho) * delta * delta
        x = x - lr * delta
    return x


CASES = [
    ("AdamW", dict(), adamw_ref, dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                                      amsgrad=False)),
    ("AdamW", dict(lr=0.02, betas=(0.3, 0.9), weight_decay=0.1, amsgrad=True), adamw_ref, None),
    ("RMSprop", dict(), rmsprop_ref, dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0,
                                          momentum=0, centered=False)),
    ("RMSprop", dict(lr=0.01, alpha=0.9, momentum=0.8, centered=True, weight_decay=1e-2),
     rmsprop_ref, None),
    ("RMSprop", dict(lr=0.005, alpha=0.3, momentum=0.5), rmsprop_ref, None),
    ("Adadelta", dict(), adadelta_ref, dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0)),
    ("Adadelta", dict(lr=0.5, rho=0.4, eps=1e-5, weight_decay=0.05), adadelta_ref, None),
]
# with a parameter above the kernels' serial cut-off, cut into blocks for threads
SHAPES = [(3, 4), (5,), (70001,)]


@pytest.mark.parametrize("name,kwargs,ref,defaults", CASES)
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
def test_new_optimizers_match_reference(name, kwargs, ref, defaults, dtype, tol):
    rng = np.random.default_rng(11)
    init = [rng.standard_normal(s) for s in SHAPES]
    grads = _grads(rng, SHAPES, 7)
    params = [P(x, dtype) for x in init]
    opt = getattr(optim, name)(params, **kwargs)
    options = {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    if defaults is not None:         # PyTorch's defaults
        assert options == defaults
    got = _run(opt, params, grads)
    for i, x0 in enumerate(init):
        expected = ref(x0, [g[i] for g in grads], **options)
        assert got[i].dtype == dtype
        np.testing.assert_allclose(got[i], expected, rtol=tol, atol=tol)
        assert not np.allclose(got[i], x0)
    assert all(s["step"] == 7 for s in opt.state.values())


@pytest.mark.parametrize("name,kwargs", [(c[0], c[1]) for c in CASES])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_new_optimizers_against_torch(name, kwargs, dtype):
    """Every operation as PyTorch's: within a few units in the last place after 8 steps
    (PyTorch's vector loops fuse some multiply-adds)."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = _grads(rng, SHAPES, 8)
    params = [P(x, dtype) for x in init]
    got = _run(getattr(optim, name)(params, **kwargs), params, grads)
    tparams = [torch.tensor(x, requires_grad=True) for x in init]
    topt = getattr(torch.optim, name)(tparams, **kwargs)
    for step in grads:
        for p, g in zip(tparams, step):
            p.grad = torch.tensor(g.astype(dtype))
        topt.step()
    tol = 1e-13 if dtype == np.float64 else 2e-6
    if kwargs.get("centered") or kwargs.get("alpha") == 0.3:
        tol *= 100       # sqrt(square_avg - grad_avg**2) cancels
    for a, b in zip(got, tparams):
        b = b.detach().numpy()
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * np.abs(b).max())
    # the same state names as PyTorch
    for p, tp in zip(params, tparams):
        ours = getattr(optim, name)
        assert set(topt.state[tp]) == set(_state_of(ours, params, kwargs, p))


def _state_of(cls, params, kwargs, p):
    opt = cls(params, **kwargs)
    for q in params:
        q.grad = np.zeros_like(q.data)
    opt.step()
    return opt.state[id(p)]


def _many_updates(threads, strided=False):
    rng = np.random.default_rng(5)
    shapes = [(300, 400), (7,)]
    init = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = _grads(rng, shapes, 3)
    out = []
    with fastbn.threads(threads):
        for name, kw in [c[:2] for c in CASES]:
            params = [P(x, np.float32) for x in init]
            if strided:  # a transposed view of a C-contiguous array: updated in place
                params[0].data = np.ascontiguousarray(init[0].T).T
            opt = getattr(optim, name)(params, **kw)
            out += _run(opt, params, grads)
            out += [v for s in opt.state.values() for v in s.values()
                    if isinstance(v, np.ndarray)]
    return out


def test_same_bits_at_any_thread_count_and_layout():
    one = _many_updates(1)
    for got in (_many_updates(2), _many_updates(3), _many_updates(1, strided=True)):
        assert len(got) == len(one)
        for a, b in zip(one, got):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name,kwargs", [(c[0], c[1]) for c in CASES] +
                         [("SGD", dict(lr=0.1, momentum=0.9)), ("Adam", dict(lr=0.1))])
@pytest.mark.parametrize("bad,error", [(np.ones(5), "gradient of shape"),
                                       (np.ones(2, np.complex128), "real"),
                                       (np.array(["1", "2"]), "real")])
def test_bad_gradient_leaves_every_parameter_and_state_alone(name, kwargs, bad, error):
    a, b = P(np.ones(3)), P(np.ones(2))
    opt = getattr(optim, name)([a, b], **kwargs)
    a.grad, b.grad = np.ones(3), bad
    with pytest.raises((ValueError, TypeError), match=error):
        opt.step()
    np.testing.assert_array_equal(a.data, 1)
    np.testing.assert_array_equal(b.data, 1)
    assert all(s.get("step", 0) == 0 and not any(np.any(v) for v in s.values()
                                                   if isinstance(v, np.ndarray))
               for s in opt.state.values())


def test_complex_gradient_refused_by_sgd_as_torch():
    """issue 19: a complex gradient was applied with its imaginary part dropped."""
    p = P(np.ones(2))
    opt = optim.SGD([p], lr=0.1)
    p.grad = np.array([1 + 2j, 3 - 1j])
    with pytest.raises(TypeError, match="real numbers"):
        opt.step()
    np.testing.assert_array_equal(p.data, 1)


@pytest.mark.parametrize("name,bad", [
    ("SGD", dict(lr="0.1")), ("SGD", dict(lr=-0.1)), ("Adam", dict(betas=(1.0, 0.999))),
    ("Adam", dict(betas=(0.9, 1.0))), ("Adam", dict(eps=-1.0)),
    ("AdamW", dict(betas=(1.0, 0.9))), ("AdamW", dict(lr="1e-3")), ("AdamW", dict(eps=-1e-8)),
    ("AdamW", dict(weight_decay=-0.1)),
    ("RMSprop", dict(alpha=-0.1)), ("RMSprop", dict(momentum=-1.0)), ("RMSprop", dict(eps=-1.0)),
    ("RMSprop", dict(weight_decay=-1.0)), ("RMSprop", dict(lr=-1.0)),
    ("Adadelta", dict(rho=1.5)), ("Adadelta", dict(rho=-0.1)), ("Adadelta", dict(eps=-1.0)),
    ("Adadelta", dict(lr=-1.0)), ("Adadelta", dict(weight_decay=-1.0))])
def test_bad_hyperparameters_refused_as_torch(name, bad):
    with pytest.raises((ValueError, TypeError)):
        getattr(optim, name)([P(np.zeros(2))], **bad)
    torch = pytest.importorskip("torch")
    kw = {"lr": 0.1} if name == "SGD" and "lr" not in bad else {}
    with pytest.raises((ValueError, TypeError)):
        getattr(torch.optim, name)([torch.zeros(2, requires_grad=True)], **kw, **bad)


@pytest.mark.parametrize("name,kwargs", [(c[0], c[1]) for c in CASES])
def test_state_dict_round_trip_through_save_and_load(tmp_path, name, kwargs):
    rng = np.random.default_rng(4)
    shapes = [(3, 4), (5,)]
    init = [rng.standard_normal(s) for s in shapes]
    grads = _grads(rng, shapes, 6)
    ref = [P(x) for x in init]
    expected = _run(getattr(optim, name)(ref, **kwargs), ref, grads)
    params = [P(x) for x in init]
    opt = getattr(optim, name)(params, **kwargs)
    _run(opt, params, grads[:3])
    fastbn.save(opt.state_dict(), tmp_path / "opt.pt")
    resumed = [P(p.data) for p in params]
    opt2 = getattr(optim, name)(resumed, lr=123.0)
    opt2.load_state_dict(fastbn.load(tmp_path / "opt.pt"))
    got = _run(opt2, resumed, grads[3:])
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def test_state_dict_of_another_optimizer_is_refused():
    """issue 19: an Adam state dict loaded into SGD silently."""
    def stepped(cls, **kw):
        params = [P(np.ones(3)), P(np.ones(2))]
        opt = cls(params, **kw)
        _run(opt, params, _grads(np.random.default_rng(0), [(3,), (2,)], 2))
        return opt

    adam, sgd = stepped(optim.Adam), stepped(optim.SGD, lr=0.1, momentum=0.9)
    for target, source, what in [(sgd, adam, "betas"), (adam, sgd, "momentum"),
                                 (stepped(optim.Adadelta), stepped(optim.RMSprop), "alpha"),
                                 (stepped(optim.RMSprop), stepped(optim.AdamW), "amsgrad")]:
        before = target.state_dict()
        with pytest.raises(ValueError, match=what):
            target.load_state_dict(source.state_dict())
        after = target.state_dict()          # all or nothing: nothing changed
        assert after["param_groups"] == before["param_groups"]
        for k in before["state"]:
            for n, v in before["state"][k].items():
                np.testing.assert_array_equal(after["state"][k][n], v)


def test_per_parameter_state_must_fit():
    params = [P(np.ones(3)), P(np.ones(2))]
    opt = optim.Adam(params)
    _run(opt, params, _grads(np.random.default_rng(0), [(3,), (2,)], 1))
    good = opt.state_dict()

    def variant(edit):
        state = {"param_groups": good["param_groups"],
                 "state": {k: dict(v) for k, v in good["state"].items()}}
        edit(state["state"])
        return state

    bad = [(lambda s: s[0].update(momentum_buffer=np.zeros(3)), "momentum_buffer"),
           (lambda s: s[0].pop("exp_avg_sq"), "lacks"),
           (lambda s: s[1].update(exp_avg=np.zeros(3)), "shape"),
           (lambda s: s[1].update(step=-1), "step"),
           (lambda s: s[1].update(step=1.5), "step"),
           (lambda s: s.update({5: {}}), "unknown parameter")]
    for edit, match in bad:
        with pytest.raises(ValueError, match=match):
            opt.load_state_dict(variant(edit))
    # PyTorch keeps the step as a float tensor, and amsgrad's extra state is asked for
    ok = variant(lambda s: s[0].update(step=np.array(1.0)))
    opt.load_state_dict(ok)
    assert opt.state[id(params[0])]["step"] == 1
    adamw = optim.AdamW(params, amsgrad=True)
    with pytest.raises(ValueError, match="max_exp_avg_sq"):
        adamw.load_state_dict({**good, "param_groups": [
            {**good["param_groups"][0], "amsgrad": True}]})


def test_torch_state_dict_loads():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(9)
    init = [rng.standard_normal(s) for s in [(3, 4), (5,)]]
    grads = _grads(rng, [(3, 4), (5,)], 4)
    tparams = [torch.tensor(x, requires_grad=True) for x in init]
    topt = torch.optim.Adadelta(tparams, lr=0.5)
    for step in grads[:2]:
        for p, g in zip(tparams, step):
            p.grad = torch.tensor(g)
        topt.step()
    state = topt.state_dict()
    state["param_groups"] = [{k: v for k, v in g.items() if k in ("lr", "rho", "eps",
                                                                   "weight_decay", "params")}
                             for g in state["param_groups"]]
    params = [P(p.detach().numpy()) for p in tparams]
    opt = optim.Adadelta(params)
    opt.load_state_dict(state)
    got = _run(opt, params, grads[2:])
    for step in grads[2:]:
        for p, g in zip(tparams, step):
            p.grad = torch.tensor(g)
        topt.step()
    for a, b in zip(got, tparams):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-13)


# -- schedulers --------------------------------------------------------------------------------
def _trace(opt, sched, n, metrics=None):
    out = []
    for i in range(n):
        group = opt.param_groups[0]
        momentum = group.get("momentum", group.get("betas", (None,))[0])
        out.append((group["lr"], np.nan if momentum is None else momentum))
        opt.step()
        sched.step() if metrics is None else sched.step(metrics[i])
    return np.array(out, dtype=float)


SCHEDULES = [
    ("MultiStepLR", "SGD", lambda m, o: m.MultiStepLR(o, [3, 7, 7, 12], gamma=0.5)),
    ("LinearLR", "SGD", lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=6)),
    ("LinearLR", "SGD", lambda m, o: m.LinearLR(o, 1.0, 0.2, 4)),
    ("OneCycleLR", "SGD", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=25)),
    ("OneCycleLR", "SGD", lambda m, o: m.OneCycleLR(o, max_lr=1.0, total_steps=25,
                                                    three_phase=True, anneal_strategy="linear",
                                                    div_factor=10.0, pct_start=0.2)),
    ("OneCycleLR", "Adam", lambda m, o: m.OneCycleLR(o, max_lr=[0.5], epochs=5,
                                                     steps_per_epoch=5, base_momentum=0.8)),
    ("OneCycleLR", "Adadelta", lambda m, o: m.OneCycleLR(o, 0.5, 25, cycle_momentum=False)),
    ("SequentialLR", "SGD", lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.1, total_iters=5), m.CosineAnnealingLR(o, T_max=10),
            m.ExponentialLR(o, 0.9)], [5, 15])),
]


def _pair(opt_name, make, kwargs=None):
    torch = pytest.importorskip("torch")
    kw = {"momentum": 0.9} if opt_name == "SGD" else {}
    ours_opt = getattr(optim, opt_name)([P(np.zeros(1))], lr=0.2, **kw)
    theirs_opt = getattr(torch.optim, opt_name)([torch.zeros(1, requires_grad=True)], lr=0.2,
                                                **kw)
    return (ours_opt, make(lr_scheduler, ours_opt)), (theirs_opt,
                                                     make(torch.optim.lr_scheduler, theirs_opt))


@pytest.mark.parametrize("name,opt_name,make", SCHEDULES)
def test_schedulers_against_torch(name, opt_name, make):
    (o, s), (to, ts) = _pair(opt_name, make)
    got, expected = _trace(o, s, 25), _trace(to, ts, 25)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    assert s.get_last_lr() == pytest.approx(ts.get_last_lr(), rel=1e-12)
    assert type(s).__name__ == name


@pytest.mark.parametrize("kwargs", [dict(patience=2),
                                    dict(patience=1, cooldown=2, mode="max",
                                         threshold_mode="abs", threshold=0.5),
                                    dict(patience=0, min_lr=0.05, factor=0.5),
                                    dict(threshold=0.1, patience=1)])
def test_reduce_lr_on_plateau_against_torch(kwargs):
    metrics = [5, 4, 4, 4, 4, 3.9, 3.9, 3.9, 3.9, 3.9, 3.9, 1, 1, 1, 1, 0.95, 1, 1, 2, 0.5]
    make = lambda m, o: m.ReduceLROnPlateau(o, **kwargs)  # noqa: E731
    (o, s), (to, ts) = _pair("SGD", make)
    got = _trace(o, s, len(metrics), [fastbn.tensor(m) for m in metrics])
    expected = _trace(to, ts, len(metrics), metrics)
    np.testing.assert_array_equal(got, expected)
    assert got[-1, 0] < got[0, 0]


def test_multistep_and_linear_match_formulas():
    base = 0.3
    mk = lambda: optim.SGD([P(np.zeros(1))], lr=base)  # noqa: E731
    got = _trace(*(lambda o: (o, lr_scheduler.MultiStepLR(o, [2, 5], 0.1)))(mk()), 8)[:, 0]
    np.testing.assert_allclose(got, [base * 0.1 ** ((e >= 2) + (e >= 5)) for e in range(8)])
    got = _trace(*(lambda o: (o, lr_scheduler.LinearLR(o, 0.25, 1.0, 3)))(mk()), 6)[:, 0]
    np.testing.assert_allclose(got, [base * (0.25 + 0.75 * min(e, 3) / 3) for e in range(6)])
    opt = mk()
    sched = lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=10, anneal_strategy="linear",
                                    pct_start=0.5, div_factor=4.0, final_div_factor=2.0)
    lrs = _trace(opt, sched, 10)[:, 0]
    # up from 0.25 to 1 over steps 0..4, then down to 0.125 at step 9
    np.testing.assert_allclose(lrs[:5], np.linspace(0.25, 1.0, 5))
    np.testing.assert_allclose(lrs[4:], np.linspace(1.0, 0.125, 6))
    with pytest.raises(ValueError, match="Tried to step 11"):
        sched.step()
    assert sched.last_epoch == 10


def test_scheduler_errors():
    opt = optim.SGD([P(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="milestones"):
        lr_scheduler.MultiStepLR(opt, [1.5])
    with pytest.raises(ValueError, match="Starting"):
        lr_scheduler.LinearLR(opt, start_factor=0)
    with pytest.raises(ValueError, match="Ending"):
        lr_scheduler.LinearLR(opt, end_factor=1.5)
    with pytest.raises(ValueError, match="total_steps"):
        lr_scheduler.OneCycleLR(opt, 0.1)
    with pytest.raises(ValueError, match="pct_start"):
        lr_scheduler.OneCycleLR(opt, 0.1, total_steps=10, pct_start=1.5)
    with pytest.raises(ValueError, match="phase"):
        lr_scheduler.OneCycleLR(opt, 0.1, total_steps=10, pct_start=0.1)
    with pytest.raises(ValueError, match="anneal_strategy"):
        lr_scheduler.OneCycleLR(opt, 0.1, total_steps=10, anneal_strategy="exp")
    with pytest.raises(ValueError, match="momentum or beta1"):
        lr_scheduler.OneCycleLR(optim.Adadelta([P(np.zeros(1))]), 0.1, total_steps=10)
    with pytest.raises(ValueError, match="Factor"):
        lr_scheduler.ReduceLROnPlateau(opt, factor=1.0)
    with pytest.raises(ValueError, match="mode"):
        lr_scheduler.ReduceLROnPlateau(opt, mode="lowest")
    other = optim.SGD([P(np.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="same optimizer"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(other, 2)], [])
    with pytest.raises(ValueError, match="milestones"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.StepLR(opt, 2)], [3])
    with pytest.raises(ValueError, match="ReduceLROnPlateau"):
        lr_scheduler.SequentialLR(opt, [lr_scheduler.ReduceLROnPlateau(opt)], [])


@pytest.mark.parametrize("make", [
    lambda o: lr_scheduler.MultiStepLR(o, [2, 4]),
    lambda o: lr_scheduler.LinearLR(o, 0.2, total_iters=5),
    lambda o: lr_scheduler.OneCycleLR(o, 1.0, total_steps=12),
    lambda o: lr_scheduler.SequentialLR(o, [lr_scheduler.LinearLR(o, 0.2, total_iters=3),
                                            lr_scheduler.ExponentialLR(o, 0.7)], [3]),
    lambda o: lr_scheduler.ReduceLROnPlateau(o, patience=1)])
def test_scheduler_state_dict_resumes_through_save_and_load(tmp_path, make):
    metrics = [3, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1]
    plateau = "Plateau" in type(make(optim.SGD([P(np.zeros(1))], lr=1.0,
                                               momentum=0.9))).__name__
    opt = optim.SGD([P(np.zeros(1))], lr=1.0, momentum=0.9)
    sched = make(opt)
    _trace(opt, sched, 4, metrics[:4] if plateau else None)
    fastbn.save({"opt": opt.state_dict(), "sched": sched.state_dict()}, tmp_path / "s.pt")
    rest = _trace(opt, sched, 6, metrics[4:10] if plateau else None)
    opt2 = optim.SGD([P(np.zeros(1))], lr=1.0, momentum=0.9)
    sched2 = make(opt2)
    saved = fastbn.load(tmp_path / "s.pt")
    opt2.load_state_dict(saved["opt"])
    sched2.load_state_dict(saved["sched"])
    np.testing.assert_array_equal(_trace(opt2, sched2, 6, metrics[4:10] if plateau else None),
                                  rest)


# -- clip_grad_norm_ -----------------------------------------------------------------------------
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.5, math.inf])
@pytest.mark.parametrize("max_norm", [0.5, 1e3])
def test_clip_grad_norm_against_reference_and_torch(norm_type, max_norm):
    rng = np.random.default_rng(3)
    shapes = [(4, 5), (7,), (2, 3, 3)]
    grads = [rng.standard_normal(s) for s in shapes]
    params = [nn.Parameter(np.zeros(s)) for s in shapes] + [nn.Parameter(np.zeros(2))]
    for p, g in zip(params, grads):
        p.grad = g.copy()
    total = nn.utils.clip_grad_norm_(params, max_norm, norm_type=norm_type)
    flat = np.concatenate([g.ravel() for g in grads])
    ref = np.abs(flat).max() if math.isinf(norm_type) else (np.abs(flat) ** norm_type).sum() ** (
        1 / norm_type)
    assert isinstance(total, fastbn.Tensor) and total.item() == pytest.approx(ref, rel=1e-12)
    coef = min(max_norm / (ref + 1e-6), 1.0)
    for p, g in zip(params, grads):
        np.testing.assert_allclose(p.grad, g * coef, rtol=1e-12)
    assert params[-1].grad is None
    torch = pytest.importorskip("torch")
    tparams = [torch.zeros(s, dtype=torch.float64, requires_grad=True) for s in shapes]
    for p, g in zip(tparams, grads):
        p.grad = torch.tensor(g)
    ttotal = torch.nn.utils.clip_grad_norm_(tparams, max_norm, norm_type=norm_type)
    assert total.item() == pytest.approx(ttotal.item(), rel=1e-12)
    for p, tp in zip(params, tparams):
        np.testing.assert_allclose(p.grad, tp.grad.numpy(), rtol=1e-12)


def test_clip_grad_norm_float32_single_tensor_and_errors():
    p = nn.Parameter(np.array([3.0, 4.0], np.float32))
    p.grad = np.array([3.0, 4.0], np.float32)
    total = nn.utils.clip_grad_norm_(p, 1.0)
    assert total.dtype == np.float32 and total.item() == pytest.approx(5.0)
    assert p.grad.dtype == np.float32
    np.testing.assert_allclose(p.grad, [0.6, 0.8], rtol=1e-5)
    p.grad = np.array([np.nan, 1.0], np.float32)
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)
    with pytest.raises(ValueError, match="max_norm"):
        nn.utils.clip_grad_norm_([p], -1.0)
    with pytest.raises(TypeError, match="max_norm"):
        nn.utils.clip_grad_norm_([p], "1")
    p.grad = np.ones(3, np.float32)
    with pytest.raises(ValueError, match="shape"):
        nn.utils.clip_grad_norm_([p], 1.0)
    assert nn.utils.clip_grad_norm_([nn.Parameter(np.ones(2))], 1.0).item() == 0.0
