/* Innermost loops of the kernels in _core.pyx (which owns blocking, threading
   and the reduction tree).  They are C for two things Cython cannot emit:
   `omp simd reduction`, the only way to vectorize a floating-point sum
   without -ffast-math, and runtime dispatch per ISA (both in _dispatch.h).

   float sums run in float over chunks of FASTBN_CHUNK values (a vector lane
   holds at most FASTBN_CHUNK / 4 terms: 256 with SSE2, 64 with AVX-512) and
   are flushed to double, so the error stays far below a float32 pairwise
   sum's; double data sums in double.  Each chunk ends with a reduction across
   the vector's lanes that costs about as much as summing 256 values: with
   1024-value chunks the statistics pass reads about 100 GB/s on one core
   here, with 256-value chunks 72.

   Each loop is written once, for float and double, by FASTBN_LOOPS below. */
#ifndef FASTBN_SIMD_H
#define FASTBN_SIMD_H
#include "_dispatch.h"

#if defined(_MSC_VER)
#define FASTBN_SIMD_SUM __pragma(omp simd reduction(+:a, b))
#else
#define FASTBN_SIMD_SUM _Pragma("omp simd reduction(+:a, b)")
#endif

#define FASTBN_CHUNK 1024

/* *s1 += sum(A), *s2 += sum(B) over i in [0, n), A and B expressions in i and
   in what the statements LET (run first for each i) declare: summed in T over
   chunks of FASTBN_CHUNK values, each chunk flushed to double. */
#define FASTBN_CHUNKED_SUMS(T, LET, A, B)                                           \
    for (ptrdiff_t i0 = 0; i0 < n; i0 += FASTBN_CHUNK) {                            \
        ptrdiff_t i1 = i0 + FASTBN_CHUNK < n ? i0 + FASTBN_CHUNK : n;               \
        T a = 0, b = 0;                                                             \
        FASTBN_SIMD_SUM                                                             \
        for (ptrdiff_t i = i0; i < i1; i++) {                                       \
            LET;                                                                    \
            a += (A);                                                               \
            b += (B);                                                               \
        }                                                                           \
        *s1 += a;                                                                   \
        *s2 += b;                                                                   \
    }

/* BN followed by ReLU, fused: the backward masks dy with relu'(v), v the
   forward's pre-activation (x - mean) * scale + shift recomputed from x with
   the very expression of fastbn_affine, so the mask has the forward's bits. */
#define FASTBN_MASKED(T, x, g, mean, scale, shift) \
    (((x) - (mean)) * (scale) + (shift) > 0 ? (g) : (T)0)
/* relu(v) that keeps a NaN, as PyTorch's */
#define FASTBN_RELU(v) ((v) < 0 ? 0 : (v))

/* The wide path's row loop: TERM(T, o, a, b) sets the terms a, b of position c
   in the row at offset o; four rows are added pairwise, then to f1, f2. */
#define FASTBN_ROWS_LOOP(T, TERM)                                                   \
    if (rows == 4) {                                                                \
        for (ptrdiff_t c = 0; c < n; c++) {                                         \
            T a0, b0, a1, b1, a2, b2, a3, b3;                                       \
            TERM(T, 0, a0, b0)                                                      \
            TERM(T, stride, a1, b1)                                                 \
            TERM(T, 2 * stride, a2, b2)                                             \
            TERM(T, 3 * stride, a3, b3)                                             \
            f1[c] += (a0 + a1) + (a2 + a3);                                         \
            f2[c] += (b0 + b1) + (b2 + b3);                                         \
        }                                                                           \
    } else {                                                                        \
        for (ptrdiff_t c = 0; c < n; c++) {                                         \
            T a0, b0;                                                               \
            TERM(T, 0, a0, b0)                                                      \
            f1[c] += a0;                                                            \
            f2[c] += b0;                                                            \
        }                                                                           \
    }
#define FASTBN_MOMENT_TERM(T, o, a, b) a = x[(o) + c] - shift[c]; b = a * a;
#define FASTBN_GRAD_TERM(T, o, a, b) a = dy[(o) + c]; b = a * (x[(o) + c] - shift[c]);
#define FASTBN_MASKED_TERM(T, o, a, b)                                              \
    a = FASTBN_MASKED(T, x[(o) + c], dy[(o) + c], shift[c], scale[c], bias[c]);     \
    b = a * (x[(o) + c] - shift[c]);

#define FASTBN_LOOPS(T, S)                                                          \
/* s1 += sum(p - shift), s2 += sum((p - shift)^2) */                               \
FASTBN_DISPATCH static void fastbn_moments_##S(const T *p, ptrdiff_t n, T shift,   \
                                               double *s1, double *s2)             \
{                                                                                   \
    FASTBN_CHUNKED_SUMS(T, T d = p[i] - shift, d, d * d)                            \
}                                                                                   \
/* s1 += sum(g), s2 += sum(g * (p - mean)), g = q, or q masked by the ReLU */      \
FASTBN_DISPATCH static void fastbn_grad_sums_##S(const T *p, const T *q, ptrdiff_t n, \
        T mean, int relu, T scale, T shift, double *s1, double *s2)                 \
{                                                                                   \
    if (relu) {                                                                     \
        /* dy loaded before the test: loaded under the mask, gcc kept the sums \
           in memory, not in registers, and ran this loop at half speed */          \
        FASTBN_CHUNKED_SUMS(T, T dyi = q[i]; T g = FASTBN_MASKED(T, p[i], dyi, mean, scale, shift), \
                            g, g * (p[i] - mean))                                   \
    } else {                                                                        \
        FASTBN_CHUNKED_SUMS(T, (void)0, q[i], q[i] * (p[i] - mean))                 \
    }                                                                               \
}                                                                                   \
/* y = (x - center) * scale + shift, then the ReLU if relu */                      \
FASTBN_DISPATCH static void fastbn_affine_##S(const T *FASTBN_RESTRICT x, T *FASTBN_RESTRICT y, ptrdiff_t n, \
        T center, T scale, T shift, int relu)                                       \
{                                                                                   \
    if (relu) {                                                                     \
        for (ptrdiff_t i = 0; i < n; i++) {                                         \
            T v = (x[i] - center) * scale + shift;                                  \
            y[i] = FASTBN_RELU(v);                                                  \
        }                                                                           \
    } else {                                                                        \
        for (ptrdiff_t i = 0; i < n; i++)                                           \
            y[i] = (x[i] - center) * scale + shift;                                 \
    }                                                                               \
}                                                                                   \
/* dx = k_dy * g - k_x * (x - mean) - k_0, g = dy, or dy masked by the ReLU */     \
FASTBN_DISPATCH static void fastbn_dx_##S(const T *FASTBN_RESTRICT x, const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, ptrdiff_t n, \
        T mean, T k_dy, T k_x, T k_0, int relu, T scale, T shift)                   \
{                                                                                   \
    if (relu) {                                                                     \
        for (ptrdiff_t i = 0; i < n; i++)                                           \
            dx[i] = k_dy * FASTBN_MASKED(T, x[i], dy[i], mean, scale, shift)        \
                    - k_x * (x[i] - mean) - k_0;                                    \
    } else {                                                                        \
        for (ptrdiff_t i = 0; i < n; i++)                                           \
            dx[i] = k_dy * dy[i] - k_x * (x[i] - mean) - k_0;                       \
    }                                                                               \
}                                                                                   \
/* Wide-path accumulators over `rows` (4 or 1) rows `stride` apart, per position c:
   f1 += sum(a), f2 += sum(a * (x - shift)) over the rows, a = x - shift (moments,
   dy NULL) or g (dy, or dy masked by the ReLU when scale is not NULL).  Four rows
   per call load and store the accumulators a quarter as often. */                \
FASTBN_DISPATCH static void fastbn_rows_accumulate_##S(const T *FASTBN_RESTRICT x,        \
        const T *FASTBN_RESTRICT dy, ptrdiff_t stride, int rows,                    \
        const T *FASTBN_RESTRICT shift, ptrdiff_t n, T *FASTBN_RESTRICT f1,          \
        T *FASTBN_RESTRICT f2, const T *FASTBN_RESTRICT scale,                       \
        const T *FASTBN_RESTRICT bias)                                               \
{                                                                                   \
    if (dy == NULL) {                                                               \
        FASTBN_ROWS_LOOP(T, FASTBN_MOMENT_TERM)                                     \
    } else if (scale != NULL) {                                                     \
        FASTBN_ROWS_LOOP(T, FASTBN_MASKED_TERM)                                     \
    } else {                                                                        \
        FASTBN_ROWS_LOOP(T, FASTBN_GRAD_TERM)                                       \
    }                                                                               \
}                                                                                   \
/* One (N, C) row: y = (x - center) * scale + shift, per-channel vectors, then the \
   ReLU if relu */                                                                  \
FASTBN_DISPATCH static void fastbn_row_affine_##S(const T *FASTBN_RESTRICT x, T *FASTBN_RESTRICT y, ptrdiff_t n, \
        const T *center, const T *scale, const T *shift, int relu)                  \
{                                                                                   \
    if (relu) {                                                                     \
        for (ptrdiff_t c = 0; c < n; c++) {                                         \
            T v = (x[c] - center[c]) * scale[c] + shift[c];                         \
            y[c] = FASTBN_RELU(v);                                                  \
        }                                                                           \
    } else {                                                                        \
        for (ptrdiff_t c = 0; c < n; c++)                                           \
            y[c] = (x[c] - center[c]) * scale[c] + shift[c];                        \
    }                                                                               \
}                                                                                   \
/* One (N, C) row: dx = k_dy * g - k_x * (x - mean) - k_0, per-channel vectors,    \
   g = dy, or dy masked by the ReLU when scale is not NULL */                       \
FASTBN_DISPATCH static void fastbn_row_dx_##S(const T *FASTBN_RESTRICT x, const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, \
        ptrdiff_t n, const T *mean, const T *k_dy, const T *k_x, const T *k_0,       \
        const T *scale, const T *bias)                                               \
{                                                                                   \
    if (scale != NULL) {                                                            \
        for (ptrdiff_t c = 0; c < n; c++)                                           \
            dx[c] = k_dy[c] * FASTBN_MASKED(T, x[c], dy[c], mean[c], scale[c], bias[c]) \
                    - k_x[c] * (x[c] - mean[c]) - k_0[c];                           \
    } else {                                                                        \
        for (ptrdiff_t c = 0; c < n; c++)                                           \
            dx[c] = k_dy[c] * dy[c] - k_x[c] * (x[c] - mean[c]) - k_0[c];           \
    }                                                                               \
}

FASTBN_LOOPS(float, f)
FASTBN_LOOPS(double, d)

#endif
