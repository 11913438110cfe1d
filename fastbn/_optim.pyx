"""Parameter updates of fastbn.optim's SGD and Adam: one pass over a parameter,
its gradient and its state, in place (the loops: _optim.h).

Before these, each update was a handful of NumPy operations per parameter,
each a pass with its own temporary: the MLP's 14 parameters took 58 us a
step, a tenth of the whole step.

Arrays arrive checked by fastbn/kernels.py: one dtype, one shape, C-contiguous.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt

cnp.import_array()

cdef enum:
    BLOCK = 16384          # values per parallel unit
    SERIAL_BELOW = 65536   # values; smaller parameters are updated on one thread


cdef extern from "_optim.h" nogil:
    void fastbn_sgd_float(float*, const float*, float*, Py_ssize_t, float, float, float, float,
                          int, int)
    void fastbn_sgd_double(double*, const double*, double*, Py_ssize_t, double, double, double,
                           double, int, int)
    void fastbn_adam_float(float*, const float*, float*, float*, Py_ssize_t, float, float,
                           float, float, float, float, double, double)
    void fastbn_adam_double(double*, const double*, double*, double*, Py_ssize_t, double,
                            double, double, double, double, double, double, double)


cdef inline int _threads(Py_ssize_t n, int nthreads) noexcept nogil:
    return 1 if n < SERIAL_BELOW else max(nthreads, 1)


cdef inline void _sgd_run(floating* p, const floating* g, floating* buf, Py_ssize_t n,
                          floating lr, floating wd, floating momentum, floating damp1,
                          bint nesterov, bint first) noexcept nogil:
    if floating is float:
        fastbn_sgd_float(p, g, buf, n, lr, wd, momentum, damp1, nesterov, first)
    else:
        fastbn_sgd_double(p, g, buf, n, lr, wd, momentum, damp1, nesterov, first)


cdef void _sgd(floating* p, const floating* g, floating* buf, Py_ssize_t n, floating lr,
               floating wd, floating momentum, floating damp1, bint nesterov, bint first,
               int nt) noexcept nogil:
    # element by element: blocks change no bits.  One thread runs without a
    # parallel region, whose start costs as much as updating a small parameter.
    cdef Py_ssize_t u, lo
    if nt == 1:
        _sgd_run(p, g, buf, n, lr, wd, momentum, damp1, nesterov, first)
        return
    for u in prange((n + BLOCK - 1) // BLOCK, schedule='static', num_threads=nt):
        lo = u * BLOCK
        _sgd_run(p + lo, g + lo, NULL if buf == NULL else buf + lo, min(BLOCK, n - lo), lr,
                 wd, momentum, damp1, nesterov, first)


def sgd(cnp.ndarray p, cnp.ndarray g, buf, double lr, double weight_decay, double momentum,
        double dampening, bint nesterov, bint first, int nthreads):
    """p -= lr * d, d = g + weight_decay * p, then with a momentum buffer (buf
    not None) buf = d on the first step, else momentum * buf + (1 - dampening)
    * d, and d = buf, or d + momentum * buf (nesterov)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* bp = NULL if buf is None else cnp.PyArray_DATA(<cnp.ndarray>buf)
    cdef int nt = _threads(n, nthreads)
    with nogil:
        if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
            _sgd(<double*>pp, <double*>gp, <double*>bp, n, lr, weight_decay, momentum,
                 1 - dampening, nesterov, first, nt)
        else:
            # each hyperparameter rounded once, from the double (NumPy scales by the
            # Python float the same way)
            _sgd(<float*>pp, <float*>gp, <float*>bp, n, <float>lr, <float>weight_decay,
                 <float>momentum, <float>(1 - dampening), nesterov, first, nt)


cdef inline void _adam_run(floating* p, const floating* g, floating* m, floating* v,
                           Py_ssize_t n, floating wd, floating b1, floating c1, floating b2,
                           floating c2, floating step_size, double bc2_sqrt,
                           double eps) noexcept nogil:
    if floating is float:
        fastbn_adam_float(p, g, m, v, n, wd, b1, c1, b2, c2, step_size, bc2_sqrt, eps)
    else:
        fastbn_adam_double(p, g, m, v, n, wd, b1, c1, b2, c2, step_size, bc2_sqrt, eps)


cdef void _adam(floating* p, const floating* g, floating* m, floating* v, Py_ssize_t n,
                floating wd, floating b1, floating c1, floating b2, floating c2,
                floating step_size, double bc2_sqrt, double eps, int nt) noexcept nogil:
    cdef Py_ssize_t u, lo
    if nt == 1:  # as in _sgd
        _adam_run(p, g, m, v, n, wd, b1, c1, b2, c2, step_size, bc2_sqrt, eps)
        return
    for u in prange((n + BLOCK - 1) // BLOCK, schedule='static', num_threads=nt):
        lo = u * BLOCK
        _adam_run(p + lo, g + lo, m + lo, v + lo, min(BLOCK, n - lo), wd, b1, c1, b2, c2,
                  step_size, bc2_sqrt, eps)


def adam(cnp.ndarray p, cnp.ndarray g, cnp.ndarray m, cnp.ndarray v, double lr,
         double weight_decay, double beta1, double beta2, double eps, long step,
         int nthreads):
    """Adam's step number `step` (from 1): d = g + weight_decay * p,
    m = beta1 * m + (1 - beta1) * d, v = beta2 * v + (1 - beta2) * d * d,
    p -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps)."""
    cdef Py_ssize_t n = cnp.PyArray_SIZE(p)
    cdef void* pp = cnp.PyArray_DATA(p)
    cdef void* gp = cnp.PyArray_DATA(g)
    cdef void* mp = cnp.PyArray_DATA(m)
    cdef void* vp = cnp.PyArray_DATA(v)
    cdef double step_size = lr / (1 - beta1 ** step), bc2_sqrt = sqrt(1 - beta2 ** step)
    cdef int nt = _threads(n, nthreads)
    with nogil:
        if cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE:
            _adam(<double*>pp, <double*>gp, <double*>mp, <double*>vp, n, weight_decay,
                  beta1, 1 - beta1, beta2, 1 - beta2, step_size, bc2_sqrt, eps, nt)
        else:
            _adam(<float*>pp, <float*>gp, <float*>mp, <float*>vp, n, <float>weight_decay,
                  <float>beta1, <float>(1 - beta1), <float>beta2, <float>(1 - beta2),
                  <float>step_size, bc2_sqrt, eps, nt)
