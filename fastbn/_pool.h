/* Max pooling 2x2 / stride 2 of _conv.pyx over a whole plane of even width, as
   two long vectorized loops instead of one short loop per output row (7 or 14
   outputs: shorter than one AVX-512 vector, so that loop ran scalar).
   Both folds use the general path's test, `v > best or v is NaN` in tap
   order: pairs across, then rows down give the same winner as the four taps
   in order (the last NaN, else the first maximum).  Positions are uint32:
   gcc vectorizes their select beside a float compare, not an int64 one. */
#ifndef FASTBN_POOL_H
#define FASTBN_POOL_H
#include <stdint.h>
#include "_dispatch.h"

#define FASTBN_POOL_LOOPS(T)                                                            \
/* v[i], at[i]: the winner of x[2i], x[2i + 1] and its position, for i < n. */      \
static FASTBN_DISPATCH void fastbn_pool_pairs_##T(                                  \
        const T* FASTBN_RESTRICT x, ptrdiff_t n, T* FASTBN_RESTRICT v,                \
        uint32_t* FASTBN_RESTRICT at) {                                              \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T a = x[2 * i], b = x[2 * i + 1];                                            \
        int take = (b > a) | (b != b);                                               \
        v[i] = take ? b : a;                                                         \
        at[i] = 2 * (uint32_t)i + (uint32_t)take;                                    \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* v[i], at[i] = the winner of (v[i], at[i]) and (v[i + w], at[i + w]), i < n:       \
   row i / w against the row below it (the caller keeps the even rows). */          \
static FASTBN_DISPATCH void fastbn_pool_rows_##T(                                   \
        T* v, uint32_t* at, ptrdiff_t w, ptrdiff_t n) {                              \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T a = v[i], b = v[i + w];                                                    \
        int take = (b > a) | (b != b);                                               \
        v[i] = take ? b : a;                                                         \
        at[i] = take ? at[i + w] : at[i];                                            \
    }                                                                                \
}

FASTBN_POOL_LOOPS(float)
FASTBN_POOL_LOOPS(double)

#endif
