import io
import json
import os

import pytest

from fastbn import _config, cli, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist")


def _run(*argv):
    args = cli.build_parser().parse_args(["train", *argv])
    return train.run(args, out=io.StringIO())


def test_end_to_end_one_epoch(tmp_path, run_fastbn):
    metrics_path = tmp_path / "m.json"
    ckpt = tmp_path / "run.ckpt"
    proc = run_fastbn("train", "--epochs", "1", "--batch-size", "128", "--metrics-json",
                str(metrics_path), "--checkpoint", str(ckpt))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith("training convnet (with BN) on digits")
    assert lines[1].startswith("epoch 1/1  loss ") and "samples/s" in lines[1]
    assert lines[-1].startswith("held-out accuracy ")
    m = json.loads(metrics_path.read_text())
    assert {"test_accuracy", "train_seconds", "steps", "samples_per_second", "with_bn"} <= set(m)
    assert m["with_bn"] is True and m["steps"] == 1437 // 128
    assert m["threads"] == _config.auto_threads()  # the default, --threads auto
    assert 0.5 < m["test_accuracy"] <= 1.0  # one epoch already learns the digits
    assert m["samples_per_second"] == pytest.approx(m["steps"] * 128 / m["train_seconds"])
    assert ckpt.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_resume_continues_exactly(tmp_path, monkeypatch):
    common = ["--epochs", "3", "--batch-size", "128", "--seed", "3", "--threads", "1", "--quiet"]
    full = _run(*common)
    assert len(full["losses"]) == 3 * (1437 // 128)

    ckpt = str(tmp_path / "run.ckpt")
    calls, real_epoch = [], train._train_epoch

    def crash_in_third_epoch(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(train, "_train_epoch", crash_in_third_epoch)
    with pytest.raises(KeyboardInterrupt):
        _run(*common, "--checkpoint", ckpt)
    monkeypatch.setattr(train, "_train_epoch", real_epoch)
    resumed = _run(*common, "--resume", ckpt)
    assert resumed["losses"] == full["losses"]  # bit for bit, the resumed epoch included
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert resumed["steps"] == full["steps"] and resumed["epochs"] == 3

    no_bn = _run(*common, "--no-bn")
    assert no_bn["with_bn"] is False and no_bn["losses"][0] != full["losses"][0]


@pytest.mark.parametrize("argv,needle", [
    (["--epochs", "0"], "--epochs: expected an integer >= 1"),
    (["--threads", "0"], "--threads: expected auto or an integer >= 1"),
    (["--threads", "all"], "--threads: expected auto or an integer >= 1"),
    (["--lr", "abc"], "--lr: expected a number"),
    (["--momentum", "1.5"], "--momentum"),
    (["--model", "resnet"], "invalid choice"),
    (["--dataset", "cifar"], "invalid choice"),
    (["--bogus"], "unrecognized arguments"),
])
def test_bad_arguments(argv, needle, run_fastbn):
    proc = run_fastbn("train", *argv)
    assert proc.returncode == 2
    assert needle in proc.stderr and "Traceback" not in proc.stderr


def test_bad_data_and_checkpoints(tmp_path, run_fastbn):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")
    proc = run_fastbn("train", "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("fastbn train: error: ") and "t10k-images" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    proc = run_fastbn("train", "--resume", str(bad))
    assert proc.returncode == 1 and "not a readable fastbn checkpoint" in proc.stderr
    assert "Traceback" not in proc.stderr

    ckpt = str(tmp_path / "mlp.ckpt")
    _run("--model", "mlp", "--epochs", "1", "--batch-size", "256", "--quiet", "--checkpoint", ckpt)
    proc = run_fastbn("train", "--resume", ckpt, "--model", "mlp", "--no-bn")
    assert proc.returncode == 1 and "does not match" in proc.stderr
    proc = run_fastbn("train", "--resume", ckpt, "--model", "mlp", "--batch-size", "32")
    assert proc.returncode == 1 and "batch_size=256" in proc.stderr


@pytest.mark.skipif(not os.path.exists(os.path.join(MNIST, "t10k-images-idx3-ubyte.gz")),
                    reason="../shared/data/mnist not present")
def test_mnist_mlp_one_epoch():
    m = _run("--dataset", "mnist", "--data-dir", MNIST, "--model", "mlp", "--epochs", "1",
             "--batch-size", "128", "--threads", "1", "--quiet")
    assert m["steps"] == 8000 // 128 and m["test_accuracy"] > 0.8


def test_progress_bar():
    from fastbn.progress import ProgressBar

    out = io.StringIO()
    bar = ProgressBar(4, "epoch 1/1", file=out, enabled=True, min_interval=0)
    for i in range(4):
        bar.update(1, loss=f"{1.0 / (i + 1):.2f}")
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 4 and text.endswith("\n")
    assert "[" + "#" * 24 + "] 4/4" in text and "loss 0.25" in text
    quiet = io.StringIO()  # not a terminal: nothing drawn
    bar = ProgressBar(4, file=quiet)
    bar.update(4)
    bar.close()
    assert quiet.getvalue() == ""
