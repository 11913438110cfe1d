"""Batch Normalization kernels: per-channel statistics, normalization, gradients.

Inputs are C-contiguous (N, C, *spatial) buffers of float or double, read as
(N, C, L) with L the product of the spatial sizes (1 for (N, C) input); the
Python layer (fastbn/kernels.py) validates them.

Every pass streams through memory in order.  The (N, C, L) buffer is cut into
segments, each one row (n, c) or, for long rows, a piece of at most BLOCK
values of one; work units are runs of segments, which the threads of
fastbn's team claim (fastbn/_parallel.h).  A reduction writes
one partial per segment, and each channel adds its partials in (n, piece)
order, so the reduction tree is fixed by the shape alone: results are bitwise
identical for any thread count and whichever thread runs a unit.

Precision.  Moments are sums of x - shift with one shift per channel (its
first value), accumulated in double; the vectorized row loops (_simd.h) sum a
few values per lane in the data's precision before flushing to double.
E[x^2] - E[x]^2 is never formed from raw values.

Short rows (L < WIDE_BELOW, including (N, C) input, L == 1) reduce on the
"wide" path instead: each sample is one row of P = C * L positions, summed
into per-position accumulators (vectorized along the row) over blocks of rows,
and each channel then folds its L positions, block by block, in fixed order.
The backward's unmasked gradient sums leave it sooner (L < WIDE_GRAD_BELOW).
Which path a reduction takes depends on the shape alone.
"""
cimport numpy as cnp
from cython cimport floating
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free, malloc

from ._parallel cimport parallel_for, unit_fn

cnp.import_array()


cdef enum:
    BLOCK = 8192        # values per segment / work unit (by data size, not thread count)
    WIDE_BELOW = 128    # rows shorter than this reduce on the wide path
    WIDE_GRAD_BELOW = 64  # the same for the plain gradient sums, which read two values
    # a position: on rows of 64 the row path's per-row work was the cheaper (backward
    # on (128,128,8,8) 1.17x faster), for the moments the wide path (1.18x), and for
    # the ReLU-masked sums too (1.35x)
    TILE = 512          # positions per wide work unit: its double sums stay in L1
    NC_TILE = 2048      # channels per pass over (N, C) rows: the per-channel vectors of
    # the normalization and dx stay in L1 ((64,4096) inference forward 57 -> 45 us)
    NC_UNIT = 2048      # values per (N, C) normalization or dx unit: the threads of a
    # short call end together (units of 8192 left one waiting 1.3 us in (256,1024)'s
    # 21 us inference forward)
    WIDE_ROWS = 128     # fewest rows per wide reduction block
    SERIAL_BELOW = 32768  # values; smaller calls run on the calling thread alone, where
    # waking the team costs a tenth of a small layer's forward


cdef extern from "_simd.h" nogil:
    void fastbn_seg_moments_f(const float*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                              const float*, double*, double*)
    void fastbn_seg_moments_d(const double*, Py_ssize_t, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                              const double*, double*, double*)
    void fastbn_seg_plain_grad_sums_f(const float*, const float*, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, const float*, double*, double*)
    void fastbn_seg_plain_grad_sums_d(const double*, const double*, Py_ssize_t, Py_ssize_t,
                                      Py_ssize_t, Py_ssize_t, const double*, double*, double*)
    void fastbn_seg_masked_grad_sums_f(const float*, const float*, Py_ssize_t, Py_ssize_t,
                                       Py_ssize_t, Py_ssize_t, const float*, const float*,
                                       const float*, double*, double*)
    void fastbn_seg_masked_grad_sums_d(const double*, const double*, Py_ssize_t, Py_ssize_t,
                                       Py_ssize_t, Py_ssize_t, const double*, const double*,
                                       const double*, double*, double*)
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
    void fastbn_rows_sums_f(const float*, const float*, Py_ssize_t, Py_ssize_t, const float*,
                            Py_ssize_t, double*, double*, const float*, const float*)
    void fastbn_rows_sums_d(const double*, const double*, Py_ssize_t, Py_ssize_t,
                            const double*, Py_ssize_t, double*, double*, const double*,
                            const double*)
    void fastbn_invstd_ff(const float*, Py_ssize_t, double, float*)
    void fastbn_invstd_df(const double*, Py_ssize_t, double, float*)
    void fastbn_invstd_dd(const double*, Py_ssize_t, double, double*)
    void fastbn_spread_f(const float*, Py_ssize_t, Py_ssize_t, float*)
    void fastbn_spread_d(const double*, Py_ssize_t, Py_ssize_t, double*)
    void fastbn_nc_affine_f(const float*, float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const float*, const float*, const float*, int)
    void fastbn_nc_affine_d(const double*, double*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                            const double*, const double*, const double*, int)
    void fastbn_nc_dx_f(const float*, const float*, float*, Py_ssize_t, Py_ssize_t, Py_ssize_t,
                        const float*, const float*, const float*, const float*, const float*,
                        const float*)
    void fastbn_nc_dx_d(const double*, const double*, double*, Py_ssize_t, Py_ssize_t,
                        Py_ssize_t, const double*, const double*, const double*,
                        const double*, const double*, const double*)


# Fused front ends of the _simd.h loops (the C names carry the type).

# `rs`, `rb` (NULL: no ReLU): per-channel scale and shift of a ReLU fused after the
# normalization; the backward recomputes the pre-activation (x - mean) * rs + rb
# from x to mask dy (see _simd.h).

cdef inline void _seg_sums(const floating* p, const floating* q, Py_ssize_t rows,
                           Py_ssize_t n, Py_ssize_t c, Py_ssize_t C, const floating* shift,
                           const floating* rs, const floating* rb, double* out1,
                           double* out2) noexcept nogil:
    """Per row of `rows` rows of n values (channels c, c + 1, ... modulo C):
    moments (q NULL) out1 = sum(p - shift[c]), out2 = sum((p - shift[c])^2);
    gradient sums (p = x, q = dy, shift = the mean) out1 = sum(g), out2 =
    sum(g * (p - shift[c])), g = q, masked by the ReLU when rs is not NULL."""
    if floating is float:
        if q == NULL:
            fastbn_seg_moments_f(p, rows, n, c, C, shift, out1, out2)
        elif rs == NULL:
            fastbn_seg_plain_grad_sums_f(p, q, rows, n, c, C, shift, out1, out2)
        else:
            fastbn_seg_masked_grad_sums_f(p, q, rows, n, c, C, shift, rs, rb, out1, out2)
    else:
        if q == NULL:
            fastbn_seg_moments_d(p, rows, n, c, C, shift, out1, out2)
        elif rs == NULL:
            fastbn_seg_plain_grad_sums_d(p, q, rows, n, c, C, shift, out1, out2)
        else:
            fastbn_seg_masked_grad_sums_d(p, q, rows, n, c, C, shift, rs, rb, out1, out2)


cdef inline void _seg_affine(const floating* x, floating* y, Py_ssize_t rows, Py_ssize_t n,
                             Py_ssize_t c, Py_ssize_t C, const floating* center,
                             const floating* scale, const floating* shift,
                             bint relu) noexcept nogil:
    if floating is float:
        fastbn_seg_affine_f(x, y, rows, n, c, C, center, scale, shift, relu)
    else:
        fastbn_seg_affine_d(x, y, rows, n, c, C, center, scale, shift, relu)


cdef inline void _seg_dx(const floating* x, const floating* dy, floating* dx, Py_ssize_t rows,
                         Py_ssize_t n, Py_ssize_t c, Py_ssize_t C, const floating* mean,
                         const floating* k_dy, const floating* k_x, const floating* k_0,
                         const floating* rs, const floating* rb) noexcept nogil:
    if floating is float:
        fastbn_seg_dx_f(x, dy, dx, rows, n, c, C, mean, k_dy, k_x, k_0, rs, rb)
    else:
        fastbn_seg_dx_d(x, dy, dx, rows, n, c, C, mean, k_dy, k_x, k_0, rs, rb)


cdef inline void _wide_rows_sums(const floating* x, const floating* dy, Py_ssize_t stride,
                                 Py_ssize_t rows, const floating* shift, Py_ssize_t n,
                                 double* s1, double* s2, const floating* rs,
                                 const floating* rb) noexcept nogil:
    if floating is float:
        fastbn_rows_sums_f(x, dy, stride, rows, shift, n, s1, s2, rs, rb)
    else:
        fastbn_rows_sums_d(x, dy, stride, rows, shift, n, s1, s2, rs, rb)


cdef inline void _spread(const floating* v, Py_ssize_t C, Py_ssize_t L,
                         floating* out) noexcept nogil:
    if floating is float:
        fastbn_spread_f(v, C, L, out)
    else:
        fastbn_spread_d(v, C, L, out)


ctypedef struct Segs:
    Py_ssize_t N, C, L
    Py_ssize_t pieces   # segments per row
    Py_ssize_t width    # values per segment (the last one of a row may be shorter)
    Py_ssize_t per_unit # segments per work unit
    Py_ssize_t units    # work units


cdef inline Segs _segs(Py_ssize_t N, Py_ssize_t C, Py_ssize_t L) noexcept nogil:
    cdef Segs g
    g.N = N
    g.C = C
    g.L = L
    g.pieces = max((L + BLOCK - 1) // BLOCK, 1)   # empty planes (L == 0): one empty segment
    g.width = (L + g.pieces - 1) // g.pieces
    g.per_unit = max(BLOCK // max(g.width, 1), 1)
    g.units = (N * C * g.pieces + g.per_unit - 1) // g.per_unit
    return g


cdef inline void _segment(const Segs* g, Py_ssize_t k, Py_ssize_t* off, Py_ssize_t* w,
                          Py_ssize_t* c) noexcept nogil:
    """Segment k: offset of its first value, its length, its channel."""
    cdef Py_ssize_t r = k // g.pieces, l0 = (k % g.pieces) * g.width
    off[0] = r * g.L + l0
    w[0] = min(g.width, g.L - l0)
    c[0] = r % g.C


cdef inline Py_ssize_t _unit_end(const Segs* g, Py_ssize_t u) noexcept nogil:
    return min((u + 1) * g.per_unit, g.N * g.C * g.pieces)


cdef inline int _threads(Py_ssize_t size, int nthreads) noexcept nogil:
    return 1 if size < SERIAL_BELOW else max(nthreads, 1)


cdef inline void _units_sums(const floating* x, const floating* dy, const Segs* g,
                             Py_ssize_t u0, Py_ssize_t u1, const floating* shift,
                             const floating* rs, const floating* rb, double* p1,
                             double* p2) noexcept nogil:
    """Partials of the segments of units u0 to u1 - 1 (one read of x, and of dy
    when not NULL):
    moments p1 = sum(x - shift[c]), p2 = sum((x - shift[c])^2), or gradient sums
    p1 = sum(dy), p2 = sum(dy * (x - shift[c])) with shift = the mean."""
    cdef Py_ssize_t k, off, w, c, k0 = u0 * g.per_unit, k1 = _unit_end(g, u1 - 1)
    if g.pieces == 1:  # whole rows: one call (each row's partial its own)
        _seg_sums(x + k0 * g.L, NULL if dy == NULL else dy + k0 * g.L, k1 - k0, g.L,
                  k0 % g.C, g.C, shift, rs, rb, p1 + k0, p2 + k0)
        return
    for k in range(k0, k1):
        _segment(g, k, &off, &w, &c)
        _seg_sums(x + off, NULL if dy == NULL else dy + off, 1, w, c, g.C, shift, rs, rb,
                  p1 + k, p2 + k)


cdef inline void _channel_totals(const Segs* g, Py_ssize_t c0, Py_ssize_t c1,
                                 const double* p1, const double* p2, double* t1,
                                 double* t2) noexcept nogil:
    """Channels c0 to c1 - 1: each one's partials added in (n, piece) order, the
    fixed reduction tree; channels innermost, so that the loop vectorizes."""
    cdef Py_ssize_t n, j, c, k
    for c in range(c0, c1):
        t1[c] = 0.0
        t2[c] = 0.0
    for n in range(g.N):
        for j in range(g.pieces):
            k = n * g.C * g.pieces + j
            for c in range(c0, c1):
                t1[c] += p1[k + c * g.pieces]
                t2[c] += p2[k + c * g.pieces]


cdef inline void _units_affine(const floating* x, floating* y, const Segs* g, Py_ssize_t u0,
                               Py_ssize_t u1, const floating* center, const floating* scale,
                               const floating* shift, bint relu) noexcept nogil:
    """y = (x - center[c]) * scale[c] + shift[c] over units u0 to u1 - 1 (one read,
    one write),
    then the ReLU if relu.  Subtracting the mean first makes a constant channel
    map to exactly `shift`."""
    cdef Py_ssize_t k, off, w, c, k0 = u0 * g.per_unit, k1 = _unit_end(g, u1 - 1)
    if g.pieces == 1:  # whole rows: one call
        _seg_affine(x + k0 * g.L, y + k0 * g.L, k1 - k0, g.L, k0 % g.C, g.C, center, scale,
                    shift, relu)
        return
    for k in range(k0, k1):
        _segment(g, k, &off, &w, &c)
        _seg_affine(x + off, y + off, 1, w, c, g.C, center, scale, shift, relu)


cdef inline void _units_dx(const floating* x, const floating* dy, floating* dx,
                           const Segs* g, Py_ssize_t u0, Py_ssize_t u1, const floating* mean,
                           const floating* k_dy, const floating* k_x, const floating* k_0,
                           const floating* rs, const floating* rb) noexcept nogil:
    """dx = k_dy[c] * g - k_x[c] * (x - mean[c]) - k_0[c] over units u0 to u1 - 1,
    g = dy masked by the ReLU when rs is not NULL."""
    cdef Py_ssize_t k, off, w, c, k0 = u0 * g.per_unit, k1 = _unit_end(g, u1 - 1)
    if g.pieces == 1:  # whole rows: one call
        _seg_dx(x + k0 * g.L, dy + k0 * g.L, dx + k0 * g.L, k1 - k0, g.L, k0 % g.C, g.C,
                mean, k_dy, k_x, k_0, rs, rb)
        return
    for k in range(k0, k1):
        _segment(g, k, &off, &w, &c)
        _seg_dx(x + off, dy + off, dx + off, 1, w, c, g.C, mean, k_dy, k_x, k_0, rs, rb)


# ---------------------------------------------------------------- wide path

cdef inline Py_ssize_t _wide_rows(Py_ssize_t P) noexcept nogil:
    """Rows per wide reduction block (a function of the shape only)."""
    return max(<Py_ssize_t>WIDE_ROWS, BLOCK // max(P, 1))


cdef inline void _wide_unit_sums(const floating* x, const floating* dy, const floating* pos,
                                 bint relu, Py_ssize_t N, Py_ssize_t C, Py_ssize_t b,
                                 Py_ssize_t t, double* p1, double* p2) noexcept nogil:
    """Rows of block b, positions of tile t of rows of C positions: per-position
    sum(a), sum(a * (x - shift)) with a = x - shift (moments, dy NULL) or a = dy
    (masked by the ReLU when relu), written to block b's partials p1[b * C + j],
    p2[b * C + j].  pos: the shift of each position, then (relu) the ReLU's
    scale and shift of each."""
    cdef const floating* shift = pos
    cdef const floating* rs = pos + C if relu else NULL
    cdef const floating* rb = pos + 2 * C if relu else NULL
    cdef Py_ssize_t R = _wide_rows(C)
    cdef Py_ssize_t n0 = b * R, n1 = min(n0 + R, N), c0 = t * TILE, nc = min(TILE, C - c0)
    cdef double* out1 = p1 + b * C + c0
    cdef double* out2 = p2 + b * C + c0
    cdef Py_ssize_t k
    for k in range(nc):
        out1[k] = 0.0
        out2[k] = 0.0
    _wide_rows_sums(x + n0 * C + c0, NULL if dy == NULL else dy + n0 * C + c0, C, n1 - n0,
                    shift + c0, nc, out1, out2, NULL if rs == NULL else rs + c0,
                    NULL if rs == NULL else rb + c0)


cdef inline void _wide_channel_totals(Py_ssize_t c0, Py_ssize_t c1, Py_ssize_t L,
                                      Py_ssize_t P, Py_ssize_t nbr, const double* p1,
                                      const double* p2, double* t1,
                                      double* t2) noexcept nogil:
    """Channels c0 to c1 - 1: each one's per-position partials added, block by
    block, in fixed order; for (N, C) input (L == 1) channels innermost, so that
    the loop vectorizes (one channel at a time cost 2 ns a channel)."""
    cdef Py_ssize_t b, l, c
    cdef double a, z
    if L == 1:
        for c in range(c0, c1):
            t1[c] = 0.0
            t2[c] = 0.0
        for b in range(nbr):
            for c in range(c0, c1):
                t1[c] += p1[b * P + c]
                t2[c] += p2[b * P + c]
        return
    for c in range(c0, c1):
        a = 0.0
        z = 0.0
        for b in range(nbr):
            for l in range(c * L, c * L + L):
                a = a + p1[b * P + l]
                z = z + p2[b * P + l]
        t1[c] = a
        t2[c] = z


cdef inline void _nc_rows_affine(const floating* x, floating* y, Py_ssize_t C, Py_ssize_t r0,
                                 Py_ssize_t r1, const floating* center, const floating* scale,
                                 const floating* shift, bint relu) noexcept nogil:
    """(N, C) rows r0 to r1 - 1: y = (x - center) * scale + shift, then the ReLU;
    NC_TILE channels at a time."""
    cdef Py_ssize_t t, c0, o
    for t in range((C + NC_TILE - 1) // NC_TILE):
        c0 = t * NC_TILE
        o = r0 * C + c0
        if floating is float:
            fastbn_nc_affine_f(x + o, y + o, r1 - r0, min(NC_TILE, C - c0), C, center + c0,
                               scale + c0, shift + c0, relu)
        else:
            fastbn_nc_affine_d(x + o, y + o, r1 - r0, min(NC_TILE, C - c0), C, center + c0,
                               scale + c0, shift + c0, relu)


cdef inline void _nc_rows_dx(const floating* x, const floating* dy, floating* dx, Py_ssize_t C,
                             Py_ssize_t r0, Py_ssize_t r1, const floating* mean,
                             const floating* k_dy, const floating* k_x,
                             const floating* k_0, const floating* rs,
                             const floating* rb) noexcept nogil:
    """(N, C) rows r0 to r1 - 1: dx as in _dx, NC_TILE channels at a time."""
    cdef Py_ssize_t t, c0, o
    for t in range((C + NC_TILE - 1) // NC_TILE):
        c0 = t * NC_TILE
        o = r0 * C + c0
        if floating is float:
            fastbn_nc_dx_f(x + o, dy + o, dx + o, r1 - r0, min(NC_TILE, C - c0), C, mean + c0,
                           k_dy + c0, k_x + c0, k_0 + c0, NULL if rs == NULL else rs + c0,
                           NULL if rs == NULL else rb + c0)
        else:
            fastbn_nc_dx_d(x + o, dy + o, dx + o, r1 - r0, min(NC_TILE, C - c0), C, mean + c0,
                           k_dy + c0, k_x + c0, k_0 + c0, NULL if rs == NULL else rs + c0,
                           NULL if rs == NULL else rb + c0)


# ---------------------------------------------------------------- phases
# A call runs its phases as loops over work units fixed by the shape
# (parallel_for, _parallel.pxd): the reduction's partials (units of segments,
# or wide blocks of rows by tiles of positions), the channel totals with what
# each channel needs from them (runs of channels), then the normalization or dx
# (units of segments, or runs of (N, C) rows).  A loop starts when the last one
# has ended; the caller finishes any units no other thread took.

cdef class _Scratch:
    """Per-call buffer of n doubles, freed when the call returns; zeroed only on
    request (zeroing it cost as much as the arithmetic of a 4096-channel layer)."""
    cdef double* p

    def __cinit__(self, Py_ssize_t n, bint zeroed=False):
        n = max(n, 1)
        self.p = <double*>(calloc(n, sizeof(double)) if zeroed else malloc(n * sizeof(double)))
        if self.p == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.p)


cdef enum:
    STAGE_SUMS = 0       # a totals unit only adds its channels' partials
    STAGE_FORWARD = 1    # then mean, variance, invstd, the normalization's coefficients
    STAGE_BACKWARD = 2   # then the gradients' coefficients, dweight, dbias


ctypedef struct Call:    # one call's arguments, read by its units
    bint dbl             # double data, else float (the void pointers' type)
    Py_ssize_t N, C, L
    Segs g
    bint wide            # the reduction's path (_wide)
    Py_ssize_t nbr, ntile  # wide path: blocks of rows, tiles of positions
    Py_ssize_t per_totals  # channels per totals unit
    Py_ssize_t nc_rows   # (N, C) rows per normalization or dx unit
    int stage
    bint sums            # backward: the gradient sums run (else only the coefficients)
    bint training
    bint relu            # normalization: then the ReLU
    double eps
    const void* x        # the reduction's and dx's x
    const void* dy       # NULL: the reduction sums moments
    const void* shift    # per channel: the moments' shift, or the mean
    const void* rs       # a fused ReLU's per-channel scale and shift (rs NULL: none)
    const void* rb
    const void* pos      # what _positions wrote (wide path)
    double* p1           # partials (_parts of them each)
    double* p2
    double* t1           # per-channel totals
    double* t2
    double* mean         # forward: per-channel mean and variance
    double* var
    const void* weight
    const void* bias
    void* save_mean
    void* save_invstd
    const void* invstd   # backward: the saved invstd
    void* dweight
    void* dbias
    const void* src      # normalization: y = (src - k1) * k2 + k3
    void* out            # y, or dx
    const void* k1       # normalization: center, scale, shift; dx: k_dy, k_x, k_0
    const void* k2
    const void* k3


cdef enum:
    TOTALS_WORK = 2048   # partials added per totals unit, about (a channel's own work
                         # counts 16 more)


cdef Call _call(bint dbl, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L, bint grads,
                bint masked) noexcept nogil:
    """A call's shape and its units; grads, masked: as for _wide."""
    cdef Call c
    cdef Py_ssize_t R = _wide_rows(C * L)
    c.dbl = dbl
    c.N, c.C, c.L = N, C, L
    c.g = _segs(N, C, L)
    c.wide = _wide(L, grads, masked)
    c.nbr = (N + R - 1) // R
    c.ntile = (C * L + TILE - 1) // TILE
    c.per_totals = max(TOTALS_WORK // ((c.nbr * L if c.wide else N * c.g.pieces) + 16), 1)
    c.nc_rows = max(NC_UNIT // max(C, 1), 1)
    c.stage = STAGE_SUMS
    c.sums = True
    c.relu = False
    c.dy = c.rs = c.rb = c.pos = NULL
    return c


cdef inline void _sums_of(const floating* x, const Call* c, Py_ssize_t u0,
                          Py_ssize_t u1) noexcept nogil:
    cdef Py_ssize_t u
    if not c.wide:
        _units_sums(x, <const floating*>c.dy, &c.g, u0, u1, <const floating*>c.shift,
                    <const floating*>c.rs, <const floating*>c.rb, c.p1, c.p2)
        return
    for u in range(u0, u1):
        _wide_unit_sums(x, <const floating*>c.dy, <const floating*>c.pos, c.rs != NULL, c.N,
                        c.C * c.L, u // c.ntile, u % c.ntile, c.p1, c.p2)


cdef void _sums_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """The partials of units u0 to u1 - 1 (_units_sums / _wide_unit_sums)."""
    cdef Call c = (<Call*>arg)[0]  # a local copy: see _parallel.pxd
    if c.dbl:
        _sums_of(<const double*>c.x, &c, u0, u1)
    else:
        _sums_of(<const float*>c.x, &c, u0, u1)


cdef inline void _forward_stats(floating* alpha, const Call* c, Py_ssize_t c0,
                                Py_ssize_t c1) noexcept nogil:
    """Channels c0 to c1 - 1 from their totals: mean, variance, save_mean,
    save_invstd, and the normalization's scale alpha and shift beta (which held
    the moments' shift until now)."""
    cdef Py_ssize_t ch
    cdef double inv_m = 1.0 / <double>(c.N * c.L)  # a multiply per channel, not a divide
    cdef floating* beta = alpha + c.C
    cdef floating* save_mean = <floating*>c.save_mean
    cdef floating* save_invstd = <floating*>c.save_invstd
    cdef const floating* weight = <const floating*>c.weight
    cdef const floating* bias = <const floating*>c.bias
    for ch in range(c0, c1):
        c.mean[ch] = beta[ch] + c.t1[ch] * inv_m
        c.var[ch] = max(c.t2[ch] - c.t1[ch] * c.t1[ch] * inv_m, 0.0) * inv_m
        save_mean[ch] = <floating>c.mean[ch]
    _invstd(c.var + c0, c1 - c0, c.eps, save_invstd + c0)
    for ch in range(c0, c1):
        alpha[ch] = _scale(save_invstd, weight, ch)
        beta[ch] = bias[ch] if bias != NULL else 0.0


cdef inline void _backward_coefs(floating* k_dy, const Call* c, Py_ssize_t c0,
                                 Py_ssize_t c1) noexcept nogil:
    """Channels c0 to c1 - 1 from their gradient sums (t1 = sum(g), t2 =
    sum(g * (x - mean))): dx's k_x and k_0 (after k_dy), dweight, dbias."""
    cdef Py_ssize_t ch
    cdef double inv_m = 1.0 / <double>(c.N * c.L), inv, a
    cdef floating* k_x = k_dy + c.C
    cdef floating* k_0 = k_dy + 2 * c.C
    cdef const floating* invstd = <const floating*>c.invstd
    cdef const floating* weight = <const floating*>c.weight
    cdef floating* dweight = <floating*>c.dweight
    cdef floating* dbias = <floating*>c.dbias
    cdef bint full = c.training and c.sums
    for ch in range(c0, c1):
        inv = invstd[ch]
        a = inv * (weight[ch] if weight != NULL else 1.0)
        # in inference dx = k_dy * g: k_x and k_0 zero (training without sums: no dx)
        k_x[ch] = <floating>(a * inv * inv * c.t2[ch] * inv_m) if full else 0
        k_0[ch] = <floating>(a * c.t1[ch] * inv_m) if full else 0
        if dweight != NULL:
            dweight[ch] = <floating>(c.t2[ch] * inv)
        if dbias != NULL:
            dbias[ch] = <floating>c.t1[ch]


cdef void _totals_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """The channels of units u0 to u1 - 1: each one's partials added in a fixed
    order, then what the stage asks for."""
    cdef Call c = (<Call*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t c0 = u0 * c.per_totals, c1 = min(u1 * c.per_totals, c.C)
    if c.sums:
        if c.wide:
            _wide_channel_totals(c0, c1, c.L, c.C * c.L, c.nbr, c.p1, c.p2, c.t1, c.t2)
        else:
            _channel_totals(&c.g, c0, c1, c.p1, c.p2, c.t1, c.t2)
    if c.stage == STAGE_FORWARD:
        if c.dbl:
            _forward_stats(<double*>c.k2, &c, c0, c1)
        else:
            _forward_stats(<float*>c.k2, &c, c0, c1)
    elif c.stage == STAGE_BACKWARD:
        if c.dbl:
            _backward_coefs(<double*>c.k1, &c, c0, c1)
        else:
            _backward_coefs(<float*>c.k1, &c, c0, c1)


cdef inline void _affine_of(const floating* x, const Call* c, Py_ssize_t u0,
                            Py_ssize_t u1) noexcept nogil:
    if c.L == 1:
        _nc_rows_affine(x, <floating*>c.out, c.C, u0 * c.nc_rows, min(u1 * c.nc_rows, c.N),
                        <const floating*>c.k1, <const floating*>c.k2, <const floating*>c.k3,
                        c.relu)
    else:
        _units_affine(x, <floating*>c.out, &c.g, u0, u1, <const floating*>c.k1,
                      <const floating*>c.k2, <const floating*>c.k3, c.relu)


cdef void _affine_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """out = (src - k1[c]) * k2[c] + k3[c], then the ReLU if relu, over units
    u0 to u1 - 1."""
    cdef Call c = (<Call*>arg)[0]  # a local copy: see _parallel.pxd
    if c.dbl:
        _affine_of(<const double*>c.src, &c, u0, u1)
    else:
        _affine_of(<const float*>c.src, &c, u0, u1)


cdef inline void _dx_of(const floating* x, const Call* c, Py_ssize_t u0,
                        Py_ssize_t u1) noexcept nogil:
    cdef const floating* dy = <const floating*>c.dy
    cdef const floating* mean = <const floating*>c.shift
    cdef const floating* rs = <const floating*>c.rs
    cdef const floating* rb = <const floating*>c.rb
    if c.L == 1:
        _nc_rows_dx(x, dy, <floating*>c.out, c.C, u0 * c.nc_rows, min(u1 * c.nc_rows, c.N),
                    mean, <const floating*>c.k1, <const floating*>c.k2, <const floating*>c.k3,
                    rs, rb)
    else:
        _units_dx(x, dy, <floating*>c.out, &c.g, u0, u1, mean, <const floating*>c.k1,
                  <const floating*>c.k2, <const floating*>c.k3, rs, rb)


cdef void _dx_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """dx = k1[c] * g - k2[c] * (x - mean[c]) - k3[c] over units u0 to u1 - 1,
    g = dy masked by the ReLU when rs is not NULL."""
    cdef Call c = (<Call*>arg)[0]  # a local copy: see _parallel.pxd
    if c.dbl:
        _dx_of(<const double*>c.x, &c, u0, u1)
    else:
        _dx_of(<const float*>c.x, &c, u0, u1)


cdef void _reduce(Call* c, int nt) noexcept nogil:
    """The reduction's two loops: partials (when c.sums), then per-channel totals
    and the stage's work."""
    if c.sums:
        parallel_for(c.nbr * c.ntile if c.wide else c.g.units, nt, _sums_units, c)
    parallel_for((c.C + c.per_totals - 1) // c.per_totals, nt, _totals_units, c)


cdef void _pass(Call* c, int nt, unit_fn fn) noexcept nogil:
    """The normalization or dx loop."""
    parallel_for((c.N + c.nc_rows - 1) // c.nc_rows if c.L == 1 else c.g.units, nt, fn, c)


cdef void _positions(const floating* shift, const floating* rs, const floating* rb,
                     Py_ssize_t C, Py_ssize_t L, bint wide, floating* pos) noexcept nogil:
    """The wide path's per-position copies of the per-channel shift (and the
    ReLU's scale and shift when rs is not NULL), before the team starts."""
    if wide:
        _spread(shift, C, L, pos)
        if rs != NULL:
            _spread(rs, C, L, pos + C * L)
            _spread(rb, C, L, pos + 2 * C * L)


cdef inline bint _wide(Py_ssize_t L, bint grads, bint masked) noexcept nogil:
    """Whether a reduction over rows of L values takes the wide path: the moments
    and the ReLU-masked gradient sums below WIDE_BELOW, the plain gradient sums
    below WIDE_GRAD_BELOW."""
    return L < (WIDE_GRAD_BELOW if grads and not masked else WIDE_BELOW)


cdef inline Py_ssize_t _parts(Py_ssize_t N, Py_ssize_t C, Py_ssize_t L,
                              bint wide) noexcept nogil:
    """Partials per reduction: one per (wide block, position) on the wide path,
    else one per segment."""
    cdef Py_ssize_t R = _wide_rows(C * L)
    return ((N + R - 1) // R) * C * L if wide else N * C * _segs(N, C, L).pieces



# ---------------------------------------------------------------- implementations

cdef void _update_running(floating* running_mean, floating* running_var, Py_ssize_t C,
                          const double* mean, const double* var, double count,
                          double momentum) noexcept nogil:
    """running = (1 - momentum) * running + momentum * batch, unbiased variance."""
    cdef Py_ssize_t c
    cdef double unbias = count / (count - 1.0)
    for c in range(C):
        if running_mean != NULL:
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
        if running_var != NULL:
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var[c] * unbias


cdef inline void _invstd(const double* var, Py_ssize_t n, double eps,
                         floating* out) noexcept nogil:
    """out = 1 / sqrt(var + eps) from double variances (_simd.h)."""
    if floating is float:
        fastbn_invstd_df(var, n, eps, out)
    else:
        fastbn_invstd_dd(var, n, eps, out)


cdef inline floating _scale(const floating* invstd, const floating* weight,
                            Py_ssize_t c) noexcept nogil:
    """weight * invstd from the saved invstd: the forward's scale, and the one the
    backward recomputes for a fused ReLU's mask (the same bits)."""
    return <floating>(<double>invstd[c] * (weight[c] if weight != NULL else 1.0))



cdef void _forward_train(const floating* x, const floating* weight, const floating* bias,
                         floating* y, floating* save_mean, floating* save_invstd,
                         floating* running_mean, floating* running_var, Py_ssize_t N,
                         Py_ssize_t C, Py_ssize_t L, double momentum, double eps, bint relu,
                         int nt, double* buf, floating* fbuf) noexcept nogil:
    """buf: 4 * C + 2 * _parts(.., wide) doubles; fbuf: 2 * C + C * L (wide path)
    floating.  Loops: the statistics' partials (one streaming read of x), their
    totals with each channel's mean and invstd, the normalization (one read of
    x, one write of y)."""
    cdef Py_ssize_t ch
    cdef Call c = _call(floating is double, N, C, L, False, False)
    cdef floating* beta = fbuf + C
    for ch in range(C):  # the shift of each channel: its first value
        beta[ch] = x[ch * L]
    _positions(beta, <const floating*>NULL, <const floating*>NULL, C, L, c.wide, fbuf + 2 * C)
    c.x, c.shift, c.pos = x, beta, fbuf + 2 * C
    c.mean, c.var, c.t1, c.t2, c.p1 = buf, buf + C, buf + 2 * C, buf + 3 * C, buf + 4 * C
    c.p2 = c.p1 + _parts(N, C, L, c.wide)
    c.stage, c.eps = STAGE_FORWARD, eps
    c.weight, c.bias, c.save_mean, c.save_invstd = weight, bias, save_mean, save_invstd
    c.k1, c.k2, c.k3 = save_mean, fbuf, beta  # the normalization's center, scale, shift
    _reduce(&c, nt)
    c.src, c.out, c.relu = x, y, relu
    _pass(&c, nt, _affine_units)
    _update_running(running_mean, running_var, C, c.mean, c.var, <double>(N * L), momentum)


cdef void _forward_eval(const floating* x, const floating* weight, const floating* bias,
                        const floating* running_mean, const floating* running_var,
                        floating* y, floating* save_invstd, Py_ssize_t N, Py_ssize_t C,
                        Py_ssize_t L, double eps, bint relu, int nt,
                        floating* fbuf) noexcept nogil:
    """y = (x - running_mean) * scale + bias, the training forward's form with the
    running statistics.  fbuf: 2 * C."""
    cdef Py_ssize_t ch
    cdef Call c = _call(floating is double, N, C, L, False, False)
    if floating is float:  # float variances: a loop of their own (_invstd reads doubles)
        fastbn_invstd_ff(running_var, C, eps, save_invstd)
    else:
        _invstd(running_var, C, eps, save_invstd)
    for ch in range(C):
        fbuf[ch] = _scale(save_invstd, weight, ch)
        fbuf[C + ch] = bias[ch] if bias != NULL else 0.0
    c.src, c.out, c.relu = x, y, relu
    c.k1, c.k2, c.k3 = running_mean, fbuf, fbuf + C
    _pass(&c, nt, _affine_units)


cdef void _backward(const floating* dy, const floating* x, const floating* weight,
                    const floating* bias, const floating* mean, const floating* invstd,
                    floating* dx, floating* dweight, floating* dbias, bint training,
                    bint relu, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L, int nt, double* buf,
                    floating* fbuf) noexcept nogil:
    """buf: 2 * C + 2 * _parts(.., wide) doubles; fbuf: 5 * C + C * L (wide path;
    3 * C * L with relu) floating.  relu: the gradient of
    relu(batch_norm(x)), dy masked where the recomputed pre-activation is not
    positive.  dx, dweight, dbias: NULL when not wanted; the gradient sums loop
    runs only for what needs it (dweight, dbias, or dx in training).  Loops: the
    gradient sums' partials, their totals with the coefficients of each channel,
    then dx."""
    cdef Py_ssize_t ch
    cdef floating* k_dy = fbuf
    cdef floating* rs = fbuf + 3 * C if relu else NULL
    cdef floating* rb = fbuf + 4 * C
    cdef Call c = _call(floating is double, N, C, L, True, relu)
    for ch in range(C):
        k_dy[ch] = _scale(invstd, weight, ch)
        if relu:
            rs[ch] = k_dy[ch]
            rb[ch] = bias[ch] if bias != NULL else 0.0
    c.sums = dweight != NULL or dbias != NULL or (training and dx != NULL)
    if c.sums:
        _positions(mean, rs, rb, C, L, c.wide, fbuf + 5 * C)
    c.x, c.dy, c.shift, c.rs, c.rb, c.pos = x, dy, mean, rs, rb, fbuf + 5 * C
    c.t1, c.t2, c.p1 = buf, buf + C, buf + 2 * C
    c.p2 = c.p1 + _parts(N, C, L, c.wide)
    c.stage, c.training = STAGE_BACKWARD, training
    c.weight, c.invstd, c.dweight, c.dbias = weight, invstd, dweight, dbias
    c.k1, c.k2, c.k3 = k_dy, fbuf + C, fbuf + 2 * C  # k_dy, k_x, k_0
    _reduce(&c, nt)
    if dx == NULL:
        return
    c.out = dx
    if training or relu:
        _pass(&c, nt, _dx_units)
    else:  # dx = dy * k_dy, which must not read x; k_0 is all zeros here
        c.src, c.k1, c.k2, c.k3 = dy, fbuf + 2 * C, k_dy, fbuf + 2 * C
        _pass(&c, nt, _affine_units)


cdef void _channel_sums(const floating* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t L, int nt,
                        double* part, floating* zeros, double* sums,
                        double* squares) noexcept nogil:
    """sums[c] = sum(x[:, c, :]) by the reduction with zero shifts; `zeros`: C + C * L
    zeros (the shifts, then their spread over the positions)."""
    cdef Call c = _call(floating is double, N, C, L, False, False)
    c.x, c.shift, c.pos = x, zeros, zeros + C
    c.t1, c.t2, c.p1 = sums, squares, part
    c.p2 = part + _parts(N, C, L, c.wide)
    _reduce(&c, nt)


# ---------------------------------------------------------------- entry points
# NumPy arrays in: fastbn/kernels.py has checked dtypes, shapes and contiguity
# (x is (N, C, L)), so these only take data pointers, which costs ~50 ns where a
# fused memoryview signature costs microseconds: it matters for small layers.

cdef inline void* _data(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline Py_ssize_t _spatial(cnp.ndarray x):
    """L of an (N, C, *spatial) array: the product of its spatial sizes."""
    cdef Py_ssize_t L = 1
    cdef int d
    for d in range(2, x.ndim):
        L *= x.shape[d]
    return L


cdef inline Py_ssize_t _fbuf_len(Py_ssize_t C, Py_ssize_t L, Py_ssize_t itemsize, bint wide,
                                 bint relu):
    """Doubles that hold 5 * C + C * L (wide path; 3 * C * L with relu) values of
    the data's type."""
    cdef Py_ssize_t pos = (3 if relu else 1) * C * L if wide else 0
    return ((5 * C + pos) * itemsize + 7) // 8


def forward_train(cnp.ndarray x, weight, bias, cnp.ndarray y, cnp.ndarray save_mean,
                  cnp.ndarray save_invstd, running_mean, running_var, double momentum,
                  double eps, int nthreads, bint relu=False):
    """Training forward.  Writes y (relu: relu of the normalized x), save_mean,
    save_invstd; updates the running statistics in place when given (weight,
    bias, running_* may be None).  Passes: one streaming read of x for the
    statistics, one read of x and write of y to normalize."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = _spatial(x)
    cdef int nt = _threads(N * C * L, nthreads)
    cdef bint wide = _wide(L, False, False)
    cdef _Scratch buf = _Scratch(4 * C + 2 * _parts(N, C, L, wide))
    cdef _Scratch fbuf = _Scratch(_fbuf_len(C, L, x.itemsize, wide, False))
    cdef void* p[8]
    p[:] = [_data(x), _data(weight), _data(bias), _data(y), _data(save_mean),
            _data(save_invstd), _data(running_mean), _data(running_var)]
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE:
            _forward_train(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3],
                           <double*>p[4], <double*>p[5], <double*>p[6], <double*>p[7],
                           N, C, L, momentum, eps, relu, nt, buf.p, <double*>fbuf.p)
        else:
            _forward_train(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3],
                           <float*>p[4], <float*>p[5], <float*>p[6], <float*>p[7],
                           N, C, L, momentum, eps, relu, nt, buf.p, <float*>fbuf.p)


def channel_sums(cnp.ndarray x, double[::1] out, int nthreads):
    """out[c] = the sum of x[:, c, :], by the statistics pass's reduction (no
    shift; the same tree at any thread count): one streaming read of x.  The
    bias gradient of a convolution."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = _spatial(x)
    cdef int nt = _threads(N * C * L, nthreads)
    cdef bint wide = _wide(L, False, False)
    cdef _Scratch buf = _Scratch(C + 2 * _parts(N, C, L, wide))  # sums of squares, partials
    cdef _Scratch fbuf = _Scratch(_fbuf_len(C, L, x.itemsize, wide, False), True)  # zero shifts
    cdef void* xp = _data(x)
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE:
            _channel_sums(<double*>xp, N, C, L, nt, buf.p + C, <double*>fbuf.p, &out[0], buf.p)
        else:
            _channel_sums(<float*>xp, N, C, L, nt, buf.p + C, <float*>fbuf.p, &out[0], buf.p)


def forward_eval(cnp.ndarray x, weight, bias, cnp.ndarray running_mean,
                 cnp.ndarray running_var, cnp.ndarray y, cnp.ndarray save_invstd,
                 double eps, int nthreads, bint relu=False):
    """Inference forward: y = (x - running_mean) / sqrt(running_var + eps) * weight
    + bias (relu: then the ReLU), one subtract and multiply-add per value; writes
    save_invstd.  Passes: one streaming read of x and write of y."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = _spatial(x)
    cdef int nt = _threads(N * C * L, nthreads)
    cdef _Scratch fbuf = _Scratch((2 * C * x.itemsize + 7) // 8)
    cdef void* p[7]
    p[:] = [_data(x), _data(weight), _data(bias), _data(running_mean), _data(running_var),
            _data(y), _data(save_invstd)]
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE:
            _forward_eval(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3],
                          <double*>p[4], <double*>p[5], <double*>p[6], N, C, L, eps, relu,
                          nt, <double*>fbuf.p)
        else:
            _forward_eval(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3],
                          <float*>p[4], <float*>p[5], <float*>p[6], N, C, L, eps, relu,
                          nt, <float*>fbuf.p)


def backward(cnp.ndarray dy, cnp.ndarray x, weight, cnp.ndarray mean, cnp.ndarray invstd,
             cnp.ndarray dx, dweight, dbias, bint training, int nthreads, bias=None,
             bint relu=False):
    """Backward of batch_norm (relu: of relu(batch_norm), bias as in the forward).
    Writes dx, dweight and dbias, each when given (not None).

    training=True: dx = w * invstd / m * (m * g - sum(g) - xhat * sum(g * xhat)).
    training=False (statistics are constants): dx = g * w * invstd.
    g = dy, or with relu dy where the forward's output was positive.
    Passes: one streaming read of x and dy for sum(g) and sum(g * (x - mean))
    (dweight, dbias, or dx in training), one read of x and dy (of dy alone in
    inference without relu) and write of dx (dx).
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = _spatial(x)
    cdef int nt = _threads(N * C * L, nthreads)
    cdef bint wide = _wide(L, True, relu)
    cdef _Scratch buf = _Scratch(2 * C + 2 * _parts(N, C, L, wide))
    cdef _Scratch fbuf = _Scratch(_fbuf_len(C, L, x.itemsize, wide, relu))
    cdef void* p[9]
    p[:] = [_data(dy), _data(x), _data(weight), _data(bias), _data(mean), _data(invstd),
            _data(dx), _data(dweight), _data(dbias)]
    with nogil:
        if cnp.PyArray_TYPE(x) == cnp.NPY_DOUBLE:
            _backward(<double*>p[0], <double*>p[1], <double*>p[2], <double*>p[3],
                      <double*>p[4], <double*>p[5], <double*>p[6], <double*>p[7],
                      <double*>p[8], training, relu, N, C, L, nt, buf.p, <double*>fbuf.p)
        else:
            _backward(<float*>p[0], <float*>p[1], <float*>p[2], <float*>p[3],
                      <float*>p[4], <float*>p[5], <float*>p[6], <float*>p[7],
                      <float*>p[8], training, relu, N, C, L, nt, buf.p, <float*>fbuf.p)
