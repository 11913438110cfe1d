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
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc

from ._parallel cimport parallel_for, unit_fn

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


cdef inline _Param* _nth(void* params, size_t stride, Py_ssize_t i) noexcept nogil:
    """Parameter i of an array of structs stride bytes apart, each starting with its _Param."""
    return <_Param*>(<char*>params + i * stride)


cdef inline _Param* _owner(void* params, size_t stride, Py_ssize_t k,
                           Py_ssize_t u) noexcept nogil:
    """The parameter whose units hold unit u: the last whose first unit is <= u."""
    cdef Py_ssize_t lo = 0, hi = k - 1, mid
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _nth(params, stride, mid).unit <= u:
            lo = mid
        else:
            hi = mid - 1
    return _nth(params, stride, lo)


cdef void _loop(void* params, size_t stride, Py_ssize_t k, int nthreads, unit_fn fn,
                void* ctx) noexcept nogil:
    """Every parameter's units (BLOCK values each, numbered in turn) in one loop,
    on one thread below SERIAL_BELOW values."""
    cdef Py_ssize_t i, units = 0, values = 0
    cdef _Param* q
    for i in range(k):
        q = _nth(params, stride, i)
        q.unit = units
        units += (q.n + BLOCK - 1) // BLOCK
        values += q.n
    parallel_for(units, 1 if values < SERIAL_BELOW else nthreads, fn, ctx)


cdef inline void _update(const _Step* c, Py_ssize_t u) noexcept nogil:
    """Unit u: BLOCK values of the parameter whose units hold it (element by
    element: blocks change no bits).  float32 hyperparameters are rounded once
    from the double (NumPy scales by the Python float the same way)."""
    cdef const _Param* q = _owner(c.a, sizeof(_Param), c.k, u)
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
    _loop(c.a, sizeof(_Param), c.k, nthreads, _units, c)


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
    _Param a          # p, g, s1, s2 as in _gather; first (_nth finds it there)
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


cdef struct _TorchStep:  # one call: every parameter's units in one loop, as _Step
    int op
    _TorchParam* t
    Py_ssize_t k


cdef void _torch_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Units u0 to u1 - 1, BLOCK values each (element by element, as _update:
    blocks change no bits)."""
    cdef _TorchStep c = (<_TorchStep*>arg)[0]  # a local copy: see _parallel.pxd
    cdef _TorchParam* t
    cdef Py_ssize_t u, o
    for u in range(u0, u1):
        t = <_TorchParam*>_owner(c.t, sizeof(_TorchParam), c.k, u)
        o = (u - t.a.unit) * BLOCK
        _torch_run(c.op, t, o, min(<Py_ssize_t>BLOCK, t.a.n - o))


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
    cdef _TorchStep c
    c.t = _gather_torch(ps, gs, s1, s2, s3, hyper, s2_optional)
    if c.t == NULL:
        return False
    c.op, c.k = op, len(ps)
    try:
        with nogil:
            _loop(c.t, sizeof(_TorchParam), c.k, nthreads, _torch_units, &c)
    finally:
        free(c.t)
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
