"""reproduce baselines: the variants start from the same weights, the learning rate is
chosen on the validation images, a quick run end to end, --quick and its overrides."""
import json
import os

import numpy as np
import pytest

from fastbn import Tensor, cli, nn, no_grad
from fastbn.experiments import baselines, common

QUICK = ["--quick", "--dataset", "digits", "--mlp-steps", "40", "--convnet-steps", "12",
         "--validation", "300", "--quiet"]


def _weights(model):
    """The effective weights of every Linear and Conv2d, in order."""
    return [m.weight.data for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


@pytest.mark.parametrize("net,shape", [("mlp", 64), ("convnet", (1, 8, 8))])
def test_variants_start_from_the_same_function(net, shape):
    models = {v: baselines.build(net, v, shape, seed=4) for v in baselines.VARIANTS}
    x = Tensor(np.random.default_rng(0).standard_normal(
        (5,) + ((shape,) if net == "mlp" else shape)).astype(np.float32))
    for v, model in models.items():
        for a, b in zip(_weights(models["none"]), _weights(model)):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=v)
    kinds = {v: [type(m).__name__ for m in model] for v, model in models.items()}
    act = "Sigmoid" if net == "mlp" else "ReLU"
    assert kinds["l2"].count("L2Norm") == kinds["none"].count(act)
    assert kinds["dropout"].count("Dropout") == (3 if net == "mlp" else 1)
    assert kinds["bn_dropout"].count("Dropout") == kinds["dropout"].count("Dropout")
    wn = dict(models["wn"].named_parameters())
    layers = [i for i, m in enumerate(models["wn"]) if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert all(f"{i}.weight_g" in wn and f"{i}.weight" not in wn for i in layers)
    # weight norm leaves the function as it was; L2Norm's scale sqrt(C) starts it with
    # features of unit mean square
    for model in models.values():
        model.eval()
    with no_grad():
        np.testing.assert_allclose(models["wn"](x).data, models["none"](x).data, rtol=1e-4,
                                   atol=1e-6)
        l2 = next(m for m in models["l2"] if isinstance(m, nn.L2Norm))
        assert l2.weight.data[0] == pytest.approx(np.sqrt(l2.num_features))
    with pytest.raises(ValueError, match="variant"):
        baselines.build(net, "ln", shape)


def test_quick_run_end_to_end(tmp_path, capsys):
    out = str(tmp_path)
    assert cli.main(["reproduce", "baselines", *QUICK, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "the embedded UCI digits" in printed
    with open(os.path.join(out, "results.json")) as f:
        result = json.load(f)["baselines"]
    cfg = result["config"]
    assert cfg["quick"] and cfg["records"] == 1 and cfg["train_images"] == 1437 - 300
    for name, steps in (("mlp", 40), ("convnet", 12)):
        net = result["nets"][name]
        assert net["steps"] == steps
        runs = net["runs"]
        assert len(runs) == len(baselines.VARIANTS) * len(net["lrs"])
        assert set(net["step_ms"]) == set(baselines.VARIANTS)
        for variant, best in net["best"].items():
            mine = [r for r in runs if r["variant"] == variant]
            assert [r["lr"] for r in mine] == net["lrs"]
            top = max(r["val_accuracy"] for r in mine)
            assert runs[best]["variant"] == variant and runs[best]["val_accuracy"] == top
            assert runs[best]["lr"] == min(r["lr"] for r in mine if r["val_accuracy"] == top)
        for r in runs:
            assert r["steps"][-1] == steps and r["gap"] == pytest.approx(
                r["train_accuracy"] - r["accuracy"][-1])
            for t in cfg["targets"]:
                hits = [i for i, a in enumerate(r["accuracy"]) if a >= t]
                assert r["targets"][f"{t:g}"]["steps"] == (r["steps"][hits[0]] if hits else None)
    with open(os.path.join(out, "results.md")) as f:
        md = f.read()
    assert "## Baselines" in md and "### The Figure 1 MLP" in md and "weight norm" in md
    if os.path.exists(os.path.join(out, "baselines.png")):
        with open(os.path.join(out, "baselines.png"), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_settle_quick():
    parser = cli.build_parser()
    args = parser.parse_args(["reproduce", "baselines", "--quick", "--mlp-steps", "7"])
    common.settle_quick(args, baselines.SETTINGS)
    assert (args.mlp_steps, args.convnet_steps, args.records) == (7, 40, 1)
    args = parser.parse_args(["reproduce", "baselines"])
    common.settle_quick(args, baselines.SETTINGS)
    assert (args.mlp_steps, args.convnet_steps, args.records) == (3000, 200, 8)


def test_bad_settings_are_one_line_errors(tmp_path, capsys):
    assert cli.main(["reproduce", "baselines", *QUICK, "--validation", "1400", "--out",
                     str(tmp_path)]) == 1
    assert "--validation 1400" in capsys.readouterr().err
    assert cli.main(["reproduce", "baselines", *QUICK, "--targets", "0.9", "1", "--out",
                     str(tmp_path)]) == 1
    assert "--targets" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "baselines", "--variants", "layernorm"])
    assert os.listdir(tmp_path) == []
