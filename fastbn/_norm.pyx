"""Group, Layer and Instance Normalization kernels: statistics per row of a
reshaped view, then a per-channel (or per-position) affine.

Inputs are C-contiguous (N, C, L) buffers of float or double whose C = G * Cg
channels form G groups: N * G rows of M = Cg * L contiguous values, one mean
and invstd per row.  GroupNorm is that view as it stands; InstanceNorm is
G = C; LayerNorm is G = 1 and L = 1, its "channels" the M positions of the
normalized shape.  This is the Batch Normalization reduction of _core.pyx with
the roles of N and C exchanged, with its conventions (_simd.h): the same
one-pass shifted sums (shift: each row's first value), float sums flushed to
double over fixed chunks, E[x^2] - E[x]^2 never formed from raw values.

Work units are runs of whole rows fixed by the shape (never by the thread
count), which the threads of fastbn's team claim (fastbn/_parallel.h); a unit
is one thread's from start to end.  In it each row is normalized (forward), or
gets its dx (backward), in the loop that sums the next row's statistics
(_norm.h), and a row's statistics never depend on its place in the unit.
Sums across rows (the weight and bias gradients) add per-row or per-unit
partials in a fixed order after the parallel loop, so the results are bitwise
identical at any thread count and whichever thread runs a unit, in whatever
order.

Two row layouts, chosen by the shape alone:
- segment path (L >= SEG_MIN): a row is Cg channels of L values, with
  per-channel coefficients; its weight and bias gradients come from per
  (sample, channel) sums;
- position path (L < SEG_MIN, LayerNorm always): the weight spread over
  positions; its weight and bias gradients are summed per position in each
  unit's partials, units of SAMPLES_MIN to SAMPLES_MAX samples.
"""
cimport numpy as cnp
from cython cimport floating
from libc.math cimport sqrt
from libc.string cimport memset

from ._parallel cimport parallel_for

import numpy as np

cnp.import_array()


cdef enum:
    BLOCK = 8192          # values per work unit at least (as _core.pyx's)
    PASS = 1536           # values of the position path's rows whose weight and bias
    FLOAT_ROWS = 256      # gradients' terms are summed in float, at most FLOAT_ROWS
    # rows (_simd.h's bound on the terms of a float sum, FASTBN_CHUNK / 4), before a
    # flush to double (_backward_rows)
    SEG_MIN = 32          # channels at least this long take the segment path
    ROWS_MIN = 16         # rows per unit on the segment path, while that leaves UNITS_MIN
    # units: a unit's first row is read twice (_forward_rows)
    SAMPLES_MIN = 16      # samples per unit on the position path: the per-position
    SAMPLES_MAX = 64      # gradient partials cost about 2 / samples of the unit's own
    UNITS_MIN = 8         # work, and are summed on one thread at the end; so up to
    # SAMPLES_MAX while that leaves UNITS_MIN units.  LayerNorm of (64, 197, 384),
    # backward: 1.1-1.2x faster in units of 64 rows than of 16
    SERIAL_BELOW = 32768  # values: smaller calls run on one thread (as _core.pyx's)


cdef extern from "_norm.h" nogil:
    void fastbn_seg_affine_f(const float*, float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             Py_ssize_t, const float*, const float*, const float*, int)
    void fastbn_seg_affine_d(const double*, double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                             Py_ssize_t, const double*, const double*, const double*, int)
    void fastbn_nc_affine_f(const float*, float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const float*, const float*, const float*, int)
    void fastbn_nc_affine_d(const double*, double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const double*, const double*, const double*, int)
    void fastbn_row_affine_moments_f(const float*, float*, Py_ssize_t, float, float,
                                     const float*, const float*, const float*, float, double*,
                                     double*)
    void fastbn_row_affine_moments_d(const double*, double*, Py_ssize_t, double, double,
                                     const double*, const double*, const double*, double,
                                     double*, double*)
    void fastbn_seg_affine_moments_f(const float*, float*, Py_ssize_t, Py_ssize_t, float,
                                     const float*, const float*, const float*, float,
                                     double*, double*)
    void fastbn_seg_affine_moments_d(const double*, double*, Py_ssize_t, Py_ssize_t, double,
                                     const double*, const double*, const double*, double,
                                     double*, double*)
    void fastbn_seg_dx_grad_sums_f(const float*, const float*, float*, Py_ssize_t, Py_ssize_t,
                                   float, const float*, float, float, const float*,
                                   const float*, float, double*, double*)
    void fastbn_seg_dx_grad_sums_d(const double*, const double*, double*, Py_ssize_t,
                                   Py_ssize_t, double, const double*, double, double,
                                   const double*, const double*, double, double*, double*)
    void fastbn_row_dx_grad_sums_f(const float*, const float*, float*, Py_ssize_t, float,
                                   float, const float*, float, float, const float*,
                                   const float*, const float*, float, double*, double*,
                                   float*, float*)
    void fastbn_row_dx_grad_sums_d(const double*, const double*, double*, Py_ssize_t, double,
                                   double, const double*, double, double, const double*,
                                   const double*, const double*, double, double*, double*,
                                   double*, double*)
    void fastbn_flush_f(float*, double*, Py_ssize_t)
    void fastbn_flush_d(double*, double*, Py_ssize_t)


# ---------------------------------------------------------------- running units
# Each entry point is one loop over work units fixed by the shape (parallel_for,
# _parallel.pxd): whichever thread runs a unit, and in whatever order, it writes
# the same outputs, and the slot it gets indexes that thread's scratch.

cdef inline int _threads(Py_ssize_t size, int nthreads) noexcept nogil:
    return 1 if size < SERIAL_BELOW else max(nthreads, 1)


# ---------------------------------------------------------------- the row norms

ctypedef struct Rows:     # one call's arguments, read by its units
    bint dbl              # double data, else float (the void pointers' type)
    Py_ssize_t N, G, Cg, L, M, C, R
    bint seg              # segment path, else position path
    Py_ssize_t per_unit   # rows per work unit (position path: whole samples)
    Py_ssize_t block      # position path's backward: rows between flushes of the
    # weight and bias gradients' float sums (dividing per_unit)
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
    void* scratch         # per slot: _scratch_len values of the data's type


cdef Rows _rows(cnp.ndarray x, Py_ssize_t N, Py_ssize_t G, Py_ssize_t Cg, Py_ssize_t L,
                double eps):
    cdef Rows c
    cdef Py_ssize_t samples
    c.dbl = cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE
    c.N, c.G, c.Cg, c.L = N, G, Cg, L
    c.M, c.C, c.R = Cg * L, G * Cg, N * G
    c.seg = L >= SEG_MIN
    if c.seg:
        c.block = 1
        c.per_unit = max(BLOCK // max(c.M, 1), min(ROWS_MIN, c.R // UNITS_MIN), 1)
    else:
        c.block = G * min(max(PASS // max(c.C * L, 1), 1), FLOAT_ROWS)
        samples = min(max(N // UNITS_MIN, SAMPLES_MIN), SAMPLES_MAX)
        c.per_unit = c.block * max(samples * G // c.block,
                                   BLOCK // max(c.block * c.M, 1), 1)
    c.eps = eps
    c.x = cnp.PyArray_DATA(x)
    c.dy = c.out = c.weight = c.bias = c.mean = c.invstd = c.scratch = NULL
    c.var = c.s1 = c.s2 = NULL
    return c


cdef inline Py_ssize_t _units(const Rows* c) noexcept nogil:
    return (c.R + c.per_unit - 1) // c.per_unit


cdef inline Py_ssize_t _scratch_len(const Rows* c) noexcept nogil:
    """Values of the data's type a slot needs: a row (the first output of a unit,
    unused; the backward's dx when none is wanted), then on the segment path a
    row's per-channel coefficients (the forward's scale and shift, the backward's
    k_dy), on the position path the backward's per-position terms of the weight and
    bias gradients of a sample (f1, f2: _norm.h)."""
    return c.M + (2 * c.Cg if c.seg else 2 * c.C * c.L)


cdef inline void _set_stats(const Rows* c, Py_ssize_t r, double shift, double t1, double t2,
                            floating* mean, floating* invstd) noexcept nogil:
    """Row r's mean and invstd (and biased variance, when wanted) from its sums t1, t2
    of x - shift and of its square."""
    cdef double inv_m = 1.0 / <double>c.M
    cdef double var = max(t2 - t1 * t1 * inv_m, 0.0) * inv_m
    mean[r] = <floating>(shift + t1 * inv_m)
    invstd[r] = <floating>(1.0 / sqrt(var + c.eps))
    if c.var != NULL:
        c.var[r] = var


cdef inline void _affine_moments(const Rows* c, const floating* x, floating* y,
                                 Py_ssize_t r, floating m, floating s, const floating* xn,
                                 floating* coef, double* t1, double* t2) noexcept nogil:
    """y = (x - m) * s * weight + bias over row r (x, y: the row) and, in the same loop
    (_norm.h), the moments of the row xn about its first value.  coef: the segment
    path's 2 * Cg per-channel scales and shifts."""
    cdef const floating* w = <const floating*>c.weight
    cdef const floating* b = <const floating*>c.bias
    cdef Py_ssize_t j, k = (r % c.G) * c.Cg, M = c.M
    if not c.seg:
        if floating is float:
            fastbn_row_affine_moments_f(x, y, M, m, s, w + k * c.L, b + k * c.L, xn, xn[0],
                                        t1, t2)
        else:
            fastbn_row_affine_moments_d(x, y, M, m, s, w + k * c.L, b + k * c.L, xn, xn[0],
                                        t1, t2)
        return
    for j in range(c.Cg):
        coef[j] = <floating>(<double>s * w[k + j]) if w != NULL else s
        coef[c.Cg + j] = b[k + j] if b != NULL else 0
    if floating is float:
        fastbn_seg_affine_moments_f(x, y, c.Cg, c.L, m, coef, coef + c.Cg, xn, xn[0], t1, t2)
    else:
        fastbn_seg_affine_moments_d(x, y, c.Cg, c.L, m, coef, coef + c.Cg, xn, xn[0], t1, t2)


cdef void _forward_rows(const floating* x, const Rows* c, Py_ssize_t r0, Py_ssize_t r1,
                        int slot) noexcept nogil:
    """Rows r0 to r1 - 1 (a unit): each row normalized in the loop that sums the next
    row's moments (_norm.h): the next row's reads from memory overlap this row's
    writes, as in one pass.  So that every row's statistics come from that one loop,
    the first row's are summed beside a throwaway output (scratch), and the last
    row's loop sums itself again, unused."""
    cdef floating* y = <floating*>c.out
    cdef floating* mean = <floating*>c.mean
    cdef floating* invstd = <floating*>c.invstd
    cdef floating* spare = <floating*>c.scratch + slot * _scratch_len(c)
    cdef Py_ssize_t r, M = c.M
    cdef const floating* xn
    cdef double t1, t2
    _affine_moments(c, x + r0 * M, spare, r0, 0, 0, x + r0 * M, spare + M, &t1, &t2)
    _set_stats(c, r0, x[r0 * M], t1, t2, mean, invstd)
    for r in range(r0, r1):
        xn = x + (r + 1 if r + 1 < r1 else r) * M
        _affine_moments(c, x + r * M, y + r * M, r, mean[r], invstd[r], xn, spare + M, &t1,
                        &t2)
        if r + 1 < r1:
            _set_stats(c, r + 1, xn[0], t1, t2, mean, invstd)


cdef void _forward_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Units u0 to u1 - 1."""
    cdef Rows c = (<Rows*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u, r, r1
    for u in range(u0, u1):
        r, r1 = u * c.per_unit, min((u + 1) * c.per_unit, c.R)
        if c.dbl:
            _forward_rows(<const double*>c.x, &c, r, r1, slot)
        else:
            _forward_rows(<const float*>c.x, &c, r, r1, slot)


cdef inline void _dx_grad_sums(const Rows* c, const floating* x, const floating* dy,
                               floating* dx, Py_ssize_t r, double a, double z,
                               Py_ssize_t rn, floating* coef, double* a_n, double* z_n,
                               floating* f1, floating* f2) noexcept nogil:
    """dx over row r (x, dy, dx: the row) from its gradient sums a = sum(dy * w), z =
    sum(dy * w * (x - mean)): dx = s * w * dy - s / M * a - s^3 / M * z * (x - m);
    in the same loop (_norm.h), the gradient sums of row rn (position path: into
    a_n, z_n; segment path: per channel, into s1 and s2).  coef: the segment path's
    Cg per-channel k_dy; f1, f2: the position path's per-position terms of the
    weight and bias gradients of the row's group (NULL: not wanted)."""
    cdef const floating* w = <const floating*>c.weight
    cdef const floating* mean = <const floating*>c.mean
    cdef double s = (<const floating*>c.invstd)[r]
    cdef floating kx = <floating>(s * s * s * z / <double>c.M)
    cdef floating k0 = <floating>(s * a / <double>c.M)
    cdef Py_ssize_t j, k = (r % c.G) * c.Cg, kn = (rn % c.G) * c.Cg, d = (rn - r) * c.M
    if not c.seg:
        if floating is float:
            fastbn_row_dx_grad_sums_f(x, dy, dx, c.M, mean[r], <floating>s, w + k * c.L, kx,
                                      k0, x + d, dy + d, w + kn * c.L, mean[rn], a_n, z_n,
                                      f1, f2)
        else:
            fastbn_row_dx_grad_sums_d(x, dy, dx, c.M, mean[r], <floating>s, w + k * c.L, kx,
                                      k0, x + d, dy + d, w + kn * c.L, mean[rn], a_n, z_n,
                                      f1, f2)
        return
    for j in range(c.Cg):
        coef[j] = <floating>(s * w[k + j]) if w != NULL else <floating>s
    if floating is float:
        fastbn_seg_dx_grad_sums_f(x, dy, dx, c.Cg, c.L, mean[r], coef, kx, k0, x + d, dy + d,
                                  mean[rn], c.s1 + rn * c.Cg, c.s2 + rn * c.Cg)
    else:
        fastbn_seg_dx_grad_sums_d(x, dy, dx, c.Cg, c.L, mean[r], coef, kx, k0, x + d, dy + d,
                                  mean[rn], c.s1 + rn * c.Cg, c.s2 + rn * c.Cg)


cdef inline void _row_sums(const Rows* c, const floating* w, Py_ssize_t r, double* a,
                           double* z) noexcept nogil:
    """The segment path's a = sum(dy * w), z = sum(dy * w * (x - mean)) of row r, from
    its per-channel sums in s1, s2 (w: the weight, or NULL)."""
    cdef Py_ssize_t j, k = (r % c.G) * c.Cg
    cdef double wj
    a[0] = z[0] = 0.0
    for j in range(c.Cg):
        wj = w[k + j] if w != NULL else 1.0
        a[0] += wj * c.s1[r * c.Cg + j]
        z[0] += wj * c.s2[r * c.Cg + j]


cdef void _backward_rows(const floating* x, const Rows* c, Py_ssize_t r0, Py_ssize_t r1,
                         int slot, double* q1, double* q2) noexcept nogil:
    """Rows r0 to r1 - 1 (a unit): each row's dx in the loop that sums the next row's
    gradient sums (_norm.h), so that every row's sums come from that one loop, as in
    _forward_rows: the first row's beside a throwaway dx (scratch), the last row's
    loop sums itself again, unused (without dx, every row's goes to scratch).  The
    segment path's sums are per channel, into s1, s2, which give the weight and bias
    gradients too; the position path's weight and bias gradients' terms are summed
    per position in the same loop, flushed every `block` rows into the unit's
    partials q1, q2 (NULL: not wanted)."""
    cdef const floating* dy = <const floating*>c.dy
    cdef floating* dx = <floating*>c.out
    cdef const floating* w = <const floating*>c.weight
    cdef floating* spare = <floating*>c.scratch + slot * _scratch_len(c)
    cdef floating* f1 = NULL
    cdef floating* f2 = NULL
    cdef Py_ssize_t r, rn, rb = r0, M = c.M, CL = c.C * c.L, g
    cdef double a = 0, z = 0
    if q1 != NULL:  # zero between units (zeroed scratch, then each unit's last flush)
        f1, f2 = spare + M, spare + M + CL
    # the throwaway adds its terms too, to keep its loop the others': cleared after
    _dx_grad_sums(c, x + r0 * M, dy + r0 * M, spare, r0, 0, 0, r0, spare + M, &a, &z, f1, f2)
    if q1 != NULL:
        memset(f1, 0, 2 * CL * sizeof(floating))
    for r in range(r0, r1):
        if c.seg:
            _row_sums(c, w, r, &a, &z)
        rn = r + 1 if r + 1 < r1 else r
        g = (r % c.G) * M
        _dx_grad_sums(c, x + r * M, dy + r * M,
                      dx + r * M if dx != NULL else spare, r, a, z, rn,
                      spare + M, &a, &z, f1 + g if q1 != NULL else NULL,
                      f2 + g if q1 != NULL else NULL)
        if q1 != NULL and (r + 1 - rb == c.block or r + 1 == r1):
            if floating is float:
                fastbn_flush_f(f1, q1, CL)
                fastbn_flush_f(f2, q2, CL)
            else:
                fastbn_flush_d(f1, q1, CL)
                fastbn_flush_d(f2, q2, CL)
            rb = r + 1


cdef void _backward_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Units u0 to u1 - 1 (on the position path, each first zeroing its per-position
    partials)."""
    cdef Rows c = (<Rows*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u, r, r1, CL = c.C * c.L
    cdef double* q1 = NULL
    cdef double* q2 = NULL
    for u in range(u0, u1):
        r, r1 = u * c.per_unit, min((u + 1) * c.per_unit, c.R)
        if not c.seg and c.s1 != NULL:
            q1, q2 = c.s1 + u * CL, c.s2 + u * CL
            memset(q1, 0, CL * sizeof(double))
            memset(q2, 0, CL * sizeof(double))
        if c.dbl:
            _backward_rows(<const double*>c.x, &c, r, r1, slot, q1, q2)
        else:
            _backward_rows(<const float*>c.x, &c, r, r1, slot, q1, q2)


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
    cdef cnp.ndarray scratch = np.empty(_scratch_len(&c) * nt, x.dtype)
    if not c.seg:  # per-position weight and bias
        weight = _per_position(weight, c.C, L, 1.0, x.dtype)
        bias = _per_position(bias, c.C, L, 0.0, x.dtype)
    c.out, c.weight, c.bias = _data(y), _data(weight), _data(bias)
    c.mean, c.invstd, c.scratch = _data(mean), _data(invstd), _data(scratch)
    c.var = <double*>_data(var)
    with nogil:
        parallel_for(_units(&c), nt, _forward_units, &c)


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
    cdef cnp.ndarray scratch = np.zeros(_scratch_len(&c) * nt, x.dtype)
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
        parallel_for(units, nt, _backward_units, &c)
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
    cdef Affine a = (<Affine*>arg)[0]  # a local copy: see _parallel.pxd
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
        parallel_for((rows + a.per_unit - 1) // a.per_unit, nt, _affine_units, &a)
