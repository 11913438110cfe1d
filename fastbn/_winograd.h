/* Winograd F(2x2, 3x3) tile transforms of _winograd.pyx, one row of tiles at
   a time (C for `omp simd` and the runtime dispatch of _dispatch.h).  Tile t
   of a row is column t of every one of the 16 transformed rows:
   v[k * stride + t], k = 4 i + j.  A row of 16 tiles or more (planes of 32
   pixels) fills AVX-512 vectors; the 7 tiles of a 14x14 plane run scalar, at
   about 10 cycles a tile.  Each loop is written once, for float and double,
   by FASTBN_WINOGRAD_LOOPS. */
#ifndef FASTBN_WINOGRAD_H
#define FASTBN_WINOGRAD_H
#include <string.h>
#include "_dispatch.h"

/* An (H, W) plane padded by (ph, pw) and its 2x2 output tiles. */
typedef struct {
    ptrdiff_t H, W, ph, pw;    /* input plane, and its padding */
    ptrdiff_t OH, OW, TH, TW;  /* output plane, and its tiles */
    ptrdiff_t T, PW;           /* tiles per plane; values in a padded row */
    ptrdiff_t nb, cols;        /* images per chunk; tiles per chunk: a V or M row */
} fastbn_tiles;

#define FASTBN_WINOGRAD_LOOPS(T)                                                       \
/* even[k] = src[2k], odd[k] = src[2k + 1] for k < n. */                            \
static inline void fastbn_winograd_split_##T(                             \
        const T* FASTBN_RESTRICT src, ptrdiff_t n, T* FASTBN_RESTRICT even,          \
        T* FASTBN_RESTRICT odd) {                                                    \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t k = 0; k < n; k++) {                                             \
        even[k] = src[2 * k];                                                       \
        odd[k] = src[2 * k + 1];                                                    \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* v = B^T d B for the n tiles whose 4x4 inputs d are on padded rows r0..r3:    \
   each row holds its even columns, then (from `half` on) its odd ones, so     \
   tile t's columns are r[t], r[half + t], r[t + 1], r[half + t + 1]. */       \
static inline void fastbn_winograd_in_##T(                                \
        const T* r0, const T* r1, const T* r2, const T* r3, ptrdiff_t half,          \
        ptrdiff_t n, T* FASTBN_RESTRICT v, ptrdiff_t stride) {                       \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t t = 0; t < n; t++) {                                             \
        T a[4] = {r0[t], r0[half + t], r0[t + 1], r0[half + t + 1]};               \
        T b[4] = {r1[t], r1[half + t], r1[t + 1], r1[half + t + 1]};               \
        T c[4] = {r2[t], r2[half + t], r2[t + 1], r2[half + t + 1]};               \
        T d[4] = {r3[t], r3[half + t], r3[t + 1], r3[half + t + 1]};               \
        T e[4][4];                                                                  \
        for (int j = 0; j < 4; j++) { /* B^T d: rows */                             \
            e[0][j] = a[j] - c[j];                                                  \
            e[1][j] = b[j] + c[j];                                                  \
            e[2][j] = c[j] - b[j];                                                  \
            e[3][j] = b[j] - d[j];                                                  \
        }                                                                           \
        for (int i = 0; i < 4; i++) { /* (B^T d) B: columns */                      \
            v[(4 * i + 0) * stride + t] = e[i][0] - e[i][2];                        \
            v[(4 * i + 1) * stride + t] = e[i][1] + e[i][2];                        \
            v[(4 * i + 2) * stride + t] = e[i][2] - e[i][1];                        \
            v[(4 * i + 3) * stride + t] = e[i][1] - e[i][3];                        \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* Rows y0, y1 (2 n values each) of the n output tiles A^T q A + bias. */          \
static inline void fastbn_winograd_out_##T(                               \
        const T* m, ptrdiff_t stride, ptrdiff_t n, T bias, T* FASTBN_RESTRICT y0,    \
        T* FASTBN_RESTRICT y1) {                                                     \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t t = 0; t < n; t++) {                                             \
        T q[4][4], e[2][4];                                                         \
        for (int k = 0; k < 16; k++)                                                \
            q[k / 4][k % 4] = m[k * stride + t];                                    \
        for (int j = 0; j < 4; j++) { /* A^T q: rows */                             \
            e[0][j] = q[0][j] + q[1][j] + q[2][j];                                  \
            e[1][j] = q[1][j] - q[2][j] - q[3][j];                                  \
        }                                                                           \
        y0[2 * t] = e[0][0] + e[0][1] + e[0][2] + bias;                             \
        y0[2 * t + 1] = e[0][1] - e[0][2] - e[0][3] + bias;                         \
        y1[2 * t] = e[1][0] + e[1][1] + e[1][2] + bias;                             \
        y1[2 * t + 1] = e[1][1] - e[1][2] - e[1][3] + bias;                         \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* v = A g A^T for the n 2x2 output-gradient tiles on rows s0, s1 (tile t:     \
   columns 2t, 2t + 1): the adjoint of fastbn_winograd_out. */                     \
static inline void fastbn_winograd_grad_##T(                              \
        const T* s0, const T* s1, ptrdiff_t n, T* FASTBN_RESTRICT v,                 \
        ptrdiff_t stride) {                                                          \
    FASTBN_SIMD                                                                     \
    for (ptrdiff_t t = 0; t < n; t++) {                                             \
        T a = s0[2 * t], b = s0[2 * t + 1], c = s1[2 * t], d = s1[2 * t + 1];       \
        T p[4][2] = {{a, b}, {a + c, b + d}, {a - c, b - d}, {-c, -d}}; /* A g */   \
        for (int i = 0; i < 4; i++) { /* (A g) A^T */                               \
            v[(4 * i + 0) * stride + t] = p[i][0];                                  \
            v[(4 * i + 1) * stride + t] = p[i][0] + p[i][1];                        \
            v[(4 * i + 2) * stride + t] = p[i][0] - p[i][1];                        \
            v[(4 * i + 3) * stride + t] = -p[i][1];                                 \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* The row loops above over one image, one dispatched call per image: a 14x14    \
   plane's rows of 7 tiles run scalar, and a dispatched call per row cost as much  \
   again.  (Forcing the row loops inline into the AVX-512 clone was slower.)       \
   v[k][c][col + tile] = (B^T d B)[k], c < C.  pad: (2 TH + 3) x PW, zero           \
   outside the plane's place; its last row stages one padded input row, and         \
   each padded row is kept as its even columns, then its odd ones. */               \
static FASTBN_DISPATCH void fastbn_winograd_input_##T(                             \
        const T* x, ptrdiff_t C, const fastbn_tiles* t, ptrdiff_t col, T* pad,      \
        T* v) {                                                                     \
    ptrdiff_t half = t->TW + 1, stride = C * t->cols;                               \
    T* stage = pad + (2 * t->TH + 2) * t->PW;                                       \
    for (ptrdiff_t c = 0; c < C; c++) {                                             \
        for (ptrdiff_t r = 0; r < t->H; r++) {                                      \
            T* dst = pad + (r + t->ph) * t->PW;                                     \
            memcpy(stage + t->pw, x + (c * t->H + r) * t->W, t->W * sizeof(T));     \
            fastbn_winograd_split_##T(stage, half, dst, dst + half);                \
        }                                                                           \
        for (ptrdiff_t ty = 0; ty < t->TH; ty++) {                                  \
            const T* row = pad + 2 * ty * t->PW;                                    \
            fastbn_winograd_in_##T(row, row + t->PW, row + 2 * t->PW, row + 3 * t->PW, \
                                   half, t->TW, v + c * t->cols + col + ty * t->TW, stride); \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* y[o] = A^T m[:, o, col + tile] A + bias[o] (bias NULL: 0), o < O; a tile row    \
   cut at OH or OW goes through rows (2 x 2 TW) first. */                          \
static FASTBN_DISPATCH void fastbn_winograd_output_##T(                            \
        const T* m, ptrdiff_t O, const fastbn_tiles* t, ptrdiff_t col,              \
        const T* bias, T* y, T* rows) {                                             \
    ptrdiff_t W2 = 2 * t->TW;                                                       \
    for (ptrdiff_t o = 0; o < O; o++) {                                             \
        T b = bias != NULL ? bias[o] : (T)0;                                        \
        for (ptrdiff_t ty = 0; ty < t->TH; ty++) {                                  \
            T* y0 = y + (o * t->OH + 2 * ty) * t->OW;                               \
            int cut = W2 != t->OW || 2 * ty + 1 == t->OH;                           \
            fastbn_winograd_out_##T(m + o * t->cols + col + ty * t->TW, O * t->cols, \
                                    t->TW, b, cut ? rows : y0,                      \
                                    cut ? rows + W2 : y0 + t->OW);                  \
            if (cut) {                                                              \
                memcpy(y0, rows, t->OW * sizeof(T));                                \
                if (2 * ty + 1 < t->OH)                                             \
                    memcpy(y0 + t->OW, rows + W2, t->OW * sizeof(T));               \
            }                                                                       \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* d[k][o][col + tile] = (A g A^T)[k] for every 2x2 tile g of image dy, o < O: the \
   adjoint of fastbn_winograd_output.  Planes with an odd side go through pad      \
   (2 TH x 2 TW, zero outside the plane's place). */                               \
static FASTBN_DISPATCH void fastbn_winograd_grads_##T(                             \
        const T* dy, ptrdiff_t O, const fastbn_tiles* t, ptrdiff_t col, T* pad,     \
        T* d) {                                                                     \
    ptrdiff_t W2 = 2 * t->TW;                                                       \
    int even = W2 == t->OW && 2 * t->TH == t->OH;                                   \
    for (ptrdiff_t o = 0; o < O; o++) {                                             \
        const T* s = dy + o * t->OH * t->OW;                                        \
        if (!even) {                                                                \
            for (ptrdiff_t r = 0; r < t->OH; r++)                                   \
                memcpy(pad + r * W2, s + r * t->OW, t->OW * sizeof(T));             \
            s = pad;                                                                \
        }                                                                           \
        for (ptrdiff_t ty = 0; ty < t->TH; ty++)                                    \
            fastbn_winograd_grad_##T(s + 2 * ty * W2, s + (2 * ty + 1) * W2, t->TW, \
                                     d + o * t->cols + col + ty * t->TW, O * t->cols); \
    }                                                                               \
}

FASTBN_WINOGRAD_LOOPS(float)
FASTBN_WINOGRAD_LOOPS(double)

#endif
