"""Convolution and pooling kernels: conv2d through im2col + GEMM, and 2-D max /
average pooling.

Buffers are C-contiguous float or double; fastbn/kernels.py validates the
arguments, computes the output sizes and allocates the outputs.  Every kernel
splits its work over whole (image, channel) planes: each output element is
written by exactly one thread, so there are no races and no reductions across
threads, and results are bitwise identical at any thread count.

Column layout (``cols``): (N, C * kh * kw, OH * OW), row ``(c * kh + i) * kw + j``
holds input channel c seen through kernel tap (i, j).  Per image it is the right
operand of ``weight.reshape(O, C * kh * kw) @ cols[n]`` whose result is already
the (O, OH * OW) output plane: the GEMMs need no transposed copies.

The GEMMs run per image inside fastbn's threads, each a single-threaded BLAS
call (fastbn/_blas.pyx says why).
"""
from cython cimport floating
from cython.parallel cimport prange, threadid
from libc.math cimport INFINITY, isnan
from libc.stdint cimport int64_t, uint32_t
from libc.string cimport memcpy

from ._blas cimport blas_one_thread, gemm_rm, gemm_threads

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


def im2col(const floating[:, :, :, ::1] x, floating[:, :, ::1] cols, tuple kernel,
           tuple stride, tuple padding, tuple dilation, Py_ssize_t OH, Py_ssize_t OW,
           int nthreads):
    """cols[n, (c*kh + i)*kw + j, oh*OW + ow] = x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
    (zero outside x).  Parallel over (image, channel) planes.  Passes: one write
    of cols; x is read kh * kw times, but its plane stays in L1/L2 meanwhile."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], u
    cdef Taps t = _taps(x.shape[2], x.shape[3], OH, OW, kernel, stride, padding, dilation)
    cdef Py_ssize_t K = t.kh * t.kw, L = OH * OW, plane = t.H * t.W
    cdef floating* xp = <floating*>&x[0, 0, 0, 0]  # only read when to_cols
    cdef floating* cp = &cols[0, 0, 0]
    cdef int nt = _threads(N * C * K * L, nthreads)
    with nogil:
        for u in prange(N * C, schedule='static', num_threads=nt):
            _plane_cols(xp + u * plane, cp + u * K * L, &t, True)


# ---------------------------------------------------------------- convolution GEMMs

def conv_forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] weight, bias,
                 const floating[:, :, ::1] cols, floating[:, :, ::1] y, tuple kernel, tuple stride,
                 tuple padding, tuple dilation, Py_ssize_t OH, Py_ssize_t OW, bint identity,
                 int nthreads):
    """y[n, g] = weight[g] @ cols[n, g] (+ bias), per image: im2col of x[n] into
    cols[n] (unless identity: 1x1, stride 1, no padding, where cols is x), then
    the product while cols[n] is still in cache.  weight is (G, O / G, K);
    cols (N, G * K, L); y (N, O, L); bias None or a length-O vector."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], G = weight.shape[0]
    cdef int Og = weight.shape[1], K = weight.shape[2], L = OH * OW
    cdef Taps t = _taps(x.shape[2], x.shape[3], OH, OW, kernel, stride, padding, dilation)
    cdef Py_ssize_t KK = t.kh * t.kw, plane = t.H * t.W, n, c, g, o, i
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0]
    cdef floating* cp = <floating*>&cols[0, 0, 0]  # written unless identity
    cdef floating* yp = &y[0, 0, 0]
    cdef const floating[::1] b
    cdef const floating* bp = NULL
    cdef floating* yn
    cdef floating v
    cdef int nt = gemm_threads(N * G * Og * K * L, nthreads)
    if bias is not None:
        b = bias
        bp = &b[0]
    with nogil:
        blas_one_thread(True)
        for n in prange(N, schedule='static', num_threads=nt):
            if not identity:
                for c in range(C):
                    _plane_cols(<floating*>xp + (n * C + c) * plane,
                                cp + (n * C + c) * KK * L, &t, True)
            yn = yp + n * G * Og * L
            for g in range(G):
                gemm_rm(False, False, Og, L, K, wp + g * Og * K, K,
                      cp + (n * G + g) * K * L, L, 0, yn + g * Og * L, L)
            if bp != NULL:
                for o in range(G * Og):
                    v = bp[o]
                    for i in range(L):
                        yn[o * L + i] += v
        blas_one_thread(False)


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
    cdef Py_ssize_t N = dy.shape[0], G = weight.shape[0]
    cdef int Og = weight.shape[1], K = weight.shape[2], L = OH * OW
    cdef Py_ssize_t P = 0, p, n, n0, n1, g, c, i, C = 0, H = 1, W = 1
    cdef floating[:, :, :, ::1] dxv
    cdef floating[:, :, :, ::1] pv
    cdef const floating[:, :, ::1] colv
    cdef floating[:, ::1] scratch
    cdef floating* dxp = NULL
    cdef floating* pp = NULL
    cdef floating* dcols = NULL
    cdef const floating* dyp = &dy[0, 0, 0]
    cdef const floating* wp = &weight[0, 0, 0]
    cdef const floating* cp = NULL
    if dx is not None:
        dxv = dx
        dxp = &dxv[0, 0, 0, 0]
        C, H, W = dxv.shape[1], dxv.shape[2], dxv.shape[3]
    if parts is not None:
        pv = parts
        pp = &pv[0, 0, 0, 0]
        P = pv.shape[0]
        colv = cols
        cp = &colv[0, 0, 0]
    cdef Taps t = _taps(H, W, OH, OW, kernel, stride, padding, dilation)
    cdef Py_ssize_t KK = t.kh * t.kw, plane = H * W
    cdef Py_ssize_t units = P if P else N  # work units: weight parts, or images
    cdef int nt = gemm_threads(N * G * Og * K * L, nthreads)
    # per thread, the input gradient's columns of one image: in L2 until col2im
    scratch = np.empty((nt, G * K * L if dxp != NULL and not identity else 1),
                       dtype=np.float32 if floating is float else np.float64)
    with nogil:
        blas_one_thread(True)
        for p in prange(units, schedule='static', num_threads=nt):
            dcols = &scratch[threadid(), 0]
            n0 = p * N // units
            n1 = (p + 1) * N // units
            for n in range(n0, n1):
                if pp != NULL:
                    for g in range(G):
                        gemm_rm(False, True, Og, K, L, dyp + (n * G + g) * Og * L, L,
                              cp + (n * G + g) * K * L, L, 0 if n == n0 else 1,
                              pp + (p * G + g) * Og * K, K)
                if dxp != NULL:
                    for g in range(G):
                        gemm_rm(True, False, K, L, Og, wp + g * Og * K, K,
                              dyp + (n * G + g) * Og * L, L, 0,
                              (dxp + n * C * plane if identity else dcols) + g * K * L, L)
                    if not identity:
                        for c in range(C):
                            for i in range(plane):
                                dxp[(n * C + c) * plane + i] = 0
                            _plane_cols(dxp + (n * C + c) * plane, dcols + c * KK * L, &t,
                                        False)
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
    """The input window pooled into output (oh, ow): PyTorch's formulas.
    (Returned by value: assigned inside prange, it is thread-private.)"""
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
    void fastbn_box3_float(const float* x, Py_ssize_t H, Py_ssize_t W, float* y, double* rows)
    void fastbn_box3_double(const double* x, Py_ssize_t H, Py_ssize_t W, double* y,
                            double* rows)
    void fastbn_max3_float(const float* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                           Py_ssize_t OW, Py_ssize_t s, float* y, int64_t* idx, float* rv,
                           uint32_t* rc, uint32_t* pc)
    void fastbn_max3_double(const double* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t OH,
                            Py_ssize_t OW, Py_ssize_t s, double* y, int64_t* idx, double* rv,
                            uint32_t* rc, uint32_t* pc)


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


def max_pool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y,
                     int64_t[:, :, ::1] indices, tuple kernel, tuple stride, tuple padding,
                     int nthreads):
    """y = max over each window of each (N*C) plane; indices = the flat h * W + w
    of the first maximum (a NaN wins and stays, as in PyTorch).  One read of x.
    2x2 / stride 2 over small planes of even size pools POOL_VALUES values'
    worth of planes per call: one plane of 4x4 at a time cost 25 ns a plane in
    call and loop overheads, 6x the work."""
    cdef Py_ssize_t P = x.shape[0], u, oh, ow, h, w, best_i, p0
    cdef Pool pl = _pool(x.shape[1], x.shape[2], y.shape[1], y.shape[2], kernel, stride,
                         padding, MAX_WINDOW)
    cdef Py_ssize_t plane = pl.H * pl.W, L = pl.OH * pl.OW
    cdef bint two = (pl.kh == 2 and pl.kw == 2 and pl.sh == 2 and pl.sw == 2 and pl.ph == 0
                     and pl.pw == 0 and pl.W % 2 == 0 and plane < 2**31)  # uint32 positions
    cdef bint three = (not two and pl.kh == 3 and pl.kw == 3 and pl.ph == 1 and pl.pw == 1
                       and pl.sh == pl.sw and pl.sh <= 2 and plane < 2**31)
    cdef Py_ssize_t per = (max(POOL_VALUES // plane, 1) if two and pl.H % 2 == 0 and
                           plane <= POOL_VALUES else 1)  # planes per unit
    cdef Py_ssize_t units = (P + per - 1) // per
    cdef Win win
    cdef floating v, best
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef int64_t* ip = &indices[0, 0, 0]
    cdef int nt = _threads(P * plane, nthreads)
    # per thread, for _max_pool_2x2, or fastbn_max3's rows (and a row of positions)
    cdef Py_ssize_t scratch = 2 * L * per if two else (pl.H * pl.OW + pl.OW if three else 1)
    cdef floating[:, ::1] vs = np.empty((nt, scratch),
                                        np.float32 if floating is float else np.float64)
    cdef uint32_t[:, ::1] ats = np.empty((nt, scratch), np.uint32)
    with nogil:
        for u in prange(units, schedule='static', num_threads=nt):
            p0 = u * per
            if two:
                _max_pool_2x2(xp + p0 * plane, yp + p0 * L, ip + p0 * L, min(per, P - p0),
                              &pl, &vs[threadid(), 0], &ats[threadid(), 0])
            elif three:
                if floating is float:
                    fastbn_max3_float(xp + p0 * plane, pl.H, pl.W, pl.OH, pl.OW, pl.sh,
                                      yp + p0 * L, ip + p0 * L, &vs[threadid(), 0],
                                      &ats[threadid(), 0], &ats[threadid(), pl.H * pl.OW])
                else:
                    fastbn_max3_double(xp + p0 * plane, pl.H, pl.W, pl.OH, pl.OW, pl.sh,
                                       yp + p0 * L, ip + p0 * L, &vs[threadid(), 0],
                                       &ats[threadid(), 0], &ats[threadid(), pl.H * pl.OW])
            else:
                for oh in range(pl.OH):
                    for ow in range(pl.OW):
                        win = _window(&pl, oh, ow)
                        best = -INFINITY
                        best_i = win.h0 * pl.W + win.w0
                        for h in range(win.h0, win.h1):
                            for w in range(win.w0, win.w1):
                                v = xp[p0 * plane + h * pl.W + w]
                                if v > best or isnan(v):
                                    best = v
                                    best_i = h * pl.W + w
                        yp[p0 * L + oh * pl.OW + ow] = best
                        ip[p0 * L + oh * pl.OW + ow] = best_i


def max_pool_backward(const floating[:, :, ::1] dy, const int64_t[:, :, ::1] indices,
                      floating[:, :, ::1] dx, int nthreads):
    """dx[plane, indices] += dy: scatter-add within each plane (a thread owns
    whole planes of dx, so overlapping windows do not race).  dx is overwritten.
    Returns the number of indices outside their plane, which are skipped: the
    caller raises, and no extra pass over the indices checks them first."""
    cdef Py_ssize_t P = dx.shape[0], u, i, j
    cdef Py_ssize_t plane = dx.shape[1] * dx.shape[2], L = dy.shape[1] * dy.shape[2]
    cdef Py_ssize_t bad = 0
    cdef const floating* dyp = &dy[0, 0, 0]
    cdef const int64_t* ip = &indices[0, 0, 0]
    cdef floating* dxp = &dx[0, 0, 0]
    cdef int nt = _threads(P * plane, nthreads)
    with nogil:
        for u in prange(P, schedule='static', num_threads=nt):
            for i in range(plane):
                dxp[u * plane + i] = 0
            for i in range(L):
                j = ip[u * L + i]
                if 0 <= j < plane:
                    dxp[u * plane + j] += dyp[u * L + i]
                else:
                    bad += 1
    return bad


cdef inline bint _box3(const Pool* p) noexcept nogil:
    """A 3x3 average, stride 1, padding 1, dividing by 9 everywhere: _pool.h's box
    filter."""
    return (p.mode == AVG_INCLUDE_PAD and p.kh == 3 and p.kw == 3 and p.sh == 1
            and p.sw == 1 and p.ph == 1 and p.pw == 1)


cdef inline void _box3_plane(const floating* x, const Pool* p, floating* y,
                             double* rows) noexcept nogil:
    if floating is float:
        fastbn_box3_float(x, p.H, p.W, y, rows)
    else:
        fastbn_box3_double(x, p.H, p.W, y, rows)


cdef inline Mode _avg_mode(int mode) noexcept nogil:
    return ADAPTIVE if mode == 2 else (AVG_INCLUDE_PAD if mode == 1 else AVG_EXCLUDE_PAD)


def avg_pool_forward(const floating[:, :, ::1] x, floating[:, :, ::1] y, tuple kernel,
                     tuple stride, tuple padding, int mode, int nthreads):
    """y = mean over each window of each (N*C) plane, summed in double.
    mode: 0 count_include_pad=False, 1 count_include_pad=True, 2 adaptive
    (kernel, stride, padding unused)."""
    cdef Py_ssize_t P = x.shape[0], u, oh, ow, h, w
    cdef Pool pl = _pool(x.shape[1], x.shape[2], y.shape[1], y.shape[2], kernel, stride,
                         padding, _avg_mode(mode))
    cdef Py_ssize_t plane = pl.H * pl.W, L = pl.OH * pl.OW
    cdef double s
    cdef Win win
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef int nt = _threads(P * plane, nthreads)
    cdef bint box = _box3(&pl)
    cdef double[:, ::1] rows = np.empty((nt, plane if box else 1))
    with nogil:
        for u in prange(P, schedule='static', num_threads=nt):
            if box:
                _box3_plane(xp + u * plane, &pl, yp + u * L, &rows[threadid(), 0])
                continue
            for oh in range(pl.OH):
                for ow in range(pl.OW):
                    win = _window(&pl, oh, ow)
                    s = 0.0
                    for h in range(win.h0, win.h1):
                        for w in range(win.w0, win.w1):
                            s = s + xp[u * plane + h * pl.W + w]  # not +=: that would be a reduction
                    yp[u * L + oh * pl.OW + ow] = <floating>(s / win.divisor)


def avg_pool_backward(const floating[:, :, ::1] dy, floating[:, :, ::1] dx, tuple kernel,
                      tuple stride, tuple padding, int mode, int nthreads):
    """dx = adjoint of avg_pool_forward (same modes): each dy / divisor added to
    its window.  A thread owns whole planes of dx.  dx is overwritten."""
    cdef Py_ssize_t P = dx.shape[0], u, i, oh, ow, h, w
    cdef Pool pl = _pool(dx.shape[1], dx.shape[2], dy.shape[1], dy.shape[2], kernel, stride,
                         padding, _avg_mode(mode))
    cdef Py_ssize_t plane = pl.H * pl.W, L = pl.OH * pl.OW
    cdef Win win
    cdef floating g
    cdef const floating* dyp = &dy[0, 0, 0]
    cdef floating* dxp = &dx[0, 0, 0]
    cdef int nt = _threads(P * plane, nthreads)
    cdef bint box = _box3(&pl)  # the box filter is its own adjoint
    cdef double[:, ::1] rows = np.empty((nt, plane if box else 1))
    with nogil:
        for u in prange(P, schedule='static', num_threads=nt):
            if box:
                _box3_plane(dyp + u * L, &pl, dxp + u * plane, &rows[threadid(), 0])
                continue
            for i in range(plane):
                dxp[u * plane + i] = 0
            for oh in range(pl.OH):
                for ow in range(pl.OW):
                    win = _window(&pl, oh, ow)
                    g = <floating>(dyp[u * L + oh * pl.OW + ow] / win.divisor)
                    for h in range(win.h0, win.h1):
                        for w in range(win.w0, win.w1):
                            dxp[u * plane + h * pl.W + w] += g
