"""Parameter updates of fastbn.optim's SGD, Adam, AdamW, RMSprop and Adadelta: one
pass over a parameter, its gradient and its state, in place (the loops: _optim.h),
for a list of parameters in one call (PyTorch's foreach): SGD's step over the MLP's
14 parameters took 27 us one call each, 17 us in one.

Before these, each update was a handful of NumPy operations per parameter,
each a pass with its own temporary: the MLP's 14 parameters took 58 us a
step, a tenth of the whole step.

The *_many functions check the arrays themselves, cheaply, and return False,
touching nothing, unless each is a plain (exactly ndarray), aligned,
C-contiguous array of its parameter's dtype (float32 or float64) and shape,
the parameter and its state writable; fastbn/kernels.py then checks them with
clear errors and passes plain ones.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

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


cdef struct _Param:
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


def sgd_many(list ps, list gs, list bufs, list firsts, double lr, double weight_decay,
             double momentum, double dampening, bint nesterov, int nthreads):
    """For each parameter p = ps[i] in turn (g = gs[i], buf = bufs[i] or None):
    p -= lr * d, d = g + weight_decay * p, then with a momentum buffer
    buf = d on its first step (firsts[i]), else momentum * buf + (1 - dampening)
    * d, and d = buf, or d + momentum * buf (nesterov).  False, touching
    nothing, unless every array is plain (module docstring)."""
    cdef Py_ssize_t k = len(ps), i
    cdef _Param* a = _gather(ps, gs, bufs, None)
    if a == NULL:
        return False
    try:
        for i in range(k):
            a[i].first = firsts[i]
        with nogil:
            for i in range(k):
                if a[i].is_double:
                    _sgd(<double*>a[i].p, <double*>a[i].g, <double*>a[i].s1, a[i].n, lr,
                         weight_decay, momentum, 1 - dampening, nesterov, a[i].first,
                         _threads(a[i].n, nthreads))
                else:  # each hyperparameter rounded once, from the double (NumPy
                       # scales by the Python float the same way)
                    _sgd(<float*>a[i].p, <float*>a[i].g, <float*>a[i].s1, a[i].n, <float>lr,
                         <float>weight_decay, <float>momentum, <float>(1 - dampening),
                         nesterov, a[i].first, _threads(a[i].n, nthreads))
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
    cdef long step
    if a == NULL:
        return False
    try:
        for i in range(k):
            step = steps[i]
            a[i].step_size = lr / (1 - beta1 ** step)
            a[i].bc2_sqrt = sqrt(1 - beta2 ** step)
        with nogil:
            for i in range(k):
                if a[i].is_double:
                    _adam(<double*>a[i].p, <double*>a[i].g, <double*>a[i].s1,
                          <double*>a[i].s2, a[i].n, weight_decay, beta1, 1 - beta1, beta2,
                          1 - beta2, a[i].step_size, a[i].bc2_sqrt, eps,
                          _threads(a[i].n, nthreads))
                else:
                    _adam(<float*>a[i].p, <float*>a[i].g, <float*>a[i].s1, <float*>a[i].s2,
                          a[i].n, <float>weight_decay, <float>beta1, <float>(1 - beta1),
                          <float>beta2, <float>(1 - beta2), <float>a[i].step_size,
                          a[i].bc2_sqrt, eps, _threads(a[i].n, nthreads))
    finally:
        free(a)
    return True


# -- AdamW, RMSprop, Adadelta: PyTorch's update rules (_optim.h) -----------------------------
cdef extern from "_optim.h" nogil:
    void fastbn_adamw_float(float*, const float*, float*, float*, float*, Py_ssize_t, float,
                            float, float, float, float, float, float)
    void fastbn_adamw_double(double*, const double*, double*, double*, double*, Py_ssize_t,
                             double, double, double, double, double, double, double)
    void fastbn_rmsprop_float(float*, const float*, float*, float*, float*, Py_ssize_t, float,
                              float, float, float, float, float)
    void fastbn_rmsprop_double(double*, const double*, double*, double*, double*, Py_ssize_t,
                               double, double, double, double, double, double)
    void fastbn_adadelta_float(float*, const float*, float*, float*, Py_ssize_t, float, float,
                               float, float, float)
    void fastbn_adadelta_double(double*, const double*, double*, double*, Py_ssize_t, double,
                                double, double, double, double)

cdef enum:
    _ADAMW, _RMSPROP, _ADADELTA
    _NHYPER = 7


cdef struct _TorchParam:
    _Param a          # p, g, s1, s2 as in _gather
    void* s3          # AdamW: max_exp_avg_sq; RMSprop: momentum buffer (NULL: none)
    double h[_NHYPER]  # the loop's hyperparameters, in its argument order
    float hf[_NHYPER]  # the same, each rounded once to float


cdef inline void* _at(void* base, Py_ssize_t lo, bint is_double) noexcept nogil:
    if base == NULL:
        return NULL
    return <void*>(<double*>base + lo) if is_double else <void*>(<float*>base + lo)


cdef void _torch_run(int op, _TorchParam* t, Py_ssize_t lo, Py_ssize_t n) noexcept nogil:
    """op's loop on values lo .. lo + n - 1 of one parameter."""
    cdef bint dbl = t.a.is_double
    cdef void* p = _at(t.a.p, lo, dbl)
    cdef void* g = _at(t.a.g, lo, dbl)
    cdef void* s1 = _at(t.a.s1, lo, dbl)
    cdef void* s2 = _at(t.a.s2, lo, dbl)
    cdef void* s3 = _at(t.s3, lo, dbl)
    cdef double* h = t.h
    cdef float* f = t.hf
    if op == _ADAMW:
        if dbl:
            fastbn_adamw_double(<double*>p, <double*>g, <double*>s1, <double*>s2, <double*>s3,
                                n, h[0], h[1], h[2], h[3], h[4], h[5], h[6])
        else:
            fastbn_adamw_float(<float*>p, <float*>g, <float*>s1, <float*>s2, <float*>s3, n,
                               f[0], f[1], f[2], f[3], f[4], f[5], f[6])
    elif op == _RMSPROP:
        if dbl:
            fastbn_rmsprop_double(<double*>p, <double*>g, <double*>s1, <double*>s2,
                                  <double*>s3, n, h[0], h[1], h[2], h[3], h[4], h[5])
        else:
            fastbn_rmsprop_float(<float*>p, <float*>g, <float*>s1, <float*>s2, <float*>s3, n,
                                 f[0], f[1], f[2], f[3], f[4], f[5])
    else:
        if dbl:
            fastbn_adadelta_double(<double*>p, <double*>g, <double*>s1, <double*>s2, n, h[0],
                                   h[1], h[2], h[3], h[4])
        else:
            fastbn_adadelta_float(<float*>p, <float*>g, <float*>s1, <float*>s2, n, f[0], f[1],
                                  f[2], f[3], f[4])


cdef void _torch_update(int op, _TorchParam* t, int nt) noexcept nogil:
    # element by element, as _sgd: blocks change no bits
    cdef Py_ssize_t u, lo, n = t.a.n
    if nt == 1:
        _torch_run(op, t, 0, n)
        return
    for u in prange((n + BLOCK - 1) // BLOCK, schedule='static', num_threads=nt):
        lo = u * BLOCK
        _torch_run(op, t, lo, min(BLOCK, n - lo))


cdef _TorchParam* _gather_torch(list ps, list gs, list s1, list s2, list s3, list hyper,
                                bint s2_optional) except? NULL:
    """Each parameter's pointers and hyperparameters (hyper[i], a tuple of floats), to
    be freed; NULL unless every operand is plain (module docstring): s1[i] an array
    like ps[i], s2[i] too (or None where s2_optional), s3[i] an array like it or None."""
    cdef Py_ssize_t k = len(ps), i, j
    cdef _TorchParam* out
    if len(s2) != k or len(s3) != k or len(hyper) != k:
        return NULL
    cdef _Param* a = _gather(ps, gs, s1, None)    # checks ps, gs and s1 (or None)
    if a == NULL:
        return NULL
    try:
        for i in range(k):
            if not (s1[i] is not None
                    and (_like(s2[i], ps[i], True) or (s2_optional and s2[i] is None))
                    and (s3[i] is None or _like(s3[i], ps[i], True))):
                return NULL
        out = <_TorchParam*>malloc(max(k, 1) * sizeof(_TorchParam))
        if out == NULL:
            raise MemoryError()
        for i in range(k):
            out[i].a = a[i]
            out[i].a.s2 = NULL if s2[i] is None else cnp.PyArray_DATA(<cnp.ndarray>s2[i])
            out[i].s3 = NULL if s3[i] is None else cnp.PyArray_DATA(<cnp.ndarray>s3[i])
            for j in range(len(hyper[i])):
                out[i].h[j] = hyper[i][j]
                out[i].hf[j] = <float>out[i].h[j]
        return out
    finally:
        free(a)


cdef bint _torch_many(int op, list ps, list gs, list s1, list s2, list s3, list hyper,
                      bint s2_optional, int nthreads) except -1:
    """op's update of every parameter; False, touching nothing, unless every operand
    is plain."""
    cdef Py_ssize_t k = len(ps), i
    cdef _TorchParam* t = _gather_torch(ps, gs, s1, s2, s3, hyper, s2_optional)
    if t == NULL:
        return False
    try:
        with nogil:
            for i in range(k):
                _torch_update(op, &t[i], _threads(t[i].a.n, nthreads))
    finally:
        free(t)
    return True


def adamw_many(list ps, list gs, list ms, list vs, list vmaxs, list steps, double lr,
               double weight_decay, double beta1, double beta2, double eps, int nthreads):
    """For each parameter p = ps[i], AdamW's step number steps[i] (from 1), as
    PyTorch's: p *= 1 - lr * weight_decay, m = lerp(m, g, 1 - beta1),
    v = beta2 * v + (1 - beta2) * g * g, vmax = max(vmax, v) when vmaxs[i] is an
    array (amsgrad), p -= lr / (1 - beta1**step) * m
    / (sqrt(v or vmax) / (1 - beta2**step) ** 0.5 + eps).  False, touching nothing,
    unless every array is plain (module docstring)."""
    hyper = [(1 - lr * weight_decay, 1 - beta1, beta2, 1 - beta2,
              -(lr / (1 - beta1 ** step)), (1 - beta2 ** step) ** 0.5, eps) for step in steps]
    return _torch_many(_ADAMW, ps, gs, ms, vs, vmaxs, hyper, False, nthreads)


def rmsprop_many(list ps, list gs, list square_avgs, list grad_avgs, list bufs, double lr,
                 double weight_decay, double alpha, double eps, double momentum,
                 int nthreads):
    """For each parameter p = ps[i], RMSprop's step as PyTorch's: d = g + weight_decay
    * p, sq = alpha * sq + (1 - alpha) * d * d, centered when grad_avgs[i] is an
    array (ga = lerp(ga, d, 1 - alpha), avg = sqrt(sq - ga * ga) + eps; else
    sqrt(sq) + eps), with momentum when bufs[i] is one (buf = momentum * buf
    + d / avg, p -= lr * buf; else p -= lr * d / avg).  False, touching nothing,
    unless every array is plain (module docstring)."""
    hyper = [(-lr, weight_decay, alpha, 1 - alpha, eps, momentum)] * len(ps)
    return _torch_many(_RMSPROP, ps, gs, square_avgs, grad_avgs, bufs, hyper, True, nthreads)


def adadelta_many(list ps, list gs, list square_avgs, list acc_deltas, double lr,
                  double weight_decay, double rho, double eps, int nthreads):
    """For each parameter p = ps[i], Adadelta's step as PyTorch's: d = g
    + weight_decay * p, sq = rho * sq + (1 - rho) * d * d,
    delta = sqrt(acc + eps) / sqrt(sq + eps) * d, acc = rho * acc + (1 - rho)
    * delta * delta, p -= lr * delta.  False, touching nothing, unless every
    array is plain (module docstring)."""
    hyper = [(-lr, weight_decay, rho, 1 - rho, eps)] * len(ps)
    return _torch_many(_ADADELTA, ps, gs, square_avgs, acc_deltas, [None] * len(ps), hyper,
                       False, nthreads)
