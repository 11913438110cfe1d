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

#define FASTBN_NORM_LOOPS(T, S)                                                     \
/* y = (x - m) * s * w + b over a row of n values, w and b per position            \
   (x - m first: a constant row gives exactly b) */                               \
FASTBN_DISPATCH static void fastbn_row_affine_##S(const T *FASTBN_RESTRICT x,      \
        T *FASTBN_RESTRICT y, ptrdiff_t n, T m, T s, const T *FASTBN_RESTRICT w,     \
        const T *FASTBN_RESTRICT b)                                                  \
{                                                                                   \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t i = 0; i < n; i++)                                               \
        y[i] = (x[i] - m) * s * w[i] + b[i];                                        \
}                                                                                   \
/* Over a row of n values: *out1 = sum(dy * w), *out2 = sum(dy * w * (x - m)) */  \
FASTBN_DISPATCH FASTBN_SUMS static void fastbn_row_grad_sums_##S(                   \
        const T *FASTBN_RESTRICT x, const T *FASTBN_RESTRICT dy, ptrdiff_t n, T m,   \
        const T *FASTBN_RESTRICT w, double *out1, double *out2)                      \
{                                                                                   \
    double s1 = 0, s2 = 0;                                                          \
    FASTBN_CHUNKED_SUMS(FASTBN_SIMD_SUM, T, T g = dy[i] * w[i], g, g * (x[i] - m), s1, s2) \
    *out1 = s1;                                                                     \
    *out2 = s2;                                                                     \
}                                                                                   \
/* Over a row of n values, w per position: dx = s * w * dy - kx * (x - m) - k0    \
   when dx is not NULL, and when q1 is not NULL the row's terms of the            \
   per-position weight and bias gradients, q1 += dy, q2 += s * dy * (x - m), in   \
   double (the work unit's partials, added to row after row: in this pass,        \
   which waits on dx's writes anyway, they cost next to nothing) */               \
FASTBN_DISPATCH static void fastbn_row_dx_##S(const T *FASTBN_RESTRICT x,          \
        const T *FASTBN_RESTRICT dy, T *FASTBN_RESTRICT dx, ptrdiff_t n, T m, T s,   \
        const T *FASTBN_RESTRICT w, T kx, T k0, double *FASTBN_RESTRICT q1,          \
        double *FASTBN_RESTRICT q2)                                                  \
{                                                                                   \
    if (q1 == NULL) {                                                               \
        FASTBN_SIMD                                                                 \
        for (ptrdiff_t i = 0; i < n; i++)                                           \
            dx[i] = s * w[i] * dy[i] - kx * (x[i] - m) - k0;                        \
    } else if (dx == NULL) {                                                        \
        FASTBN_SIMD                                                                 \
        for (ptrdiff_t i = 0; i < n; i++) {                                         \
            q1[i] += (double)dy[i];                                                 \
            q2[i] += (double)(s * dy[i] * (x[i] - m));                              \
        }                                                                           \
    } else {                                                                        \
        FASTBN_SIMD                                                                 \
        for (ptrdiff_t i = 0; i < n; i++) {                                         \
            T d = x[i] - m;                                                         \
            dx[i] = s * w[i] * dy[i] - kx * d - k0;                                 \
            q1[i] += (double)dy[i];                                                 \
            q2[i] += (double)(s * dy[i] * d);                                       \
        }                                                                           \
    }                                                                               \
}

FASTBN_NORM_LOOPS(float, f)
FASTBN_NORM_LOOPS(double, d)

#endif
