"""Atomic file writes: every file fastbn writes (checkpoints, metrics, results,
downloads) goes through ``atomic_write``."""
import contextlib
import os
import tempfile

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """``with atomic_write(path) as f:`` write to a temporary file beside path;
    on success it is flushed to disk and renamed over path, so readers and a
    crash see the old file or the new one, never part of one.  On an error the
    temporary file is removed and path is untouched."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        os.chmod(tmp, 0o644)  # mkstemp's 0600 is for secrets; these files are not
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
