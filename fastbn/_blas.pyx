"""Matrix products for the tape's layers, on one thread pool.

fastbn runs every GEMM of a training step inside its own threads (the team of
_parallel.h), each call a single-threaded BLAS call (scipy.linalg.cython_blas),
as PyTorch does with its one pool.  NumPy's matmul lets OpenBLAS start its own
threads, which spin for a long time after each product, while fastbn's workers
spin after each kernel: on 2 cores each side starved the other, and the
convnet's training step took 2-10x longer at 2 threads than at 1.

While fastbn's threads call it, the BLAS is held at one thread, through
openblas_set_num_threads_local (OpenBLAS >= 0.3.27; despite its name it sets
the library-wide count and returns the previous one), which fastbn/_config.py
finds behind scipy.linalg.cython_blas: only scipy.linalg's BLAS, not NumPy's,
and only during fastbn's calls.  Without it (another BLAS) products run on one
fastbn thread and the BLAS threads itself.
"""
cimport numpy as cnp
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK)
from cython cimport floating
from libc.limits cimport INT_MAX
from scipy.linalg.cython_blas cimport dgemm, sgemm

from ._parallel cimport parallel_for

cnp.import_array()

cdef enum:
    SERIAL_BELOW = 1 << 20   # multiply-adds; smaller products are one call on the calling
                             # thread, which reads their output next (split over 2 threads,
                             # the MLP's 60x100x100 ones saved 3 us alone, none in its step)
    GRAIN = 1 << 21          # multiply-adds per unit: each call repacks the shared operand
                             # (13 units of 64 made the MLP's 100x784x60 weight gradient
                             # 1.15x slower than 2 units)
    MIN_WIDTH = 64           # rows (or columns) of the output per unit, at least
    ALIGN = 16               # unit widths are multiples of it (the kernels' tiles)

cdef Py_ssize_t _size_limit = INT_MAX    # the largest size or leading dimension of one call

ctypedef int (*_set_threads_t)(int) noexcept nogil
cdef _set_threads_t _set_threads = NULL  # sets the BLAS's thread count, returns the old one
cdef PyThread_type_lock _lock = PyThread_allocate_lock()
cdef int _holders = 0, _saved = 0


def set_size_limit(Py_ssize_t limit):
    """The largest size or leading dimension one BLAS call of matmul gets (default
    INT_MAX, the 32-bit BLAS's); returns the previous one.  Lowered, it sends small
    products through the splitting that large ones need."""
    global _size_limit
    if limit < 1:
        raise ValueError(f"limit must be positive, got {limit}")
    previous, _size_limit = _size_limit, min(limit, INT_MAX)
    return previous


def set_thread_control(size_t address):
    """The address of openblas_set_num_threads_local in the BLAS behind
    scipy.linalg.cython_blas (0: none)."""
    global _set_threads
    _set_threads = <_set_threads_t>address


cdef bint blas_in_threads() noexcept nogil:
    """Whether the BLAS can be held at one thread, for calls from several threads."""
    return _set_threads != NULL


cdef void blas_one_thread(bint hold) noexcept nogil:
    """Hold the BLAS at one thread (hold) or let it go: the first holder saves its
    thread count, the last one restores it (Python threads may overlap)."""
    global _holders, _saved
    if _set_threads == NULL:
        return
    PyThread_acquire_lock(_lock, WAIT_LOCK)
    if hold:
        if _holders == 0:
            _saved = _set_threads(1)
        _holders += 1
    else:
        _holders -= 1
        if _holders == 0:
            _set_threads(_saved)
    PyThread_release_lock(_lock)


cdef void sgemm_rm(bint ta, bint tb, int m, int n, int k, float alpha, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc) noexcept nogil:
    """Row-major c (m x n) = alpha * op(a) @ op(b) + beta * c (op: transposed if
    ta / tb), as the column-major BLAS's c^T = op(b)^T @ op(a)^T."""
    cdef char tra = b'T' if ta else b'N'
    cdef char trb = b'T' if tb else b'N'
    sgemm(&trb, &tra, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda, &beta, c, &ldc)


cdef void dgemm_rm(bint ta, bint tb, int m, int n, int k, double alpha, const double* a,
                   int lda, const double* b, int ldb, double beta, double* c,
                   int ldc) noexcept nogil:
    cdef char tra = b'T' if ta else b'N'
    cdef char trb = b'T' if tb else b'N'
    dgemm(&trb, &tra, &n, &m, &k, &alpha, <double*>b, &ldb, <double*>a, &lda, &beta, c, &ldc)


ctypedef struct Product:  # one call's operands (of the data's type) and units
    bint dbl, ta, tb, by_rows
    Py_ssize_t m, n, k, lda, ldb, ldc, width
    const void* a
    const void* b
    void* c


cdef inline Py_ssize_t _ld(Py_ssize_t ld, Py_ssize_t row, Py_ssize_t limit) noexcept nogil:
    """A leading dimension for one call: ld itself, or for a matrix passed one row
    at a time (ld over the limit) the row's length, which the BLAS accepts and never
    steps by."""
    return ld if ld <= limit else row


cdef void _gemm_split(bint ta, bint tb, Py_ssize_t m, Py_ssize_t n, Py_ssize_t k,
                      const floating* a, Py_ssize_t lda, const floating* b, Py_ssize_t ldb,
                      floating* c, Py_ssize_t ldc) noexcept nogil:
    """c = op(a) @ op(b) in calls whose sizes and leading dimensions fit the BLAS's
    ints (_size_limit): one call when they do, else blocks of at most that many rows,
    columns and depth, the depth blocks summed in order (fixed by the shape, so the
    bits do not depend on the thread count); a matrix whose rows are longer than the
    limit goes one row per call."""
    cdef Py_ssize_t L = _size_limit, mb = L, nb = L, kb = L, i, j, p, mi, nj, kp
    if max(m, n, k) <= L and max(lda, ldb, ldc) <= L:
        gemm_rm(ta, tb, <int>m, <int>n, <int>k, a, <int>lda, b, <int>ldb, 0, c, <int>ldc)
        return
    if ldc > L or (lda > L and not ta):  # c's rows, and a's when they are op(a)'s
        mb = 1
    if (lda > L and ta) or (ldb > L and not tb):  # rows of depth
        kb = 1
    if ldb > L and tb:  # b's rows are op(b)'s columns
        nb = 1
    i = 0
    while i < m:
        mi = min(mb, m - i)
        j = 0
        while j < n:
            nj = min(nb, n - j)
            p = 0
            while p < k:
                kp = min(kb, k - p)
                gemm_rm(ta, tb, <int>mi, <int>nj, <int>kp,
                        a + (p * lda + i if ta else i * lda + p),
                        <int>_ld(lda, mi if ta else kp, L),
                        b + (j * ldb + p if tb else p * ldb + j),
                        <int>_ld(ldb, kp if tb else nj, L),
                        0 if p == 0 else 1, c + i * ldc + j, <int>_ld(ldc, nj, L))
                p += kp
            j += nj
        i += mi


cdef inline void _block_of(const floating* a, const Product* p, Py_ssize_t u) noexcept nogil:
    """Unit u of c = op(a) @ op(b): width rows, or columns when by_rows is false."""
    cdef bint ta = p.ta, tb = p.tb
    cdef Py_ssize_t m = p.m, n = p.n, k = p.k, lda = p.lda, ldb = p.ldb, ldc = p.ldc
    cdef Py_ssize_t lo = u * p.width, width = p.width, w
    cdef const floating* b = <const floating*>p.b
    cdef floating* c = <floating*>p.c
    if p.by_rows:  # rows lo.. of op(a): row lo of a, or column lo when transposed
        w = min(width, m - lo)
        _gemm_split(ta, tb, w, n, k, a + (lo if ta else lo * lda), lda, b, ldb, c + lo * ldc,
                    ldc)
    else:        # columns lo.. of op(b)
        w = min(width, n - lo)
        _gemm_split(ta, tb, m, w, k, a, lda, b + (lo * ldb if tb else lo), ldb, c + lo, ldc)


cdef void _blocks(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Units u0 to u1 - 1 of c = op(a) @ op(b), each width rows, or columns when
    by_rows is false."""
    cdef Product p = (<Product*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u
    for u in range(u0, u1):
        if p.dbl:
            _block_of(<const double*>p.a, &p, u)
        else:
            _block_of(<const float*>p.a, &p, u)


cdef Py_ssize_t _unit_width(Py_ssize_t m, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Rows (or columns, the longer side) of c per unit, from the shape alone, so
    each element's sum is the same at any thread count: the whole side below
    SERIAL_BELOW, else an even number of units (two threads stay balanced), as
    many as hold GRAIN multiply-adds each (two at least), MIN_WIDTH wide or more."""
    cdef double macs = <double>m * n * k
    cdef Py_ssize_t side = max(m, n), units, width
    if macs < SERIAL_BELOW:
        return side
    units = 2 * <Py_ssize_t>min(max(macs / (2.0 * GRAIN), 1.0), <double>side)
    width = (side + units - 1) // units
    width = (width + ALIGN - 1) // ALIGN * ALIGN
    return min(max(width, MIN_WIDTH), side)


cdef void _matmul(Product* p, int nt) noexcept nogil:
    """c = op(a) @ op(b), cut into units of whole rows, or of columns when it has
    more of those (_unit_width).  One unit runs on the calling thread, where a
    small product would cost less than waking the team."""
    p.by_rows = p.m >= p.n
    p.width = _unit_width(p.m, p.n, p.k)
    parallel_for(((p.m if p.by_rows else p.n) + p.width - 1) // p.width, nt, _blocks, p)


def matmul(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out, bint ta, bint tb, int nthreads):
    """out = op(a) @ op(b), op transposing when ta / tb: 2-D C-contiguous arrays
    of one dtype, shapes checked by fastbn/kernels.py (data pointers only: a
    fused memoryview signature costs a microsecond a call)."""
    cdef Product p
    p.dbl, p.ta, p.tb = cnp.PyArray_TYPE(out) == cnp.NPY_DOUBLE, ta, tb
    p.m, p.n, p.k = out.shape[0], out.shape[1], a.shape[0] if ta else a.shape[1]
    p.lda, p.ldb, p.ldc = a.shape[1], b.shape[1], out.shape[1]
    p.a, p.b, p.c = cnp.PyArray_DATA(a), cnp.PyArray_DATA(b), cnp.PyArray_DATA(out)
    cdef int nt = max(nthreads, 1) if blas_in_threads() else 1
    with nogil:
        blas_one_thread(True)
        _matmul(&p, nt)
        blas_one_thread(False)
