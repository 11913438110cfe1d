"""reproduce smoothness: the landscape probes against a quadratic's analytic values, the
probes leave training bit for bit as it was, noisy BN's noise, a quick run end to end."""
import json
import os

import numpy as np
import pytest

from fastbn import Tensor, cli, nn, no_grad
from fastbn import random as fastbn_random
from fastbn.experiments import common, smoothness

QUICK = ["--quick", "--dataset", "digits", "--steps", "40", "--eval-every", "20",
         "--probe-every", "20", "--quiet"]


class Quadratic(nn.Module):
    """L(x) = x.A.x / 2 + b.x, a model whose loss ignores any batch."""

    def __init__(self, A, b, x):
        super().__init__()
        self.A, self.b = Tensor(A), Tensor(b)
        self.x = nn.Parameter(x.copy())

    def loss(self):
        return self.x @ self.A @ self.x * 0.5 + self.x @ self.b


def _loss(A, b, x):
    return 0.5 * x @ A @ x + b @ x


def test_probes_on_a_quadratic_give_the_analytic_values():
    rng = np.random.default_rng(0)
    n = 6
    q = rng.standard_normal((n, n))
    A = q @ q.T + 0.5 * np.eye(n)  # symmetric positive definite
    b, x = rng.standard_normal(n), rng.standard_normal(n)
    model = Quadratic(A, b, x)
    model.loss().backward()
    g = A @ x + b
    np.testing.assert_allclose(model.x.grad, g, rtol=1e-12)
    grad_before, data_before = model.x.grad, model.x.data.copy()
    etas = [0.01, 0.05, 0.1, 0.2]
    out = smoothness.landscape_probe(model, model.loss, etas)
    # L(x - eta g) = L(x) - eta |g|^2 + eta^2 g.A.g / 2; grad L(x) - grad L(x - eta g)
    # = eta A g, so the ratio to |eta g| is |A g| / |g| at every eta
    losses = [_loss(A, b, x - eta * g) for eta in etas]
    np.testing.assert_allclose(out["loss"], _loss(A, b, x), rtol=1e-12)
    np.testing.assert_allclose(out["losses"], losses, rtol=1e-10)
    np.testing.assert_allclose(out["grad_diffs"], [eta * np.linalg.norm(A @ g) for eta in etas],
                               rtol=1e-10)
    np.testing.assert_allclose(out["grad_norm"], np.linalg.norm(g), rtol=1e-12)
    np.testing.assert_allclose(out["beta"], np.linalg.norm(A @ g) / np.linalg.norm(g),
                               rtol=1e-10)
    np.testing.assert_allclose(out["loss_range"], np.ptp([_loss(A, b, x)] + losses),
                               rtol=1e-10)
    # the parameter and its gradient are as they were (the very same gradient array)
    assert model.x.grad is grad_before
    np.testing.assert_array_equal(model.x.data, data_before)


def test_beta_is_the_curvature_along_an_eigenvector():
    lam = np.array([3.0, 0.5, 7.0])
    model = Quadratic(np.diag(lam), np.zeros(3), np.array([0.0, 0.0, 2.0]))
    model.loss().backward()  # g = 14 e_3, an eigenvector of eigenvalue 7
    out = smoothness.landscape_probe(model, model.loss, [0.01, 0.1])
    assert out["beta"] == pytest.approx(7.0, rel=1e-12)
    # along e_3 the loss is 7 t^2 / 2 at t = 2 - 14 eta: t = 2, 1.86, 0.6
    np.testing.assert_allclose([out["loss"]] + out["losses"], [14.0, 12.1086, 1.26],
                               rtol=1e-12)


def _small_net(seed):
    """A little conv net with every kind of state a probe could disturb: BN running
    statistics, noise and dropout from the global generator."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), smoothness.NoisyBatchNorm2d(4),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.3),
                          nn.Linear(4 * 4 * 4, 10))
    return common.vgg_init(model, seed)


class _ProbeEveryStep:
    def __init__(self, model, same_draws=True):
        self.model, self.results, self.state = model, [], None
        self.same_draws = same_draws
        self.loss_fn = nn.CrossEntropyLoss()

    def before_step(self, step, x, y):
        if self.same_draws:
            self.state = fastbn_random.get_rng_state()

    def after_backward(self, step, x, y):
        self.results.append(smoothness.landscape_probe(
            self.model, lambda: self.loss_fn(self.model(x), y), [0.05, 0.4], self.state))


def test_probes_leave_training_exactly_as_it_was():
    d = common.load_experiment_data("digits")
    d = d._replace(x_train=common.as_images(d.x_train)[:300], y_train=d.y_train[:300],
                   x_test=common.as_images(d.x_test)[:100], y_test=d.y_test[:100])
    steps = list(range(1, 9))
    plain, probed = _small_net(1), _small_net(1)
    log = common.train_net(plain, d, 0.1, 8, 30, seed=2, record_steps=steps, progress=False)
    after_plain = fastbn_random.get_rng_state()
    hook = _ProbeEveryStep(probed)
    log2 = common.train_net(probed, d, 0.1, 8, 30, seed=2, record_steps=steps,
                            progress=False, hook=hook)
    assert fastbn_random.get_rng_state() == after_plain
    for (k, a), (_, b) in zip(plain.state_dict().items(), probed.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)  # parameters and running statistics
    assert log["loss"] == log2["loss"]
    # with the step's random state the probe's L(x) is the step's loss, bit for bit
    assert [r["loss"] for r in hook.results] == log2["loss"][1:]
    assert all(r["losses"][0] != r["loss"] for r in hook.results)
    assert log2["hook_seconds"] > 0
    # probes that draw their own noise and dropout masks give the generator back too
    again = _small_net(1)
    common.train_net(again, d, 0.1, 8, 30, seed=2, record_steps=steps, progress=False,
                     hook=_ProbeEveryStep(again, same_draws=False))
    assert fastbn_random.get_rng_state() == after_plain
    for (k, a), (_, b) in zip(plain.state_dict().items(), again.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=k)


def test_probe_errors():
    model = Quadratic(np.eye(2), np.zeros(2), np.ones(2))
    with pytest.raises(ValueError, match="after the step's backward"):
        smoothness.landscape_probe(model, model.loss, [0.1])
    model.loss().backward()
    with pytest.raises(ValueError, match="positive"):
        smoothness.landscape_probe(model, model.loss, [0.1, 0.0])


def test_noisy_batchnorm_noise():
    rng = np.random.default_rng(0)
    x = Tensor(rng.standard_normal((64, 3, 6, 6)).astype(np.float32))
    noisy, plain = smoothness.NoisyBatchNorm2d(3, 0.5, 1.0), nn.BatchNorm2d(3)
    fastbn_random.manual_seed(5)
    first = noisy(x).data - plain(x).data
    second = noisy(x).data - plain(x).data
    assert not np.allclose(first, second)  # the noise changes at every forward
    for noise in (first, second):
        per_channel = noise.transpose(1, 0, 2, 3).reshape(3, -1)
        assert np.all(np.abs(per_channel.mean(axis=1)) < 0.5 + 0.05)
        assert np.all(per_channel.std(axis=1) < 1.0 + 0.05)
        assert np.ptp(per_channel.mean(axis=1)) > 0.01  # a mean of its own per channel
    fastbn_random.manual_seed(5)
    np.testing.assert_array_equal(noisy(x).data - plain(x).data, first)  # seeded
    noisy.eval()
    plain.eval()
    with no_grad():
        np.testing.assert_array_equal(noisy(x).data, plain(x).data)
    with pytest.raises(ValueError, match="noise_mean"):
        smoothness.NoisyBatchNorm2d(3, -1.0, 1.0)


def test_nets_start_from_the_same_weights():
    nets = {kind: smoothness.vgg((1, 28, 28), kind, seed=3) for kind in smoothness.KINDS}
    convs = {k: [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
             for k, net in nets.items()}
    for a, b, c in zip(*convs.values()):
        np.testing.assert_array_equal(a.weight.data, b.weight.data)
        np.testing.assert_array_equal(a.weight.data, c.weight.data)
    first = convs["bn"][0].weight.data
    assert abs(first.std() - np.sqrt(2 / (8 * 9))) < 0.05  # He, fan-out
    assert [type(m).__name__ for m in nets["noisy"]][:4] == ["Conv2d", "NoisyBatchNorm2d",
                                                             "ReLU", "Conv2d"]


def test_quick_run_end_to_end(tmp_path, capsys):
    out = str(tmp_path)
    assert cli.main(["reproduce", "smoothness", *QUICK, "--out", out]) == 0
    assert "the embedded UCI digits" in capsys.readouterr().out
    with open(os.path.join(out, "results.json")) as f:
        result = json.load(f)["smoothness"]
    assert result["config"]["quick"] and result["config"]["lrs"] == [0.1]  # --quick's
    assert result["config"]["steps"] == 40  # the command line wins over --quick
    runs = {r["kind"]: r for r in result["runs"]}
    assert set(runs) == {"standard", "bn", "noisy"}
    assert runs["noisy"]["probes"] is None
    for kind in ("standard", "bn"):
        p = runs[kind]["probes"]
        assert p["step"] == [1, 20, 40]
        assert all(len(losses) == 8 for losses in p["losses"])
        assert p["median"]["beta"] == pytest.approx(float(np.median(p["beta"])))
        assert all(lo <= hi for lo, hi in zip(p["loss_min"], p["loss_max"]))
    tap = runs["noisy"]["tap"]
    assert tap["steps"] == [20, 40] and len(tap["percentiles"]["50"]) == 2
    assert set(result["step_ms"]) == {"standard", "bn", "noisy"}
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "## Smoothness" in md and "effective beta-smoothness" in md
    assert f"{100 * runs['bn']['final_accuracy']:.2f}%" in md
    if os.path.exists(os.path.join(out, "smoothness.png")):
        with open(os.path.join(out, "smoothness.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["reproduce", "smoothness", *QUICK, "--targets", "1.2", "--out",
                     str(tmp_path)]) == 1
    assert "--targets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "smoothness", "--noise-std", "-1"])
    assert os.listdir(tmp_path) == []
