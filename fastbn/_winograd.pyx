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

Work goes in chunks of a few images whose V and M stay in L2: transform in,
a^2 GEMMs (single-threaded BLAS calls inside fastbn's threads, see _blas.pyx),
transform out.  Chunks are fixed by the shape, never by the thread count, so
results are the same bits at any thread count.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid

from ._blas cimport blas_one_thread, gemm_rm, gemm_threads

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


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] U, bias,
            floating[:, :, :, ::1] y, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """y = conv2d(x, g, padding=(ph, pw)) (+ bias) for the 3x3 filters g with
    U[k] = (G g G^T)[k]^T, shape ((m + 2)^2, C, O): F(2x2, 3x3) for 16 rows, F(4x4,
    3x3) for 36.  x (N, C, H, W), y (N, O, OH, OW)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], O = U.shape[2], A2 = U.shape[0]
    cdef Py_ssize_t k, u, n, n0, n1
    cdef Tiles t = _tiles(x.shape[2], x.shape[3], ph, pw, N, C, O, sizeof(floating), A2)
    # chunks of equal size, about (64 images in chunks of at most 42: 32 + 32, not
    # 42 + 22, which left one of two threads idle a third of the time)
    cdef Py_ssize_t units = (N + t.nb - 1) // t.nb, plane = t.H * t.W
    cdef int nt = min(gemm_threads(<double>N * t.T * A2 * O * C, nthreads), units)
    dt = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = np.empty(
        (nt, max(fastbn_winograd_input_scratch(&t), fastbn_winograd_output_scratch(&t))), dt)
    cdef floating[:, ::1] Vs = np.empty((nt, A2 * t.Cp * t.cols), dtype=dt)
    # products: lanes past O stay zero (the GEMMs write O columns)
    cdef floating[:, ::1] Ms = np.zeros((nt, A2 * t.Op * t.cols), dtype=dt)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* up = &U[0, 0, 0]
    cdef floating* yp = &y[0, 0, 0, 0]
    cdef const floating[::1] b
    cdef const floating* bp = NULL
    cdef floating* V
    cdef floating* M
    if bias is not None:
        b = bias
        bp = &b[0]
    with nogil:
        blas_one_thread(True)
        for u in prange(units, schedule='static', num_threads=nt):
            V = &Vs[threadid(), 0]
            M = &Ms[threadid(), 0]
            n0 = u * N // units
            n1 = (u + 1) * N // units
            for n in range(n0, n1):
                _input_tiles(xp + n * C * plane, C, &t, (n - n0) * t.T,
                             &scratch[threadid(), 0], V)
            for k in range(A2):
                gemm_rm(False, False, (n1 - n0) * t.T, O, C, V + k * t.Cp * t.cols, t.Cp,
                        up + k * C * O, O, 0, M + k * t.Op * t.cols, t.Op)
            for n in range(n0, n1):
                _output_tiles(M, O, &t, (n - n0) * t.T, bp, yp + n * O * t.OH * t.OW,
                              &scratch[threadid(), 0])
        blas_one_thread(False)


def weight_grad(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                floating[:, :, :, ::1] parts, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """parts[p] = sum of (A dY A^T) @ V^T, shape ((m + 2)^2, O, C), over a run of
    images fixed by the number of parts (each run accumulated in image order, to be
    added in part order by the caller; parts[p] = G dW G^T of those images)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], O = dy.shape[1], P = parts.shape[0]
    cdef Py_ssize_t A2 = parts.shape[1]
    cdef Py_ssize_t k, p, n, n0, n1, c0, c1, i, chunks
    cdef Tiles t = _tiles(x.shape[2], x.shape[3], ph, pw, N, C, O, sizeof(floating), A2)
    cdef Py_ssize_t plane = t.H * t.W
    cdef int nt = min(gemm_threads(<double>N * t.T * A2 * O * C, nthreads), P)
    dt = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] scratch = np.empty(
        (nt, max(fastbn_winograd_input_scratch(&t), fastbn_winograd_output_scratch(&t))), dt)
    cdef floating[:, ::1] Vs = np.empty((nt, A2 * t.Cp * t.cols), dtype=dt)
    cdef floating[:, ::1] Ds = np.empty((nt, A2 * O * t.cols), dtype=dt)
    cdef const floating* xp = &x[0, 0, 0, 0]
    cdef const floating* dyp = &dy[0, 0, 0, 0]
    cdef floating* pp = &parts[0, 0, 0, 0]
    cdef floating* V
    cdef floating* D
    with nogil:
        blas_one_thread(True)
        for p in prange(P, schedule='static', num_threads=nt):
            V = &Vs[threadid(), 0]
            D = &Ds[threadid(), 0]
            n0 = p * N // P
            n1 = (p + 1) * N // P
            chunks = (n1 - n0 + t.nb - 1) // t.nb  # of equal size, about
            for i in range(chunks):
                c0 = n0 + i * (n1 - n0) // chunks
                c1 = n0 + (i + 1) * (n1 - n0) // chunks
                for n in range(c0, c1):
                    _input_tiles(xp + n * C * plane, C, &t, (n - c0) * t.T,
                                 &scratch[threadid(), 0], V)
                    _grad_tiles(dyp + n * O * t.OH * t.OW, O, &t, (n - c0) * t.T,
                                &scratch[threadid(), 0], D)
                for k in range(A2):
                    gemm_rm(False, False, O, C, (c1 - c0) * t.T, D + k * O * t.cols, t.cols,
                            V + k * t.Cp * t.cols, t.Cp, 0 if c0 == n0 else 1,
                            pp + (p * A2 + k) * O * C, C)
        blas_one_thread(False)
