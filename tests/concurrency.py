"""Shared by the tests that call fastbn from several Python threads at once
(tests/conftest.py puts this directory on sys.path)."""
import threading


def run_threads(work, args):
    """work(a) on a thread of its own for each a in args; returns when all are done."""
    threads = [threading.Thread(target=work, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
