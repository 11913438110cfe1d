"""fastbn's thread team: parallel loops over fixed-size work units that the
calling thread can always finish alone, so that a descheduled thread never
holds a kernel up (the mechanism: _parallel.h).  Kernels cimport parallel_for
(_parallel.pxd); Python sees the test hook and the team's counters."""

cdef extern from "_parallel.h" nogil:
    ctypedef void (*fastbn_unit_fn)(void*, Py_ssize_t, Py_ssize_t, int) noexcept nogil
    void fastbn_parallel_for(Py_ssize_t, int, fastbn_unit_fn, void*)
    void fastbn_parallel_set_order(int, unsigned long long)
    void fastbn_parallel_stats(long long* out)
    enum: FASTBN_STATS

_ORDERS = {"in order": 0, "reverse": 1, "random": 2}


cdef void parallel_for(Py_ssize_t units, int nthreads, unit_fn fn, void* ctx) noexcept nogil:
    """fn(ctx, begin, end, slot) over runs of the units [0, units), on up to
    nthreads threads."""
    fastbn_parallel_for(units, nthreads, <fastbn_unit_fn>fn, ctx)


def set_order(order, seed=0):
    """Test hook: hand the units of every parallel loop out "in order" (the
    default), in "reverse", or in a "random" order (from `seed`), so that tests
    can check that results do not depend on the schedule.  Process-wide; not
    for use while other threads run kernels."""
    if order not in _ORDERS:
        raise ValueError(f"order must be one of {sorted(_ORDERS)}, got {order!r}")
    fastbn_parallel_set_order(_ORDERS[order], seed)


def stats():
    """What the team did so far in this process, for diagnosis.

    Returns
    -------
    dict of str to int
        ``loops`` run with workers invited; ``invited`` workers;
        ``withdrawn`` invitations no worker had accepted when the caller ran
        out of units; ``waits`` for a worker's running units, ``sleeps`` among
        them, ``wait_ns`` spent in them; ``late_start``: loops a woken worker
        found too late and left to the caller; then how often a worker backed
        off, and why: descheduled while it spun (``backoff_gap``), on the
        caller's CPU (``backoff_caller_cpu``), descheduled while it held units
        (``backoff_held``), the caller waited long for it
        (``backoff_caller_waited``).
    """
    cdef long long out[FASTBN_STATS]
    fastbn_parallel_stats(out)
    return dict(zip(("loops", "invited", "withdrawn", "waits", "sleeps", "wait_ns",
                     "backoff_gap", "backoff_caller_cpu", "late_start", "backoff_held",
                     "backoff_caller_waited"), out))
