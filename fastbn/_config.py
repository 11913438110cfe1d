"""Build facts, thread control and show_config()."""
import contextlib
import operator
import os
import platform
import sys
import threading
import warnings

from . import _openmp_helpers

__all__ = ["get_num_threads", "set_num_threads", "threads", "show_config"]

_OPENMP = _openmp_helpers.openmp_enabled()
_global_threads = None          # set_num_threads(); None: follow the OpenMP runtime


class _Local(threading.local):
    threads = None              # class default: no override (a plain lookup, no getattr default)


_local = _Local()               # threads(n) overrides, per Python thread


def get_num_threads():
    """Threads the kernels use on this call.

    Order: an enclosing ``fastbn.threads(n)`` block (this Python thread only),
    then ``fastbn.set_num_threads(n)``, then the OpenMP runtime's maximum, which
    follows OMP_NUM_THREADS and threadpoolctl limits, at most ``MAX_THREADS`` (a
    larger OMP_NUM_THREADS is capped there, with a RuntimeWarning).  Always 1 in a
    serial build.

    Returns
    -------
    int
    """
    if not _OPENMP:
        return 1
    n = _local.threads or _global_threads
    if n is not None:
        return n
    n = _openmp_helpers.max_threads()
    if n > MAX_THREADS:
        warnings.warn(f"OMP_NUM_THREADS asks for {n} threads; fastbn uses at most "
                      f"{MAX_THREADS}", RuntimeWarning, stacklevel=2)
        return MAX_THREADS
    return n


# Far more threads than any machine uses (set_num_threads refuses more, OMP_NUM_THREADS is
# capped there): beyond some count the OpenMP runtime kills the process (libgomp builds a team's start data on the caller's stack, and 100000 threads
# overflowed it: signal 11; it exits when the system refuses a thread).
MAX_THREADS = max(1024, 4 * _openmp_helpers.num_procs())


def _check_threads(n):
    """n as a Python int in 1..MAX_THREADS; NumPy integers pass, as in PyTorch."""
    try:
        checked = None if isinstance(n, bool) else operator.index(n)
    except TypeError:
        checked = None
    if checked is None or checked < 1:
        raise ValueError(f"number of threads must be a positive int, got {n!r}")
    n = checked
    if n > MAX_THREADS:
        raise ValueError(f"number of threads must be at most {MAX_THREADS}, got {n}")
    return n


def set_num_threads(n):
    """Use ``n`` threads in every fastbn kernel, process-wide (``torch.set_num_threads``).

    A ``fastbn.threads(n)`` block overrides it in its Python thread.  Results are
    bitwise identical at any thread count.  A serial build (no OpenMP) runs on one
    thread whatever is set.

    Parameters
    ----------
    n : int or None
        1 to 1024, or to 4 per processor on a larger machine (``MAX_THREADS``).  None
        (which PyTorch does not accept) returns to the OpenMP runtime's default, which
        follows OMP_NUM_THREADS and threadpoolctl limits.

    Raises
    ------
    ValueError
        For an n that is not an integer in range (a bool counts as not an integer;
        a NumPy integer is taken as a Python int).
    """
    global _global_threads
    _global_threads = None if n is None else _check_threads(n)


@contextlib.contextmanager
def threads(n):
    """``with fastbn.threads(n):`` run the kernels of this Python thread on ``n`` threads.

    A context manager (fastbn's; PyTorch has none): other Python threads, and this one
    after the block, keep their setting; blocks nest.

    Parameters
    ----------
    n : int
        As :func:`set_num_threads`, but not None.

    Raises
    ------
    ValueError
        On entering the block, for an n that is not an integer in range.
    """
    n = _check_threads(n)
    previous = _local.threads
    _local.threads = n
    try:
        yield
    finally:
        _local.threads = previous


def _quota_cpus(directory, v2):
    """CPUs (rounded up) the CPU quota of one cgroup directory allows, or None."""
    try:
        if v2:
            with open(os.path.join(directory, "cpu.max")) as f:
                quota, period = f.read().split()[:2]
            if quota == "max":
                return None
        else:
            with open(os.path.join(directory, "cpu.cfs_quota_us")) as f:
                quota = f.read()
            with open(os.path.join(directory, "cpu.cfs_period_us")) as f:
                period = f.read()
        quota, period = int(quota), int(period)
    except (OSError, ValueError):
        return None
    return -(-quota // period) if quota > 0 and period > 0 else None


def _cgroup_cpus():
    """The tightest CPU quota of this process's cgroups and their ancestors, in
    CPUs rounded up (a container's --cpus), or None (none, or not Linux)."""
    try:
        with open("/proc/self/cgroup") as f:
            entries = [line.rstrip("\n").split(":", 2) for line in f if line.count(":") >= 2]
    except OSError:
        return None
    limits = []
    for _, controllers, path in entries:
        if controllers == "":  # cgroup v2
            root, v2 = "/sys/fs/cgroup", True
        elif "cpu" in controllers.split(","):
            root, v2 = os.path.join("/sys/fs/cgroup", controllers), False
        else:
            continue
        parts = [p for p in path.split("/") if p]
        for i in range(len(parts), -1, -1):
            limits.append(_quota_cpus(os.path.join(root, *parts[:i]), v2))
    limits = [n for n in limits if n is not None]
    return min(limits) if limits else None


def available_cores():
    """CPUs this process may run on: its affinity mask (``os.sched_getaffinity``,
    else ``os.cpu_count()``), capped by a cgroup CPU quota (a container's CPU
    limit) when there is one.

    Returns
    -------
    int
        At least 1.
    """
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        n = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(min(n, quota) if quota else n, 1)


def auto_threads(processes=1):
    """Threads for each of ``processes`` processes that share this machine's cores
    (MPI ranks on one node, say): the cores available to this process
    (:func:`available_cores`) divided among them, at most
    :func:`get_num_threads` (which follows ``OMP_NUM_THREADS``), 1 at least.
    Only cores count, not the processes already using them: fastbn's kernels
    keep their speed when other processes compete (docs/threads.md).

    Parameters
    ----------
    processes : int
        Processes (>= 1) sharing the cores.

    Returns
    -------
    int
    """
    if isinstance(processes, bool) or not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive int, got {processes!r}")
    return max(min(get_num_threads(), available_cores()) // processes, 1)


def _openmp_runtime():
    """Path of the OpenMP runtime library loaded in this process, if any."""
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                name = os.path.basename(path)
                if name.startswith(("libgomp", "libomp", "libiomp")):
                    return path
    except OSError:
        pass
    if _openmp_helpers.openmp_enabled():
        return "linked (library path not visible on this platform)"
    return None


def _blas_symbol(*names):
    """The first of names found in the BLAS behind scipy.linalg.cython_blas, which
    fastbn's GEMMs call, as a ctypes function, or None.  A dlopen handle's symbol
    lookup also searches the library's dependencies, where the BLAS is."""
    import ctypes

    from scipy.linalg import cython_blas
    try:
        lib = ctypes.CDLL(cython_blas.__file__)
    except OSError:
        return None
    for name in names:
        fn = getattr(lib, name, None)
        if fn is not None:
            return fn
    return None


def blas_thread_control():
    """Address of openblas_set_num_threads_local (OpenBLAS >= 0.3.27: sets the
    thread count, returns the previous one), or 0 when that BLAS has none."""
    import ctypes

    fn = _blas_symbol("openblas_set_num_threads_local")
    return 0 if fn is None else ctypes.cast(fn, ctypes.c_void_p).value or 0


def blas_core():
    """The kernel set (core type) that OpenBLAS picked at load time, or None for
    another BLAS."""
    import ctypes

    fn = _blas_symbol("openblas_get_corename", "scipy_openblas_get_corename")
    if fn is None:
        return None
    fn.restype = ctypes.c_char_p
    return fn().decode()


def _blas_info(module):
    try:
        cfg = module.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        return {k: blas.get(k) for k in ("name", "version", "openblas configuration")
                if blas.get(k) is not None}
    except Exception as exc:  # old versions without mode="dicts"
        return {"error": repr(exc)}


def show_config(as_dict=False):
    """Print (or return, with ``as_dict=True``) how fastbn was built and runs.

    Version, Python, platform, OpenMP (enabled, version, runtime library), the thread
    count, build flags, NumPy's and SciPy's BLAS, who threads the GEMMs and the
    OpenBLAS kernel set (as ``numpy.show_config``).

    Parameters
    ----------
    as_dict : bool, optional
        Return the facts as a dict instead of printing them.

    Returns
    -------
    dict or None
        With ``as_dict=True``, keys ``version``, ``python``, ``platform``, ``openmp``,
        ``openmp_version``, ``openmp_runtime``, ``num_threads``, ``num_procs``,
        ``build_flags``, ``numpy``, ``scipy``, ``gemm_threads``, ``gemm_kernels``;
        otherwise None.
    """
    import numpy
    import scipy

    from . import __version__

    omp_version = _openmp_helpers.openmp_version()
    info = {
        "version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "openmp": _openmp_helpers.openmp_enabled(),
        "openmp_version": omp_version or None,
        "openmp_runtime": _openmp_runtime(),
        "num_threads": get_num_threads(),
        "num_procs": _openmp_helpers.num_procs() if omp_version else os.cpu_count(),
        "available_cores": available_cores(),
        "build_flags": _openmp_helpers.build_flags(),
        "numpy": {"version": numpy.__version__, "blas": _blas_info(numpy)},
        "scipy": {"version": scipy.__version__, "blas": _blas_info(scipy)},
        # GEMMs: single-threaded BLAS calls inside fastbn's threads, or else one
        # fastbn thread and the BLAS's own
        "gemm_threads": "fastbn" if blas_thread_control() else "blas",
        "gemm_kernels": blas_core(),
    }
    if as_dict:
        return info
    width = max(map(len, info))
    for key, value in info.items():
        print(f"{key:<{width}} : {value}")
    return None
