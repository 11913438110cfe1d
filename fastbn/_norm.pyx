"""Group, Layer and Instance Normalization kernels: statistics per row of a
reshaped view, then a per-channel (or per-position) affine.

Inputs are C-contiguous (N, C, L) buffers of float or double whose C = G * Cg
channels form G groups: N * G rows of M = Cg * L contiguous values, one mean
and invstd per row.  GroupNorm is that view as it stands; InstanceNorm is
G = C; LayerNorm is G = 1 and L = 1, its "channels" the M positions of the
normalized shape.  This is the Batch Normalization reduction of _core.pyx with
the roles of N and C exchanged, and it runs on _simd.h's loops: the same
one-pass shifted sums (shift: each row's first value), float sums flushed to
double over fixed chunks, E[x^2] - E[x]^2 never formed from raw values.

Work units are runs of whole rows fixed by the shape (never by the thread
count), and a unit is one thread's from start to end: it computes a row's
statistics and normalizes it (forward), or its gradient sums and dx
(backward), while the row is still in cache.  Sums across rows (the weight and
bias gradients) add per-row or per-unit partials in a fixed order after the
parallel loop, so the results are bitwise identical at any thread count.

Two row layouts, chosen by the shape alone:
- segment path (L >= SEG_MIN): a row is Cg channels of L values and runs on
  _simd.h's segment loops with per-channel coefficients;
- position path (L < SEG_MIN, LayerNorm always): per-position loops (_norm.h)
  with the weight spread over positions; its weight and bias gradients are
  summed per position in each unit's partials, units of at least SAMPLES_MIN
  samples.
"""
cimport numpy as cnp
from cython cimport floating
from cython.parallel cimport parallel, threadid
from libc.math cimport sqrt
from libc.string cimport memset

import numpy as np

cnp.import_array()


cdef enum:
    BLOCK = 8192          # values per work unit at least (as _core.pyx's)
    SEG_MIN = 32          # channels at least this long take the segment path
    SAMPLES_MIN = 16      # samples per unit on the position path: the per-position
    # gradient partials cost about 2 / SAMPLES_MIN of the unit's own work
    SERIAL_BELOW = 32768  # values: smaller calls run on one thread (as _core.pyx's)


cdef extern from "_omp_compat.h" nogil:
    int fastbn_team_size()


cdef extern from "_norm.h" nogil:
    void fastbn_seg_moments_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                              const float*, double*, double*)
    void fastbn_seg_moments_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                              const double*, double*, double*)
    void fastbn_seg_plain_grad_sums_f(const float*, const float*, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, const float*, double*, double*)
    void fastbn_seg_plain_grad_sums_d(const double*, const double*, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, const double*, double*, double*)
    void fastbn_seg_affine_f(const float*, float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             Py_ssize_t, const float*, const float*, const float*, int)
    void fastbn_seg_affine_d(const double*, double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             Py_ssize_t, const double*, const double*, const double*, int)
    void fastbn_seg_dx_f(const float*, const float*, float*, Py_ssize_t, Py_ssize_t,
                         Py_ssize_t, Py_ssize_t, const float*, const float*, const float*,
                         const float*, const float*, const float*)
    void fastbn_seg_dx_d(const double*, const double*, double*, Py_ssize_t, Py_ssize_t,
                         Py_ssize_t, Py_ssize_t, const double*, const double*, const double*,
                         const double*, const double*, const double*)
    void fastbn_nc_affine_f(const float*, float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const float*, const float*, const float*, int)
    void fastbn_nc_affine_d(const double*, double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const double*, const double*, const double*, int)
    void fastbn_row_affine_f(const float*, float*, Py_ssize_t, float, float, const float*,
                             const float*)
    void fastbn_row_affine_d(const double*, double*, Py_ssize_t, double, double,
                             const double*, const double*)
    void fastbn_row_grad_sums_f(const float*, const float*, Py_ssize_t, float, const float*,
                                double*, double*)
    void fastbn_row_grad_sums_d(const double*, const double*, Py_ssize_t, double,
                                const double*, double*, double*)
    void fastbn_row_dx_f(const float*, const float*, float*, Py_ssize_t, float, float,
                         const float*, float, float, double*, double*)
    void fastbn_row_dx_d(const double*, const double*, double*, Py_ssize_t, double, double,
                         const double*, double, double, double*, double*)


# ---------------------------------------------------------------- running units

ctypedef void (*unit_fn)(void* ctx, Py_ssize_t begin, Py_ssize_t end, int slot) noexcept nogil


cdef void _run(Py_ssize_t units, int nt, unit_fn fn, void* ctx) noexcept nogil:
    """fn(ctx, begin, end, slot) over units [0, units): each thread of a team of
    at most nt a contiguous run, in thread order; slot (< nt) indexes per-thread
    scratch.  Results never depend on which thread runs a unit."""
    cdef int tid, team
    if nt > units:
        nt = <int>units
    if nt <= 1:
        fn(ctx, 0, units, 0)
        return
    with parallel(num_threads=nt):
        tid = threadid()
        team = fastbn_team_size()
        fn(ctx, units * tid // team, units * (tid + 1) // team, tid)


cdef inline int _threads(Py_ssize_t size, int nthreads) noexcept nogil:
    return 1 if size < SERIAL_BELOW else max(nthreads, 1)


# ---------------------------------------------------------------- the row norms

ctypedef struct Rows:     # one call's arguments, read by its units
    bint dbl              # double data, else float (the void pointers' type)
    Py_ssize_t N, G, Cg, L, M, C, R
    bint seg              # segment path, else position path
    Py_ssize_t per_unit   # rows per work unit (position path: whole samples)
    double eps
    const void* x
    const void* dy
    void* out             # y, or dx (NULL: no dx)
    const void* weight    # segment path: per channel (NULL: ones); position path: per
    const void* bias      # position of a sample, C * L values, never NULL
    void* mean            # per row
    void* invstd
    double* var           # per row biased variance (forward), or NULL
    double* s1            # backward: per (n, c) sums (segment path) or per-unit,
    double* s2            # per-position partials (position path; NULL: not wanted)
    void* scratch         # segment path: 4 * Cg values per slot


cdef Rows _rows(cnp.ndarray x, Py_ssize_t N, Py_ssize_t G, Py_ssize_t Cg, Py_ssize_t L,
                double eps):
    cdef Rows c
    c.dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    c.N, c.G, c.Cg, c.L = N, G, Cg, L
    c.M, c.C, c.R = Cg * L, G * Cg, N * G
    c.seg = L >= SEG_MIN
    if c.seg:
        c.per_unit = max(BLOCK // max(c.M, 1), 1)
    else:
        c.per_unit = G * max(<Py_ssize_t>SAMPLES_MIN, BLOCK // max(c.C * L, 1))
    c.eps = eps
    c.x = cnp.PyArray_DATA(x)
    c.dy = c.out = c.weight = c.bias = c.mean = c.invstd = c.scratch = NULL
    c.var = c.s1 = c.s2 = NULL
    return c


cdef inline Py_ssize_t _units(const Rows* c) noexcept nogil:
    return (c.R + c.per_unit - 1) // c.per_unit


cdef inline void _moments(const floating* p, Py_ssize_t n, const floating* shift, double* t1,
                          double* t2) noexcept nogil:
    """t1 = sum(p - shift), t2 = sum((p - shift)^2) over n values."""
    if floating is float:
        fastbn_seg_moments_f(p, 1, n, 0, 1, shift, t1, t2)
    else:
        fastbn_seg_moments_d(p, 1, n, 0, 1, shift, t1, t2)


cdef void _forward_rows(const floating* x, const Rows* c, Py_ssize_t r0, Py_ssize_t r1,
                        int slot) noexcept nogil:
    """Rows r0 to r1 - 1: statistics (one read of the row), then y (the row
    again, from cache, and one write)."""
    cdef floating* y = <floating*>c.out
    cdef floating* mean = <floating*>c.mean
    cdef floating* invstd = <floating*>c.invstd
    cdef const floating* w = <const floating*>c.weight
    cdef const floating* b = <const floating*>c.bias
    cdef Py_ssize_t r, j, k, M = c.M, Cg = c.Cg
    cdef floating* center = NULL  # the segment path's per-channel coefficients
    cdef floating* scale = NULL
    cdef floating* shift = NULL
    cdef double t1, t2, mu, var, inv_m = 1.0 / <double>M
    cdef floating first, m, s
    if c.seg:
        center = <floating*>c.scratch + slot * 3 * Cg
        scale, shift = center + Cg, center + 2 * Cg
    for r in range(r0, r1):
        first = x[r * M]
        _moments(x + r * M, M, &first, &t1, &t2)
        mu = first + t1 * inv_m
        var = max(t2 - t1 * t1 * inv_m, 0.0) * inv_m
        mean[r] = <floating>mu
        invstd[r] = <floating>(1.0 / sqrt(var + c.eps))
        if c.var != NULL:
            c.var[r] = var
        m, s = mean[r], invstd[r]
        k = (r % c.G) * Cg  # the row's first channel (position path: first position / L)
        if c.seg:
            for j in range(Cg):
                center[j] = m
                scale[j] = <floating>(<double>s * w[k + j]) if w != NULL else s
                shift[j] = b[k + j] if b != NULL else 0
            if floating is float:
                fastbn_seg_affine_f(x + r * M, y + r * M, Cg, c.L, 0, Cg, center, scale,
                                    shift, 0)
            else:
                fastbn_seg_affine_d(x + r * M, y + r * M, Cg, c.L, 0, Cg, center, scale,
                                    shift, 0)
        elif floating is float:
            fastbn_row_affine_f(x + r * M, y + r * M, M, m, s, w + k * c.L, b + k * c.L)
        else:
            fastbn_row_affine_d(x + r * M, y + r * M, M, m, s, w + k * c.L, b + k * c.L)


cdef void _forward_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    cdef Rows c = (<Rows*>arg)[0]  # a local copy: stores to the data cannot change it
    cdef Py_ssize_t r0 = u0 * c.per_unit, r1 = min(u1 * c.per_unit, c.R)
    if c.dbl:
        _forward_rows(<const double*>c.x, &c, r0, r1, slot)
    else:
        _forward_rows(<const float*>c.x, &c, r0, r1, slot)


cdef inline void _row_dx(const floating* x, const floating* dy, floating* dx, Py_ssize_t n,
                         floating m, floating s, const floating* w, floating kx, floating k0,
                         double* q1, double* q2) noexcept nogil:
    """dx of a row and/or (q1 not NULL) its weight and bias gradient terms (_norm.h)."""
    if floating is float:
        fastbn_row_dx_f(x, dy, dx, n, m, s, w, kx, k0, q1, q2)
    else:
        fastbn_row_dx_d(x, dy, dx, n, m, s, w, kx, k0, q1, q2)


cdef void _backward_unit(const floating* x, const Rows* c, Py_ssize_t u,
                         int slot) noexcept nogil:
    """The rows of unit u: gradient sums (one read of x and dy), then dx (the
    rows again, from cache, and one write); the weight and bias gradients'
    terms into s1, s2 (segment path: by the sums; position path: by the dx
    pass)."""
    cdef const floating* dy = <const floating*>c.dy
    cdef floating* dx = <floating*>c.out
    cdef const floating* mean = <const floating*>c.mean
    cdef const floating* invstd = <const floating*>c.invstd
    cdef const floating* w = <const floating*>c.weight
    cdef Py_ssize_t r, j, k, o, M = c.M, Cg = c.Cg, CL = c.C * c.L
    cdef Py_ssize_t r0 = u * c.per_unit, r1 = min(r0 + c.per_unit, c.R)
    cdef floating* center = NULL  # the segment path's per-channel coefficients
    cdef floating* k_dy = NULL
    cdef floating* k_x = NULL
    cdef floating* k_0 = NULL
    cdef double* q1 = NULL
    cdef double* q2 = NULL
    cdef double a, z, wj, inv_m = 1.0 / <double>M
    cdef floating m, s, kx, k0
    if c.seg:
        center = <floating*>c.scratch + slot * 4 * Cg
        k_dy, k_x, k_0 = center + Cg, center + 2 * Cg, center + 3 * Cg
    elif c.s1 != NULL:  # this unit's per-position partials
        q1, q2 = c.s1 + u * CL, c.s2 + u * CL
        memset(q1, 0, CL * sizeof(double))
        memset(q2, 0, CL * sizeof(double))
    for r in range(r0, r1):
        m, s = mean[r], invstd[r]
        k = (r % c.G) * Cg
        o = r * M
        if c.seg:  # a = sum(dy * w), z = sum(dy * w * (x - m)) from per-channel sums
            if floating is float:
                fastbn_seg_plain_grad_sums_f(x + o, dy + o, Cg, c.L, 0, 1, &m, c.s1 + r * Cg,
                                             c.s2 + r * Cg)
            else:
                fastbn_seg_plain_grad_sums_d(x + o, dy + o, Cg, c.L, 0, 1, &m, c.s1 + r * Cg,
                                             c.s2 + r * Cg)
            a = 0.0
            z = 0.0
            for j in range(Cg):
                wj = w[k + j] if w != NULL else 1.0
                a = a + wj * c.s1[r * Cg + j]
                z = z + wj * c.s2[r * Cg + j]
        elif dx == NULL:  # the per-position partials alone
            if q1 != NULL:
                _row_dx(x + o, dy + o, dx, M, m, s, w + k * c.L, 0, 0, q1 + k * c.L,
                        q2 + k * c.L)
            continue
        elif floating is float:
            fastbn_row_grad_sums_f(x + o, dy + o, M, m, w + k * c.L, &a, &z)
        else:
            fastbn_row_grad_sums_d(x + o, dy + o, M, m, w + k * c.L, &a, &z)
        if dx == NULL:
            continue
        # dx = s * w * dy - s / M * a - s^3 / M * z * (x - m)
        kx = <floating>(<double>s * s * s * z * inv_m)
        k0 = <floating>(<double>s * a * inv_m)
        if c.seg:
            for j in range(Cg):
                center[j] = m
                k_dy[j] = <floating>(<double>s * w[k + j]) if w != NULL else s
                k_x[j] = kx
                k_0[j] = k0
            if floating is float:
                fastbn_seg_dx_f(x + o, dy + o, dx + o, Cg, c.L, 0, Cg, center, k_dy, k_x, k_0,
                                NULL, NULL)
            else:
                fastbn_seg_dx_d(x + o, dy + o, dx + o, Cg, c.L, 0, Cg, center, k_dy, k_x, k_0,
                                NULL, NULL)
        else:
            _row_dx(x + o, dy + o, dx + o, M, m, s, w + k * c.L, kx, k0,
                    NULL if q1 == NULL else q1 + k * c.L, NULL if q1 == NULL else q2 + k * c.L)


cdef void _backward_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    cdef Rows c = (<Rows*>arg)[0]  # a local copy: stores to the data cannot change it
    cdef Py_ssize_t u
    for u in range(u0, u1):
        if c.dbl:
            _backward_unit(<const double*>c.x, &c, u, slot)
        else:
            _backward_unit(<const float*>c.x, &c, u, slot)


cdef void _param_grads(const floating* invstd, const Rows* c, Py_ssize_t units,
                       floating* dweight, floating* dbias, double* t) noexcept nogil:
    """dweight, dbias (either may be NULL) from s1, s2 in a fixed order: the
    per-(n, c) sums over n (segment path; dweight's scaled by each row's invstd),
    or the units' per-position partials over units, then each channel's L
    positions (position path).  t: 2 * C doubles."""
    cdef Py_ssize_t n, u, ch, l, C = c.C, L = c.L, CL = c.C * c.L
    cdef double* t1 = t
    cdef double* t2 = t + C
    for ch in range(C):
        t1[ch] = 0.0
        t2[ch] = 0.0
    if c.seg:
        for n in range(c.N):
            for ch in range(C):
                t1[ch] += c.s1[n * C + ch]
                t2[ch] += invstd[n * c.G + ch // c.Cg] * c.s2[n * C + ch]
    elif L == 1:  # channels innermost, so that the loop vectorizes
        for u in range(units):
            for ch in range(C):
                t1[ch] += c.s1[u * CL + ch]
                t2[ch] += c.s2[u * CL + ch]
    else:
        for u in range(units):
            for ch in range(C):
                for l in range(ch * L, ch * L + L):
                    t1[ch] += c.s1[u * CL + l]
                    t2[ch] += c.s2[u * CL + l]
    for ch in range(C):
        if dbias != NULL:
            dbias[ch] = <floating>t1[ch]
        if dweight != NULL:
            dweight[ch] = <floating>t2[ch]


# ---------------------------------------------------------------- entry points
# NumPy arrays in: fastbn/kernels.py has checked dtypes, shapes and contiguity.

cdef inline void* _data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


def _per_position(v, Py_ssize_t C, Py_ssize_t L, double fill, dtype):
    """A per-channel vector (None: all `fill`) repeated over L positions each:
    the position path's weight or bias."""
    if v is None:
        return np.full(C * L, fill, dtype)
    return v if L == 1 else np.repeat(v, L)


def forward(cnp.ndarray x, Py_ssize_t N, Py_ssize_t G, Py_ssize_t Cg, Py_ssize_t L, weight,
            bias, cnp.ndarray y, cnp.ndarray mean, cnp.ndarray invstd, var, double eps,
            int nthreads):
    """Normalize each of the N * G rows of M = Cg * L values of x (N, G * Cg, L)
    with its mean and biased variance, then y = xhat * weight[c] + bias[c] per
    channel c (weight, bias: None, or C = G * Cg values).  Writes y, the rows'
    mean and invstd (N * G each) and, when var is a float64 array, their biased
    variances.  Passes: one streaming read of x, one write of y."""
    cdef Rows c = _rows(x, N, G, Cg, L, eps)
    cdef int nt = _threads(c.R * c.M, nthreads)
    cdef cnp.ndarray scratch = np.empty(4 * Cg * nt if c.seg else 1, x.dtype)
    if not c.seg:  # per-position weight and bias
        weight = _per_position(weight, c.C, L, 1.0, x.dtype)
        bias = _per_position(bias, c.C, L, 0.0, x.dtype)
    c.out, c.weight, c.bias = _data(y), _data(weight), _data(bias)
    c.mean, c.invstd, c.scratch = _data(mean), _data(invstd), _data(scratch)
    c.var = <double*>_data(var)
    with nogil:
        _run(_units(&c), nt, _forward_units, &c)


def backward(cnp.ndarray dy, cnp.ndarray x, Py_ssize_t N, Py_ssize_t G, Py_ssize_t Cg,
             Py_ssize_t L, weight, cnp.ndarray mean, cnp.ndarray invstd, dx, dweight, dbias,
             int nthreads):
    """Gradients of forward (the statistics depend on x): writes dx, dweight and
    dbias, each when given (not None; dweight and dbias need a weight).
    dx = invstd * (g - mean(g) - xhat * mean(g * xhat)) over each row, g = dy *
    weight; dweight = sum(dy * xhat), dbias = sum(dy) per channel.  Passes: one
    streaming read of x and dy, one write of dx."""
    cdef Rows c = _rows(x, N, G, Cg, L, 0.0)
    cdef int nt = _threads(c.R * c.M, nthreads)
    cdef Py_ssize_t units = _units(&c)
    cdef bint params = dweight is not None or dbias is not None
    cdef cnp.ndarray scratch = np.empty(4 * Cg * nt if c.seg else 1, x.dtype)
    cdef cnp.ndarray s1 = None, s2 = None
    cdef cnp.ndarray t = np.empty(2 * c.C)
    if c.seg:
        s1, s2 = np.empty(c.R * Cg), np.empty(c.R * Cg)
    else:
        weight = _per_position(weight, c.C, L, 1.0, x.dtype)
        if params:
            s1, s2 = np.empty(units * c.C * L), np.empty(units * c.C * L)
    c.dy, c.out, c.weight = _data(dy), _data(dx), _data(weight)
    c.mean, c.invstd, c.scratch = _data(mean), _data(invstd), _data(scratch)
    c.s1, c.s2 = <double*>_data(s1), <double*>_data(s2)
    cdef void* dw = _data(dweight)
    cdef void* db = _data(dbias)
    with nogil:
        _run(units, nt, _backward_units, &c)
        if params:
            if c.dbl:
                _param_grads(<const double*>c.invstd, &c, units, <double*>dw, <double*>db,
                             <double*>cnp.PyArray_DATA(t))
            else:
                _param_grads(<const float*>c.invstd, &c, units, <float*>dw, <float*>db,
                             <double*>cnp.PyArray_DATA(t))


# ---------------------------------------------------------------- per-channel affine

ctypedef struct Affine:
    bint dbl
    Py_ssize_t N, C, L
    Py_ssize_t per_unit   # (n, c) rows per unit, or samples when L == 1
    const void* x
    void* y
    const void* center
    const void* scale
    const void* shift


cdef void _affine_rows(const floating* x, const Affine* a, Py_ssize_t r0,
                       Py_ssize_t r1) noexcept nogil:
    cdef floating* y = <floating*>a.y
    cdef const floating* center = <const floating*>a.center
    cdef const floating* scale = <const floating*>a.scale
    cdef const floating* shift = <const floating*>a.shift
    if a.L == 1:  # r: samples, rows of C values
        if floating is float:
            fastbn_nc_affine_f(x + r0 * a.C, y + r0 * a.C, r1 - r0, a.C, a.C, center, scale,
                               shift, 0)
        else:
            fastbn_nc_affine_d(x + r0 * a.C, y + r0 * a.C, r1 - r0, a.C, a.C, center, scale,
                               shift, 0)
    elif floating is float:  # r: (n, c) rows of L values
        fastbn_seg_affine_f(x + r0 * a.L, y + r0 * a.L, r1 - r0, a.L, r0 % a.C, a.C, center,
                            scale, shift, 0)
    else:
        fastbn_seg_affine_d(x + r0 * a.L, y + r0 * a.L, r1 - r0, a.L, r0 % a.C, a.C, center,
                            scale, shift, 0)


cdef void _affine_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    cdef Affine a = (<Affine*>arg)[0]  # a local copy: stores to the data cannot change it
    cdef Py_ssize_t rows = a.N if a.L == 1 else a.N * a.C
    cdef Py_ssize_t r0 = u0 * a.per_unit, r1 = min(u1 * a.per_unit, rows)
    if a.dbl:
        _affine_rows(<const double*>a.x, &a, r0, r1)
    else:
        _affine_rows(<const float*>a.x, &a, r0, r1)


def channel_affine(cnp.ndarray x, cnp.ndarray y, cnp.ndarray center, cnp.ndarray scale,
                   cnp.ndarray shift, int nthreads):
    """y = (x - center[c]) * scale[c] + shift[c] over x (N, C, L), y another
    array of its shape: BatchNorm's normalization with given coefficients.
    Passes: one streaming read of x, one write of y."""
    cdef Affine a
    cdef Py_ssize_t rows
    a.dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    a.N, a.C, a.L = x.shape[0], x.shape[1], x.shape[2]
    rows = a.N if a.L == 1 else a.N * a.C
    a.per_unit = max(BLOCK // max(a.C if a.L == 1 else a.L, 1), 1)
    a.x, a.y = cnp.PyArray_DATA(x), cnp.PyArray_DATA(y)
    a.center, a.scale, a.shift = (cnp.PyArray_DATA(center), cnp.PyArray_DATA(scale),
                                  cnp.PyArray_DATA(shift))
    cdef int nt = _threads(a.N * a.C * a.L, nthreads)
    with nogil:
        _run((rows + a.per_unit - 1) // a.per_unit, nt, _affine_units, &a)
