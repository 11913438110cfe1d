"""ReLU and its gradient on C-contiguous float32 / float64 buffers of any
shape: one pass each, over threads in contiguous blocks (the loops:
_activation.h).  fastbn/kernels.py checks the arrays.

They replace `np.maximum(x, 0)` and `g * (y > 0)`: one thread, and the
gradient two passes with a boolean temporary.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange

cnp.import_array()

cdef enum:
    BLOCK = 16384          # values per parallel unit
    # Values below which a pass runs on one thread, outside any parallel region
    # (whose start costs 1-2 us here).  Measured, float32, 1 vs 2 threads: the
    # forward ties near 100K values (98K: 3.8 vs 4.3 us; 115K: 5.0 vs 4.4), the
    # gradient, which reads two arrays, near 60K (64K: 4.3 vs 3.8 us).
    RELU_SERIAL_BELOW = 1 << 17
    GRAD_SERIAL_BELOW = 1 << 16


cdef extern from "_activation.h" nogil:
    void fastbn_relu_float(const float*, float*, Py_ssize_t)
    void fastbn_relu_double(const double*, double*, Py_ssize_t)
    void fastbn_relu_grad_float(const float*, const float*, float*, Py_ssize_t)
    void fastbn_relu_grad_double(const double*, const double*, double*, Py_ssize_t)


cdef inline void _relu_run(const floating* x, floating* y, Py_ssize_t n) noexcept nogil:
    if floating is float:
        fastbn_relu_float(x, y, n)
    else:
        fastbn_relu_double(x, y, n)


cdef inline void _grad_run(const floating* dy, const floating* y, floating* dx,
                           Py_ssize_t n) noexcept nogil:
    if floating is float:
        fastbn_relu_grad_float(dy, y, dx, n)
    else:
        fastbn_relu_grad_double(dy, y, dx, n)


cdef inline int _threads(Py_ssize_t n, Py_ssize_t serial_below, int nthreads) noexcept nogil:
    return 1 if n < serial_below else max(nthreads, 1)


cdef void _relu(const floating* x, floating* y, Py_ssize_t n, int nt) noexcept nogil:
    cdef Py_ssize_t u, lo
    if nt == 1:
        _relu_run(x, y, n)
        return
    for u in prange((n + BLOCK - 1) // BLOCK, schedule='static', num_threads=nt):
        lo = u * BLOCK
        _relu_run(x + lo, y + lo, min(BLOCK, n - lo))


cdef void _grad(const floating* dy, const floating* y, floating* dx, Py_ssize_t n,
                int nt) noexcept nogil:
    cdef Py_ssize_t u, lo
    if nt == 1:
        _grad_run(dy, y, dx, n)
        return
    for u in prange((n + BLOCK - 1) // BLOCK, schedule='static', num_threads=nt):
        lo = u * BLOCK
        _grad_run(dy + lo, y + lo, dx + lo, min(BLOCK, n - lo))


def relu(cnp.ndarray x, cnp.ndarray y, int nthreads):
    """y = relu(x), a NaN kept: one read of x and write of y."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(x)
    cdef int nt = _threads(n, RELU_SERIAL_BELOW, nthreads)
    cdef void* px = cnp.PyArray_DATA(x)
    cdef void* py = cnp.PyArray_DATA(y)
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE:
            _relu(<double*>px, <double*>py, n, nt)
        else:
            _relu(<float*>px, <float*>py, n, nt)


def relu_grad(cnp.ndarray dy, cnp.ndarray y, cnp.ndarray dx, int nthreads):
    """dx = 0 where y (relu's output) <= 0, else dy: one read of dy and y and
    write of dx."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(y)
    cdef int nt = _threads(n, GRAD_SERIAL_BELOW, nthreads)
    cdef void* pdy = cnp.PyArray_DATA(dy)
    cdef void* py = cnp.PyArray_DATA(y)
    cdef void* pdx = cnp.PyArray_DATA(dx)
    with nogil:
        if cnp.PyArray_TYPE(y) == cnp.NPY_DOUBLE:
            _grad(<double*>pdy, <double*>py, <double*>pdx, n, nt)
        else:
            _grad(<float*>pdy, <float*>py, <float*>pdx, n, nt)
