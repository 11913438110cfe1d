/* Inner loops of _activation.pyx, in C for `restrict` (Cython cannot say that
   the arrays do not overlap) and for runtime dispatch (_dispatch.h). */
#ifndef FASTBN_ACTIVATION_H
#define FASTBN_ACTIVATION_H
#include "_dispatch.h"

#define FASTBN_ACTIVATION_LOOPS(T)                                                      \
/* y = relu(x) on n values */                                                       \
static FASTBN_DISPATCH void fastbn_relu_##T(                                        \
        const T* FASTBN_RESTRICT x, T* FASTBN_RESTRICT y, ptrdiff_t n) {             \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++)                                                \
        y[i] = FASTBN_RELU(x[i]);                                                    \
}                                                                                    \
                                                                                     \
/* y = relu(a + b) on n values: a residual join and its ReLU in one pass */         \
static FASTBN_DISPATCH void fastbn_add_relu_##T(                                    \
        const T* FASTBN_RESTRICT a, const T* FASTBN_RESTRICT b, T* FASTBN_RESTRICT y, \
        ptrdiff_t n) {                                                               \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++)                                                \
        y[i] = FASTBN_RELU(a[i] + b[i]);                                             \
}                                                                                    \
                                                                                     \
/* dx = 0 where the output y <= 0, else dy (a NaN y passes dy), as PyTorch's        \
   threshold_backward: a select, so that an inf or NaN dy where y <= 0 gives 0,      \
   where dy * (y > 0) gave NaN */                                                   \
static FASTBN_DISPATCH void fastbn_relu_grad_##T(                                   \
        const T* FASTBN_RESTRICT dy, const T* FASTBN_RESTRICT y, T* FASTBN_RESTRICT dx, \
        ptrdiff_t n) {                                                               \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++)                                                \
        dx[i] = y[i] <= 0 ? (T)0 : dy[i];                                            \
}

FASTBN_ACTIVATION_LOOPS(float)
FASTBN_ACTIVATION_LOOPS(double)

#endif
