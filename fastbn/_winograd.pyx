"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3) and
F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks",
2016).

Each m x m output tile is Y = A^T [U . V] A with U = G g G^T (the 3x3 filter g,
transformed once per call by fastbn/kernels.py) and V = B^T d B (the a x a input
tile d, a = m + 2): a^2 products per tile instead of 9 m^2.  Over channels the
a^2 products become a^2 GEMMs, M[k] (O x tiles) = U[k] (O x C) @ V[k]^T (V[k]:
tiles x C), so the multiply-adds drop 2.25x (m = 2) or 4x (m = 4) against
im2col.  The input's gradient is the same
convolution of dy with the flipped, transposed filter; the filter's gradient
is dU[k] = (A dY A^T)[k] @ V[k], brought back by G^T dU G in kernels.py.

Work goes in chunks of a few images whose V and M stay in L2, the work units
that fastbn's team shares out (_parallel.h): transform in, a^2 GEMMs
(single-threaded BLAS calls inside fastbn's threads, see _blas.pyx), transform
out.  Chunks are fixed by the shape, never by the thread count, so
results are the same bits at any thread count.
"""
from cython cimport floating

from ._blas cimport blas_one_thread, gemm_rm, gemm_threads
from ._parallel cimport parallel_for

import numpy as np

cdef enum:
    CHUNK_BYTES = 1 << 20  # V and M of a chunk: about one L2 (best of 512K-2M here)
    LANES = 16             # V's rows of channels are padded to a multiple of this


cdef extern from "_winograd.h" nogil:
    ctypedef struct fastbn_tiles:
        Py_ssize_t H, W, ph, pw, OH, OW, m, a, TH, TW, T, Cp, Op, nb, cols
    Py_ssize_t fastbn_winograd_input_scratch(const fastbn_tiles* t)
    Py_ssize_t fastbn_winograd_output_scratch(const fastbn_tiles* t)
    void fastbn_winograd2_input_float(const float* x, Py_ssize_t C, const fastbn_tiles* t,
                                      Py_ssize_t col, float* scratch, float* v)
    void fastbn_winograd2_input_double(const double* x, Py_ssize_t C, const fastbn_tiles* t,
                                       Py_ssize_t col, double* scratch, double* v)
    void fastbn_winograd4_input_float(const float* x, Py_ssize_t C, const fastbn_tiles* t,
                                      Py_ssize_t col, float* scratch, float* v)
    void fastbn_winograd4_input_double(const double* x, Py_ssize_t C, const fastbn_tiles* t,
                                       Py_ssize_t col, double* scratch, double* v)
    void fastbn_winograd2_output_float(const float* m, Py_ssize_t O, const fastbn_tiles* t,
                                       Py_ssize_t col, const float* bias, float* y,
                                       float* scratch)
    void fastbn_winograd2_output_double(const double* m, Py_ssize_t O, const fastbn_tiles* t,
                                        Py_ssize_t col, const double* bias, double* y,
                                        double* scratch)
    void fastbn_winograd4_output_float(const float* m, Py_ssize_t O, const fastbn_tiles* t,
                                       Py_ssize_t col, const float* bias, float* y,
                                       float* scratch)
    void fastbn_winograd4_output_double(const double* m, Py_ssize_t O, const fastbn_tiles* t,
                                        Py_ssize_t col, const double* bias, double* y,
                                        double* scratch)
    void fastbn_winograd2_grads_float(const float* dy, Py_ssize_t O, const fastbn_tiles* t,
                                      Py_ssize_t col, float* scratch, float* d)
    void fastbn_winograd2_grads_double(const double* dy, Py_ssize_t O, const fastbn_tiles* t,
                                       Py_ssize_t col, double* scratch, double* d)
    void fastbn_winograd4_grads_float(const float* dy, Py_ssize_t O, const fastbn_tiles* t,
                                      Py_ssize_t col, float* scratch, float* d)
    void fastbn_winograd4_grads_double(const double* dy, Py_ssize_t O, const fastbn_tiles* t,
                                       Py_ssize_t col, double* scratch, double* d)

ctypedef fastbn_tiles Tiles


cdef Tiles _tiles(Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t N,
                  Py_ssize_t C, Py_ssize_t O, Py_ssize_t itemsize, Py_ssize_t a2) noexcept nogil:
    """The tiles of F(m x m, 3x3) for a2 = (m + 2)^2 transformed values per tile (16:
    m = 2, 36: m = 4), C input and O output channels."""
    cdef Tiles t
    t.m = 4 if a2 == 36 else 2
    t.a = t.m + 2
    t.H, t.W, t.ph, t.pw = H, W, ph, pw
    t.OH, t.OW = H + 2 * ph - 2, W + 2 * pw - 2
    t.TH, t.TW = (t.OH + t.m - 1) // t.m, (t.OW + t.m - 1) // t.m
    t.T = t.TH * t.TW
    t.Cp = (C + LANES - 1) // LANES * LANES
    t.Op = (O + LANES - 1) // LANES * LANES
    t.nb = min(max(CHUNK_BYTES // (a2 * (t.Cp + t.Op) * itemsize * t.T), 1), N)
    t.cols = t.nb * t.T
    return t


cdef inline void _input_tiles(const floating* x, Py_ssize_t C, const Tiles* t, Py_ssize_t col,
                              floating* scratch, floating* V) noexcept nogil:
    """V[k, col + tile, c] = (B^T d B)[k] for every tile of image x (C planes);
    scratch: this thread's fastbn_winograd_input_scratch values (_winograd.h)."""
    if floating is float:
        if t.m == 4:
            fastbn_winograd4_input_float(x, C, t, col, scratch, V)
        else:
            fastbn_winograd2_input_float(x, C, t, col, scratch, V)
    else:
        if t.m == 4:
            fastbn_winograd4_input_double(x, C, t, col, scratch, V)
        else:
            fastbn_winograd2_input_double(x, C, t, col, scratch, V)


cdef inline void _output_tiles(const floating* M, Py_ssize_t O, const Tiles* t, Py_ssize_t col,
                               const floating* bias, floating* y,
                               floating* scratch) noexcept nogil:
    """y[o] = A^T M[:, col + tile, o] A (+ bias[o]) for every tile of image y (O
    planes); scratch: this thread's fastbn_winograd_output_scratch values."""
    if floating is float:
        if t.m == 4:
            fastbn_winograd4_output_float(M, O, t, col, bias, y, scratch)
        else:
            fastbn_winograd2_output_float(M, O, t, col, bias, y, scratch)
    else:
        if t.m == 4:
            fastbn_winograd4_output_double(M, O, t, col, bias, y, scratch)
        else:
            fastbn_winograd2_output_double(M, O, t, col, bias, y, scratch)


cdef inline void _grad_tiles(const floating* dy, Py_ssize_t O, const Tiles* t, Py_ssize_t col,
                             floating* scratch, floating* D) noexcept nogil:
    """D[k, o, col + tile] = (A dY A^T)[k] for every m x m tile dY of image dy (O
    planes): the adjoint of _output_tiles; scratch as there."""
    if floating is float:
        if t.m == 4:
            fastbn_winograd4_grads_float(dy, O, t, col, scratch, D)
        else:
            fastbn_winograd2_grads_float(dy, O, t, col, scratch, D)
    else:
        if t.m == 4:
            fastbn_winograd4_grads_double(dy, O, t, col, scratch, D)
        else:
            fastbn_winograd2_grads_double(dy, O, t, col, scratch, D)


ctypedef struct Wino:    # one call (pointers to the data's type)
    bint dbl
    Tiles t
    Py_ssize_t N, C, O, A2, units, plane
    const void* x
    const void* U
    const void* bias
    void* y
    const void* dy
    void* parts
    void* scratch        # per slot: the tile transforms' (_winograd.h)
    void* V              # per slot: the chunk's transformed inputs
    void* M              # per slot: its products, or its transformed gradients
    Py_ssize_t scratch_n, v_n, m_n  # values per slot of each


cdef inline void _forward_of(const floating* xp, const Wino* c, Py_ssize_t u,
                             int slot) noexcept nogil:
    cdef const Tiles* t = &c.t
    cdef Py_ssize_t n0 = u * c.N // c.units, n1 = (u + 1) * c.N // c.units, n, k
    cdef floating* V = <floating*>c.V + slot * c.v_n
    cdef floating* M = <floating*>c.M + slot * c.m_n
    cdef floating* scratch = <floating*>c.scratch + slot * c.scratch_n
    cdef const floating* up = <const floating*>c.U
    for n in range(n0, n1):
        _input_tiles(xp + n * c.C * c.plane, c.C, t, (n - n0) * t.T, scratch, V)
    for k in range(c.A2):
        gemm_rm(False, False, (n1 - n0) * t.T, c.O, c.C, V + k * t.Cp * t.cols, t.Cp,
                up + k * c.C * c.O, c.O, 0, M + k * t.Op * t.cols, t.Op)
    for n in range(n0, n1):
        _output_tiles(M, c.O, t, (n - n0) * t.T, <const floating*>c.bias,
                      <floating*>c.y + n * c.O * t.OH * t.OW, scratch)


cdef void _forward_units(void* arg, Py_ssize_t u0, Py_ssize_t u1, int slot) noexcept nogil:
    """Chunks u0 to u1 - 1 of the images, each: transform in, a^2 GEMMs,
    transform out."""
    cdef Wino c = (<Wino*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t u
    for u in range(u0, u1):
        if c.dbl:
            _forward_of(<const double*>c.x, &c, u, slot)
        else:
            _forward_of(<const float*>c.x, &c, u, slot)


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] U, bias,
            floating[:, :, :, ::1] y, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """y = conv2d(x, g, padding=(ph, pw)) (+ bias) for the 3x3 filters g with
    U[k] = (G g G^T)[k]^T, shape ((m + 2)^2, C, O): F(2x2, 3x3) for 16 rows, F(4x4,
    3x3) for 36.  x (N, C, H, W), y (N, O, OH, OW)."""
    cdef Wino c
    cdef const floating[::1] b
    c.dbl = floating is double
    c.N, c.C, c.O, c.A2 = x.shape[0], x.shape[1], U.shape[2], U.shape[0]
    c.t = _tiles(x.shape[2], x.shape[3], ph, pw, c.N, c.C, c.O, sizeof(floating), c.A2)
    # chunks of equal size, about (64 images in chunks of at most 42: 32 + 32, not
    # 42 + 22, which left one of two threads idle a third of the time)
    c.units, c.plane = (c.N + c.t.nb - 1) // c.t.nb, c.t.H * c.t.W
    cdef int nt = min(gemm_threads(<double>c.N * c.t.T * c.A2 * c.O * c.C, nthreads), c.units)
    dt = np.float32 if floating is float else np.float64
    c.scratch_n = max(fastbn_winograd_input_scratch(&c.t), fastbn_winograd_output_scratch(&c.t))
    c.v_n, c.m_n = c.A2 * c.t.Cp * c.t.cols, c.A2 * c.t.Op * c.t.cols
    cdef floating[:, ::1] scratch = np.empty((nt, c.scratch_n), dt)
    cdef floating[:, ::1] Vs = np.empty((nt, c.v_n), dtype=dt)
    # products: lanes past O stay zero (the GEMMs write O columns)
    cdef floating[:, ::1] Ms = np.zeros((nt, c.m_n), dtype=dt)
    c.scratch, c.V, c.M = &scratch[0, 0], &Vs[0, 0], &Ms[0, 0]
    c.x, c.U, c.y, c.bias = &x[0, 0, 0, 0], &U[0, 0, 0], &y[0, 0, 0, 0], NULL
    if bias is not None:
        b = bias
        c.bias = &b[0]
    with nogil:
        blas_one_thread(True)
        parallel_for(c.units, nt, _forward_units, &c)
        blas_one_thread(False)


cdef inline void _weight_grad_of(const floating* xp, const Wino* c, Py_ssize_t p,
                                 int slot) noexcept nogil:
    cdef const Tiles* t = &c.t
    cdef Py_ssize_t P = c.units, n0 = p * c.N // P, n1 = (p + 1) * c.N // P
    cdef Py_ssize_t chunks = (n1 - n0 + t.nb - 1) // t.nb  # of equal size, about
    cdef Py_ssize_t i, k, n, c0, c1
    cdef floating* V = <floating*>c.V + slot * c.v_n
    cdef floating* D = <floating*>c.M + slot * c.m_n
    cdef floating* scratch = <floating*>c.scratch + slot * c.scratch_n
    cdef const floating* dyp = <const floating*>c.dy
    cdef floating* pp = <floating*>c.parts
    for i in range(chunks):
        c0 = n0 + i * (n1 - n0) // chunks
        c1 = n0 + (i + 1) * (n1 - n0) // chunks
        for n in range(c0, c1):
            _input_tiles(xp + n * c.C * c.plane, c.C, t, (n - c0) * t.T, scratch, V)
            _grad_tiles(dyp + n * c.O * t.OH * t.OW, c.O, t, (n - c0) * t.T, scratch, D)
        for k in range(c.A2):
            gemm_rm(False, False, c.O, c.C, (c1 - c0) * t.T, D + k * c.O * t.cols, t.cols,
                    V + k * t.Cp * t.cols, t.Cp, 0 if c0 == n0 else 1,
                    pp + (p * c.A2 + k) * c.O * c.C, c.C)


cdef void _weight_grad_units(void* arg, Py_ssize_t p0, Py_ssize_t p1, int slot) noexcept nogil:
    """Parts p0 to p1 - 1, each its run of images, chunk by chunk, accumulated
    in image order."""
    cdef Wino c = (<Wino*>arg)[0]  # a local copy: see _parallel.pxd
    cdef Py_ssize_t p
    for p in range(p0, p1):
        if c.dbl:
            _weight_grad_of(<const double*>c.x, &c, p, slot)
        else:
            _weight_grad_of(<const float*>c.x, &c, p, slot)


def weight_grad(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                floating[:, :, :, ::1] parts, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """parts[p] = sum of (A dY A^T) @ V^T, shape ((m + 2)^2, O, C), over a run of
    images fixed by the number of parts (each run accumulated in image order, to be
    added in part order by the caller; parts[p] = G dW G^T of those images)."""
    cdef Wino c
    c.dbl = floating is double
    c.N, c.C, c.O, c.units = x.shape[0], x.shape[1], dy.shape[1], parts.shape[0]
    c.A2 = parts.shape[1]
    c.t = _tiles(x.shape[2], x.shape[3], ph, pw, c.N, c.C, c.O, sizeof(floating), c.A2)
    c.plane = c.t.H * c.t.W
    cdef int nt = min(gemm_threads(<double>c.N * c.t.T * c.A2 * c.O * c.C, nthreads), c.units)
    dt = np.float32 if floating is float else np.float64
    c.scratch_n = max(fastbn_winograd_input_scratch(&c.t), fastbn_winograd_output_scratch(&c.t))
    c.v_n, c.m_n = c.A2 * c.t.Cp * c.t.cols, c.A2 * c.O * c.t.cols
    cdef floating[:, ::1] scratch = np.empty((nt, c.scratch_n), dt)
    cdef floating[:, ::1] Vs = np.empty((nt, c.v_n), dtype=dt)
    cdef floating[:, ::1] Ds = np.empty((nt, c.m_n), dtype=dt)
    c.scratch, c.V, c.M = &scratch[0, 0], &Vs[0, 0], &Ds[0, 0]
    c.x, c.dy, c.parts = &x[0, 0, 0, 0], &dy[0, 0, 0, 0], &parts[0, 0, 0, 0]
    with nogil:
        blas_one_thread(True)
        parallel_for(c.units, nt, _weight_grad_units, &c)
        blas_one_thread(False)
