"""ReLU, ReLU of a sum, and the ReLU's gradient on C-contiguous float32 / float64
buffers of any shape: one pass each, in blocks of values that fastbn's team shares out
(_parallel.h; the loops: _activation.h).  fastbn/kernels.py checks the arrays.

They replace `np.maximum(x, 0)` and `g * (y > 0)`: one thread, and the
gradient two passes with a boolean temporary.
"""
cimport numpy as cnp

from ._parallel cimport parallel_for

cnp.import_array()

cdef enum:
    BLOCK = 16384          # values per work unit
    # Values below which a pass runs on the calling thread alone (waking the
    # team costs 1-2 us here).  Measured, float32, 1 vs 2 threads: the
    # forward ties near 100K values (98K: 3.8 vs 4.3 us; 115K: 5.0 vs 4.4), the
    # gradient, which reads two arrays (as the ReLU of a sum does), near 60K (64K: 4.3
    # vs 3.8 us).
    RELU_SERIAL_BELOW = 1 << 17
    GRAD_SERIAL_BELOW = 1 << 16


cdef extern from "_activation.h" nogil:
    void fastbn_relu_float(const float*, float*, Py_ssize_t)
    void fastbn_relu_double(const double*, double*, Py_ssize_t)
    void fastbn_add_relu_float(const float*, const float*, float*, Py_ssize_t)
    void fastbn_add_relu_double(const double*, const double*, double*, Py_ssize_t)
    void fastbn_relu_grad_float(const float*, const float*, float*, Py_ssize_t)
    void fastbn_relu_grad_double(const double*, const double*, double*, Py_ssize_t)


ctypedef struct Pass:    # one call's arrays (of the data's type)
    bint dbl
    Py_ssize_t n
    const void* a        # x, or dy
    const void* b        # the second summand (ReLU of a sum), else NULL
    const void* y        # the forward's output (gradient), else NULL
    void* out            # y, or dx


cdef void _units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Values u0 * BLOCK to u1 * BLOCK - 1 of one pass, in one loop."""
    cdef Pass c = (<Pass*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t lo = u0 * BLOCK, m = min(u1 * BLOCK, c.n) - lo
    if c.b != NULL and c.dbl:
        fastbn_add_relu_double(<const double*>c.a + lo, <const double*>c.b + lo,
                               <double*>c.out + lo, m)
    elif c.b != NULL:
        fastbn_add_relu_float(<const float*>c.a + lo, <const float*>c.b + lo,
                              <float*>c.out + lo, m)
    elif c.y == NULL and c.dbl:
        fastbn_relu_double(<const double*>c.a + lo, <double*>c.out + lo, m)
    elif c.y == NULL:
        fastbn_relu_float(<const float*>c.a + lo, <float*>c.out + lo, m)
    elif c.dbl:
        fastbn_relu_grad_double(<const double*>c.a + lo, <const double*>c.y + lo,
                                <double*>c.out + lo, m)
    else:
        fastbn_relu_grad_float(<const float*>c.a + lo, <const float*>c.y + lo,
                               <float*>c.out + lo, m)


cdef void _run(Pass* c, Py_ssize_t serial_below, int nthreads) noexcept nogil:
    parallel_for((c.n + BLOCK - 1) // BLOCK, 1 if c.n < serial_below else nthreads, _units, c)


def relu(cnp.ndarray x, cnp.ndarray y, int nthreads):
    """y = relu(x), a NaN kept: one read of x and write of y."""
    cdef Pass c
    c.dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    c.n = cnp.PyArray_SIZE(x)
    c.a, c.b, c.y, c.out = cnp.PyArray_DATA(x), NULL, NULL, cnp.PyArray_DATA(y)
    with nogil:
        _run(&c, RELU_SERIAL_BELOW, nthreads)


def add_relu(cnp.ndarray a, cnp.ndarray b, cnp.ndarray y, int nthreads):
    """y = relu(a + b), a NaN kept (a and b of y's shape and dtype): one read of a and
    b and write of y."""
    cdef Pass c
    c.dbl = cnp.PyArray_TYPE(a) == cnp.NPY_DOUBLE
    c.n = cnp.PyArray_SIZE(a)
    c.a, c.b, c.y, c.out = (cnp.PyArray_DATA(a), cnp.PyArray_DATA(b), NULL,
                            cnp.PyArray_DATA(y))
    with nogil:
        _run(&c, GRAD_SERIAL_BELOW, nthreads)


def relu_grad(cnp.ndarray dy, cnp.ndarray y, cnp.ndarray dx, int nthreads):
    """dx = 0 where y (relu's output) <= 0, else dy: one read of dy and y and
    write of dx."""
    cdef Pass c
    c.dbl = cnp.PyArray_TYPE(y) == cnp.NPY_DOUBLE
    c.n = cnp.PyArray_SIZE(y)
    c.a, c.b, c.y, c.out = (cnp.PyArray_DATA(dy), NULL, cnp.PyArray_DATA(y),
                            cnp.PyArray_DATA(dx))
    with nogil:
        _run(&c, GRAD_SERIAL_BELOW, nthreads)
