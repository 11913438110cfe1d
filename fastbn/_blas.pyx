"""Matrix products for the tape's layers, on one thread pool.

fastbn runs every GEMM of a training step inside its own OpenMP threads, each
call a single-threaded BLAS call (scipy.linalg.cython_blas), as PyTorch does
with its one pool.  NumPy's matmul lets OpenBLAS start its own threads, which
spin for a long time after each product, while libgomp's workers spin after
each fastbn kernel: on 2 cores each side starves the other, and the convnet's
training step took 2-10x longer at 2 threads than at 1.

While fastbn's threads call it, the BLAS is held at one thread, through
openblas_set_num_threads_local (OpenBLAS >= 0.3.27; despite its name it sets
the library-wide count and returns the previous one), which fastbn/_config.py
finds behind scipy.linalg.cython_blas: only scipy.linalg's BLAS, not NumPy's,
and only during fastbn's calls.  Without it (another BLAS) products run on one
fastbn thread and the BLAS threads itself.
"""
import numpy as np

from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK)
from cython cimport floating
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport dgemm, sgemm

cdef enum:
    SERIAL_BELOW = 1 << 18   # multiply-adds; smaller products run on one thread
    BLOCK = 64               # rows (or columns) of the output per parallel unit

ctypedef int (*_set_threads_t)(int) noexcept nogil
cdef _set_threads_t _set_threads = NULL  # sets the BLAS's thread count, returns the old one
cdef PyThread_type_lock _lock = PyThread_allocate_lock()
cdef int _holders = 0, _saved = 0


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


def matmul(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out, bint ta,
           bint tb, int nthreads):
    """out = op(a) @ op(b), op transposing when ta / tb (a, b stored C-contiguous).
    The output is cut into blocks of BLOCK rows, or of columns when it has more
    of those, fixed by the shape: each element's sum is the same at any thread
    count."""
    cdef int m = out.shape[0], n = out.shape[1], k = a.shape[0] if ta else a.shape[1]
    cdef int lda = a.shape[1], ldb = b.shape[1], ldc = out.shape[1]
    cdef bint by_rows = m >= n
    cdef Py_ssize_t units = ((m if by_rows else n) + BLOCK - 1) // BLOCK, u
    cdef int nt = max(nthreads, 1) if <double>m * n * k >= SERIAL_BELOW else 1
    cdef int lo, w
    cdef const floating* ap = &a[0, 0]
    cdef const floating* bp = &b[0, 0]
    cdef floating* cp = &out[0, 0]
    if not blas_in_threads():
        nt = 1
    with nogil:
        blas_one_thread(True)
        for u in prange(units, schedule='static', num_threads=nt):
            lo = u * BLOCK
            if by_rows:  # rows lo.. of op(a): row lo of a, or column lo when transposed
                w = min(BLOCK, m - lo)
                gemm_rm(ta, tb, w, n, k, ap + (lo if ta else lo * lda), lda, bp, ldb, 0,
                        cp + lo * ldc, ldc)
            else:        # columns lo.. of op(b)
                w = min(BLOCK, n - lo)
                gemm_rm(ta, tb, m, w, k, ap, lda, bp + (lo * ldb if tb else lo), ldb, 0,
                        cp + lo, ldc)
        blas_one_thread(False)

