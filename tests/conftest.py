import os
import subprocess
import sys
import tempfile
import zlib

import pytest

import fastbn

# Test helpers shared between files (bn_reference.py) import by name, also in
# pytest's importlib mode (tools/test_wheel.sh), which adds no directory to sys.path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The directory holding the fastbn these tests import (site-packages, or the
# checkout during in-place development): child processes must import the same
# one, and never an unbuilt source tree from their working directory.
_FASTBN_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(fastbn.__file__)))


def _run_fastbn(*argv, code=None, env=None, timeout=300):
    """Run ``python -m fastbn ARGV`` (or ``python -c CODE``) in a scratch directory."""
    child_env = dict(os.environ, **(env or {}))
    child_env["PYTHONPATH"] = os.pathsep.join(
        p for p in (_FASTBN_PARENT, os.environ.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-c", code] if code is not None else [sys.executable, "-m", "fastbn",
                                                                 *argv]
    with tempfile.TemporaryDirectory() as cwd:
        return subprocess.run(cmd, capture_output=True, text=True, env=child_env, cwd=cwd,
                              timeout=timeout)


@pytest.fixture
def run_fastbn():
    """The function ``_run_fastbn``: a fixture, so that test files need not import
    conftest by name (pytest's importlib mode, used by tools/test_wheel.sh)."""
    return _run_fastbn


SCHEDULES = ["in order", "reverse", "random", "busy core"]


@pytest.fixture(params=SCHEDULES)
def schedule(request):
    """Run the test's multi-threaded calls under each schedule: fastbn's team hands
    the work units out in order, in reverse or in a random order (the test hook
    fastbn._parallel.set_order), or in order while a busy process competes for a
    core (workers late, preempted or absent).  Results must not change."""
    from fastbn import _parallel

    from concurrency import busy_process

    if request.param == "busy core":
        with busy_process():
            yield request.param
        return
    _parallel.set_order(request.param, seed=zlib.crc32(request.node.nodeid.encode()))
    try:
        yield request.param
    finally:
        _parallel.set_order("in order")
