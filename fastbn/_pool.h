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

/* 3x3 windows, padding 1, of one (H, W) plane: the windows of the inception
   modules.  Each is two passes, along the rows then down the columns, over
   whole rows (vectorized), where the general path visits 9 taps per output.

   fastbn_box3: y = the 3x3 sum / 9, zeros outside the plane (stride 1,
   count_include_pad: every window divides by 9), summed in double as the general
   path does: r[h][w] = x[w - 1] + x[w] + x[w + 1], then r[h - 1] + r[h] +
   r[h + 1].  The backward of that average is the same filter of dy.
   rows: H x W doubles of scratch. */
#define FASTBN_POOL3_LOOPS(T)                                                           \
static FASTBN_DISPATCH void fastbn_box3_##T(                                          \
        const T* FASTBN_RESTRICT x, ptrdiff_t H, ptrdiff_t W, T* FASTBN_RESTRICT y,    \
        double* FASTBN_RESTRICT rows) {                                                \
    for (ptrdiff_t h = 0; h < H; h++) {                                                \
        const T* in = x + h * W;                                                       \
        double* r = rows + h * W;                                                      \
        if (W == 1) {                                                                  \
            r[0] = (double)in[0];                                                      \
            continue;                                                                  \
        }                                                                              \
        r[0] = (double)in[0] + (double)in[1];                                          \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t w = 1; w < W - 1; w++)                                          \
            r[w] = ((double)in[w - 1] + (double)in[w]) + (double)in[w + 1];            \
        r[W - 1] = (double)in[W - 2] + (double)in[W - 1];                              \
    }                                                                                  \
    for (ptrdiff_t h = 0; h < H; h++) {                                                \
        const double* r = rows + h * W;                                                \
        T* out = y + h * W;                                                            \
        if (h > 0 && h < H - 1) {                                                      \
            FASTBN_SIMD                                                                \
            for (ptrdiff_t w = 0; w < W; w++)                                          \
                out[w] = (T)(((r[w - W] + r[w]) + r[w + W]) / 9.0);                    \
        } else {                                                                       \
            const double* up = h > 0 ? r - W : NULL;                                   \
            const double* down = h < H - 1 ? r + W : NULL;                             \
            for (ptrdiff_t w = 0; w < W; w++) {                                        \
                double v = up != NULL ? up[w] + r[w] : r[w];                           \
                out[w] = (T)((down != NULL ? v + down[w] : v) / 9.0);                  \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
}                                                                                      \
                                                                                       \
/* fastbn_max3: y, idx = the maximum over each 3x3 window (stride s, 1 or 2) and  \
   its position h W + w, with the general path's test in tap order (the last NaN,  \
   else the first maximum; all -inf: the window's first tap): first the winner of  \
   each row's three taps (rv, and its column in rc: H x OW of scratch each), then  \
   of the window's rows, in order (positions in pc: OW of scratch; uint32, which   \
   vectorizes beside a float compare).  Padding never wins. */                     \
static FASTBN_DISPATCH void fastbn_max3_##T(                                          \
        const T* FASTBN_RESTRICT x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t OH,             \
        ptrdiff_t OW, ptrdiff_t s, T* FASTBN_RESTRICT y, int64_t* FASTBN_RESTRICT idx,  \
        T* FASTBN_RESTRICT rv, uint32_t* FASTBN_RESTRICT rc,                            \
        uint32_t* FASTBN_RESTRICT pc) {                                                 \
    /* outputs whose three columns are all inside the row: [1, hi) */                  \
    ptrdiff_t hi = W >= 2 ? (W - 2) / s + 1 : 1;                                       \
    hi = hi < 1 ? 1 : (hi > OW ? OW : hi);                                             \
    for (ptrdiff_t h = 0; h < H; h++) {                                                \
        const T* in = x + h * W;                                                       \
        T* v = rv + h * OW;                                                            \
        uint32_t* c = rc + h * OW;                                                     \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t o = 1; o < hi; o++) {                                           \
            ptrdiff_t w = o * s - 1;                                                   \
            T a = in[w], b = in[w + 1], d = in[w + 2];                                 \
            int tb = (b > a) | (b != b);                                               \
            T m = tb ? b : a;                                                          \
            int td = (d > m) | (d != d);                                               \
            v[o] = td ? d : m;                                                         \
            c[o] = (uint32_t)w + (td ? 2u : (uint32_t)tb);                             \
        }                                                                              \
        for (ptrdiff_t ow = 0; ow < OW; ow = ow ? ow + 1 : hi) {  /* 0, then hi.. */   \
            ptrdiff_t w0 = ow * s - 1 < 0 ? 0 : ow * s - 1;                            \
            ptrdiff_t w1 = ow * s + 2 > W ? W : ow * s + 2;                            \
            T best = -INFINITY;                                                        \
            uint32_t at = (uint32_t)w0;                                                \
            for (ptrdiff_t w = w0; w < w1; w++)                                        \
                if (in[w] > best || in[w] != in[w]) {                                  \
                    best = in[w];                                                      \
                    at = (uint32_t)w;                                                  \
                }                                                                      \
            v[ow] = best;                                                              \
            c[ow] = at;                                                                \
        }                                                                              \
    }                                                                                  \
    for (ptrdiff_t oh = 0; oh < OH; oh++) {                                            \
        ptrdiff_t h0 = oh * s - 1 < 0 ? 0 : oh * s - 1;                                \
        ptrdiff_t h1 = oh * s + 2 > H ? H : oh * s + 2;                                \
        T* out = y + oh * OW;                                                          \
        memcpy(out, rv + h0 * OW, OW * sizeof(T));                                     \
        FASTBN_SIMD                                                                    \
        for (ptrdiff_t ow = 0; ow < OW; ow++)                                          \
            pc[ow] = (uint32_t)(h0 * W) + rc[h0 * OW + ow];                            \
        for (ptrdiff_t h = h0 + 1; h < h1; h++) {                                      \
            const T* v = rv + h * OW;                                                  \
            const uint32_t* c = rc + h * OW;                                           \
            FASTBN_SIMD                                                                \
            for (ptrdiff_t ow = 0; ow < OW; ow++) {                                    \
                int take = (v[ow] > out[ow]) | (v[ow] != v[ow]);                       \
                out[ow] = take ? v[ow] : out[ow];                                      \
                pc[ow] = take ? (uint32_t)(h * W) + c[ow] : pc[ow];                    \
            }                                                                          \
        }                                                                              \
        for (ptrdiff_t ow = 0; ow < OW; ow++)                                          \
            idx[oh * OW + ow] = pc[ow];                                                \
    }                                                                                  \
}

FASTBN_POOL_LOOPS(float)
FASTBN_POOL_LOOPS(double)
FASTBN_POOL3_LOOPS(float)
FASTBN_POOL3_LOOPS(double)

#endif
