"""Convolution and pooling kernels: conv2d through im2col + GEMM, and 2-D max /
average pooling.

Buffers are C-contiguous float or double; fastbn/kernels.py validates the
arguments, computes the output sizes and allocates the outputs.  Every kernel
splits its work into units of whole (image, channel) planes or images, which
fastbn's team shares out (_parallel.h): each output element is written by
exactly one unit, so there are no races and no reductions across threads, and
results are bitwise identical at any thread count.

Column layout (``cols``): (N, C * kh * kw, OH * OW), row ``(c * kh + i) * kw + j``
holds input channel c seen through kernel tap (i, j).  Per image it is the right
operand of ``weight.reshape(O, C * kh * kw) @ cols[n]`` whose result is already
the (O, OH * OW) output plane: the GEMMs need no transposed copies.

The GEMMs run per image inside fastbn's threads, each a single-threaded BLAS
call (fastbn/_blas.pyx says why).
"""
from cython cimport floating
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int64_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

from ._blas cimport blas_one_thread, gemm_rm, gemm_threads
from ._parallel cimport parallel_for

import numpy as np

cdef enum:
    SERIAL_BELOW = 16384  # elements; below this a parallel region costs more than it saves
    POOL_VALUES = 4096    # input values per 2x2 max-pooling call at least (in L1)


cdef inline int _threads(Py_ssize_t work, int nthreads) noexcept nogil:
    return 1 if work < SERIAL_BELOW else max(nthreads, 1)


ctypedef struct Taps:  # a convolution's sliding window over one input plane
    Py_ssize_t H, W, OH, OW, kh, kw, sh, sw, ph, pw, dh, dw


cdef inline void _valid(Py_ssize_t off, Py_ssize_t stride, Py_ssize_t size, Py_ssize_t out,
                        Py_ssize_t* lo, Py_ssize_t* hi) noexcept nogil:
    """Outputs o in [lo, hi) whose input o * stride + off lies inside [0, size)."""
    cdef Py_ssize_t a = 0 if off >= 0 else (-off + stride - 1) // stride
    cdef Py_ssize_t b = 0 if size - 1 - off < 0 else (size - 1 - off) // stride + 1
    b = min(b, out)
    lo[0] = min(a, b)
    hi[0] = b


cdef inline void _plane_cols(floating* plane, floating* rows, const Taps* t,
                             bint to_cols) noexcept nogil:
    """One input channel plane <-> its kh * kw rows of columns.

    to_cols: rows = im2col(plane), padding written as zeros (one read of the
    plane per tap, one write of the rows).  Otherwise plane += col2im(rows) over
    the valid taps: the caller zeroes the plane, which only this thread touches.
    """
    cdef Py_ssize_t i, j, oh, ow, oh0, oh1, ow0, ow1, offh, offw
    cdef Py_ssize_t L = t.OH * t.OW, sw = t.sw
    cdef floating* dst
    cdef floating* src
    for i in range(t.kh):
        offh = i * t.dh - t.ph
        _valid(offh, t.sh, t.H, t.OH, &oh0, &oh1)
        for j in range(t.kw):
            offw = j * t.dw - t.pw
            _valid(offw, sw, t.W, t.OW, &ow0, &ow1)
            dst = rows + (i * t.kw + j) * L
            if to_cols:
                for ow in range(oh0 * t.OW):
                    dst[ow] = 0
                for ow in range(oh1 * t.OW, L):
                    dst[ow] = 0
            for oh in range(oh0, oh1):
                src = plane + (oh * t.sh + offh) * t.W  # the input row tap (i, j) reads
                if to_cols:
                    for ow in range(ow0):
                        dst[oh * t.OW + ow] = 0
                    if sw == 1:
                        for ow in range(ow0, ow1):
                            dst[oh * t.OW + ow] = src[ow + offw]
                    else:
                        for ow in range(ow0, ow1):
                            dst[oh * t.OW + ow] = src[ow * sw + offw]
                    for ow in range(ow1, t.OW):
                        dst[oh * t.OW + ow] = 0
                elif sw == 1:
                    for ow in range(ow0, ow1):
                        src[ow + offw] += dst[oh * t.OW + ow]
                else:
                    for ow in range(ow0, ow1):
                        src[ow * sw + offw] += dst[oh * t.OW + ow]


cdef inline Taps _taps(Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                       tuple kernel, tuple stride, tuple padding, tuple dilation):
    cdef Taps t
    t.H, t.W, t.OH, t.OW = H, W, OH, OW
    t.kh, t.kw = kernel
    t.sh, t.sw = stride
    t.ph, t.pw = padding
    t.dh, t.dw = dilation
    return t


ctypedef struct Conv:    # one convolution call (pointers to the data's type)
    bint dbl
    Taps t
    Py_ssize_t N, C, G, KK, plane
    int Og, K, L
    bint identity        # 1x1, stride 1, no padding: cols is x
    const void* x
    const void* w
    const void* bias
    void* cols
    void* y
    const void* dy
    void* dx
    void* parts
    Py_ssize_t P         # runs of images of the weight gradient (0: none)
    void* scratch        # per slot, `stride` values
    Py_ssize_t stride


cdef inline void _cols_of(floating* x, const Conv* c, Py_ssize_t u) noexcept nogil:
    _plane_cols(x + u * c.plane, <floating*>c.cols + u * c.KK * c.L, &c.t, True)


cdef void _cols_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """im2col of (image, channel) planes u0 to u1 - 1."""
    cdef Conv c = (<Conv*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u
    for u in range(u0, u1):
        if c.dbl:
            _cols_of(<double*>c.x, &c, u)
        else:
            _cols_of(<float*>c.x, &c, u)


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, tuple kernel,
           tuple stride, tuple padding, tuple dilation, Py_ssize_t OH, Py_ssize_t OW,
           int nthreads):
    """cols[n, (c*kh + i)*kw + j, oh*OW + ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
    (zero outside x).  Units: (image, channel) planes.  Passes: one write
    of cols; x is read kh * kw times, but its plane stays in L1/L2 meanwhile."""
    cdef Conv c
    c.dbl = floating is double
    c.t = _taps(x.shape[2], x.shape[3], OH, OW, kernel, stride, padding, dilation)
    c.N, c.C, c.KK, c.L = x.shape[0], x.shape[1], c.t.kh * c.t.kw, OH * OW
    c.plane = c.t.H * c.t.W
    c.x, c.cols = &x[0, 0, 0, 0], &cols[0, 0, 0]  # x only read: to_cols
    with nogil:
        parallel_for(c.N * c.C, _threads(c.N * c.C * c.KK * c.L, nthreads), _cols_units, &c)


# ---------------------------------------------------------------- convolution GEMMs

cdef inline void _forward_of(const floating* x, const Conv* c, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t ch, g, o, i
    cdef floating* cp = <floating*>c.cols
    cdef floating* yn = <floating*>c.y + n * c.G * c.Og * c.L
    cdef const floating* wp = <const floating*>c.w
    cdef const floating* bp = <const floating*>c.bias
    cdef floating v
    if not c.identity:
        for ch in range(c.C):
            _plane_cols(<floating*>x + (n * c.C + ch) * c.plane,
                        cp + (n * c.C + ch) * c.KK * c.L, &c.t, True)
    for g in range(c.G):
        gemm_rm(False, False, c.Og, c.L, c.K, wp + g * c.Og * c.K, c.K,
                cp + (n * c.G + g) * c.K * c.L, c.L, 0, yn + g * c.Og * c.L, c.L)
    if bp != NULL:
        for o in range(c.G * c.Og):
            v = bp[o]
            for i in range(c.L):
                yn[o * c.L + i] += v


cdef void _forward_units(void* arg, Py_ssize_t n0, Py_ssize_t n1, int slot) noexcept nogil:
    """Images n0 to n1 - 1, each: im2col into cols[n], then its product while
    cols[n] is in cache."""
    cdef Conv c = (<Conv*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t n
    for n in range(n0, n1):
        if c.dbl:
            _forward_of(<const double*>c.x, &c, n)
        else:
            _forward_of(<const float*>c.x, &c, n)


def conv_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] weight, bias,
                 const floating[:, :, ::1] cols, floating[:, :, ::1] y, tuple kernel, tuple stride,
                 tuple padding, tuple dilation, Py_ssize_t OH, Py_ssize_t OW, bint identity,
                 int nthreads):
    """y[n, g] = weight[g] @ cols[n, g] (+ bias), per image: im2col of x[n] into
    cols[n] (unless identity: 1x1, stride 1, no padding, where cols is x), then
    the product while cols[n] is still in cache.  weight is (G, O / G, K);
    cols (N, G * K, L); y (N, O, L); bias None or a length-O vector."""
    cdef Conv c
    cdef const floating[::1] b
    c.dbl = floating is double
    c.t = _taps(x.shape[2], x.shape[3], OH, OW, kernel, stride, padding, dilation)
    c.N, c.C, c.G = x.shape[0], x.shape[1], weight.shape[0]
    c.Og, c.K, c.L = weight.shape[1], weight.shape[2], OH * OW
    c.KK, c.plane, c.identity = c.t.kh * c.t.kw, c.t.H * c.t.W, identity
    c.x, c.w, c.cols, c.y = &x[0, 0, 0, 0], &weight[0, 0, 0], &cols[0, 0, 0], &y[0, 0, 0]
    c.bias = NULL
    if bias is not None:
        b = bias
        c.bias = &b[0]
    cdef int nt = gemm_threads(c.N * c.G * c.Og * c.K * c.L, nthreads)
    with nogil:
        blas_one_thread(True)
        parallel_for(c.N, nt, _forward_units, &c)
        blas_one_thread(False)


cdef inline void _backward_of(const floating* dyp, const Conv* c, Py_ssize_t p,
                              int slot) noexcept nogil:
    cdef Py_ssize_t units = c.P if c.P else c.N
    cdef Py_ssize_t n0 = p * c.N // units, n1 = (p + 1) * c.N // units, n, g, ch, i
    cdef int Og = c.Og, K = c.K, L = c.L
    cdef const floating* wp = <const floating*>c.w
    cdef const floating* cp = <const floating*>c.cols
    cdef floating* pp = <floating*>c.parts
    cdef floating* dxp = <floating*>c.dx
    cdef floating* dcols = <floating*>c.scratch + slot * c.stride
    for n in range(n0, n1):
        if pp != NULL:
            for g in range(c.G):
                gemm_rm(False, True, Og, K, L, dyp + (n * c.G + g) * Og * L, L,
                        cp + (n * c.G + g) * K * L, L, 0 if n == n0 else 1,
                        pp + (p * c.G + g) * Og * K, K)
        if dxp != NULL:
            for g in range(c.G):
                gemm_rm(True, False, K, L, Og, wp + g * Og * K, K,
                        dyp + (n * c.G + g) * Og * L, L, 0,
                        (dxp + n * c.C * c.plane if c.identity else dcols) + g * K * L, L)
            if not c.identity:
                for ch in range(c.C):
                    for i in range(c.plane):
                        dxp[(n * c.C + ch) * c.plane + i] = 0
                    _plane_cols(dxp + (n * c.C + ch) * c.plane, dcols + ch * c.KK * L, &c.t,
                                False)


cdef void _backward_units(void* arg, Py_ssize_t p0, Py_ssize_t p1, int slot) noexcept nogil:
    """Units p0 to p1 - 1, each a run of images (a part of the weight gradient,
    or one image)."""
    cdef Conv c = (<Conv*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t p
    for p in range(p0, p1):
        if c.dbl:
            _backward_of(<const double*>c.dy, &c, p, slot)
        else:
            _backward_of(<const float*>c.dy, &c, p, slot)


def conv_backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] weight, cols, dx,
                  parts, tuple kernel, tuple stride,
                  tuple padding, tuple dilation, Py_ssize_t OH, Py_ssize_t OW, bint identity,
                  int nthreads):
    """Per image n: dx[n] = col2im(weight[g]^T @ dy[n, g]) (dx None: not needed),
    and parts[p] = sum of dy[n, g] @ cols[n, g]^T over the images of part p
    (parts and cols None: not needed; each part accumulated in image order, its
    images a run fixed by the number of parts, to be added in part order by the
    caller).  weight (G, O / G, K), dy (N, O, L), cols (N, G * K, L),
    dx (N, C, H, W), parts (P, G, O / G, K)."""
    cdef Conv c
    cdef floating[:, :, :, ::1] dxv
    cdef floating[:, :, :, ::1] pv
    cdef const floating[:, :, ::1] colv
    cdef floating[:, ::1] scratch
    cdef Py_ssize_t H = 1, W = 1
    c.dbl = floating is double
    c.N, c.G, c.C, c.P = dy.shape[0], weight.shape[0], 0, 0
    c.Og, c.K, c.L = weight.shape[1], weight.shape[2], OH * OW
    c.dy, c.w, c.dx, c.parts, c.cols, c.identity = &dy[0, 0, 0], &weight[0, 0, 0], NULL, NULL, NULL, identity
    if dx is not None:
        dxv = dx
        c.dx = &dxv[0, 0, 0, 0]
        c.C, H, W = dxv.shape[1], dxv.shape[2], dxv.shape[3]
    if parts is not None:
        pv = parts
        c.parts = &pv[0, 0, 0, 0]
        c.P = pv.shape[0]
        colv = cols
        c.cols = &colv[0, 0, 0]
    c.t = _taps(H, W, OH, OW, kernel, stride, padding, dilation)
    c.KK, c.plane = c.t.kh * c.t.kw, H * W
    cdef int nt = gemm_threads(c.N * c.G * c.Og * c.K * c.L, nthreads)
    # per thread, the input gradient's columns of one image: in L2 until col2im
    c.stride = c.G * c.K * c.L if c.dx != NULL and not identity else 1
    scratch = np.empty((nt, c.stride), dtype=np.float32 if floating is float else np.float64)
    c.scratch = &scratch[0, 0]
    with nogil:
        blas_one_thread(True)
        parallel_for(c.P if c.P else c.N, nt, _backward_units, &c)
        blas_one_thread(False)


# ---------------------------------------------------------------- pooling

cdef enum Mode:
    MAX_WINDOW = 0       # window clipped to the input (padding never wins a max)
    AVG_INCLUDE_PAD = 1  # divide by the window clipped to the padded input
    AVG_EXCLUDE_PAD = 2  # divide by the number of real input pixels
    ADAPTIVE = 3         # PyTorch's floor/ceil windows, any output size

ctypedef struct Pool:
    Py_ssize_t H, W, OH, OW, kh, kw, sh, sw, ph, pw
    Mode mode


cdef inline Pool _pool(Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH, Py_ssize_t OW,
                       tuple kernel, tuple stride, tuple padding, Mode mode):
    cdef Pool p
    p.H, p.W, p.OH, p.OW = H, W, OH, OW
    p.kh, p.kw = kernel
    p.sh, p.sw = stride
    p.ph, p.pw = padding
    p.mode = mode
    return p


ctypedef struct Win:
    Py_ssize_t h0, h1, w0, w1  # input rows [h0, h1), columns [w0, w1)
    double divisor             # of an average


cdef inline Win _window(const Pool* p, Py_ssize_t oh, Py_ssize_t ow) noexcept nogil:
    """The input window pooled into output (oh, ow): PyTorch's formulas."""
    cdef Win r
    cdef Py_ssize_t a, b, c, d
    if p.mode == ADAPTIVE:
        r.h0 = oh * p.H // p.OH
        r.h1 = ((oh + 1) * p.H + p.OH - 1) // p.OH
        r.w0 = ow * p.W // p.OW
        r.w1 = ((ow + 1) * p.W + p.OW - 1) // p.OW
        r.divisor = <double>((r.h1 - r.h0) * (r.w1 - r.w0))
        return r
    a = oh * p.sh - p.ph
    c = ow * p.sw - p.pw
    b = min(a + p.kh, p.H + p.ph)
    d = min(c + p.kw, p.W + p.pw)
    r.h0 = max(a, 0)
    r.w0 = max(c, 0)
    r.h1 = min(b, p.H)
    r.w1 = min(d, p.W)
    if p.mode == AVG_INCLUDE_PAD:
        r.divisor = <double>((b - a) * (d - c))
    else:
        r.divisor = <double>((r.h1 - r.h0) * (r.w1 - r.w0))
    return r


cdef extern from "_pool.h" nogil:
    void fastbn_pool_pairs_float(const float* x, Py_ssize_t n, float* v, uint32_t* at)
    void fastbn_pool_pairs_double(const double* x, Py_ssize_t n, double* v, uint32_t* at)
    void fastbn_pool_rows_float(float* v, uint32_t* at, Py_ssize_t w, Py_ssize_t n)
    void fastbn_pool_rows_double(double* v, uint32_t* at, Py_ssize_t w, Py_ssize_t n)
    void fastbn_box3_float(const float* x, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                           float* y, double* rows)
    void fastbn_box3_double(const double* x, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                            double* y, double* rows)
    void fastbn_max3_float(const float* x, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                           Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t s, float* y, int64_t* idx,
                           float* v, uint32_t* at)
    void fastbn_max3_double(const double* x, Py_ssize_t planes, Py_ssize_t H, Py_ssize_t W,
                            Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t s, double* y,
                            int64_t* idx, double* v, uint32_t* at)


cdef inline void _max_pool_2x2(const floating* x, floating* y, int64_t* idx, Py_ssize_t planes,
                               const Pool* p, floating* v, uint32_t* at) noexcept nogil:
    """max_pool_forward of `planes` consecutive planes of even width for kernel 2,
    stride 2, no padding (_pool.h): pairs across the planes, each row against
    the next, then the even rows out, as one tall plane (more than one plane
    only with an even height: then no pair of rows straddles two planes).
    v, at: this thread's 2 OH x OW x planes scratch."""
    cdef Py_ssize_t oh, ow, OW = p.OW, rows = planes * p.OH, n = 2 * rows * OW
    cdef Py_ssize_t base
    if floating is float:
        fastbn_pool_pairs_float(x, n, v, at)
        fastbn_pool_rows_float(v, at, OW, n - OW)
    else:
        fastbn_pool_pairs_double(x, n, v, at)
        fastbn_pool_rows_double(v, at, OW, n - OW)
    for oh in range(rows):
        base = (oh // p.OH) * p.H * p.W  # positions in the tall plane -> in their own
        memcpy(y + oh * OW, v + 2 * oh * OW, OW * sizeof(floating))
        for ow in range(OW):
            idx[oh * OW + ow] = at[2 * oh * OW + ow] - base


ctypedef struct Pooling:  # one pooling call (pointers to the data's type)
    bint dbl
    Pool pl
    Py_ssize_t P, plane, L
    bint two             # 2x2 / stride 2 by _max_pool_2x2
    bint three           # 3x3 / padding 1 / stride 1 or 2 max by fastbn_max3
    bint box             # 3x3 / stride 1 / padding 1 average by fastbn_box3 (_box3)
    Py_ssize_t per       # planes per unit
    const void* src      # x, or dy
    void* out            # y, or dx
    int64_t* idx         # max pooling's indices
    void* vs             # per slot, `stride` values and positions (_max_pool_2x2,
    uint32_t* ats        # fastbn_max3's two passes)
    double* rows         # per slot, a plane of doubles (fastbn_box3)
    Py_ssize_t stride
    Py_ssize_t* bad      # per slot: indices outside their plane


cdef inline void _max_of(const floating* xp, const Pooling* c, Py_ssize_t u,
                         int slot) noexcept nogil:
    cdef const Pool* pl = &c.pl
    cdef Py_ssize_t p0 = u * c.per, plane = c.plane, L = c.L, oh, ow, h, w, best_i
    cdef floating* yp = <floating*>c.out
    cdef Win win
    cdef floating v, best
    if c.two:
        _max_pool_2x2(xp + p0 * plane, yp + p0 * L, c.idx + p0 * L, min(c.per, c.P - p0), pl,
                      <floating*>c.vs + slot * c.stride, c.ats + slot * c.stride)
        return
    if c.three:
        if floating is float:
            fastbn_max3_float(xp + p0 * plane, min(c.per, c.P - p0), pl.H, pl.W, pl.OH, pl.OW,
                              pl.sh, yp + p0 * L, c.idx + p0 * L,
                              <float*>c.vs + slot * c.stride, c.ats + slot * c.stride)
        else:
            fastbn_max3_double(xp + p0 * plane, min(c.per, c.P - p0), pl.H, pl.W, pl.OH,
                               pl.OW, pl.sh, yp + p0 * L, c.idx + p0 * L,
                               <double*>c.vs + slot * c.stride, c.ats + slot * c.stride)
        return
    for oh in range(pl.OH):
        for ow in range(pl.OW):
            win = _window(pl, oh, ow)
            best = -INFINITY
            best_i = win.h0 * pl.W + win.w0
            for h in range(win.h0, win.h1):
                for w in range(win.w0, win.w1):
                    v = xp[p0 * plane + h * pl.W + w]
                    if v > best or isnan(v):
                        best = v
                        best_i = h * pl.W + w
            yp[p0 * L + oh * pl.OW + ow] = best
            c.idx[p0 * L + oh * pl.OW + ow] = best_i


cdef void _max_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Units u0 to u1 - 1, each `per` planes."""
    cdef Pooling c = (<Pooling*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u
    for u in range(u0, u1):
        if c.dbl:
            _max_of(<const double*>c.src, &c, u, slot)
        else:
            _max_of(<const float*>c.src, &c, u, slot)


def max_pool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     int64_t[:, :, ::1] indices, tuple kernel, tuple stride, tuple padding,
                     int nthreads):
    """y = max over each window of each (N*C) plane; indices = the flat h * W + w
    of the first maximum (a NaN wins and stays, as in PyTorch).  One read of x.
    2x2 / stride 2 over small planes of even size pools POOL_VALUES values'
    worth of planes per call: one plane of 4x4 at a time cost 25 ns a plane in
    call and loop overheads, 6x the work."""
    cdef Pooling c
    c.dbl = floating is double
    c.pl = _pool(x.shape[1], x.shape[2], y.shape[1], y.shape[2], kernel, stride, padding,
                 MAX_WINDOW)
    c.P, c.plane, c.L = x.shape[0], c.pl.H * c.pl.W, c.pl.OH * c.pl.OW
    c.two = (c.pl.kh == 2 and c.pl.kw == 2 and c.pl.sh == 2 and c.pl.sw == 2 and c.pl.ph == 0
             and c.pl.pw == 0 and c.pl.W % 2 == 0 and c.plane < 2**31)  # uint32 positions
    c.three = (not c.two and c.pl.kh == 3 and c.pl.kw == 3 and c.pl.ph == 1 and c.pl.pw == 1
               and c.pl.sh == c.pl.sw and c.pl.sh <= 2 and c.plane < 2**31)
    c.per = (max(POOL_VALUES // c.plane, 1) if (c.two and c.pl.H % 2 == 0 or c.three) and
             c.plane <= POOL_VALUES else 1)
    c.src, c.out, c.idx = &x[0, 0, 0], &y[0, 0, 0], &indices[0, 0, 0]
    cdef int nt = _threads(c.P * c.plane, nthreads)
    # per thread, for _max_pool_2x2, or fastbn_max3's two passes
    c.stride = 2 * c.L * c.per if c.two else (2 * c.plane * c.per if c.three else 1)
    cdef floating[:, ::1] vs = np.empty((nt, c.stride),
                                        np.float32 if floating is float else np.float64)
    cdef uint32_t[:, ::1] ats = np.empty((nt, c.stride), np.uint32)
    c.vs, c.ats = &vs[0, 0], &ats[0, 0]
    with nogil:
        parallel_for((c.P + c.per - 1) // c.per, nt, _max_units, &c)


cdef inline Py_ssize_t _scatter_of(const floating* dyp, const Pooling* c, Py_ssize_t u0,
                                   Py_ssize_t u1) noexcept nogil:
    """Planes u0 to u1 - 1 of max pooling's gradient; returns the number of their
    indices outside their plane."""
    cdef Py_ssize_t u, i, j, plane = c.plane, L = c.L, bad = 0
    cdef floating* dxp = <floating*>c.out
    cdef const int64_t* ip = c.idx
    for u in range(u0, u1):
        for i in range(plane):
            dxp[u * plane + i] = 0
        for i in range(L):
            j = ip[u * L + i]
            if 0 <= j < plane:
                dxp[u * plane + j] += dyp[u * L + i]
            else:
                bad += 1
    return bad


cdef void _scatter_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Planes u0 to u1 - 1 of max pooling's gradient.  The count of bad indices
    is written once a run, and only when there are some: the slots' counters
    share a cache line."""
    cdef Pooling c = (<Pooling*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t bad
    if c.dbl:
        bad = _scatter_of(<const double*>c.src, &c, u0, u1)
    else:
        bad = _scatter_of(<const float*>c.src, &c, u0, u1)
    if bad:
        c.bad[slot] += bad


def max_pool_backward(const floating[:, :, ::1] dy, const int64_t[:, :, ::1] indices,
                      floating[:, :, ::1] dx, int nthreads):
    """dx[plane, indices] += dy: scatter-add within each plane (a unit owns
    whole planes of dx, so overlapping windows do not race).  dx is overwritten.
    Returns the number of indices outside their plane, which are skipped: the
    caller raises, and no extra pass over the indices checks them first."""
    cdef Pooling c
    c.dbl = floating is double
    c.P, c.plane, c.L = dx.shape[0], dx.shape[1] * dx.shape[2], dy.shape[1] * dy.shape[2]
    c.src, c.out, c.idx = &dy[0, 0, 0], &dx[0, 0, 0], <int64_t*>&indices[0, 0, 0]
    cdef int nt = _threads(c.P * c.plane, nthreads), i
    cdef Py_ssize_t bad = 0
    c.bad = <Py_ssize_t*>calloc(nt, sizeof(Py_ssize_t))
    if c.bad == NULL:
        raise MemoryError()
    with nogil:
        parallel_for(c.P, nt, _scatter_units, &c)
    for i in range(nt):
        bad += c.bad[i]
    free(c.bad)
    return bad


cdef inline Mode _avg_mode(int mode) noexcept nogil:
    return ADAPTIVE if mode == 2 else (AVG_INCLUDE_PAD if mode == 1 else AVG_EXCLUDE_PAD)


cdef inline bint _box3(const Pool* p) noexcept nogil:
    """A 3x3 average, stride 1, padding 1, dividing by 9 everywhere: _pool.h's box
    filter."""
    return (p.mode == AVG_INCLUDE_PAD and p.kh == 3 and p.kw == 3 and p.sh == 1
            and p.sw == 1 and p.ph == 1 and p.pw == 1)


cdef inline void _box3_planes(const floating* x, const Pooling* c, Py_ssize_t u, floating* y,
                              int slot) noexcept nogil:
    """Unit u of the box filter: planes u per to (u + 1) per - 1 of x into y."""
    cdef Py_ssize_t p0 = u * c.per, planes = min(c.per, c.P - p0)
    cdef double* rows = c.rows + slot * c.per * c.plane
    if floating is float:
        fastbn_box3_float(x + p0 * c.plane, planes, c.pl.H, c.pl.W, y + p0 * c.plane, rows)
    else:
        fastbn_box3_double(x + p0 * c.plane, planes, c.pl.H, c.pl.W, y + p0 * c.plane, rows)


cdef inline void _box3_setup(Pooling* c):
    """c.box, and c.per planes per unit for it (POOL_VALUES' worth of small planes)."""
    c.box = _box3(&c.pl)
    c.per = max(POOL_VALUES // c.plane, 1) if c.box and c.plane <= POOL_VALUES else 1


cdef inline void _avg_of(const floating* xp, const Pooling* c, Py_ssize_t u,
                         int slot) noexcept nogil:
    cdef const Pool* pl = &c.pl
    cdef Py_ssize_t plane = c.plane, L = c.L, oh, ow, h, w
    cdef floating* yp = <floating*>c.out
    cdef double s
    cdef Win win
    if c.box:
        _box3_planes(xp, c, u, yp, slot)
        return
    for oh in range(pl.OH):
        for ow in range(pl.OW):
            win = _window(pl, oh, ow)
            s = 0.0
            for h in range(win.h0, win.h1):
                for w in range(win.w0, win.w1):
                    s = s + xp[u * plane + h * pl.W + w]
            yp[u * L + oh * pl.OW + ow] = <floating>(s / win.divisor)


cdef void _avg_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Units u0 to u1 - 1 of average pooling: a plane each, or the box filter's runs."""
    cdef Pooling c = (<Pooling*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u
    for u in range(u0, u1):
        if c.dbl:
            _avg_of(<const double*>c.src, &c, u, slot)
        else:
            _avg_of(<const float*>c.src, &c, u, slot)


def avg_pool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, tuple kernel,
                     tuple stride, tuple padding, int mode, int nthreads):
    """y = mean over each window of each (N*C) plane, summed in double.
    mode: 0 count_include_pad=False, 1 count_include_pad=True, 2 adaptive
    (kernel, stride, padding unused)."""
    cdef Pooling c
    c.dbl = floating is double
    c.pl = _pool(x.shape[1], x.shape[2], y.shape[1], y.shape[2], kernel, stride, padding,
                 _avg_mode(mode))
    c.P, c.plane, c.L = x.shape[0], c.pl.H * c.pl.W, c.pl.OH * c.pl.OW
    c.src, c.out = &x[0, 0, 0], &y[0, 0, 0]
    cdef int nt = _threads(c.P * c.plane, nthreads)
    _box3_setup(&c)
    cdef double[:, ::1] rows = np.empty((nt, c.per * c.plane if c.box else 1))
    c.rows = &rows[0, 0]
    with nogil:
        parallel_for((c.P + c.per - 1) // c.per, nt, _avg_units, &c)


cdef inline void _avg_grad_of(const floating* dyp, const Pooling* c, Py_ssize_t u,
                              int slot) noexcept nogil:
    cdef const Pool* pl = &c.pl
    cdef Py_ssize_t plane = c.plane, L = c.L, i, oh, ow, h, w
    cdef floating* dxp = <floating*>c.out
    cdef Win win
    cdef floating g
    if c.box:  # the box filter is its own adjoint
        _box3_planes(dyp, c, u, dxp, slot)
        return
    for i in range(plane):
        dxp[u * plane + i] = 0
    for oh in range(pl.OH):
        for ow in range(pl.OW):
            win = _window(pl, oh, ow)
            g = <floating>(dyp[u * L + oh * pl.OW + ow] / win.divisor)
            for h in range(win.h0, win.h1):
                for w in range(win.w0, win.w1):
                    dxp[u * plane + h * pl.W + w] += g


cdef void _avg_grad_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Units u0 to u1 - 1 of average pooling's gradient (as _avg_units)."""
    cdef Pooling c = (<Pooling*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u
    for u in range(u0, u1):
        if c.dbl:
            _avg_grad_of(<const double*>c.src, &c, u, slot)
        else:
            _avg_grad_of(<const float*>c.src, &c, u, slot)


def avg_pool_backward(const floating[:, :, ::1] dy, floating[:, :, ::1] dx, tuple kernel,
                      tuple stride, tuple padding, int mode, int nthreads):
    """dx = adjoint of avg_pool_forward (same modes): each dy / divisor added to
    its window.  A unit owns whole planes of dx.  dx is overwritten."""
    cdef Pooling c
    c.dbl = floating is double
    c.pl = _pool(dx.shape[1], dx.shape[2], dy.shape[1], dy.shape[2], kernel, stride, padding,
                 _avg_mode(mode))
    c.P, c.plane, c.L = dx.shape[0], c.pl.H * c.pl.W, c.pl.OH * c.pl.OW
    c.src, c.out = &dy[0, 0, 0], &dx[0, 0, 0]
    cdef int nt = _threads(c.P * c.plane, nthreads)
    _box3_setup(&c)
    cdef double[:, ::1] rows = np.empty((nt, c.per * c.plane if c.box else 1))
    c.rows = &rows[0, 0]
    with nogil:
        parallel_for((c.P + c.per - 1) // c.per, nt, _avg_grad_units, &c)
