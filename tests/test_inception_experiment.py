"""reproduce inception: the variants' nets and settings, the same initial weights and
batches for all, a quick run end to end, and train_net's momentum, weight decay and
per-step decay against a float64 NumPy SGD."""
import json
import os

import numpy as np
import pytest

from fastbn import cli, nn
from fastbn.experiments import common, inception

QUICK = ["--quick", "--dataset", "digits", "--quiet"]


def _weights(model):
    return [m.weight.data.copy() for m in model.modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))]


def test_variants_start_from_the_same_weights():
    nets = {v: inception.build(v, 1, seed=3, dropout=0.4) for v in inception.VARIANTS}
    reference = _weights(nets["inception"])
    assert len(reference) > 50
    for variant, net in nets.items():
        _, bn, activation, _, accelerated = inception.VARIANTS[variant]
        for a, b in zip(reference, _weights(net)):
            np.testing.assert_array_equal(a, b, err_msg=variant)
        norms = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
        convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
        assert len(norms) == (len(convs) if bn else 0), variant
        assert all((c.bias is None) == bn for c in convs), variant
        assert all(not c.bias.data.any() for c in convs if c.bias is not None)
        assert net.conv1.activation == activation
        assert net.dropout.p == (0.0 if accelerated else 0.4), variant
    assert not np.array_equal(_weights(inception.build("inception", 1, seed=4))[0],
                              reference[0])
    with pytest.raises(ValueError, match="variant"):
        inception.build("bn_x10")


def test_quick_run_end_to_end(tmp_path, monkeypatch, capsys):
    seen = {}
    real = common.train_net

    class Batches:
        def __init__(self):
            self.labels = []

        def before_step(self, step, x, y):
            self.labels.append(np.asarray(y.data).copy())

    def spy(model, d, lr, steps, *args, **kwargs):
        hook = Batches()
        seen[kwargs["desc"]] = (_weights(model), hook, kwargs)
        return real(model, d, lr, steps, *args, hook=hook, **kwargs)

    monkeypatch.setattr(common, "train_net", spy)
    out = str(tmp_path)
    assert cli.main(["reproduce", "inception", *QUICK, "--variants", "bn_x5_sigmoid",
                     "bn_baseline", "bn_x30", "--out", out]) == 0
    assert "the embedded UCI digits" in capsys.readouterr().out
    with open(os.path.join(out, "results.json")) as f:
        result = json.load(f)["inception"]
    cfg, runs = result["config"], result["runs"]
    assert cfg["quick"] and cfg["steps"] == 40 and cfg["eval_size"] == 200
    # the baseline first, always
    assert [r["label"] for r in runs] == ["Inception", "BN-x5-Sigmoid", "BN-Baseline", "BN-x30"]

    # the same initial weights and batches for every variant; each its own settings
    first = seen["Inception"]
    for r in runs:
        weights, hook, kwargs = seen[r["label"]]
        for a, b in zip(first[0], weights):
            np.testing.assert_array_equal(a, b)
        assert len(hook.labels) == 40
        for a, b in zip(first[1].labels, hook.labels):
            np.testing.assert_array_equal(a, b)
        _, _, _, multiple, accelerated = inception.VARIANTS[r["variant"]]
        assert r["lr"] == pytest.approx(cfg["lr"] * multiple)
        assert kwargs["momentum"] == cfg["momentum"]
        assert kwargs["weight_decay"] == pytest.approx(
            cfg["weight_decay"] / (5 if accelerated else 1))
        assert kwargs["gamma"] ** 40 == pytest.approx(cfg["decay"] ** (6 if accelerated else 1))

    # the target is the baseline's best; steps to it and the speed-ups follow the records
    target = runs[0]["best_accuracy"]
    assert result["target"] == target == max(runs[0]["accuracy"])
    base_steps = runs[0]["reach_steps"]
    for r in runs:
        assert r["steps"][0] == 0 and r["steps"][-1] == 40 and len(r["accuracy"]) == 5
        hits = [s for s, a in zip(r["steps"], r["accuracy"]) if a >= target]
        assert r["reach_steps"] == (hits[0] if hits else None)
        if hits:
            assert r["speedup_steps"] == pytest.approx(base_steps / hits[0])
            assert r["speedup_time"] == pytest.approx(
                base_steps * runs[0]["step_ms"] / (hits[0] * r["step_ms"]))
            assert r["reach_seconds"] == pytest.approx(hits[0] * r["step_ms"] / 1e3)
        assert 0 <= r["final_accuracy"] <= 1 and r["step_ms"] > 0
    # BN at 30 times the rate trains in 40 steps: well above chance, above the baseline
    by = {r["variant"]: r for r in runs}
    assert by["bn_x30"]["best_accuracy"] > max(result["chance"] + 0.2, target)

    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "## BN-Inception" in md
    header = next(line for line in md.splitlines() if line.startswith("| variant"))
    assert header.count("|") == 9 and "Inception's best" in header and "ms/step" in header
    rows = [line for line in md.splitlines() if line.startswith("| BN-") or
            line.startswith("| Inception |")]
    assert len(rows) == 4 and all(row.count("|") == 9 for row in rows)
    png = os.path.join(out, "inception.png")
    if os.path.exists(png):
        with open(png, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_settle_quick():
    parser = cli.build_parser()
    args = parser.parse_args(["reproduce", "inception", "--quick", "--steps", "7"])
    common.settle_quick(args, inception.SETTINGS)
    assert (args.steps, args.eval_every, args.eval_size, args.batch_size) == (7, 10, 200, 32)
    args = parser.parse_args(["reproduce", "inception"])
    common.settle_quick(args, inception.SETTINGS)
    assert (args.steps, args.eval_every, args.eval_size) == (250, 25, 500)


@pytest.mark.parametrize("bad", [["--decay", "0"], ["--momentum", "1.5"],
                                 ["--variants", "bn_x10"], ["--lr", "-1"]])
def test_bad_options_are_refused(bad, tmp_path):
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "inception", *QUICK, *bad, "--out", str(tmp_path)])
    assert os.listdir(tmp_path) == []


def test_train_net_momentum_weight_decay_and_decay_match_numpy():
    d = common.load_experiment_data("digits")
    model = nn.Sequential(nn.Linear(64, 10))
    w0, b0 = model[0].weight.data.astype(np.float64), model[0].bias.data.astype(np.float64)
    batches = []

    class Keep:
        def before_step(self, step, x, y):
            batches.append((np.asarray(x.data, np.float64), np.asarray(y.data)))

    lr, momentum, wd, gamma = 0.3, 0.8, 0.01, 0.7
    common.train_net(model, d, lr, 6, batch_size=20, seed=2, hook=Keep(), momentum=momentum,
                     weight_decay=wd, gamma=gamma)
    # PyTorch's SGD: buf = g (first step), then momentum * buf + g; lr * gamma ** step
    params, bufs = [w0, b0], [None, None]
    for step, (x, y) in enumerate(batches):
        logits = x @ params[0].T + params[1]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        p /= len(y)
        grads = [p.T @ x, p.sum(0)]
        for i, (param, g) in enumerate(zip(params, grads)):
            g = g + wd * param
            bufs[i] = g if bufs[i] is None else momentum * bufs[i] + g
            params[i] = param - lr * gamma ** step * bufs[i]
    np.testing.assert_allclose(model[0].weight.data, params[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model[0].bias.data, params[1], rtol=1e-4, atol=1e-5)
