# Row-major GEMMs on the BLAS behind scipy.linalg.cython_blas, run inside
# fastbn's OpenMP threads (see _blas.pyx).
cdef void blas_one_thread(bint on) noexcept nogil
cdef bint blas_in_threads() noexcept nogil
cdef void sgemm_rm(bint ta, bint tb, int m, int n, int k, float alpha, const float* a, int lda,
                   const float* b, int ldb, float beta, float* c, int ldc) noexcept nogil
cdef void dgemm_rm(bint ta, bint tb, int m, int n, int k, double alpha, const double* a,
                   int lda, const double* b, int ldb, double beta, double* c,
                   int ldc) noexcept nogil
