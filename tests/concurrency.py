"""Shared by the tests that call fastbn from several Python threads at once or
under unusual schedules (tests/conftest.py puts this directory on sys.path)."""
import contextlib
import subprocess
import sys
import threading


def run_threads(work, args):
    """work(a) on a thread of its own for each a in args; returns when all are done."""
    threads = [threading.Thread(target=work, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


_BUSY = ("import os, sys\nparent = os.getppid()\nsys.stdout.write('x')\nsys.stdout.flush()\n"
         "while os.getppid() == parent:\n    for _ in range(100000):\n        pass\n")


@contextlib.contextmanager
def busy_process():
    """A process spinning on a core while the block runs: fastbn's workers come
    late or not at all.  It exits by itself should this process die."""
    proc = subprocess.Popen([sys.executable, "-S", "-c", _BUSY], stdout=subprocess.PIPE)
    try:
        proc.stdout.read(1)  # spinning from here on
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
