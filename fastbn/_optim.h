/* Inner loops of _optim.pyx, in C for `restrict` (Cython cannot say that the
   parameter, gradient and state arrays do not overlap: without it gcc kept
   these loops scalar, slower than the NumPy operations they replace) and for
   runtime dispatch (_dispatch.h).  Each element follows NumPy's operations
   term by term, every product rounded on its own (-ffp-contract=off). */
#ifndef FASTBN_OPTIM_H
#define FASTBN_OPTIM_H
#include <math.h>
#include "_dispatch.h"

/* the gradient with weight decay; wd == 0 leaves it as it is (0 * inf is NaN) */
#define FASTBN_DECAYED(g, p, wd) ((wd) != 0 ? (g) + (wd) * (p) : (g))

#define FASTBN_OPTIM_LOOPS(T, SQRT)                                                     \
/* SGD on n values: d = g + wd * p; with a momentum buffer, buf = d (first) or      \
   momentum * buf + damp1 * d, and d = buf, or d + momentum * buf (nesterov);        \
   p -= lr * d.  damp1 = 1 - dampening: 1 * d is d, exactly. */                     \
static FASTBN_DISPATCH void fastbn_sgd_##T(                                         \
        T* FASTBN_RESTRICT p, const T* FASTBN_RESTRICT g, T* FASTBN_RESTRICT buf,     \
        ptrdiff_t n, T lr, T wd, T momentum, T damp1, int nesterov, int first) {     \
    if (buf == NULL) {                                                               \
        FASTBN_SIMD                                                                  \
        for (ptrdiff_t i = 0; i < n; i++)                                            \
            p[i] -= lr * FASTBN_DECAYED(g[i], p[i], wd);                             \
    } else {                                                                         \
        FASTBN_SIMD                                                                  \
        for (ptrdiff_t i = 0; i < n; i++) {                                          \
            T d = FASTBN_DECAYED(g[i], p[i], wd);                                    \
            T b = first ? d : momentum * buf[i] + damp1 * d;                         \
            buf[i] = b;                                                              \
            p[i] -= lr * (nesterov ? d + momentum * b : b);                          \
        }                                                                            \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* Adam on n values: d = g + wd * p, m = b1 * m + c1 * d, v = b2 * v + c2 * d * d,   \
   p -= step_size * m / (sqrt(v) / bc2_sqrt + eps), the quotient in double as NumPy  \
   computes it (float32 array over a float64 scalar) and rounded once into p. */    \
static FASTBN_DISPATCH void fastbn_adam_##T(                                        \
        T* FASTBN_RESTRICT p, const T* FASTBN_RESTRICT g, T* FASTBN_RESTRICT m,       \
        T* FASTBN_RESTRICT v, ptrdiff_t n, T wd, T b1, T c1, T b2, T c2, T step_size, \
        double bc2_sqrt, double eps) {                                               \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T d = FASTBN_DECAYED(g[i], p[i], wd);                                        \
        T mi = b1 * m[i] + c1 * d;                                                   \
        T vi = b2 * v[i] + c2 * d * d;                                               \
        m[i] = mi;                                                                   \
        v[i] = vi;                                                                   \
        p[i] = (T)(p[i] - (step_size * mi) / (SQRT(vi) / bc2_sqrt + eps));           \
    }                                                                                \
}

FASTBN_OPTIM_LOOPS(float, sqrtf)
FASTBN_OPTIM_LOOPS(double, sqrt)

#endif
