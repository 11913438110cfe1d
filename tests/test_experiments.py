"""The paper reproductions (fastbn/experiments): a tiny run end to end on the digits, the
percentiles against an independent float64 NumPy forward pass, data selection."""
import json
import os
import sys

import numpy as np
import pytest

from fastbn import cli, nn
from fastbn.experiments import common, figure1

TINY = ["--dataset", "digits", "--steps", "200", "--eval-every", "50", "--quiet"]


def _has_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_tiny_runs_end_to_end_and_writes_the_files(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["reproduce", "figure1", *TINY, "--out", out]) == 0
    assert cli.main(["reproduce", "lr-sweep", *TINY, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "the embedded UCI digits" in printed  # it says which data it used

    with open(os.path.join(out, "results.json")) as f:
        results = json.load(f)
    assert set(results) == {"figure1", "lr_sweep"}  # the second run kept the first's
    fig = results["figure1"]
    for net in fig["nets"].values():
        assert net["steps"] == [0, 50, 100, 150, 200]
        assert len(net["accuracy"]) == 5 and all(0 <= a <= 1 for a in net["accuracy"])
        assert net["ms_per_step_median"] > 0
    assert fig["nets"]["bn"]["accuracy"][-1] > 0.8  # BN learns the digits in 200 steps

    sweep = results["lr_sweep"]
    assert [r["label"] for r in sweep["runs"]] == ["no BN x1", "BN x1", "BN x5", "BN x30",
                                                   "no BN x5", "no BN x30"]
    for run in sweep["runs"]:
        assert run["lr"] == pytest.approx(sweep["config"]["lr"] * run["multiplier"])
        for target in (0.9, 0.95):
            hits = [i for i, a in enumerate(run["accuracy"]) if a >= target]
            expect = (run["steps"][hits[0]], run["seconds"][hits[0]]) if hits else (None, None)
            got = run["targets"][f"{target:g}"]
            assert (got["steps"], got["seconds"]) == expect

    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "## Figure 1" in md and "## Learning-rate sweep" in md
    assert f"{100 * fig['nets']['bn']['accuracy'][-1]:.2f}%" in md
    pngs = [os.path.join(out, name) for name in ("figure1.png", "lr_sweep.png")]
    if _has_matplotlib():
        for png in pngs:
            with open(png, "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    else:
        assert 'pip install "fastbn[plot]"' in printed
        assert not any(os.path.exists(p) for p in pngs)
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_without_matplotlib_writes_json_and_markdown_and_says_how(tmp_path, capsys,
                                                                  monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    out = str(tmp_path)
    assert cli.main(["reproduce", "figure1", *TINY, "--steps", "20", "--out", out]) == 0
    assert 'pip install "fastbn[plot]"' in capsys.readouterr().out
    assert sorted(os.listdir(out)) == ["results.json", "results.md"]


def _reference_sigmoid_input(model, images):
    """The last sigmoid's input, in float64 NumPy from the model's parameters (eval mode:
    BN uses its running statistics)."""
    layers = list(model)
    last = max(i for i, layer in enumerate(layers) if isinstance(layer, nn.Sigmoid))
    h = images.astype(np.float64)
    for layer in layers[:last]:
        if isinstance(layer, nn.Linear):
            h = h @ layer.weight.data.astype(np.float64).T
            if layer.bias is not None:
                h = h + layer.bias.data
        elif isinstance(layer, nn.BatchNorm1d):
            h = ((h - layer.running_mean) / np.sqrt(layer.running_var.astype(np.float64)
                                                     + layer.eps) * layer.weight.data
                 + layer.bias.data)
        else:
            h = 1 / (1 + np.exp(-h))
    return h


def test_percentiles_are_those_of_the_recorded_activations():
    args = cli.build_parser().parse_args(["reproduce", "figure1", *TINY, "--steps", "150",
                                          "--unit", "7", "--probe-size", "120"])
    probe = common.load_experiment_data("digits").x_test[:120]
    mine = {"baseline": [], "bn": []}

    def on_record(key, step, model):
        mine[key].append(_reference_sigmoid_input(model, probe))

    result = figure1.run(args, say=lambda *a: None, on_record=on_record)
    assert result["config"]["unit"] == 7 and result["config"]["probe_images"] == 120
    for key, net in result["nets"].items():
        layer = np.stack(mine[key])  # records x images x units
        assert len(layer) == len(net["steps"]) == 4  # steps 0, 50, 100, 150
        recorded = layer[:, :, 7]
        assert np.ptp(recorded[-1]) > 1e-3  # the unit's input varies across images
        expect = np.percentile(recorded, [15, 50, 85], axis=1)
        got = np.array([net["percentiles"][p] for p in ("15", "50", "85")])
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-5)
        # the drift summary, over every unit, from the first record at or after step 3
        # (2% of 150) to the last
        assert net["drift"]["from_step"] == 50
        p15, p50, p85 = np.percentile(layer[[1, -1]], [15, 50, 85], axis=1)
        assert net["drift"]["median"] == pytest.approx(np.abs(p50[1] - p50[0]).mean(),
                                                       rel=1e-4, abs=1e-5)
        spread = p85 - p15
        assert net["drift"]["spread"] == pytest.approx(np.abs(spread[1] - spread[0]).mean(),
                                                       rel=1e-4, abs=1e-5)


def test_both_nets_start_from_the_same_gaussian_weights():
    plain = common.paper_mlp(784, bn=False, init_std=0.01, seed=3)
    bn = common.paper_mlp(784, bn=True, init_std=0.01, seed=3)
    kinds = [type(m).__name__ for m in bn]
    assert kinds == ["Linear", "BatchNorm1d", "Sigmoid"] * 3 + ["Linear"]
    assert [type(m).__name__ for m in plain] == ["Linear", "Sigmoid"] * 3 + ["Linear"]
    plain_linear = [m for m in plain if isinstance(m, nn.Linear)]
    bn_linear = [m for m in bn if isinstance(m, nn.Linear)]
    assert [m.bias is None for m in bn_linear] == [True, True, True, False]
    for a, b in zip(plain_linear, bn_linear):
        np.testing.assert_array_equal(a.weight.data, b.weight.data)
        assert a.bias is None or not a.bias.data.any()
    w = plain_linear[0].weight.data
    assert w.shape == (100, 784) and abs(w.std() - 0.01) < 5e-4 and abs(w.mean()) < 5e-4
    other = common.paper_mlp(784, bn=False, init_std=0.01, seed=4)
    assert not np.array_equal(other[0].weight.data, w)


def test_data_selection(tmp_path, monkeypatch):
    if os.path.isdir(common.SHARED_MNIST):
        d = common.load_experiment_data()
        assert (len(d.x_train), len(d.x_test)) == (8000, 2000) and d.x_train.shape[1] == 784
        assert "8000 train / 2000 test" in d.source
    monkeypatch.setattr(common, "SHARED_MNIST", str(tmp_path / "absent"))
    with pytest.warns(UserWarning, match="digits"):
        d = common.load_experiment_data()
    assert d.x_train.shape[1] == 64 and "digits" in d.source
    with pytest.raises(ValueError, match="--data-dir"):
        common.load_experiment_data("mnist")
    with pytest.raises(FileNotFoundError):
        common.load_experiment_data("auto", data_dir=str(tmp_path))


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["reproduce", "figure1", *TINY, "--unit", "100", "--out",
                     str(tmp_path)]) == 1
    assert "--unit 100" in capsys.readouterr().err
    assert cli.main(["reproduce", "lr-sweep", *TINY, "--targets", "1.5", "--out",
                     str(tmp_path)]) == 1
    assert "--targets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "figure1", "--steps", "0"])
    assert os.listdir(tmp_path) == []
