import io
import json
import math
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import fastbn
from fastbn import Tensor, _config, checkpoint, cli, nn, no_grad, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MNIST = os.path.join(ROOT, "..", "shared", "data", "mnist")


def _run(*argv):
    args = cli.build_parser().parse_args(["train", *argv])
    return train.run(args, out=io.StringIO())


def _main(capsys, *argv):
    """``python -m fastbn train ARGV`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    status = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    return status, out, err


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
    assert m["threads"] == 1  # digits' default
    assert 0.5 < m["test_accuracy"] <= 1.0  # one epoch already learns the digits
    assert m["samples_per_second"] == pytest.approx(m["steps"] * 128 / m["train_seconds"])
    assert ckpt.exists() and not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_threads_auto_takes_the_available_cores(monkeypatch):
    """--threads auto (the default off digits) runs on auto_threads(), which follows
    the cores this process may use."""
    monkeypatch.setattr(_config, "available_cores", lambda: 3)
    with fastbn.threads(5):  # get_num_threads() caps auto_threads(): above the cores here
        res = _run("--epochs", "1", "--batch-size", "256", "--threads", "auto", "--quiet")
    assert res["threads"] == 3


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


def test_bad_data_and_checkpoints(tmp_path, run_fastbn, capsys):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 20)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05")
    proc = run_fastbn("train", "--dataset", "mnist", "--data-dir", str(tmp_path))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("fastbn train: error: ") and "t10k-images" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1

    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(os.urandom(4096))
    proc = run_fastbn("train", "--resume", str(bad))
    assert proc.returncode == 1
    assert proc.stderr == f"fastbn train: error: {bad}: not a fastbn checkpoint\n"

    ckpt = str(tmp_path / "mlp.ckpt")
    _run("--model", "mlp", "--epochs", "1", "--batch-size", "256", "--quiet", "--checkpoint", ckpt)
    for argv, line in [
        (["--model", "convnet"], f"{ckpt} holds an mlp checkpoint; this run builds a convnet"),
        (["--no-bn"], f"--no-bn: {ckpt} holds a net trained with BN"),
        (["--batch-size", "32"], f"--batch-size 32: {ckpt} was trained with --batch-size 256"),
        (["--seed", "5"], f"--seed 5: {ckpt} was trained with --seed 0"),
        (["--dataset", "mnist"], f"--dataset mnist: {ckpt} was trained with --dataset digits"),
        (["--data-dir", str(tmp_path)], "--data-dir names MNIST files; it cannot be used"),
    ]:
        status, out, err = _main(capsys, "--resume", ckpt, *argv)
        assert status == 1 and out == "", argv
        assert err.startswith("fastbn train: error: " + line), err
        assert len(err.splitlines()) == 1


def _epoch_lines(text):
    return [line for line in text.splitlines() if line.startswith("epoch ")]


def test_resume_alone_continues_with_the_stored_settings(tmp_path, monkeypatch):
    ckpt = str(tmp_path / "run.ckpt")
    settings = ["--model", "mlp", "--batch-size", "96", "--seed", "4", "--lr", "0.2",
                "--momentum", "0.5", "--no-bn", "--epochs", "3", "--threads", "1", "--quiet"]
    full = _run(*settings)
    calls, real_epoch = [], train._train_epoch

    def interrupt_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(train, "_train_epoch", interrupt_second)
    with pytest.raises(train.TrainingInterrupted):
        _run(*settings, "--checkpoint", ckpt)
    monkeypatch.setattr(train, "_train_epoch", real_epoch)
    out = io.StringIO()
    resumed = train.run(cli.build_parser().parse_args(["train", "--resume", ckpt]), out=out)
    assert resumed["losses"] == full["losses"]  # bit for bit: every setting was restored
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert (resumed["model"], resumed["with_bn"], resumed["seed"]) == ("mlp", False, 4)
    assert "resumed from" in out.getvalue() and "3 epochs, batch 96" in out.getvalue()
    assert checkpoint.load_checkpoint(ckpt)["epoch"] == 3  # it went on saving there


def test_resume_extends_the_run_and_applies_lr_and_momentum_from_the_next_epoch(tmp_path):
    ckpt = str(tmp_path / "run.ckpt")
    common = ["--model", "mlp", "--batch-size", "128", "--threads", "1"]
    _run(*common, "--epochs", "2", "--lr", "0.1", "--checkpoint", ckpt)
    out = io.StringIO()
    args = cli.build_parser().parse_args(["train", "--resume", ckpt, "--epochs", "4",
                                          "--lr", "0.2", "--momentum", "0.5"])
    calls, real_step = [], train.train_step

    def record(model, x, y, loss_fn, optimizer, *rest):
        group = optimizer.param_groups[0]
        calls.append((group["lr"], group["momentum"]))
        return real_step(model, x, y, loss_fn, optimizer, *rest)

    train.train_step = record
    try:
        metrics = train.run(args, out=out)
    finally:
        train.train_step = real_step
    text = out.getvalue()
    assert "--epochs 4: the run now has 4 epochs (it had 2)" in text
    assert "--lr 0.2 applies from epoch 3 (the run had 0.1)" in text
    assert "--momentum 0.5 applies from epoch 3 (the run had 0.9)" in text
    # the cosine now spans 4 epochs from the new base rate: epochs 3 and 4 as a 4-epoch run
    steps = 1437 // 128
    expected = [0.2 * (1 + math.cos(math.pi * e / 4)) / 2 for e in (2, 3)]
    assert [lr for lr, _ in calls] == pytest.approx([expected[0]] * steps + [expected[1]] * steps)
    assert {m for _, m in calls} == {0.5}
    assert f"epoch 3 trains at lr {expected[0]:.4g}" in text
    assert metrics["epochs"] == 4 and len(metrics["losses"]) == 4 * steps
    stored = checkpoint.load_checkpoint(ckpt)
    assert stored["epoch"] == 4
    assert {k: stored["extra"]["config"][k] for k in ("epochs", "lr", "momentum")} == \
        {"epochs": 4, "lr": 0.2, "momentum": 0.5}

    # fewer epochs than done: refused, one line
    with pytest.raises(ValueError, match=r"--epochs 3: .* has already trained 4 epochs"):
        _run("--resume", ckpt, "--epochs", "3")


def test_epoch_line_comes_after_its_checkpoint(tmp_path, monkeypatch):
    ckpt = str(tmp_path / "run.ckpt")
    out = io.StringIO()
    printed_at_save, real_save = [], checkpoint.save

    def save(*args, **kwargs):
        printed_at_save.append(_epoch_lines(out.getvalue()))
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", save)
    args = cli.build_parser().parse_args(["train", "--model", "mlp", "--epochs", "3",
                                          "--batch-size", "256", "--checkpoint", ckpt])
    train.run(args, out=out)
    assert [len(lines) for lines in printed_at_save] == [0, 1, 2]
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("3 epochs, batch 256, 1 thread(s)")
    assert len(_epoch_lines(out.getvalue())) == 3
    assert " train acc " in lines[1]  # the per-epoch accuracy is the training accuracy
    one = io.StringIO()
    train.run(cli.build_parser().parse_args(["train", "--model", "mlp", "--epochs", "1",
                                             "--batch-size", "256"]), out=one)
    assert ", 1 epoch, batch 256" in one.getvalue()


def test_ctrl_c_exits_130_with_the_resume_command(tmp_path, run_fastbn):
    # a real SIGINT to a real run, after its second epoch line
    ckpt = tmp_path / "run.ckpt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(fastbn.__file__)),
                    os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.Popen([sys.executable, "-m", "fastbn", "train", "--model", "mlp",
                             "--epochs", "1000", "--checkpoint", str(ckpt)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, cwd=tmp_path)
    try:
        seen = []
        while len(_epoch_lines("".join(seen))) < 2:
            line = proc.stdout.readline()
            assert line, proc.stderr.read()
            seen.append(line)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    saved = checkpoint.load_checkpoint(ckpt)["epoch"]
    printed = len(_epoch_lines("".join(seen) + rest))
    assert proc.returncode == 130
    assert err == (f"interrupted after epoch {saved}; resume with: "
                   f"python -m fastbn train --resume {ckpt}\n")
    assert saved >= printed >= 2  # every epoch it printed is on disk
    proc = run_fastbn("train", "--resume", str(ckpt), "--epochs", str(saved + 1), "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert checkpoint.load_checkpoint(ckpt)["epoch"] == saved + 1


def test_ctrl_c_without_checkpoint_says_nothing_was_saved(monkeypatch):
    calls, real_epoch = [], train._train_epoch

    def interrupt_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_epoch(*args)

    monkeypatch.setattr(train, "_train_epoch", interrupt_second)
    with pytest.raises(train.TrainingInterrupted) as info:
        _run("--model", "mlp", "--epochs", "3", "--batch-size", "256")
    assert info.value.message == ("interrupted after epoch 1; nothing saved to resume from "
                                  "(--checkpoint PATH saves every epoch)")


@pytest.mark.parametrize("lr", ["1000", "1e8"])
def test_a_diverged_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, lr,
                                                                          run_fastbn):
    ckpt = tmp_path / "run.ckpt"
    _run("--model", "mlp", "--epochs", "1", "--batch-size", "128", "--quiet",
         "--checkpoint", str(ckpt))
    before = ckpt.read_bytes()
    proc = run_fastbn("train", "--resume", str(ckpt), "--epochs", "3", "--lr", lr)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(proc.stderr.splitlines()) == 1
    assert re.match(r"fastbn train: error: the training loss (became nan|became inf|reached "
                    r"[0-9.e+]+) at epoch 2, step \d+ \(learning rate [0-9.e+]+\): the run "
                    r"diverged; try a smaller --lr; .*run.ckpt keeps epoch 1: python -m "
                    r"fastbn train --resume .*run.ckpt --lr ", proc.stderr), proc.stderr
    assert ckpt.read_bytes() == before
    assert "epoch 2/3" not in proc.stdout
    fresh = run_fastbn("train", "--model", "mlp", "--epochs", "1", "--lr", lr)
    assert fresh.returncode == 1 and "at epoch 1, step " in fresh.stderr
    assert "e.g. --lr " in fresh.stderr


def test_outputs_are_checked_before_any_work(tmp_path, run_fastbn, capsys, monkeypatch):
    (tmp_path / "ro.ckpt").write_bytes(b"precious")
    os.chmod(tmp_path / "ro.ckpt", 0o444)
    missing = str(tmp_path / "no" / "such")
    for argv, line in [
        (["--checkpoint", missing + "/x.ckpt"], f"--checkpoint {missing}/x.ckpt: folder "
                                                f"{missing} does not exist"),
        (["--metrics-json", missing + "/m.json"], f"--metrics-json {missing}/m.json: folder "
                                                  f"{missing} does not exist"),
        (["--fold", str(tmp_path)], f"--fold {tmp_path}: is a folder, not a file"),
        (["--checkpoint", str(tmp_path / "ro.ckpt")],
         f"--checkpoint {tmp_path / 'ro.ckpt'}: read-only file, not replaced"),
        (["--checkpoint", str(tmp_path / "a.ckpt"), "--fold", str(tmp_path / "a.ckpt")],
         f"--checkpoint and --fold name the same file, {tmp_path / 'a.ckpt'}"),
    ]:
        status, out, err = _main(capsys, "--epochs", "1", *argv)
        assert status == 1 and out == "", (argv, out)
        assert err == f"fastbn train: error: {line}\n"
    assert (tmp_path / "ro.ckpt").read_bytes() == b"precious"
    # and as a process: exit status 1, one line, no traceback, no work done
    proc = run_fastbn("train", "--metrics-json", missing + "/m.json")
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (f"fastbn train: error: --metrics-json {missing}/m.json: folder "
                           f"{missing} does not exist\n")


def test_command_line_advice_is_in_command_line_terms(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, needle in [
        (["--dataset", "mnist", "--data-dir", str(empty)],
         f"--data-dir {empty}: no MNIST t10k-images-idx3-ubyte"),
        (["--dataset", "mnist", "--data-dir", str(tmp_path / "nope")], "no such folder"),
        (["--data-dir", str(empty)], "--data-dir names MNIST files; it cannot be used with "
                                     "the digits"),
        (["--model", "mlp", "--batch-size", "1"], "--batch-size 1: BatchNorm needs at least 2"),
        (["--resume", str(tmp_path / "missing.ckpt")], "no such file"),
    ]:
        status, out, err = _main(capsys, "--epochs", "1", *argv)
        assert status == 1 and needle in err, (argv, err)
        assert len(err.splitlines()) == 1
        assert "download=True" not in err and "drop_last" not in err


def test_resumed_run_reports_its_own_time_and_the_whole_runs(tmp_path):
    ckpt = str(tmp_path / "run.ckpt")
    _run("--model", "mlp", "--epochs", "1", "--batch-size", "256", "--checkpoint", ckpt)
    out = io.StringIO()
    metrics = train.run(cli.build_parser().parse_args(
        ["train", "--resume", ckpt, "--epochs", "2", "--quiet"]), out=out)
    *notes, line = out.getvalue().strip().splitlines()
    assert notes[0].startswith("--epochs 2: the run now has 2 epochs")  # --quiet says it too
    found = re.fullmatch(r"held-out accuracy [0-9.]+% \(360 images\)  training ([0-9.]+) s "
                         r"\(([0-9.]+) s over all 2 epochs\)  total ([0-9.]+) s", line)
    assert found, line
    session, whole, total = map(float, found.groups())
    assert session <= total and session <= whole
    assert whole == pytest.approx(metrics["train_seconds"], abs=0.051)


def test_fold_writes_the_inference_model_and_both_accuracies(tmp_path, run_fastbn):
    fold, ckpt = tmp_path / "model.ckpt", tmp_path / "run.ckpt"
    proc = run_fastbn("train", "--model", "mlp", "--epochs", "2", "--batch-size", "128",
                      "--fold", str(fold), "--checkpoint", str(ckpt), "--metrics-json",
                      str(tmp_path / "m.json"))
    assert proc.returncode == 0, proc.stderr
    m = json.loads((tmp_path / "m.json").read_text())
    assert (f"folded inference model written to {fold}: held-out accuracy "
            f"{100 * m['folded_test_accuracy']:.2f}% (unfolded {100 * m['test_accuracy']:.2f}%)"
            in proc.stdout)
    folded, trained = train.load_model(fold), train.load_model(ckpt)
    assert not any(isinstance(x, nn.BatchNormReLU1d) for x in folded.modules())
    x_test = train.load_data("digits")[2]
    with no_grad():
        a = folded(Tensor(x_test)).data
        b = trained(Tensor(x_test)).data
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
    assert (a.argmax(1) == b.argmax(1)).all()
    assert m["folded_test_accuracy"] == m["test_accuracy"]
    # an export step from a finished run: no training
    again = run_fastbn("train", "--resume", str(ckpt), "--fold", str(tmp_path / "b.ckpt"))
    assert again.returncode == 0 and "epoch 3" not in again.stdout
    assert "folded inference model written to" in again.stdout
    proc = run_fastbn("train", "--resume", str(fold))
    assert proc.returncode == 1 and "holds a folded inference model" in proc.stderr


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


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished 1-epoch mlp run's checkpoint (resuming it trains nothing)."""
    path = str(tmp_path_factory.mktemp("finished") / "run.ckpt")
    _run("--model", "mlp", "--epochs", "1", "--batch-size", "256", "--quiet",
         "--checkpoint", path)
    return path


@pytest.mark.parametrize("where, value, field", [
    (("extra", "config", "batch_size"), "256", "extra.config.batch_size"),
    (("extra", "config", "model"), ["mlp"], "extra.config.model"),
    (("extra", "config", "lr"), None, "extra.config.lr"),
    (("extra", "config"), [1, 2], "extra.config"),
    (("extra", "losses"), [0.5], "extra.losses"),
    (("extra", "steps"), 3.0, "extra.steps"),
    (("extra", "train_seconds"), -1, "extra.train_seconds"),
    (("extra",), "x", "extra"),
    (("epoch",), "1", "epoch"),
    (("epoch",), 7, "epoch"),
    (("rng",), {"bit_generator": "MT19937"}, "rng"),
    (("optimizer", "param_groups", 0, "lr"), "0.1", "optimizer.param_groups[0].lr"),
    (("optimizer", "param_groups"), {}, "optimizer.param_groups"),
    (("scheduler", "T_max"), [1], "scheduler.T_max"),
])
def test_checkpoint_metadata_of_the_wrong_type_is_one_line(tmp_path, capsys, finished_run,
                                                           where, value, field):
    state = checkpoint.load_checkpoint(finished_run)
    parent = state
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = value
    path = str(tmp_path / "bad.ckpt")
    checkpoint.save_checkpoint(path, state)
    status, out, err = _main(capsys, "--resume", path)
    assert (status, out) == (1, "")
    assert err.startswith(f"fastbn train: error: {path}: field '{field}' must be "), err
    assert len(err.splitlines()) == 1


@settings(max_examples=40, deadline=None,  # _main reads capsys empty before each run
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzzed_checkpoints_resume_or_fail_in_one_line(tmp_path_factory, capsys, finished_run,
                                                      data):
    state = checkpoint.load_checkpoint(finished_run)
    paths, stack = [], [((), state)]
    while stack:
        prefix, obj = stack.pop()
        items = (obj.items() if isinstance(obj, dict) else enumerate(obj)
                 if isinstance(obj, list) else ())
        for k, v in items:
            if prefix[:1] != ("model",):  # the weights' own checks are load_state_dict's
                paths.append(prefix + (k,))
            stack.append((prefix + (k,), v))
    where = data.draw(st.sampled_from(paths))
    parent = state
    for key in where[:-1]:
        parent = parent[key]
    parent[where[-1]] = data.draw(st.none() | st.booleans() | st.integers(-2, 10)
                                  | st.floats() | st.text(max_size=3) | st.just([])
                                  | st.just({}) | st.just(np.zeros(2)))
    path = str(tmp_path_factory.mktemp("fuzz") / "run.ckpt")
    checkpoint.save_checkpoint(path, state)
    status, _, err = _main(capsys, "--resume", path, "--quiet")
    assert status in (0, 1) and "Traceback" not in err
    if status:
        assert err.startswith(f"fastbn train: error: {path}") and len(err.splitlines()) == 1
