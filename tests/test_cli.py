"""The command line's behaviour as a process: exit statuses, one-line errors, output
checked before work."""
import json
import os
import subprocess
import sys

import pytest

import fastbn
from fastbn import cli


def _env():
    parent = os.path.dirname(os.path.dirname(os.path.abspath(fastbn.__file__)))
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (parent, os.environ.get("PYTHONPATH")) if p))


@pytest.mark.parametrize("argv", [["info", "--shape", "2", "2", "4", "4", "--repeat", "1"],
                                  ["train", "--model", "mlp", "--epochs", "50"]])
def test_output_into_a_closed_pipe_ends_quietly(tmp_path, argv):
    # `python -m fastbn info | head`: the reader is gone before fastbn writes
    proc = subprocess.Popen([sys.executable, "-m", "fastbn", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=_env(), cwd=tmp_path)
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141  # 128 + SIGPIPE, as `head`'s shell expects
    assert err == ""


def test_reproduce_checks_out_before_the_experiment(tmp_path, run_fastbn, capsys):
    out_file = tmp_path / "results"
    out_file.write_text("not a folder")
    tiny = ["--dataset", "digits", "--steps", "20", "--eval-every", "10", "--multipliers", "1",
            "--quiet"]
    for out, reason in [(out_file, "is a file, not a folder"),
                        (out_file / "sub", f"is a file (its parent {out_file}), not a folder")]:
        proc = run_fastbn("reproduce", "lr-sweep", *tiny, "--out", str(out))
        assert (proc.returncode, proc.stdout) == (1, "")  # no experiment ran
        assert proc.stderr == f"fastbn reproduce: error: --out {out}: {reason}\n"
    assert out_file.read_text() == "not a folder"

    status = cli.main(["reproduce", "lr-sweep", *tiny, "--lr", "1e-6", "--targets", "0.95",
                       "--out", str(tmp_path / "ok")])
    printed = capsys.readouterr().out
    assert status == 0
    # a target a run never reached is said so, not "at never"
    assert "95% not reached" in printed and "at never" not in printed
    results = json.loads((tmp_path / "ok" / "results.json").read_text())
    assert results["lr_sweep"]["runs"][0]["targets"]["0.95"]["steps"] is None
