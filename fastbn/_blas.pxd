# Row-major GEMMs on the BLAS behind scipy.linalg.cython_blas, run inside
# fastbn's threads (see _blas.pyx).
from cython cimport floating

cdef void blas_one_thread(bint on) noexcept nogil
cdef bint blas_in_threads() noexcept nogil
cdef void sgemm_rm(bint ta, bint tb, int m, int n, int k, float alpha, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc) noexcept nogil
cdef void dgemm_rm(bint ta, bint tb, int m, int n, int k, double alpha, const double* a,
                   int lda, const double* b, int ldb, double beta, double* c,
                   int ldc) noexcept nogil


cdef inline void gemm_rm(bint ta, bint tb, int m, int n, int k, const floating* a, int lda,
                         const floating* b, int ldb, floating beta, floating* c,
                         int ldc) noexcept nogil:
    """c = op(a) @ op(b) + beta * c, row-major, in the buffers' precision."""
    if floating is float:
        sgemm_rm(ta, tb, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)
    else:
        dgemm_rm(ta, tb, m, n, k, 1, a, lda, b, ldb, beta, c, ldc)


cdef inline int gemm_threads(double work, int nthreads) noexcept nogil:
    """Threads for a kernel of independent per-image GEMMs (work: multiply-adds):
    one when it is small, or when the BLAS cannot be held at one thread."""
    return max(nthreads, 1) if work >= 16384 and blas_in_threads() else 1
