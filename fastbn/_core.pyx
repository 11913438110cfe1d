"""Batch Normalization kernels: per-channel statistics, normalization, gradients.

Inputs are C-contiguous (N, C, L) buffers (any spatial shape flattened to L) of
float or double; the Python layer (fastbn/kernels.py) validates and reshapes.

Reduction tree.  A channel's N*L values are cut into blocks whose geometry
depends on the shape only (``_geom``): whole rows when L < BLOCK, or pieces
of one row when L >= BLOCK.  Each block yields (count, mean, M2) (forward) or
(sum dy, sum dy*(x-mean)) (backward) accumulated in double; blocks merge in
block order (Chan et al. for moments).  Both parallel schedules, over channels
(many channels) and over (channel, block) units (few channels), compute
exactly this tree, so results are bitwise identical for any thread count.

(N, C) inputs (L == 1) take a row-major path (``_nc_*``) that vectorizes over
channels; its blocks are fixed groups of rows.
"""
from cython cimport floating
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport malloc, calloc, free

cdef enum:
    BLOCK = 8192        # values per reduction block (by data size, not thread count)
    LANES = 8           # independent accumulators: lets gcc vectorize sums without -ffast-math
    SERIAL_BELOW = 32768  # values; below this a parallel region costs more than it saves

ctypedef struct Geom:
    Py_ssize_t N, C, L
    Py_ssize_t pieces   # blocks per row (L >= BLOCK) or 1
    Py_ssize_t width    # values per row piece
    Py_ssize_t rows     # rows per block (L < BLOCK) or 1
    Py_ssize_t nb       # blocks per channel


cdef inline Geom _geom(Py_ssize_t N, Py_ssize_t C, Py_ssize_t L) noexcept nogil:
    cdef Geom g
    g.N = N
    g.C = C
    g.L = L
    if L >= BLOCK:
        g.pieces = (L + BLOCK - 1) // BLOCK
        g.width = (L + g.pieces - 1) // g.pieces
        g.rows = 1
        g.nb = N * g.pieces
    else:
        g.pieces = 1
        g.width = L
        g.rows = BLOCK // L
        g.nb = (N + g.rows - 1) // g.rows
    return g


cdef inline void _block(const Geom* g, Py_ssize_t b, Py_ssize_t* n0, Py_ssize_t* n1,
                        Py_ssize_t* l0, Py_ssize_t* l1) noexcept nogil:
    """Rows [n0, n1) and columns [l0, l1) of block b of a channel."""
    n0[0] = (b // g.pieces) * g.rows
    n1[0] = min(n0[0] + g.rows, g.N)
    l0[0] = (b % g.pieces) * g.width
    l1[0] = min(l0[0] + g.width, g.L)


cdef inline int _threads(Py_ssize_t size, int nthreads) noexcept nogil:
    return 1 if size < SERIAL_BELOW else max(nthreads, 1)


cdef inline void _chan_merge(double* n_a, double* mean_a, double* m2_a,
                             double n_b, double mean_b, double m2_b) noexcept nogil:
    """Fold partial (n_b, mean_b, m2_b) into (n_a, mean_a, m2_a): Chan et al. (1979)."""
    cdef double n = n_a[0] + n_b
    cdef double delta = mean_b - mean_a[0]
    mean_a[0] += delta * (n_b / n)
    m2_a[0] += m2_b + delta * delta * (n_a[0] * n_b / n)
    n_a[0] = n


# ---------------------------------------------------------------- (N, C, L) blocks

cdef inline void _block_moments(const floating* x, const Geom* g, Py_ssize_t c, Py_ssize_t b,
                                double* mean, double* m2) noexcept nogil:
    """One read of block b of channel c: mean and M2, shifted by the block's first
    value so that float data far from zero keeps its variance digits."""
    cdef double s1[LANES]
    cdef double s2[LANES]
    cdef double d, shift, t1 = 0.0, t2 = 0.0, cnt
    cdef Py_ssize_t n, n0, n1, l0, l1, i, j, w, w8
    cdef const floating* p
    _block(g, b, &n0, &n1, &l0, &l1)
    for j in range(LANES):
        s1[j] = 0.0
        s2[j] = 0.0
    shift = x[(n0 * g.C + c) * g.L + l0]
    w = l1 - l0
    w8 = w - w % LANES
    for n in range(n0, n1):
        p = x + (n * g.C + c) * g.L + l0
        for i in range(0, w8, 8):  # LANES
            for j in range(LANES):
                d = p[i + j] - shift
                s1[j] += d
                s2[j] += d * d
        for i in range(w8, w):
            d = p[i] - shift
            s1[i - w8] += d
            s2[i - w8] += d * d
    for j in range(LANES):
        t1 += s1[j]
        t2 += s2[j]
    cnt = <double>((n1 - n0) * w)
    mean[0] = shift + t1 / cnt
    m2[0] = max(t2 - t1 * t1 / cnt, 0.0)


cdef inline void _block_grad_sums(const floating* x, const floating* dy, const Geom* g,
                                  Py_ssize_t c, Py_ssize_t b, double mean,
                                  double* sdy, double* sdyx) noexcept nogil:
    """One read of x and dy in block b of channel c: sum(dy), sum(dy * (x - mean))."""
    cdef double a[LANES]
    cdef double s[LANES]
    cdef double t, ta = 0.0, ts = 0.0
    cdef Py_ssize_t n, n0, n1, l0, l1, i, j, w, w8, off
    _block(g, b, &n0, &n1, &l0, &l1)
    for j in range(LANES):
        a[j] = 0.0
        s[j] = 0.0
    w = l1 - l0
    w8 = w - w % LANES
    for n in range(n0, n1):
        off = (n * g.C + c) * g.L + l0
        for i in range(0, w8, 8):  # LANES
            for j in range(LANES):
                t = dy[off + i + j]
                a[j] += t
                s[j] += t * (x[off + i + j] - mean)
        for i in range(w8, w):
            t = dy[off + i]
            a[i - w8] += t
            s[i - w8] += t * (x[off + i] - mean)
    for j in range(LANES):
        ta += a[j]
        ts += s[j]
    sdy[0] = ta
    sdyx[0] = ts


cdef inline void _block_affine(const floating* x, floating* y, const Geom* g, Py_ssize_t c,
                               Py_ssize_t b, floating center, floating scale,
                               floating shift) noexcept nogil:
    """y = (x - center) * scale + shift over block b of channel c (one read, one write).
    Subtracting the mean first makes a constant channel map to exactly `shift`."""
    cdef Py_ssize_t n, n0, n1, l0, l1, i, off
    _block(g, b, &n0, &n1, &l0, &l1)
    for n in range(n0, n1):
        off = (n * g.C + c) * g.L
        for i in range(l0, l1):
            y[off + i] = (x[off + i] - center) * scale + shift


cdef inline void _block_dx(const floating* x, const floating* dy, floating* dx, const Geom* g,
                           Py_ssize_t c, Py_ssize_t b, floating mean, floating k_dy,
                           floating k_x, floating k_0) noexcept nogil:
    """dx = k_dy * dy - k_x * (x - mean) - k_0 over block b of channel c."""
    cdef Py_ssize_t n, n0, n1, l0, l1, i, off
    _block(g, b, &n0, &n1, &l0, &l1)
    for n in range(n0, n1):
        off = (n * g.C + c) * g.L
        for i in range(l0, l1):
            dx[off + i] = k_dy * dy[off + i] - k_x * (x[off + i] - mean) - k_0


cdef inline void _block_dx_or_scale(const floating* x, const floating* dy, floating* dx,
                                    const Geom* g, Py_ssize_t c, Py_ssize_t b, floating mean,
                                    floating k_dy, floating k_x, floating k_0,
                                    bint training) noexcept nogil:
    """Training: the full dx; inference: dx = k_dy * dy, which must not read x
    (a NaN there would leak into dx through 0 * (x - mean))."""
    if training:
        _block_dx(x, dy, dx, g, c, b, mean, k_dy, k_x, k_0)
    else:
        _block_affine(dy, dx, g, c, b, 0, k_dy, 0)


cdef inline void _merge_channel(const double* pmean, const double* pm2, const Geom* g,
                                Py_ssize_t c, double* mean, double* var) noexcept nogil:
    """Merge channel c's block moments in block order; biased variance."""
    cdef Py_ssize_t b, n0, n1, l0, l1
    cdef double n_a, mean_a, m2_a
    cdef const double* pm = pmean + c * g.nb
    cdef const double* p2 = pm2 + c * g.nb
    _block(g, 0, &n0, &n1, &l0, &l1)
    n_a = (n1 - n0) * (l1 - l0)
    mean_a = pm[0]
    m2_a = p2[0]
    for b in range(1, g.nb):
        _block(g, b, &n0, &n1, &l0, &l1)
        _chan_merge(&n_a, &mean_a, &m2_a, (n1 - n0) * (l1 - l0), pm[b], p2[b])
    mean[0] = mean_a
    var[0] = m2_a / n_a


cdef inline void _sum_channel(const double* p1, const double* p2, const Geom* g, Py_ssize_t c,
                              double* s1, double* s2) noexcept nogil:
    """Sum channel c's block sums in block order."""
    cdef Py_ssize_t b
    cdef double t1 = 0.0, t2 = 0.0
    for b in range(g.nb):
        t1 += p1[c * g.nb + b]
        t2 += p2[c * g.nb + b]
    s1[0] = t1
    s2[0] = t2


# ---------------------------------------------------------------- (N, C) rows

cdef inline Py_ssize_t _nc_rows(Py_ssize_t C) noexcept nogil:
    """Rows per reduction block of an (N, C) input."""
    return max(BLOCK // C, 1)


cdef inline void _nc_block_moments(const floating* x, Py_ssize_t N, Py_ssize_t C, Py_ssize_t b,
                                   double* mean, double* m2) noexcept nogil:
    """Rows of block b, all channels, one read: per-channel mean and M2 (written to
    mean[0:C], m2[0:C]), shifted by the block's first row."""
    cdef Py_ssize_t R = _nc_rows(C)
    cdef Py_ssize_t n, c, n0 = b * R, n1 = min(n0 + R, N)
    cdef const floating* first = x + n0 * C
    cdef const floating* row
    cdef double d, cnt = <double>(n1 - n0)
    for c in range(C):
        mean[c] = 0.0
        m2[c] = 0.0
    for n in range(n0 + 1, n1):
        row = x + n * C
        for c in range(C):
            d = <double>row[c] - first[c]
            mean[c] += d
            m2[c] += d * d
    for c in range(C):
        d = mean[c]
        mean[c] = first[c] + d / cnt
        m2[c] = max(m2[c] - d * d / cnt, 0.0)


# ---------------------------------------------------------------- entry points

cdef class _Scratch:
    """Per-call double buffers, freed when the call returns."""
    cdef double* p

    def __cinit__(self, Py_ssize_t n):
        self.p = <double*>calloc(max(n, 1), sizeof(double))
        if self.p == NULL:
            raise MemoryError()

    def __dealloc__(self):
        free(self.p)


cdef void _update_running(floating[::1] running_mean, floating[::1] running_var,
                          const double* mean, const double* var, double count,
                          double momentum) noexcept nogil:
    """running = (1 - momentum) * running + momentum * batch, unbiased variance."""
    cdef Py_ssize_t c
    cdef double unbias = count / (count - 1.0)
    if running_mean is not None:
        for c in range(running_mean.shape[0]):
            running_mean[c] = (1.0 - momentum) * running_mean[c] + momentum * mean[c]
    if running_var is not None:
        for c in range(running_var.shape[0]):
            running_var[c] = (1.0 - momentum) * running_var[c] + momentum * var[c] * unbias


def forward_train(const floating[:, :, ::1] x, const floating[::1] weight,
                  const floating[::1] bias, floating[:, :, ::1] y,
                  floating[::1] save_mean, floating[::1] save_invstd,
                  floating[::1] running_mean, floating[::1] running_var,
                  double momentum, double eps, int nthreads):
    """Training forward.  Writes y, save_mean, save_invstd; updates the running
    statistics in place when given (weight, bias, running_* may be None).

    Passes over x: (N, C, L) with many channels: one per channel for its
    statistics, then the apply re-reads the channel while it is in L2 and writes
    y.  Few channels or (N, C): one read for statistics, one read + write to apply.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t c, b, u, n, R = _nc_rows(C), nbr = (N + R - 1) // R
    cdef int nt = _threads(N * C * L, nthreads)
    cdef bint has_w = weight is not None, has_b = bias is not None
    cdef Geom g = _geom(N, C, L)
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef double* mean
    cdef double* var
    cdef double* pmean
    cdef double* pm2
    cdef floating* fmean = &save_mean[0]
    cdef floating* finv = &save_invstd[0]
    cdef floating* alpha
    cdef floating* beta
    cdef _Scratch buf
    cdef _Scratch fbuf

    if L == 1:
        buf = _Scratch(2 * C + 2 * nbr * C)
    else:
        buf = _Scratch(2 * C + 2 * C * g.nb)
    fbuf = _Scratch(2 * C)  # alpha, beta: 2 * C floating
    mean = buf.p
    var = buf.p + C
    pmean = buf.p + 2 * C
    alpha = <floating*>fbuf.p
    beta = alpha + C

    with nogil:
        if L == 1:
            pm2 = pmean + nbr * C
            for b in prange(nbr, schedule='static', num_threads=nt):
                _nc_block_moments(xp, N, C, b, pmean + b * C, pm2 + b * C)
            for c in range(C):
                _merge_rows(pmean, pm2, N, C, R, c, &mean[c], &var[c])
                _finish_channel(mean, var, weight, bias, has_w, has_b, eps, c,
                                fmean, finv, alpha, beta)
            for b in prange(nbr, schedule='static', num_threads=nt):
                _nc_affine(xp, yp, N, C, b, fmean, alpha, beta)
        elif nt == 1 or C >= 4 * nt:
            pm2 = pmean + C * g.nb
            for c in prange(C, schedule='static', num_threads=nt):
                for b in range(g.nb):
                    _block_moments(xp, &g, c, b, pmean + c * g.nb + b, pm2 + c * g.nb + b)
                _merge_channel(pmean, pm2, &g, c, &mean[c], &var[c])
                _finish_channel(mean, var, weight, bias, has_w, has_b, eps, c,
                                fmean, finv, alpha, beta)
                for b in range(g.nb):  # channel still in L2
                    _block_affine(xp, yp, &g, c, b, fmean[c], alpha[c], beta[c])
        else:
            pm2 = pmean + C * g.nb
            for u in prange(C * g.nb, schedule='static', num_threads=nt):
                _block_moments(xp, &g, u // g.nb, u % g.nb, pmean + u, pm2 + u)
            for c in range(C):
                _merge_channel(pmean, pm2, &g, c, &mean[c], &var[c])
                _finish_channel(mean, var, weight, bias, has_w, has_b, eps, c,
                                fmean, finv, alpha, beta)
            for u in prange(C * g.nb, schedule='static', num_threads=nt):
                c = u // g.nb
                _block_affine(xp, yp, &g, c, u % g.nb, fmean[c], alpha[c], beta[c])
        _update_running(running_mean, running_var, mean, var, <double>(N * L), momentum)


cdef inline void _finish_channel(const double* mean, const double* var,
                                 const floating[::1] weight, const floating[::1] bias,
                                 bint has_w, bint has_b, double eps, Py_ssize_t c,
                                 floating* fmean, floating* finv, floating* alpha,
                                 floating* beta) noexcept nogil:
    """Per-channel constants of the apply: y = (x - mean) * alpha + beta."""
    cdef double invstd = 1.0 / sqrt(var[c] + eps)
    fmean[c] = <floating>mean[c]
    finv[c] = <floating>invstd
    alpha[c] = <floating>(invstd * (weight[c] if has_w else 1.0))
    beta[c] = bias[c] if has_b else 0.0


cdef inline void _merge_rows(const double* pmean, const double* pm2, Py_ssize_t N,
                             Py_ssize_t C, Py_ssize_t R, Py_ssize_t c,
                             double* mean, double* var) noexcept nogil:
    """Merge channel c's row-block moments of an (N, C) input in block order."""
    cdef Py_ssize_t b, nbr = (N + R - 1) // R
    cdef double n_a = min(R, N), mean_a = pmean[c], m2_a = pm2[c]
    for b in range(1, nbr):
        _chan_merge(&n_a, &mean_a, &m2_a, min(R, N - b * R), pmean[b * C + c], pm2[b * C + c])
    mean[0] = mean_a
    var[0] = m2_a / n_a


cdef inline void _nc_affine(const floating* x, floating* y, Py_ssize_t N, Py_ssize_t C,
                            Py_ssize_t b, const floating* center, const floating* scale,
                            const floating* shift) noexcept nogil:
    """y[n, c] = (x[n, c] - center[c]) * scale[c] + shift[c] for the rows of block b."""
    cdef Py_ssize_t R = _nc_rows(C)
    cdef Py_ssize_t n, c, n0 = b * R, n1 = min(n0 + R, N)
    for n in range(n0, n1):
        for c in range(C):
            y[n * C + c] = (x[n * C + c] - center[c]) * scale[c] + shift[c]


def forward_eval(const floating[:, :, ::1] x, const floating[::1] scale,
                 const floating[::1] shift, floating[:, :, ::1] y, int nthreads):
    """Inference forward y = x * scale[c] + shift[c] (scale, shift folded from the
    running statistics by the caller).  One read of x, one write of y."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t b, u, c
    cdef int nt = _threads(N * C * L, nthreads)
    cdef Geom g = _geom(N, C, L)
    cdef const floating* xp = &x[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0]
    cdef _Scratch zbuf = _Scratch(C)
    cdef floating* zero = <floating*>zbuf.p  # calloc'd: center 0
    with nogil:
        if L == 1:
            for b in prange((N + _nc_rows(C) - 1) // _nc_rows(C), schedule='static',
                            num_threads=nt):
                _nc_affine(xp, yp, N, C, b, zero, &scale[0], &shift[0])
        else:
            for u in prange(C * g.nb, schedule='static', num_threads=nt):
                c = u // g.nb
                _block_affine(xp, yp, &g, c, u % g.nb, 0, scale[c], shift[c])


def backward(const floating[:, :, ::1] dy, const floating[:, :, ::1] x,
             const floating[::1] weight, const floating[::1] mean,
             const floating[::1] invstd, floating[:, :, ::1] dx,
             floating[::1] dweight, floating[::1] dbias, bint training, int nthreads):
    """Backward of batch_norm.  Writes dx and, when given, dweight and dbias.

    training=True: dx = w * invstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat)).
    Passes: one read of x and dy for the two sums, then one read of x, dy and
    write of dx (per channel while it is in L2, when channels are many).
    training=False (statistics are constants): dx = dy * w * invstd; the same
    two passes, the second a plain scale of dy.
    """
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], L = x.shape[2]
    cdef Py_ssize_t c, b, u, R = _nc_rows(C), nbr = (N + R - 1) // R
    cdef int nt = _threads(N * C * L, nthreads)
    cdef bint has_w = weight is not None
    cdef Geom g = _geom(N, C, L)
    cdef const floating* xp = &x[0, 0, 0]
    cdef const floating* dyp = &dy[0, 0, 0]
    cdef floating* dxp = &dx[0, 0, 0]
    cdef const floating* mp = &mean[0]
    cdef double m = <double>(N * L)
    cdef double* sdy
    cdef double* sdyx
    cdef double* p1
    cdef double* p2
    cdef floating* k_dy
    cdef floating* k_x
    cdef floating* k_0
    cdef _Scratch buf
    cdef _Scratch fbuf = _Scratch(3 * C)  # k_dy, k_x, k_0: 3 * C floating, zeroed

    if L == 1:
        buf = _Scratch(2 * C + 2 * nbr * C)
    else:
        buf = _Scratch(2 * C + 2 * C * g.nb)
    sdy = buf.p
    sdyx = buf.p + C
    p1 = buf.p + 2 * C
    k_dy = <floating*>fbuf.p
    k_x = k_dy + C
    k_0 = k_x + C

    with nogil:
        if L == 1:
            p2 = p1 + nbr * C
            for b in prange(nbr, schedule='static', num_threads=nt):
                _nc_block_grad_sums(xp, dyp, N, C, b, mp, p1 + b * C, p2 + b * C)
            for c in range(C):
                sdy[c] = 0.0
                sdyx[c] = 0.0
                for b in range(nbr):
                    sdy[c] += p1[b * C + c]
                    sdyx[c] += p2[b * C + c]
                _dx_coefficients(sdy, sdyx, weight, has_w, invstd, m, training, c,
                                 k_dy, k_x, k_0)
            for b in prange(nbr, schedule='static', num_threads=nt):
                if training:
                    _nc_dx(xp, dyp, dxp, N, C, b, mp, k_dy, k_x, k_0)
                else:  # k_0 is all zeros here
                    _nc_affine(dyp, dxp, N, C, b, k_0, k_dy, k_0)
        elif nt == 1 or C >= 4 * nt:
            p2 = p1 + C * g.nb
            for c in prange(C, schedule='static', num_threads=nt):
                for b in range(g.nb):
                    _block_grad_sums(xp, dyp, &g, c, b, mp[c], p1 + c * g.nb + b,
                                     p2 + c * g.nb + b)
                _sum_channel(p1, p2, &g, c, &sdy[c], &sdyx[c])
                _dx_coefficients(sdy, sdyx, weight, has_w, invstd, m, training, c,
                                 k_dy, k_x, k_0)
                for b in range(g.nb):  # channel still in L2
                    _block_dx_or_scale(xp, dyp, dxp, &g, c, b, mp[c], k_dy[c], k_x[c],
                                       k_0[c], training)
        else:
            p2 = p1 + C * g.nb
            for u in prange(C * g.nb, schedule='static', num_threads=nt):
                _block_grad_sums(xp, dyp, &g, u // g.nb, u % g.nb, mp[u // g.nb], p1 + u, p2 + u)
            for c in range(C):
                _sum_channel(p1, p2, &g, c, &sdy[c], &sdyx[c])
                _dx_coefficients(sdy, sdyx, weight, has_w, invstd, m, training, c,
                                 k_dy, k_x, k_0)
            for u in prange(C * g.nb, schedule='static', num_threads=nt):
                c = u // g.nb
                _block_dx_or_scale(xp, dyp, dxp, &g, c, u % g.nb, mp[c], k_dy[c], k_x[c],
                                   k_0[c], training)
        if dweight is not None:
            for c in range(C):
                dweight[c] = <floating>(sdyx[c] * invstd[c])
        if dbias is not None:
            for c in range(C):
                dbias[c] = <floating>sdy[c]


cdef inline void _nc_block_grad_sums(const floating* x, const floating* dy, Py_ssize_t N,
                                       Py_ssize_t C, Py_ssize_t b, const floating* mean,
                                       double* sdy, double* sdyx) noexcept nogil:
    """sum(dy), sum(dy * (x - mean)) per channel over the rows of block b."""
    cdef Py_ssize_t R = _nc_rows(C)
    cdef Py_ssize_t n, c, n0 = b * R, n1 = min(n0 + R, N)
    cdef double t
    for c in range(C):
        sdy[c] = 0.0
        sdyx[c] = 0.0
    for n in range(n0, n1):
        for c in range(C):
            t = dy[n * C + c]
            sdy[c] += t
            sdyx[c] += t * (x[n * C + c] - mean[c])


cdef inline void _dx_coefficients(const double* sdy, const double* sdyx,
                                  const floating[::1] weight, bint has_w,
                                  const floating[::1] invstd, double m, bint training,
                                  Py_ssize_t c, floating* k_dy, floating* k_x,
                                  floating* k_0) noexcept nogil:
    """dx = k_dy * dy - k_x * (x - mean) - k_0 for channel c."""
    cdef double inv = invstd[c]
    cdef double a = inv * (weight[c] if has_w else 1.0)
    k_dy[c] = <floating>a
    if training:
        k_x[c] = <floating>(a * inv * inv * sdyx[c] / m)
        k_0[c] = <floating>(a * sdy[c] / m)
    else:
        k_x[c] = 0
        k_0[c] = 0


cdef inline void _nc_dx(const floating* x, const floating* dy, floating* dx, Py_ssize_t N,
                        Py_ssize_t C, Py_ssize_t b, const floating* mean,
                        const floating* k_dy, const floating* k_x,
                        const floating* k_0) noexcept nogil:
    cdef Py_ssize_t R = _nc_rows(C)
    cdef Py_ssize_t n, c, n0 = b * R, n1 = min(n0 + R, N)
    for n in range(n0, n1):
        for c in range(C):
            dx[n * C + c] = k_dy[c] * dy[n * C + c] - k_x[c] * (x[n * C + c] - mean[c]) - k_0[c]
