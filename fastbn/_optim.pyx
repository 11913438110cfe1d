"""Parameter updates of fastbn.optim's SGD and Adam: one pass over a parameter,
its gradient and its state, in place (the loops: _optim.h), for a list of
parameters in one call (PyTorch's foreach): SGD's step over the MLP's 14
parameters took 27 us one call each, 17 us in one.

Before these, each update was a handful of NumPy operations per parameter,
each a pass with its own temporary: the MLP's 14 parameters took 58 us a
step, a tenth of the whole step.

sgd_many and adam_many check the arrays themselves, cheaply, and return False,
touching nothing, unless each is a plain (exactly ndarray), aligned,
C-contiguous array of its parameter's dtype (float32 or float64) and shape,
the parameter and its state writable; fastbn/kernels.py then checks them with
clear errors and passes plain ones.
"""
cimport numpy as cnp
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from ._parallel cimport parallel_for

cnp.import_array()

cdef enum:
    BLOCK = 16384          # values per work unit (of one parameter)
    SERIAL_BELOW = 65536   # values in all; fewer are updated on the calling thread


cdef extern from "_optim.h" nogil:
    void fastbn_sgd_float(float*, const float*, float*, Py_ssize_t, float, float, float, float,
                          int, int)
    void fastbn_sgd_double(double*, const double*, double*, Py_ssize_t, double, double, double,
                           double, int, int)
    void fastbn_adam_float(float*, const float*, float*, float*, Py_ssize_t, float, float,
                           float, float, float, float, double, double)
    void fastbn_adam_double(double*, const double*, double*, double*, Py_ssize_t, double,
                            double, double, double, double, double, double, double)


cdef struct _Param:
    Py_ssize_t unit   # its first work unit: the parameters' units follow each other
    void* p
    void* g
    void* s1          # momentum buffer (NULL: none) or exp_avg
    void* s2          # exp_avg_sq
    Py_ssize_t n
    bint is_double
    bint first        # SGD: the momentum buffer's first step
    double step_size  # Adam: lr / (1 - beta1**step)
    double bc2_sqrt   # Adam: sqrt(1 - beta2**step)


cdef bint _like(object a, cnp.ndarray p, bint writable):
    """a is an aligned C-contiguous ndarray (writable if asked) of p's dtype and shape."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_TYPE(arr) == cnp.PyArray_TYPE(p) and cnp.PyArray_SAMESHAPE(arr, p)
            and (cnp.PyArray_ISCARRAY(arr) if writable else cnp.PyArray_ISCARRAY_RO(arr)))


cdef _Param* _gather(list ps, list gs, list s1, list s2) except? NULL:
    """Each parameter's pointers, to be freed; NULL unless every ps[i] is a plain,
    writable C-contiguous float32/float64 array and gs[i], s1[i] (None allowed
    when s2 is None: SGD without momentum), s2[i] are arrays like it."""
    cdef Py_ssize_t k = len(ps), i
    cdef cnp.ndarray p
    for i in range(k):
        if type(ps[i]) is not cnp.ndarray:
            return NULL
        p = <cnp.ndarray>ps[i]
        if not (cnp.PyArray_TYPE(p) in (cnp.NPY_FLOAT, cnp.NPY_DOUBLE)
                and cnp.PyArray_ISCARRAY(p) and _like(gs[i], p, False)
                and (_like(s1[i], p, True) or (s2 is None and s1[i] is None))
                and (s2 is None or _like(s2[i], p, True))):
            return NULL
    cdef _Param* out = <_Param*>malloc(max(k, 1) * sizeof(_Param))
    if out == NULL:
        raise MemoryError()
    for i in range(k):
        p = <cnp.ndarray>ps[i]
        out[i].p = cnp.PyArray_DATA(p)
        out[i].g = cnp.PyArray_DATA(<cnp.ndarray>gs[i])
        out[i].s1 = NULL if s1[i] is None else cnp.PyArray_DATA(<cnp.ndarray>s1[i])
        out[i].s2 = NULL if s2 is None else cnp.PyArray_DATA(<cnp.ndarray>s2[i])
        out[i].n = cnp.PyArray_SIZE(p)
        out[i].is_double = cnp.PyArray_TYPE(p) == cnp.NPY_DOUBLE
    return out


cdef struct _Step:     # one call: every parameter's units in one loop
    _Param* a
    Py_ssize_t k
    bint adam
    double lr, wd, momentum, damp1, beta1, beta2, eps
    bint nesterov


cdef inline void _update(const _Step* c, Py_ssize_t u) noexcept nogil:
    """Unit u: BLOCK values of the parameter whose units hold it (element by
    element: blocks change no bits).  float32 hyperparameters are rounded once
    from the double (NumPy scales by the Python float the same way)."""
    cdef Py_ssize_t lo = 0, hi = c.k - 1, mid
    while lo < hi:  # the last parameter whose first unit is <= u
        mid = (lo + hi + 1) // 2
        if c.a[mid].unit <= u:
            lo = mid
        else:
            hi = mid - 1
    cdef const _Param* q = &c.a[lo]
    cdef Py_ssize_t o = (u - q.unit) * BLOCK, n = min(<Py_ssize_t>BLOCK, q.n - o)
    if c.adam and q.is_double:
        fastbn_adam_double(<double*>q.p + o, <const double*>q.g + o, <double*>q.s1 + o,
                           <double*>q.s2 + o, n, c.wd, c.beta1, 1 - c.beta1, c.beta2,
                           1 - c.beta2, q.step_size, q.bc2_sqrt, c.eps)
    elif c.adam:
        fastbn_adam_float(<float*>q.p + o, <const float*>q.g + o, <float*>q.s1 + o,
                          <float*>q.s2 + o, n, <float>c.wd, <float>c.beta1,
                          <float>(1 - c.beta1), <float>c.beta2, <float>(1 - c.beta2),
                          <float>q.step_size, q.bc2_sqrt, c.eps)
    elif q.is_double:
        fastbn_sgd_double(<double*>q.p + o, <const double*>q.g + o,
                          NULL if q.s1 == NULL else <double*>q.s1 + o, n, c.lr, c.wd,
                          c.momentum, c.damp1, c.nesterov, q.first)
    else:
        fastbn_sgd_float(<float*>q.p + o, <const float*>q.g + o,
                         NULL if q.s1 == NULL else <float*>q.s1 + o, n, <float>c.lr,
                         <float>c.wd, <float>c.momentum, <float>c.damp1, c.nesterov, q.first)


cdef void _units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    cdef _Step c = (<_Step*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u
    for u in range(u0, u1):
        _update(&c, u)


cdef void _run(_Step* c, int nthreads) noexcept nogil:
    """Every parameter's units in one loop, on one thread below SERIAL_BELOW values."""
    cdef Py_ssize_t i, units = 0, values = 0
    for i in range(c.k):
        c.a[i].unit = units
        units += (c.a[i].n + BLOCK - 1) // BLOCK
        values += c.a[i].n
    parallel_for(units, 1 if values < SERIAL_BELOW else nthreads, _units, c)


def sgd_many(list ps, list gs, list bufs, list firsts, double lr, double weight_decay,
             double momentum, double dampening, bint nesterov, int nthreads):
    """For each parameter p = ps[i] in turn (g = gs[i], buf = bufs[i] or None):
    p -= lr * d, d = g + weight_decay * p, then with a momentum buffer
    buf = d on its first step (firsts[i]), else momentum * buf + (1 - dampening)
    * d, and d = buf, or d + momentum * buf (nesterov).  False, touching
    nothing, unless every array is plain (module docstring)."""
    cdef Py_ssize_t k = len(ps), i
    cdef _Param* a = _gather(ps, gs, bufs, None)
    cdef _Step c
    if a == NULL:
        return False
    try:
        for i in range(k):
            a[i].first = firsts[i]
        c.a, c.k, c.adam, c.nesterov = a, k, False, nesterov
        c.lr, c.wd, c.momentum, c.damp1 = lr, weight_decay, momentum, 1 - dampening
        with nogil:
            _run(&c, nthreads)
    finally:
        free(a)
    return True


def adam_many(list ps, list gs, list ms, list vs, list steps, double lr, double weight_decay,
              double beta1, double beta2, double eps, int nthreads):
    """For each parameter p = ps[i] in turn, Adam's step number steps[i] (from 1)
    with g = gs[i], m = ms[i], v = vs[i]: d = g + weight_decay * p,
    m = beta1 * m + (1 - beta1) * d, v = beta2 * v + (1 - beta2) * d * d,
    p -= lr / (1 - beta1**step) * m / (sqrt(v) / sqrt(1 - beta2**step) + eps).
    False, touching nothing, unless every array is plain (module docstring)."""
    cdef Py_ssize_t k = len(ps), i
    cdef _Param* a = _gather(ps, gs, ms, vs)
    cdef _Step c
    cdef long step
    if a == NULL:
        return False
    try:
        for i in range(k):
            step = steps[i]
            a[i].step_size = lr / (1 - beta1 ** step)
            a[i].bc2_sqrt = sqrt(1 - beta2 ** step)
        c.a, c.k, c.adam = a, k, True
        c.wd, c.beta1, c.beta2, c.eps = weight_decay, beta1, beta2, eps
        with nogil:
            _run(&c, nthreads)
    finally:
        free(a)
    return True
