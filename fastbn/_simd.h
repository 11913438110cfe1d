/* Innermost loops of the kernels in _core.pyx (which owns blocking, threading
   and the reduction tree).  They are C for two things Cython cannot emit:
   `omp simd reduction`, the only way to vectorize a floating-point sum
   without -ffast-math, and runtime dispatch per ISA (both in _dispatch.h).

   float sums run in float over chunks of FASTBN_CHUNK values (a vector lane
   holds at most FASTBN_CHUNK / 4 terms: 256 with SSE2, 64 with AVX-512) and
   are flushed to double, so the error stays far below a float32 pairwise
   sum's; double data sums in double.  Each chunk ends with a reduction across
   the vector's lanes, which is why chunks are long and why that reduction is
   a tree (FASTBN_SUMS below).

   Each loop is written once, for float and double, by FASTBN_LOOPS below. */
#ifndef FASTBN_SIMD_H
#define FASTBN_SIMD_H
#include <math.h>
#include "_dispatch.h"

/* Two ways to vectorize a sum.  `omp simd reduction` (FASTBN_SIMD_REDUCTION)
   works everywhere, but gcc ends each chunk by adding the vector's lanes one
   after another (16 dependent adds for AVX-512 floats), which bounded the
   statistics pass on rows of a few hundred values.  So for plain sums gcc
   instead gets leave to reassociate them, in those functions alone
   (FASTBN_SUMS), and adds the lanes as a tree. */
#if defined(_MSC_VER)
#define FASTBN_SIMD_REDUCTION __pragma(omp simd reduction(+:a, b))
#else
#define FASTBN_SIMD_REDUCTION _Pragma("omp simd reduction(+:a, b)")
#endif
#if defined(__GNUC__) && !defined(__clang__)
#define FASTBN_SUMS __attribute__((optimize("associative-math,no-signed-zeros,no-trapping-math")))
#define FASTBN_SIMD_SUM
#else
#define FASTBN_SUMS
#define FASTBN_SIMD_SUM FASTBN_SIMD_REDUCTION
#endif

/* Leave to treat floating-point operations as free of traps, which changes no
   result: without it gcc keeps the ReLU-masked gradient's select of the wide path
   as a branch per value (arithmetic it will not execute on both sides). */
#if defined(__GNUC__) && !defined(__clang__)
#define FASTBN_NO_TRAPS __attribute__((optimize("no-trapping-math")))
#else
#define FASTBN_NO_TRAPS
#endif

#define FASTBN_CHUNK 1024
/* wide-path rows summed in the data's precision before a double flush: 8 for
   the moments, half as many for the gradient sums, which read two arrays
   (with 16 row pointers gcc ran out of registers) */
#define FASTBN_WIDE_CHUNK 8

/* S1 += sum(A), S2 += sum(B) over i in [0, n), A and B expressions in i and
   in what the statements LET (run first for each i) declare: summed in T over
   chunks of FASTBN_CHUNK values, each chunk flushed to double; SIMD: how the
   loop vectorizes (FASTBN_SIMD_SUM in a FASTBN_SUMS function, or
   FASTBN_SIMD_REDUCTION). */
#define FASTBN_CHUNKED_SUMS(SIMD, T, LET, A, B, S1, S2)                             \
    for (ptrdiff_t i0 = 0; i0 < n; i0 += FASTBN_CHUNK) {                            \
        ptrdiff_t i1 = i0 + FASTBN_CHUNK < n ? i0 + FASTBN_CHUNK : n;               \
        T a = 0, b = 0;                                                             \
        SIMD                                                                        \
        for (ptrdiff_t i = i0; i < i1; i++) {                                       \
            LET;                                                                    \
            a += (A);                                                               \
            b += (B);                                                               \
        }                                                                           \
        S1 += a;                                                                    \
        S2 += b;                                                                    \
    }

/* The segment loops below run over `rows` consecutive rows of n values: whole
   rows of the (N, C, L) buffer, channels c, c + 1, ... modulo C, or one piece
   of a long row (rows = 1).  One call per work unit, not per row: on rows of
   64 values the calls had cost as much as the arithmetic. */
#define FASTBN_ROWS(...)                                                            \
    for (ptrdiff_t r = 0; r < rows; r++, c = c + 1 == C ? 0 : c + 1, __VA_ARGS__)

/* BN followed by ReLU, fused: the backward masks dy with relu'(v), v the
   forward's pre-activation (x - mean) * scale + shift recomputed from x with
   the very expression of fastbn_seg_affine, so the mask has the forward's bits.
   g is a value already loaded: a load under the condition would keep the loop from
   vectorizing (a branch per value, as many mispredicted as the ReLU cuts). */
#define FASTBN_MASKED(T, x, g, mean, scale, shift) \
    (((x) - (mean)) * (scale) + (shift) > 0 ? (g) : (T)0)

/* The wide path's loop over ROWS rows `stride` apart (a constant, so that the row
   loop unrolls and the position loop vectorizes): TERM(T, o, a, b) sets the terms
   a, b of position c in the row at offset o.  Each position's terms are summed
   in T in registers down the rows, then added to its double sums once: no
   per-row accumulator loads and stores. */
#define FASTBN_ROWS_LOOP(T, TERM, ROWS)                                             \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t c = 0; c < n; c++) {                                             \
        T a = 0, b = 0;                                                             \
        for (ptrdiff_t r = 0; r < (ROWS); r++) {                                    \
            T ar, br;                                                               \
            TERM(T, r * stride, ar, br)                                             \
            a += ar;                                                                \
            b += br;                                                                \
        }                                                                           \
        s1[c] += a;                                                                 \
        s2[c] += b;                                                                 \
    }
/* `rows` rows: K at a time, the rest one at a time */
#define FASTBN_CHUNK_LOOP(T, TERM, K)                                               \
    for (ptrdiff_t r0; rows > 0; rows -= r0) {                                      \
        r0 = rows >= (K) ? (K) : 1;                                                 \
        if (r0 == (K)) {                                                            \
            FASTBN_ROWS_LOOP(T, TERM, K)                                            \
        } else {                                                                    \
            FASTBN_ROWS_LOOP(T, TERM, 1)                                            \
        }                                                                           \
        x += r0 * stride;                                                           \
        if (dy != NULL)                                                             \
            dy += r0 * stride;                                                      \
    }
#define FASTBN_MOMENT_TERM(T, o, a, b) a = x[(o) + c] - shift[c]; b = a * a;
#define FASTBN_GRAD_TERM(T, o, a, b) a = dy[(o) + c]; b = a * (x[(o) + c] - shift[c]);
#define FASTBN_MASKED_TERM(T, o, a, b)                                              \
    T g = dy[(o) + c];                                                              \
    a = FASTBN_MASKED(T, x[(o) + c], g, shift[c], scale[c], bias[c]);                \
    b = a * (x[(o) + c] - shift[c]);

#define FASTBN_LOOPS(T, S)                                                          \
/* per row: out1 = sum(p - shift[c]), out2 = sum((p - shift[c])^2) */               \
FASTBN_DISPATCH FASTBN_SUMS static void fastbn_seg_moments_##S(const T *p, ptrdiff_t rows, \
        ptrdiff_t n, ptrdiff_t c, ptrdiff_t C, const T *shift, double *out1,         \
        double *out2)                                                               \
{                                                                                   \
    FASTBN_ROWS(p += n) {                                                           \
        const T m = shift[c];                                                       \
        double s1 = 0, s2 = 0;                                                      \
        FASTBN_CHUNKED_SUMS(FASTBN_SIMD_SUM, T, T d = p[i] - m, d, d * d, s1, s2)   \
        out1[r] = s1;                                                               \
        out2[r] = s2;                                                               \
    }                                                                               \
}                                                                                   \
/* per row: out1 = sum(q), out2 = sum(q * (p - mean[c])) */                         \
FASTBN_DISPATCH FASTBN_SUMS static void fastbn_seg_plain_grad_sums_##S(const T *p,  \
        const T *q, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t c, ptrdiff_t C,          \
        const T *mean, double *out1, double *out2)                                  \
{                                                                                   \
    FASTBN_ROWS(p += n, q += n) {                                                   \
        const T m = mean[c];                                                        \
        double s1 = 0, s2 = 0;                                                      \
        FASTBN_CHUNKED_SUMS(FASTBN_SIMD_SUM, T, (void)0, q[i], q[i] * (p[i] - m), s1, s2) \
        out1[r] = s1;                                                               \
        out2[r] = s2;                                                               \
    }                                                                               \
}                                                                                   \
/* the same with g = q masked by the ReLU for q (not FASTBN_SUMS: gcc would         \
   branch on the mask, value by value, in the loop's scalar remainder) */           \
FASTBN_DISPATCH static void fastbn_seg_masked_grad_sums_##S(const T *p, const T *q, \
        ptrdiff_t rows, ptrdiff_t n, ptrdiff_t c, ptrdiff_t C, const T *mean,       \
        const T *scale, const T *shift, double *out1, double *out2)                 \
{                                                                                   \
    FASTBN_ROWS(p += n, q += n) {                                                   \
        /* (not a and b: FASTBN_CHUNKED_SUMS's sums have those names) */         \
        const T m = mean[c], rs = scale[c], rb = shift[c];                          \
        double s1 = 0, s2 = 0;                                                      \
        /* dy loaded before the test: loaded under the mask, gcc kept the sums     \
           in memory, not in registers, and ran this loop at half speed */          \
        FASTBN_CHUNKED_SUMS(FASTBN_SIMD_REDUCTION, T,                               \
                            T dyi = q[i]; T g = FASTBN_MASKED(T, p[i], dyi, m, rs, rb), \
                            g, g * (p[i] - m), s1, s2)                              \
        out1[r] = s1;                                                               \
        out2[r] = s2;                                                               \
    }                                                                               \
}                                                                                   \
/* y = (x - center[c]) * scale[c] + shift[c], then the ReLU if relu */              \
FASTBN_DISPATCH static void fastbn_seg_affine_##S(const T *FASTBN_RESTRICT x,      \
        T *FASTBN_RESTRICT y, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t c, ptrdiff_t C, \
        const T *center, const T *scale, const T *shift, int relu)                  \
{                                                                                   \
    FASTBN_ROWS(x += n, y += n) {                                                   \
        const T m = center[c], a = scale[c], b = shift[c];                          \
        if (relu) {                                                                 \
            for (ptrdiff_t i = 0; i < n; i++) {                                     \
                T v = (x[i] - m) * a + b;                                           \
                y[i] = FASTBN_RELU(v);                                              \
            }                                                                       \
        } else {                                                                    \
            for (ptrdiff_t i = 0; i < n; i++)                                       \
                y[i] = (x[i] - m) * a + b;                                          \
        }                                                                           \
    }                                                                               \
}                                                                                   \
/* dx = k_dy[c] * g - k_x[c] * (x - mean[c]) - k_0[c], g = dy, or dy masked by the  \
   ReLU when scale is not NULL */                                                   \
FASTBN_DISPATCH static void fastbn_seg_dx_##S(const T *FASTBN_RESTRICT x,          \
        const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, ptrdiff_t rows, ptrdiff_t n, \
        ptrdiff_t c, ptrdiff_t C, const T *mean, const T *k_dy, const T *k_x,       \
        const T *k_0, const T *scale, const T *shift)                               \
{                                                                                   \
    FASTBN_ROWS(x += n, dy += n, dx += n) {                                         \
        const T m = mean[c], kd = k_dy[c], kx = k_x[c], k0 = k_0[c];                \
        if (scale != NULL) {                                                        \
            const T a = scale[c], b = shift[c];                                     \
            for (ptrdiff_t i = 0; i < n; i++) {                                     \
                const T g = dy[i];                                                  \
                dx[i] = kd * FASTBN_MASKED(T, x[i], g, m, a, b) - kx * (x[i] - m) - k0; \
            }                                                                       \
        } else {                                                                    \
            for (ptrdiff_t i = 0; i < n; i++)                                       \
                dx[i] = kd * dy[i] - kx * (x[i] - m) - k0;                          \
        }                                                                           \
    }                                                                               \
}                                                                                   \
/* Wide path, per position c of a chunk of `rows` rows `stride` apart:
   s1 += sum(a), s2 += sum(a * (x - shift)) over the rows, a = x - shift (moments,
   dy NULL) or g (dy, or dy masked by the ReLU when scale is not NULL). */        \
FASTBN_DISPATCH FASTBN_NO_TRAPS static void fastbn_rows_sums_##S(const T *FASTBN_RESTRICT x, \
        const T *FASTBN_RESTRICT dy, ptrdiff_t stride, ptrdiff_t rows,              \
        const T *FASTBN_RESTRICT shift, ptrdiff_t n, double *FASTBN_RESTRICT s1,     \
        double *FASTBN_RESTRICT s2, const T *FASTBN_RESTRICT scale,                  \
        const T *FASTBN_RESTRICT bias)                                               \
{                                                                                   \
    if (dy == NULL) {                                                               \
        FASTBN_CHUNK_LOOP(T, FASTBN_MOMENT_TERM, FASTBN_WIDE_CHUNK)                 \
    } else if (scale != NULL) {                                                     \
        FASTBN_CHUNK_LOOP(T, FASTBN_MASKED_TERM, FASTBN_WIDE_CHUNK / 2)             \
    } else {                                                                        \
        FASTBN_CHUNK_LOOP(T, FASTBN_GRAD_TERM, FASTBN_WIDE_CHUNK / 2)               \
    }                                                                               \
}                                                                                   \
/* out[c * L + l] = v[c]: per-channel values spread over a row's positions */      \
FASTBN_DISPATCH static void fastbn_spread_##S(const T *FASTBN_RESTRICT v, ptrdiff_t C, \
        ptrdiff_t L, T *FASTBN_RESTRICT out)                                        \
{                                                                                   \
    if (L == 1) { /* (N, C) input: a copy, not C loops of one value */              \
        for (ptrdiff_t c = 0; c < C; c++)                                           \
            out[c] = v[c];                                                          \
        return;                                                                     \
    }                                                                               \
    for (ptrdiff_t c = 0; c < C; c++)                                               \
        for (ptrdiff_t l = 0; l < L; l++)                                           \
            out[c * L + l] = v[c];                                                  \
}                                                                                   \
/* `rows` rows `stride` apart of n channels of (N, C) input: y = (x - center) *   \
   scale + shift with per-channel vectors, then the ReLU if relu */                 \
FASTBN_DISPATCH static void fastbn_nc_affine_##S(const T *FASTBN_RESTRICT x,       \
        T *FASTBN_RESTRICT y, ptrdiff_t rows, ptrdiff_t n, ptrdiff_t stride,         \
        const T *center, const T *scale, const T *shift, int relu)                  \
{                                                                                   \
    for (ptrdiff_t r = 0; r < rows; r++, x += stride, y += stride) {                \
        if (relu) {                                                                 \
            for (ptrdiff_t c = 0; c < n; c++) {                                     \
                T v = (x[c] - center[c]) * scale[c] + shift[c];                     \
                y[c] = FASTBN_RELU(v);                                              \
            }                                                                       \
        } else {                                                                    \
            for (ptrdiff_t c = 0; c < n; c++)                                       \
                y[c] = (x[c] - center[c]) * scale[c] + shift[c];                    \
        }                                                                           \
    }                                                                               \
}                                                                                   \
/* the same rows: dx = k_dy * g - k_x * (x - mean) - k_0 with per-channel         \
   vectors, g = dy, or dy masked by the ReLU when scale is not NULL */              \
FASTBN_DISPATCH static void fastbn_nc_dx_##S(const T *FASTBN_RESTRICT x,           \
        const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, ptrdiff_t rows, ptrdiff_t n, \
        ptrdiff_t stride, const T *mean, const T *k_dy, const T *k_x, const T *k_0,  \
        const T *scale, const T *bias)                                              \
{                                                                                   \
    for (ptrdiff_t r = 0; r < rows; r++, x += stride, dy += stride, dx += stride) { \
        if (scale != NULL) {                                                        \
            for (ptrdiff_t c = 0; c < n; c++) {                                     \
                const T g = dy[c];                                                  \
                dx[c] = k_dy[c] * FASTBN_MASKED(T, x[c], g, mean[c], scale[c], bias[c]) \
                        - k_x[c] * (x[c] - mean[c]) - k_0[c];                       \
            }                                                                       \
        } else {                                                                    \
            for (ptrdiff_t c = 0; c < n; c++)                                       \
                dx[c] = k_dy[c] * dy[c] - k_x[c] * (x[c] - mean[c]) - k_0[c];       \
        }                                                                           \
    }                                                                               \
}

/* out = 1 / sqrt(var + eps) per channel, in double (a divide and a square root a
   channel, one at a time, cost 3 ns a channel); var of type TV, out of type TO */
#define FASTBN_INVSTD(TV, TO, S)                                                    \
FASTBN_DISPATCH static void fastbn_invstd_##S(const TV *FASTBN_RESTRICT var,       \
        ptrdiff_t n, double eps, TO *FASTBN_RESTRICT out)                           \
{                                                                                   \
    for (ptrdiff_t c = 0; c < n; c++)                                               \
        out[c] = (TO)(1.0 / sqrt((double)var[c] + eps));                            \
}

FASTBN_LOOPS(float, f)
FASTBN_LOOPS(double, d)
FASTBN_INVSTD(float, float, ff)
FASTBN_INVSTD(double, float, df)
FASTBN_INVSTD(double, double, dd)

#endif
