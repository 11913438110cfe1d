/* Innermost loops of _norm.pyx that _simd.h does not have: a row normalized
   with one mean and invstd and an affine that changes at every position
   (LayerNorm's elementwise weight; GroupNorm's and InstanceNorm's per-channel
   weight spread over channels of a few values).  Rows whose channels are
   longer use _simd.h's segment loops instead.  Same conventions as _simd.h:
   float sums run in float over chunks of FASTBN_CHUNK values flushed to
   double (FASTBN_CHUNKED_SUMS), each loop is written once for float and
   double, and dispatched per ISA. */
#ifndef FASTBN_NORM_H
#define FASTBN_NORM_H
/* not every loop of _simd.h is called here: no warning for those */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "_simd.h"

/* A large dx is written around the cache, with non-temporal stores: a row is
   computed into `buf` (in L1), then streamed out.  A plain store to a line not in
   cache first reads it from memory.  By the backward x, y and dy are alive too;
   over LayerNorm of (64, 197, 384), 19 MB each, streaming dx made the backward
   1.1-1.2x faster.  Streaming y as well sped the forward at one thread but slowed
   it at two, and over (64, 196, 192), 9.6 MB each, streaming slowed both.  SSE2's
   16-byte stores are x86-64's baseline; elsewhere there is no streaming. */
#if defined(__SSE2__)
#include <emmintrin.h>
#include <stdint.h>
#define FASTBN_CAN_STREAM 1
#define FASTBN_STREAM_LOOP(T, STREAM, LOADU)                                        \
    ptrdiff_t i = 0;                                                                \
    for (; i < n && ((uintptr_t)(dst + i) & 15); i++)                               \
        dst[i] = src[i];                                                            \
    for (; i + 16 / (ptrdiff_t)sizeof(T) <= n; i += 16 / (ptrdiff_t)sizeof(T))      \
        STREAM(dst + i, LOADU(src + i));                                            \
    for (; i < n; i++)                                                              \
        dst[i] = src[i];
/* streamed stores are weakly ordered: each work unit ends with a fence, before
   its thread reports the unit done */
static inline void fastbn_stream_fence(void) { _mm_sfence(); }
#else  /* never streams (FASTBN_CAN_STREAM 0): a plain copy, for the loops to compile */
#define FASTBN_CAN_STREAM 0
#define FASTBN_STREAM_LOOP(T, STREAM, LOADU)                                        \
    for (ptrdiff_t i = 0; i < n; i++)                                               \
        dst[i] = src[i];
static inline void fastbn_stream_fence(void) {}
#endif
static inline void fastbn_stream_f(float *dst, const float *src, ptrdiff_t n)
{
    FASTBN_STREAM_LOOP(float, _mm_stream_ps, _mm_loadu_ps)
}
static inline void fastbn_stream_d(double *dst, const double *src, ptrdiff_t n)
{
    FASTBN_STREAM_LOOP(double, _mm_stream_pd, _mm_loadu_pd)
}

/* The position path's terms of the weight and bias gradients of K rows n apart,
   per position i: the K rows' dy and s * dy * (x - m) summed in T in registers,
   then added to the double partials p1, p2 once, not once a row. */
#define FASTBN_ROWS_Q(T, K)                                                         \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t i = 0; i < n; i++) {                                             \
        T a1 = 0, a2 = 0;                                                           \
        for (ptrdiff_t r = 0; r < (K); r++) {                                       \
            T g = dy[r * n + i];                                                    \
            a1 += g;                                                                \
            a2 += invstd[r] * g * (x[r * n + i] - mean[r]);                         \
        }                                                                           \
        p1[i] += (double)a1;                                                        \
        p2[i] += (double)a2;                                                        \
    }

/* The position path's loops run over `rows` consecutive rows of n values, each with
   its mean and invstd; the rows are whole samples of G groups, and row r's weight,
   bias and gradient partials per position start at (r % G) * n. */
#define FASTBN_NORM_LOOPS(T, S)                                                     \
/* One row's y = (x - m) * s * weight + bias (x - m first: a constant row gives    \
   exactly bias) and, in the same loop, the moments of the next row xn about its   \
   shift.  The next row's reads from memory then overlap this row's writes, as in  \
   one pass: LayerNorm of (64, 197, 384) forward 2.9 -> 1.9 ms at 1 thread, 1.7 -> \
   1.1 ms at 2, against the statistics and the normalization of 4 rows as passes   \
   of their own.  A plain `omp simd` reduction: FASTBN_SUMS would reassociate y's  \
   expression too. */                                                               \
FASTBN_DISPATCH static void fastbn_row_affine_moments_##S(const T *FASTBN_RESTRICT x, \
        T *FASTBN_RESTRICT y, ptrdiff_t n, T m, T s, const T *FASTBN_RESTRICT weight, \
        const T *FASTBN_RESTRICT bias, const T *FASTBN_RESTRICT xn, T shift,         \
        double *out1, double *out2)                                                 \
{                                                                                   \
    double s1 = 0, s2 = 0;                                                          \
    FASTBN_CHUNKED_SUMS(FASTBN_SIMD_REDUCTION, T,                                   \
                        T d = xn[i] - shift;                                        \
                        y[i] = (x[i] - m) * s * weight[i] + bias[i],                \
                        d, d * d, s1, s2)                                           \
    *out1 = s1;                                                                     \
    *out2 = s2;                                                                     \
}                                                                                   \
/* The segment path's row_affine_moments: the row is Cg channels of L values, y =  \
   (x - m) * scale[j] + shift[j] over channel j, and the moments of the next row   \
   xn about shift.  GroupNorm of (32, 64, 28, 28), 8 groups: forward 15-25% faster \
   than the statistics and the normalization of each row as passes of their own. */ \
FASTBN_DISPATCH static void fastbn_seg_affine_moments_##S(const T *FASTBN_RESTRICT x, \
        T *FASTBN_RESTRICT y, ptrdiff_t Cg, ptrdiff_t n, T m, const T *scale,        \
        const T *shift_c, const T *FASTBN_RESTRICT xn, T shift, double *out1,         \
        double *out2)                                                               \
{                                                                                   \
    double s1 = 0, s2 = 0;                                                          \
    for (ptrdiff_t j = 0; j < Cg; j++, x += n, y += n, xn += n) {                   \
        const T sc = scale[j], sh = shift_c[j]; /* not a, b: the sums' names */     \
        FASTBN_CHUNKED_SUMS(FASTBN_SIMD_REDUCTION, T,                               \
                            T d = xn[i] - shift;                                    \
                            y[i] = (x[i] - m) * sc + sh,                            \
                            d, d * d, s1, s2)                                       \
    }                                                                               \
    *out1 = s1;                                                                     \
    *out2 = s2;                                                                     \
}                                                                                   \
/* One row's dx = s * w * dy - kx * (x - m) - k0 and, in the same loop, the       \
   gradient sums of the next row xn, dyn (its weight wn, mean mn): out1 =          \
   sum(dyn * wn), out2 = sum(dyn * wn * (xn - mn)).  Pipelined as the forward:     \
   LayerNorm of (64, 196, 192) and (64, 197, 384) backward 10-15% faster than      \
   the sums and dx of a few rows as passes of their own. */                        \
FASTBN_DISPATCH static void fastbn_row_dx_grad_sums_##S(const T *FASTBN_RESTRICT x, \
        const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, ptrdiff_t n, T m, T s,   \
        const T *FASTBN_RESTRICT w, T kx, T k0, const T *FASTBN_RESTRICT xn,         \
        const T *FASTBN_RESTRICT dyn, const T *FASTBN_RESTRICT wn, T mn, double *out1, \
        double *out2)                                                               \
{                                                                                   \
    double s1 = 0, s2 = 0;                                                          \
    FASTBN_CHUNKED_SUMS(FASTBN_SIMD_REDUCTION, T,                                   \
                        T g = dyn[i] * wn[i];                                       \
                        dx[i] = s * w[i] * dy[i] - kx * (x[i] - m) - k0,            \
                        g, g * (xn[i] - mn), s1, s2)                                \
    *out1 = s1;                                                                     \
    *out2 = s2;                                                                     \
}                                                                                   \
/* The segment path's row_dx_grad_sums: dx = k_dy[j] * dy - kx * (x - m) - k0 over \
   channel j, and per channel j of the next row, out1[j] = sum(dyn), out2[j] =      \
   sum(dyn * (xn - mn)). */                                                        \
FASTBN_DISPATCH static void fastbn_seg_dx_grad_sums_##S(const T *FASTBN_RESTRICT x, \
        const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, ptrdiff_t Cg, ptrdiff_t n, \
        T m, const T *k_dy, T kx, T k0, const T *FASTBN_RESTRICT xn,                 \
        const T *FASTBN_RESTRICT dyn, T mn, double *out1, double *out2)              \
{                                                                                   \
    for (ptrdiff_t j = 0; j < Cg; j++, x += n, dy += n, dx += n, xn += n, dyn += n) { \
        const T kd = k_dy[j];                                                       \
        double s1 = 0, s2 = 0;                                                      \
        FASTBN_CHUNKED_SUMS(FASTBN_SIMD_REDUCTION, T,                               \
                            dx[i] = kd * dy[i] - kx * (x[i] - m) - k0,              \
                            dyn[i], dyn[i] * (xn[i] - mn), s1, s2)                  \
        out1[j] = s1;                                                               \
        out2[j] = s2;                                                               \
    }                                                                               \
}                                                                                   \
/* the rows' terms of the per-position weight and bias gradients, q1 += dy and     \
   q2 += invstd * dy * (x - mean) (the work unit's double partials), four rows at   \
   a time when they share positions (G = 1).  A pass of its own after dx's, over   \
   rows still in cache: folded into dx's pass, where dx's writes went to memory, it \
   had cost five times as much (LayerNorm of (64, 197, 384)) */                    \
FASTBN_DISPATCH static void fastbn_rows_param_sums_##S(const T *FASTBN_RESTRICT x, \
        const T *FASTBN_RESTRICT dy, ptrdiff_t rows, ptrdiff_t n, const T *mean,     \
        const T *invstd, ptrdiff_t G, double *q1, double *q2)                       \
{                                                                                   \
    for (ptrdiff_t r0, g = 0; rows > 0; rows -= r0, g = (g + r0) % G) {             \
        double *FASTBN_RESTRICT p1 = q1 + g * n, *FASTBN_RESTRICT p2 = q2 + g * n;  \
        r0 = G == 1 && rows >= 4 ? 4 : 1;                                           \
        if (r0 == 4) {                                                              \
            FASTBN_ROWS_Q(T, 4)                                                     \
        } else {                                                                    \
            FASTBN_ROWS_Q(T, 1)                                                     \
        }                                                                           \
        x += r0 * n;                                                                \
        dy += r0 * n;                                                               \
        mean += r0;                                                                 \
        invstd += r0;                                                               \
    }                                                                               \
}

FASTBN_NORM_LOOPS(float, f)
FASTBN_NORM_LOOPS(double, d)

#endif
