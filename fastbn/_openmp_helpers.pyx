"""Python access to the OpenMP runtime (_omp_compat.h holds the calls, with serial stubs)."""

cdef extern from "_omp_compat.h":
    int omp_get_max_threads() nogil
    int omp_get_num_procs() nogil
    int FASTBN_OPENMP
    long FASTBN_OPENMP_VERSION
    const char* FASTBN_BUILD_FLAGS


def openmp_enabled():
    """True when the extensions were compiled with OpenMP."""
    return bool(FASTBN_OPENMP)


def openmp_version():
    """The _OPENMP date macro the compiler defined (e.g. 201511), or 0."""
    return FASTBN_OPENMP_VERSION


def max_threads():
    """omp_get_max_threads(), or 1 in a serial build."""
    return omp_get_max_threads()


def num_procs():
    return omp_get_num_procs()


def build_flags():
    """Compile and link flags the extensions were built with."""
    return FASTBN_BUILD_FLAGS.decode()
