"""``python -m fastbn train --norm ... --recalibrate``: the model conversion, what a
checkpoint records and a resumed run keeps, recalibration of the running statistics."""
import io

import numpy as np
import pytest

from fastbn import Tensor, checkpoint, cli, nn, train


def _run(*argv):
    args = cli.build_parser().parse_args(["train", *argv])
    return train.run(args, out=io.StringIO())


def _main(capsys, *argv):
    capsys.readouterr()
    status = cli.main(["train", *argv])
    return (status, *capsys.readouterr())


QUICK = ["--model", "mlp", "--epochs", "1", "--batch-size", "256", "--threads", "1", "--quiet"]
LAYERS = {"batch": nn.BatchNormReLU1d, "group": nn.GroupNorm, "layer": nn.GroupNorm,
          "renorm": nn.BatchRenorm1d, "ghost": nn.GhostBatchNorm1d}


@pytest.mark.parametrize("norm", list(train.NORMS))
@pytest.mark.parametrize("preset", ["mlp", "convnet"])
def test_every_norm_builds_and_trains(norm, preset):
    config = {"model": preset, "norm": norm, "epochs": 2}
    model = train.build_model(config, (1, 8, 8), 10)
    kinds = [type(m) for m in model.modules()]
    assert not any(issubclass(k, nn.batchnorm._BatchNorm) for k in kinds) or norm == "batch"
    if norm != "none":
        want = LAYERS[norm] if preset == "mlp" or norm in ("group", "layer") else \
            {"batch": nn.BatchNormReLU2d, "renorm": nn.BatchRenorm2d,
             "ghost": nn.GhostBatchNorm2d}[norm]
        assert kinds.count(want) == 2
        assert kinds.count(nn.ReLU) == (0 if norm == "batch" else 2)  # the fused ReLUs kept
    if norm == "layer":
        assert all(m.num_groups == 1 for m in model.modules() if isinstance(m, nn.GroupNorm))
    if preset == "mlp":
        m = _run(*QUICK, "--norm", norm)
        assert m["norm"] == norm and m["with_bn"] is (norm != "none")
        assert m["test_accuracy"] > 0.5


def test_no_bn_is_norm_none():
    a, b = _run(*QUICK, "--no-bn"), _run(*QUICK, "--norm", "none")
    assert a["losses"] == b["losses"] and a["norm"] == "none"


def test_group_counts():
    assert [train._groups(c, True) for c in (32, 64, 48, 7)] == [32, 32, 24, 7]
    assert [train._groups(c, False) for c in (256, 32, 6, 7)] == [32, 16, 3, 1]


def test_renorm_schedule_spans_the_run():
    model = train.build_model({"model": "mlp", "norm": "renorm", "epochs": 4}, (1, 8, 8), 25)
    layer = next(m for m in model.modules() if isinstance(m, nn.BatchRenorm1d))
    assert layer.limits(0) == (1.0, 0.0) and layer.limits(5) == (1.0, 0.0)   # 5% of 100
    assert layer.limits(20)[1] == 5.0 and layer.limits(20)[0] < 3.0    # d_max full at 20%
    assert layer.limits(30) == (3.0, 5.0) == layer.limits(99)           # r_max at 30%
    assert 1.0 < layer.limits(12)[0] < 3.0 and 0.0 < layer.limits(12)[1] < 5.0


def test_convert_norm_reaches_nested_modules_and_keeps_their_forward():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
            self.bn = nn.BatchNormReLU2d(8)
            self.skip = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.skip(x).sum(axis=1, keepdims=True)

    model = nn.Sequential(Block(), nn.Flatten())
    train.convert_norm(model, "group")
    block = model[0]
    assert isinstance(block.bn, nn.Sequential) and isinstance(block.bn[1], nn.ReLU)
    assert isinstance(block.skip, nn.GroupNorm) and block.skip.num_groups == 3
    y = model(Tensor(np.random.default_rng(0).standard_normal((2, 3, 4, 4)).astype(np.float32)))
    assert y.shape == (2, 8 * 16)
    with pytest.raises(ValueError, match="unknown normalization"):
        train.convert_norm(model, "weight")
    with pytest.raises(ValueError, match="no layer for"):
        train.convert_norm(nn.Sequential(nn.BatchNorm3d(4)), "ghost")


def test_checkpoint_records_the_norm_and_resume_keeps_it(tmp_path, capsys):
    ckpt = str(tmp_path / "run.ckpt")
    _run(*QUICK, "--norm", "group", "--checkpoint", ckpt)
    assert checkpoint.load_checkpoint(ckpt)["extra"]["config"]["norm"] == "group"
    for argv, line in [(["--norm", "batch"], f"--norm batch: {ckpt} holds a net trained with "
                                             "GroupNorm (--norm group), which a resumed run "
                                             "keeps (leave --norm out)"),
                       (["--no-bn"], f"--no-bn: {ckpt} holds a net trained with GroupNorm "
                                     "(--norm group), which a resumed run keeps (leave --no-bn "
                                     "out)")]:
        status, out, err = _main(capsys, "--resume", ckpt, *argv)
        assert status == 1 and err == f"fastbn train: error: {line}\n"
    resumed = _run("--resume", ckpt, "--epochs", "2", "--norm", "group", "--quiet")
    assert resumed["norm"] == "group" and resumed["epochs"] == 2
    model = train.load_model(ckpt)
    assert sum(isinstance(m, nn.GroupNorm) for m in model.modules()) == 2


def test_checkpoints_from_before_norm_still_load(tmp_path):
    """A checkpoint whose config says "bn": true/false (no "norm") is BatchNorm / none."""
    ckpt = str(tmp_path / "old.ckpt")
    _run(*QUICK, "--no-bn", "--checkpoint", ckpt)
    state = checkpoint.load_checkpoint(ckpt)
    config = dict(state["extra"]["config"])
    del config["norm"]
    config["bn"] = False
    state["extra"]["config"] = config
    checkpoint.save_checkpoint(ckpt, state)
    model = train.load_model(ckpt)
    assert not any(isinstance(m, nn.batchnorm._NormBase) for m in model.modules())
    assert _run("--resume", ckpt, "--epochs", "2", "--quiet")["norm"] == "none"


def test_recalibrate(tmp_path):
    ckpt = str(tmp_path / "run.ckpt")
    out = io.StringIO()
    args = cli.build_parser().parse_args(["train", *QUICK[:-1], "--recalibrate",
                                          "--checkpoint", ckpt])
    metrics = train.run(args, out=out)
    assert metrics["recalibrated"] and "recalibrated the running statistics of 2 layers" \
        in out.getvalue()
    # the saved model's statistics are one update_bn pass over the training images
    model = train.load_model(ckpt)
    x, y, _, _ = train.load_data("digits")
    expected = train.load_model(ckpt)
    expected[2].running_mean[...] = 7  # whatever update_bn resets
    nn.utils.update_bn([(Tensor(x[i:i + 500]), y[i:i + 500]) for i in range(0, len(x), 500)],
                       expected)
    for (name, a), b in zip(model.state_dict().items(), expected.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    out = io.StringIO()
    args = cli.build_parser().parse_args(["train", *QUICK[:-1], "--norm", "layer",
                                          "--recalibrate"])
    assert not train.run(args, out=out)["recalibrated"]
    assert "--recalibrate: LayerNorm keeps no running statistics" in out.getvalue()


@pytest.mark.parametrize("argv,needle", [
    (["--norm", "group", "--no-bn"], "--no-bn and --norm group contradict each other"),
    (["--norm", "ghost", "--batch-size", "17"], "--norm ghost would leave a ghost batch of 1"),
    (["--norm", "renorm", "--batch-size", "1"], "--batch-size 1: Batch Renormalization needs"),
])
def test_bad_settings(capsys, argv, needle):
    status, out, err = _main(capsys, "--model", "mlp", "--epochs", "1", *argv)
    assert status == 1 and needle in err and len(err.splitlines()) == 1


def test_batch_of_one_without_batch_statistics():
    """GroupNorm, LayerNorm and none have no batch statistics: a batch of one trains."""
    m = _run("--model", "mlp", "--epochs", "1", "--batch-size", "1", "--norm", "layer",
             "--threads", "1", "--quiet", "--lr", "0.005", "--momentum", "0.0")
    assert m["steps"] == 1437 and np.isfinite(m["losses"]).all()
