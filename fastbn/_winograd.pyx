"""3x3 stride-1 convolutions by Winograd's minimal filtering F(2x2, 3x3)
(Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).

Each 2x2 output tile is Y = A^T [U . V] A with U = G g G^T (the 3x3 filter g,
transformed once per call by fastbn/kernels.py) and V = B^T d B (the 4x4 input
tile d): 16 products per tile instead of 36.  Over channels the 16 products
become 16 GEMMs, M[k] (O x tiles) = U[k] (O x C) @ V[k] (C x tiles), so the
multiply-adds drop 2.25x against im2col.  The input's gradient is the same
convolution of dy with the flipped, transposed filter; the filter's gradient
is dU[k] = (A dY A^T)[k] @ V[k]^T, brought back by G^T dU G in kernels.py.

Work goes in chunks of a few images whose V and M stay in L2: transform in,
16 GEMMs (single-threaded BLAS calls inside fastbn's threads, see _blas.pyx),
transform out.  Chunks are fixed by the shape, never by the thread count, so
results are the same bits at any thread count.
"""
from cython cimport floating
from cython.parallel cimport prange, threadid

from ._blas cimport blas_one_thread, gemm_rm, gemm_threads

import numpy as np

cdef enum:
    CHUNK_BYTES = 1 << 20  # V and M of a chunk: about one L2 (best of 512K-2M here)


cdef extern from "_winograd.h" nogil:
    ctypedef struct fastbn_tiles:
        Py_ssize_t H, W, ph, pw, OH, OW, TH, TW, T, PW, nb, cols
    void fastbn_winograd_input_float(const float* x, Py_ssize_t C, const fastbn_tiles* t,
                                     Py_ssize_t col, float* pad, float* v)
    void fastbn_winograd_input_double(const double* x, Py_ssize_t C, const fastbn_tiles* t,
                                      Py_ssize_t col, double* pad, double* v)
    void fastbn_winograd_output_float(const float* m, Py_ssize_t O, const fastbn_tiles* t,
                                      Py_ssize_t col, const float* bias, float* y, float* rows)
    void fastbn_winograd_output_double(const double* m, Py_ssize_t O, const fastbn_tiles* t,
                                       Py_ssize_t col, const double* bias, double* y,
                                       double* rows)
    void fastbn_winograd_grads_float(const float* dy, Py_ssize_t O, const fastbn_tiles* t,
                                     Py_ssize_t col, float* pad, float* d)
    void fastbn_winograd_grads_double(const double* dy, Py_ssize_t O, const fastbn_tiles* t,
                                      Py_ssize_t col, double* pad, double* d)

ctypedef fastbn_tiles Tiles


cdef Tiles _tiles(Py_ssize_t H, Py_ssize_t W, Py_ssize_t ph, Py_ssize_t pw, Py_ssize_t N,
                  Py_ssize_t channels, Py_ssize_t itemsize) noexcept nogil:
    """channels: input plus output channels of the chunk's GEMMs."""
    cdef Tiles t
    t.H, t.W, t.ph, t.pw = H, W, ph, pw
    t.OH, t.OW = H + 2 * ph - 2, W + 2 * pw - 2
    t.TH, t.TW = (t.OH + 1) // 2, (t.OW + 1) // 2
    t.T = t.TH * t.TW
    t.PW = 2 * t.TW + 2  # a padded row: even columns 0..TW, then odd ones
    t.nb = min(max(CHUNK_BYTES // (16 * channels * itemsize * t.T), 1), N)
    t.cols = t.nb * t.T
    return t


cdef inline void _input_tiles(const floating* x, Py_ssize_t C, const Tiles* t, Py_ssize_t col,
                              floating* pad, floating* V) noexcept nogil:
    """V[k, c, col + tile] = (B^T d B)[k] for every tile of image x (C planes);
    pad: this thread's (2 TH + 3) x PW buffer, zeroed once (_winograd.h)."""
    if floating is float:
        fastbn_winograd_input_float(x, C, t, col, pad, V)
    else:
        fastbn_winograd_input_double(x, C, t, col, pad, V)


cdef inline void _output_tiles(const floating* M, Py_ssize_t O, const Tiles* t, Py_ssize_t col,
                               const floating* bias, floating* y, floating* rows) noexcept nogil:
    """y[o] = A^T M[:, o, col + tile] A (+ bias[o]) for every tile of image y (O
    planes); rows: this thread's 2 x 2 TW buffer."""
    if floating is float:
        fastbn_winograd_output_float(M, O, t, col, bias, y, rows)
    else:
        fastbn_winograd_output_double(M, O, t, col, bias, y, rows)


cdef inline void _grad_tiles(const floating* dy, Py_ssize_t O, const Tiles* t, Py_ssize_t col,
                             floating* pad, floating* D) noexcept nogil:
    """D[k, o, col + tile] = (A dY A^T)[k] for every 2x2 tile dY of image dy (O planes):
    the adjoint of _output_tiles; pad: this thread's 2 TH x 2 TW buffer, zeroed once."""
    if floating is float:
        fastbn_winograd_grads_float(dy, O, t, col, pad, D)
    else:
        fastbn_winograd_grads_double(dy, O, t, col, pad, D)


def forward(const floating[:, :, :, ::1] x, const floating[:, :, ::1] U, bias,
            floating[:, :, :, ::1] y, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """y = conv2d(x, g, padding=(ph, pw)) (+ bias) for the 3x3 filters g with
    U = G g G^T, shape (16, O, C).  x (N, C, H, W), y (N, O, OH, OW)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], O = U.shape[1], k, u, n, n0, n1
    cdef Tiles t = _tiles(x.shape[2], x.shape[3], ph, pw, N, C + O, sizeof(floating))
    # chunks of equal size, about (64 images in chunks of at most 42: 32 + 32, not
    # 42 + 22, which left one of two threads idle a third of the time)
    cdef Py_ssize_t units = (N + t.nb - 1) // t.nb, plane = t.H * t.W
    cdef int nt = min(gemm_threads(<double>N * t.T * 16 * O * C, nthreads), units)
    dt = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] pads = np.zeros((nt, (2 * t.TH + 3) * t.PW), dtype=dt)
    cdef floating[:, ::1] Vs = np.empty((nt, 16 * C * t.cols), dtype=dt)
    cdef floating[:, ::1] Ms = np.empty((nt, 16 * O * t.cols), dtype=dt)
    cdef floating[:, ::1] rows = np.empty((nt, 4 * t.TW), dtype=dt)
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
                _input_tiles(xp + n * C * plane, C, &t, (n - n0) * t.T, &pads[threadid(), 0], V)
            for k in range(16):
                gemm_rm(False, False, O, (n1 - n0) * t.T, C, up + k * O * C, C,
                        V + k * C * t.cols, t.cols, 0, M + k * O * t.cols, t.cols)
            for n in range(n0, n1):
                _output_tiles(M, O, &t, (n - n0) * t.T, bp, yp + n * O * t.OH * t.OW,
                              &rows[threadid(), 0])
        blas_one_thread(False)


def weight_grad(const floating[:, :, :, ::1] dy, const floating[:, :, :, ::1] x,
                floating[:, :, :, ::1] parts, Py_ssize_t ph, Py_ssize_t pw, int nthreads):
    """parts[p] = sum of (A dY A^T) @ V^T, shape (16, O, C), over a run of images
    fixed by the number of parts (each run accumulated in image order, to be
    added in part order by the caller; parts[p] = G dW G^T of those images)."""
    cdef Py_ssize_t N = x.shape[0], C = x.shape[1], O = dy.shape[1], P = parts.shape[0]
    cdef Py_ssize_t k, p, n, n0, n1, c0, c1, i, chunks
    cdef Tiles t = _tiles(x.shape[2], x.shape[3], ph, pw, N, C + O, sizeof(floating))
    cdef Py_ssize_t plane = t.H * t.W
    cdef int nt = min(gemm_threads(<double>N * t.T * 16 * O * C, nthreads), P)
    dt = np.float32 if floating is float else np.float64
    cdef floating[:, ::1] pads = np.zeros((nt, (2 * t.TH + 3) * t.PW), dtype=dt)
    cdef floating[:, ::1] gpads = np.zeros((nt, 4 * t.TH * t.TW), dtype=dt)
    cdef floating[:, ::1] Vs = np.empty((nt, 16 * C * t.cols), dtype=dt)
    cdef floating[:, ::1] Ds = np.empty((nt, 16 * O * t.cols), dtype=dt)
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
                                 &pads[threadid(), 0], V)
                    _grad_tiles(dyp + n * O * t.OH * t.OW, O, &t, (n - c0) * t.T,
                                &gpads[threadid(), 0], D)
                for k in range(16):
                    gemm_rm(False, True, O, C, (c1 - c0) * t.T, D + k * O * t.cols, t.cols,
                            V + k * C * t.cols, t.cols, 0 if c0 == n0 else 1,
                            pp + (p * 16 + k) * O * C, C)
        blas_one_thread(False)
