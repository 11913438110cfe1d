"""Run a benchmark script's fastbn and torch workers in alternating child processes.

fastbn and torch share one libgomp in a process (see shared/docs/PERFORMANCE.md),
so each (library, thread count) runs in a process of its own, in the order
A B A B ... per round so that machine drift hits both alike.  A worker is the
script itself, started as ``SCRIPT --worker LIB THREADS ARGS...``; it prints one
JSON object whose leaves are lists of measurements.
"""
import json
import os
import subprocess
import sys


def libraries():
    """fastbn, and torch when it can be imported."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return ["fastbn"]
    return ["fastbn", "torch"]


def _merge(acc, res, prefix=()):
    for key, val in res.items():
        if isinstance(val, dict):
            _merge(acc, val, prefix + (key,))
        else:
            acc.setdefault(prefix + (key,), []).extend(val)


def run(script, libs, threads, rounds, args=()):
    """{(lib, threads): {key path tuple: all measurements}}; a failed worker's
    stderr is printed and its results are missing."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(script)))] + sys.path))
    results = {}
    for _ in range(rounds):
        for t in threads:
            for lib in libs:
                out = subprocess.run([sys.executable, script, "--worker", lib, str(t), *args],
                                     capture_output=True, text=True, env=env)
                if out.returncode:
                    print(f"[{lib} x{t} failed]\n{out.stderr[-2000:]}", file=sys.stderr)
                    continue
                _merge(results.setdefault((lib, t), {}), json.loads(out.stdout.splitlines()[-1]))
    return results
