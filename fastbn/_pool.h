/* Max pooling 2x2 / stride 2 of _conv.pyx over a whole plane of even width, as
   two long vectorized loops instead of one short loop per output row (7 or 14
   outputs: shorter than one AVX-512 vector, so that loop ran scalar).
   Both folds use the general path's test, `v > best or v is NaN` in tap
   order: pairs across, then rows down give the same winner as the four taps
   in order (the last NaN, else the first maximum).  Positions are uint32:
   gcc vectorizes their select beside a float compare, not an int64 one. */
#ifndef FASTBN_POOL_H
#define FASTBN_POOL_H
#include <math.h>
#include <stdint.h>
#include <string.h>
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

/* 3x3 windows, padding 1, of runs of (H, W) planes: the windows of the inception
   modules.  Each is two passes, along the rows then down the columns, over the
   planes as one flat array, each position the centre of its window (long loops
   that vectorize), the planes' edges fixed after with two taps, where the
   general path visits 9 taps per output.

   fastbn_box3: y = the 3x3 sum / 9, zeros outside the plane (stride 1,
   count_include_pad: every window divides by 9), summed in double as the general
   path does: r[h][w] = x[w - 1] + x[w] + x[w + 1], then r[h - 1] + r[h] +
   r[h + 1].  The backward of that average is the same filter of dy.
   rows: planes H W doubles of scratch. */
#define FASTBN_POOL3_LOOPS(T)                                                           \
static FASTBN_DISPATCH void fastbn_box3_##T(                                          \
        const T* FASTBN_RESTRICT x, ptrdiff_t planes, ptrdiff_t H, ptrdiff_t W,        \
        T* FASTBN_RESTRICT y, double* FASTBN_RESTRICT r) {                             \
    ptrdiff_t plane = H * W, n = planes * plane;                                       \
    if (W == 1) {                                                                      \
        for (ptrdiff_t i = 0; i < n; i++)                                              \
            r[i] = (double)x[i];                                                       \
    } else {                                                                           \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t i = 1; i < n - 1; i++)                                          \
            r[i] = ((double)x[i - 1] + (double)x[i]) + (double)x[i + 1];               \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t k = 0; k < n / W; k++) {  /* first and last columns */         \
            ptrdiff_t i = k * W;                                                       \
            r[i] = (double)x[i] + (double)x[i + 1];                                    \
            r[i + W - 1] = (double)x[i + W - 2] + (double)x[i + W - 1];                \
        }                                                                              \
    }                                                                                  \
    if (H == 1) {                                                                      \
        for (ptrdiff_t i = 0; i < n; i++)                                              \
            y[i] = (T)(r[i] / 9.0);                                                    \
        return;                                                                        \
    }                                                                                  \
    FASTBN_SIMD                                                                        \
    for (ptrdiff_t i = W; i < n - W; i++)                                              \
        y[i] = (T)(((r[i - W] + r[i]) + r[i + W]) / 9.0);                              \
    for (ptrdiff_t p0 = 0; p0 < n; p0 += plane) {  /* first and last rows */          \
        const double* top = r + p0;                                                    \
        const double* bottom = r + p0 + plane - 2 * W;                                 \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t w = 0; w < W; w++) {                                            \
            y[p0 + w] = (T)((top[w] + top[W + w]) / 9.0);                              \
            y[p0 + plane - W + w] = (T)((bottom[w] + bottom[W + w]) / 9.0);            \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
                                                                                       \
/* fastbn_max3: y, idx = the maximum over each 3x3 window (stride s, 1 or 2) and  \
   its position h W + w, of `planes` (H, W) planes one after the other, with the   \
   general path's test in tap order (the last NaN, else the first maximum; all     \
   -inf: the window's first tap).  Two passes over the planes as one flat array,   \
   each position the centre of its window (long loops that vectorize, where the   \
   windows of small planes gave short loops and mispredicted branches): the winner \
   of each row's three taps (rv, its column offset 0-2 from w - 1 in rc), then of  \
   the three rows (cv, its flat position in cp); plane edges fixed after, with     \
   two taps.  Stride 2 keeps every other centre.  v: 2 planes H W values of        \
   scratch; at: as many uint32 (which vectorize beside a float compare). */         \
static FASTBN_DISPATCH void fastbn_max3_##T(                                          \
        const T* FASTBN_RESTRICT x, ptrdiff_t planes, ptrdiff_t H, ptrdiff_t W,        \
        ptrdiff_t OH, ptrdiff_t OW, ptrdiff_t s, T* FASTBN_RESTRICT y,                  \
        int64_t* FASTBN_RESTRICT idx, T* FASTBN_RESTRICT v,                             \
        uint32_t* FASTBN_RESTRICT at) {                                                 \
    ptrdiff_t plane = H * W, n = planes * plane;                                       \
    T* rv = v;                                                                         \
    T* cv = v + n;                                                                     \
    uint32_t* rc = at;                                                                 \
    uint32_t* cp = at + n;                                                             \
    if (W == 1) {                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            rv[i] = x[i];                                                              \
            rc[i] = 1;                                                                 \
        }                                                                              \
    } else {                                                                           \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t i = 1; i < n - 1; i++) {                                        \
            T a = x[i - 1], b = x[i], d = x[i + 1];                                    \
            int tb = (b > a) | (b != b);                                               \
            T m = tb ? b : a;                                                          \
            int td = (d > m) | (d != d);                                               \
            rv[i] = td ? d : m;                                                        \
            rc[i] = td ? 2u : (uint32_t)tb;                                            \
        }                                                                              \
        FASTBN_SIMD                        /* first and last columns: two taps */      \
        for (ptrdiff_t r = 0; r < n / W; r++) {                                        \
            ptrdiff_t i = r * W;                                                       \
            T a = x[i], b = x[i + 1];                                                  \
            int tb = (b > a) | (b != b);                                               \
            rv[i] = tb ? b : a;                                                        \
            rc[i] = 1u + (uint32_t)tb;                                                 \
            a = x[i + W - 2];                                                          \
            b = x[i + W - 1];                                                          \
            tb = (b > a) | (b != b);                                                   \
            rv[i + W - 1] = tb ? b : a;                                                \
            rc[i + W - 1] = (uint32_t)tb;                                              \
        }                                                                              \
    }                                                                                  \
    if (H == 1) {                                                                      \
        for (ptrdiff_t i = 0; i < n; i++) {                                            \
            cv[i] = rv[i];                                                             \
            cp[i] = (uint32_t)i + rc[i] - 1u;                                          \
        }                                                                              \
    } else {                                                                           \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t i = W; i < n - W; i++) {                                        \
            T a = rv[i - W], b = rv[i], d = rv[i + W];                                 \
            int tb = (b > a) | (b != b);                                               \
            T m = tb ? b : a;                                                          \
            int td = (d > m) | (d != d);                                               \
            cv[i] = td ? d : m;                                                        \
            cp[i] = td ? (uint32_t)(i + W) + rc[i + W] - 1u                            \
                       : (tb ? (uint32_t)i + rc[i] - 1u                                \
                             : (uint32_t)(i - W) + rc[i - W] - 1u);                    \
        }                                                                              \
        for (ptrdiff_t p0 = 0; p0 < n; p0 += plane) { /* first and last rows */        \
            for (ptrdiff_t k = 0; k < 2; k++) {                                        \
                ptrdiff_t top = k ? p0 + plane - 2 * W : p0; /* of the two rows */     \
                ptrdiff_t at_ = k ? top + W : top;           /* the row written */     \
                FASTBN_SIMD                                                            \
                for (ptrdiff_t w = 0; w < W; w++) {                                    \
                    T a = rv[top + w], b = rv[top + W + w];                            \
                    int tb = (b > a) | (b != b);                                       \
                    cv[at_ + w] = tb ? b : a;                                          \
                    cp[at_ + w] = tb ? (uint32_t)(top + W + w) + rc[top + W + w] - 1u  \
                                     : (uint32_t)(top + w) + rc[top + w] - 1u;         \
                }                                                                      \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    for (ptrdiff_t p = 0; p < planes; p++) {                                           \
        const T* c = cv + p * plane;                                                   \
        const uint32_t* pos = cp + p * plane;                                          \
        uint32_t base = (uint32_t)(p * plane);                                         \
        T* out = y + p * OH * OW;                                                      \
        int64_t* io = idx + p * OH * OW;                                               \
        for (ptrdiff_t oh = 0; oh < OH; oh++) {                                        \
            FASTBN_SIMD                                                                \
            for (ptrdiff_t ow = 0; ow < OW; ow++) {                                    \
                ptrdiff_t j = oh * s * W + ow * s;                                     \
                out[oh * OW + ow] = c[j];                                              \
                io[oh * OW + ow] = (int64_t)(pos[j] - base);                           \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
}

FASTBN_POOL_LOOPS(float)
FASTBN_POOL_LOOPS(double)
FASTBN_POOL3_LOOPS(float)
FASTBN_POOL3_LOOPS(double)

#endif
