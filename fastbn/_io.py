"""Atomic file writes: every file fastbn writes (checkpoints, metrics, results,
downloads) goes through ``atomic_write``; ``check_writable`` and ``check_folder`` say up
front whether a write or a folder will be possible, before any work is done.

A write goes to a temporary file beside its target, named ``.NAME.HOST.PID.TOKEN.tmp``,
then is renamed over the target.  A writer killed before the rename (``kill -9``) leaves
its temporary file behind: the next write to the same target removes those whose writer,
a process of this host, is gone.
"""
import contextlib
import errno
import os
import re
import secrets
import socket
import stat

__all__ = ["atomic_write", "check_writable", "check_folder"]

_HOST = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"


def _target(path):
    """The real file a write to path goes to (a symlink is written through), checked:
    OSError naming path when it cannot be written.  Returns ``(target, stat or None)``;
    a path that is not a regular file (a device, a FIFO) is its own target."""
    try:
        st = os.stat(path)  # through every link, /proc's too (/dev/stdout to a pipe)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a folder, not a file", path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        return path, st
    target = os.path.realpath(path)
    if st is not None and (not st.st_mode & 0o222 or not os.access(target, os.W_OK)):
        # what open(path, "w") refuses is not replaced behind the user's back (root
        # included: a file nobody may write is read-only on purpose)
        raise PermissionError(errno.EACCES, "read-only file, not replaced", path)
    folder = os.path.dirname(target)
    shown = os.path.dirname(path) or "."  # as the user wrote it, unless a link leads away
    shown = shown if os.path.realpath(shown) == folder else folder
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"folder {shown} does not exist", path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot create files in folder {shown}", path)
    return target, st


def check_writable(path):
    """Raise the OSError (naming path) that writing path with :func:`atomic_write` would
    raise for its location: a missing or read-only folder, a read-only file, a folder at
    path.  Nothing is written.

    Parameters
    ----------
    path : str or os.PathLike
    """
    _target(os.fspath(path))


def check_folder(path):
    """Raise the OSError (naming path) that creating the folder path (with its parents)
    and files in it would raise: path or a parent is a file, or the nearest existing
    parent is read-only.  Nothing is created.

    Parameters
    ----------
    path : str or os.PathLike
    """
    path = os.fspath(path)
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    where = "" if existing == os.path.abspath(path) else f" (its parent {existing})"
    if not os.path.isdir(existing):
        raise NotADirectoryError(errno.ENOTDIR, f"is a file{where}, not a folder", path)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, f"cannot create files in {existing}", path)


def _temp_pattern(name):
    return re.compile(rf"\.{re.escape(name)}\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)"
                      r"\.[0-9a-f]{16}\.tmp")


def _writer_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def _remove_stale(folder, name):
    """Remove temporary files of writes to folder/name whose writer, on this host, died."""
    pattern = _temp_pattern(name)
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = pattern.fullmatch(entry.name)
            if (match and match["host"] == _HOST and int(match["pid"]) != os.getpid()
                    and _writer_gone(int(match["pid"]))):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(entry.path)


def _fsync_folder(folder):
    """Make a rename in folder durable (where the platform allows opening a folder)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _naming(path):
    """An OSError of the write's own file operations names path, not the temporary file."""
    try:
        yield
    except OSError as exc:
        raise type(exc)(exc.errno, exc.strerror, path) from None


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """``with atomic_write(path) as f:`` write to a temporary file beside path; on success
    it is flushed to disk and renamed over path, so readers and a crash see the old file
    or the new one, never part of one.  On an error the temporary file is removed and
    path is untouched.

    A symlink is written through (its target is replaced, the link stays); a replaced
    file keeps its permissions, a new one gets open()'s (0o666 less the umask).  A path
    that is not a regular file (``/dev/stdout``, a FIFO) is written directly.

    Parameters
    ----------
    path : str or os.PathLike
    mode : {"wb", "w"}
        Binary or text.

    Raises
    ------
    OSError
        Naming path (never the temporary file): a missing or read-only folder, a
        read-only file (``PermissionError``; it is left as it is), a folder at path, a
        full disk.
    """
    path = os.fspath(path)
    target, st = _target(path)
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(target, mode) as f:
            yield f
        return
    folder, name = os.path.split(target)
    _remove_stale(folder, name)
    with _naming(path):
        tmp = os.path.join(folder, f".{name}.{_HOST}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0),
                     0o666)
    f = os.fdopen(fd, mode)
    try:
        with f:
            if st is not None:
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            yield f
            with _naming(path):
                f.flush()
                os.fsync(f.fileno())
        with _naming(path):
            os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)
