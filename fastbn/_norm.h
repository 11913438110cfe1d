/* Innermost loops of _norm.pyx.  Each writes one row's output (y, or dx) in the
   loop that sums the next row's statistics (its moments, or its gradient sums),
   so that the next row's reads from memory overlap this row's writes, as in one
   pass.  Two layouts of a row: the position path's, with an affine that changes
   at every position (LayerNorm's elementwise weight; GroupNorm's and
   InstanceNorm's per-channel weight spread over channels of a few values), and
   the segment path's, Cg channels of n values each with its own coefficients.
   Same conventions as _simd.h: float sums run in float over chunks of
   FASTBN_CHUNK values flushed to double (FASTBN_CHUNKED_SUMS), each loop is
   written once for float and double, and dispatched per ISA.  The sums are plain
   `omp simd` reductions: FASTBN_SUMS (associative-math) would reassociate the
   output's expression too. */
#ifndef FASTBN_NORM_H
#define FASTBN_NORM_H
/* not every loop of _simd.h is called here: no warning for those */
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#include "_simd.h"

/* The position path's rows are n values; the segment path's, Cg channels of n. */
#define FASTBN_NORM_LOOPS(T, S)                                                     \
/* One row's y = (x - m) * s * weight + bias (x - m first: a constant row gives    \
   exactly bias) and, in the same loop, the moments of the next row xn about its   \
   shift.  The next row's reads from memory then overlap this row's writes, as in  \
   one pass: LayerNorm of (64, 197, 384) forward 2.9 -> 1.9 ms at 1 thread, 1.7 -> \
   1.1 ms at 2, against the statistics and the normalization of 4 rows as passes   \
   of their own. */                                                               \
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
/* The segment path's row_affine_moments: the row is Cg channels of n values, y =  \
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
   the sums and dx of a few rows as passes of their own.  Unless f1 is NULL, the   \
   row's terms of the weight and bias gradients too, per position: f1 += dy, f2 += \
   s * dy * (x - m), in T (flushed to double every few rows, fastbn_flush): in a   \
   pass of their own over the rows in cache, they had taken 30% of the backward. */ \
FASTBN_DISPATCH static void fastbn_row_dx_grad_sums_##S(const T *FASTBN_RESTRICT x, \
        const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, ptrdiff_t n, T m, T s,   \
        const T *FASTBN_RESTRICT w, T kx, T k0, const T *FASTBN_RESTRICT xn,         \
        const T *FASTBN_RESTRICT dyn, const T *FASTBN_RESTRICT wn, T mn, double *out1, \
        double *out2, T *FASTBN_RESTRICT f1, T *FASTBN_RESTRICT f2)                 \
{                                                                                   \
    double s1 = 0, s2 = 0;                                                          \
    if (f1 == NULL) {                                                               \
        FASTBN_CHUNKED_SUMS(FASTBN_SIMD_REDUCTION, T,                               \
                            T g = dyn[i] * wn[i];                                   \
                            dx[i] = s * w[i] * dy[i] - kx * (x[i] - m) - k0,        \
                            g, g * (xn[i] - mn), s1, s2)                            \
    } else {                                                                        \
        FASTBN_CHUNKED_SUMS(FASTBN_SIMD_REDUCTION, T,                               \
                            T g = dyn[i] * wn[i];                                   \
                            T e = dy[i];                                            \
                            T xc = x[i] - m;                                        \
                            dx[i] = s * w[i] * e - kx * xc - k0;                    \
                            f1[i] += e;                                             \
                            f2[i] += s * e * xc,                                    \
                            g, g * (xn[i] - mn), s1, s2)                            \
    }                                                                               \
    *out1 = s1;                                                                     \
    *out2 = s2;                                                                     \
}                                                                                   \
/* q += f, f = 0 */                                                                 \
FASTBN_DISPATCH static void fastbn_flush_##S(T *FASTBN_RESTRICT f,                   \
        double *FASTBN_RESTRICT q, ptrdiff_t n)                                     \
{                                                                                   \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t i = 0; i < n; i++) {                                             \
        q[i] += (double)f[i];                                                       \
        f[i] = 0;                                                                   \
    }                                                                               \
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
}

FASTBN_NORM_LOOPS(float, f)
FASTBN_NORM_LOOPS(double, d)

#endif
