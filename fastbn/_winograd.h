/* Winograd F(2x2, 3x3) and F(4x4, 3x3) tile transforms of _winograd.pyx (C for
   `omp simd` and the runtime dispatch of _dispatch.h), per image.

   An F(m x m, 3x3) tile is a x a inputs (a = m + 2) for m x m outputs.  Each
   transform is separable, a 1-D transform along the rows of a tile and one
   along its columns, and each 1-D pass is a unit-stride loop the compiler
   vectorizes (16 floats per AVX-512 instruction), whatever the plane's width
   (only the transposes into and out of that order read or write with a
   stride):
   - input (B^T d B) and output (A^T M A): over lanes of FASTBN_WINO_LANES
     channels, the planes transposed so a position's channels lie contiguous;
   - gradient (A g A^T): over the tiles of a plane, after de-interleaving the
     m x m phases of the gradient's plane.

   Layouts (as the GEMMs of _winograd.pyx want them), k = a i + j < a^2, with
   `cols` tiles per row (a chunk of images); one image's tiles start at col:
   V[k][col + tile][c] (Cp channels) and M[k][col + tile][o] (Op outputs),
   D[k][o][col + tile].
   Each function is written once for float and double and for m = 2 and 4
   (FASTBN_WINOGRAD_LOOPS); a call's `m` picks the pair. */
#ifndef FASTBN_WINOGRAD_H
#define FASTBN_WINOGRAD_H
#include <string.h>
#include "_dispatch.h"

/* Channels the input transform handles at once: one AVX-512 vector of floats. */
#define FASTBN_WINO_LANES 16

typedef struct {
    ptrdiff_t H, W, ph, pw;    /* input plane, and its padding */
    ptrdiff_t OH, OW;          /* output plane */
    ptrdiff_t m, a;            /* output tile side (2 or 4); input tile side m + 2 */
    ptrdiff_t TH, TW, T;       /* tiles: rows, columns, per plane */
    ptrdiff_t Cp, Op;          /* input and output channels, padded to a multiple of
                                  the lanes: the rows of V and of the products */
    ptrdiff_t nb, cols;        /* images per chunk; tiles per chunk: a V or M row */
} fastbn_tiles;

/* Values of scratch each function below needs (per thread). */
static inline ptrdiff_t fastbn_winograd_input_scratch(const fastbn_tiles* t) {
    return ((t->TH * t->m + 2) * (t->TW * t->m + 2) + t->a * t->a * t->TW)
           * FASTBN_WINO_LANES;
}
static inline ptrdiff_t fastbn_winograd_output_scratch(const fastbn_tiles* t) {
    ptrdiff_t lanes = t->m * (t->a + t->m) * t->TW * FASTBN_WINO_LANES;
    ptrdiff_t grads = t->m * (t->a + t->m) * t->T;
    return lanes > grads ? lanes : grads;
}

/* dst[j * ds + i] = src[i * ss + j] for i < rows, j < cols: the moves between a
   plane's positions and a tile's lanes.  Blocks of K x K values (K: a 32-byte
   vector's, 8 floats or 4 doubles) go through registers, K loads, shuffles and K
   stores, where a strided loop moved one value at a time (gathers built lane by
   lane: on ResNet-20 the two moves had taken 18% of a training step); edges one
   value at a time.  Data movement only: the same bits on every path. */
#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define FASTBN_SHUFFLE 1
#endif
#endif
#if defined(FASTBN_SHUFFLE)
typedef float fastbn_v8f __attribute__((vector_size(32)));
typedef double fastbn_v4d __attribute__((vector_size(32)));
#define FASTBN_BLOCK_float 8
#define FASTBN_BLOCK_double 4
/* inlined into each clone of the caller, so compiled for its ISA */
static inline __attribute__((always_inline)) void fastbn_block_float(
        const float* src, ptrdiff_t ss, float* dst, ptrdiff_t ds) {
    fastbn_v8f r[8], t[8], u[8];
    for (int i = 0; i < 8; i++)
        memcpy(&r[i], src + i * ss, sizeof(fastbn_v8f));
    for (int i = 0; i < 8; i += 2) {  /* pairs of rows interleaved */
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 8, 1, 9, 4, 12, 5, 13);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 2, 10, 3, 11, 6, 14, 7, 15);
    }
    for (int i = 0; i < 8; i += 4)    /* then pairs of pairs */
        for (int h = 0; h < 2; h++) {
            u[i + h] = __builtin_shufflevector(t[i + h], t[i + h + 2],
                                               0, 1, 8, 9, 4, 5, 12, 13);
            u[i + h + 2] = __builtin_shufflevector(t[i + h], t[i + h + 2],
                                                   2, 3, 10, 11, 6, 7, 14, 15);
        }
    /* u[0..3]: columns 0, 2, 1, 3 (low halves) and 4, 6, 5, 7 (high) of rows 0-3 */
    static const int col[4] = {0, 2, 1, 3};
    for (int k = 0; k < 4; k++) {
        fastbn_v8f lo = __builtin_shufflevector(u[k], u[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
        fastbn_v8f hi = __builtin_shufflevector(u[k], u[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
        memcpy(dst + col[k] * ds, &lo, sizeof lo);
        memcpy(dst + (col[k] + 4) * ds, &hi, sizeof hi);
    }
}
static inline __attribute__((always_inline)) void fastbn_block_double(
        const double* src, ptrdiff_t ss, double* dst, ptrdiff_t ds) {
    fastbn_v4d r[4], t[4];
    for (int i = 0; i < 4; i++)
        memcpy(&r[i], src + i * ss, sizeof(fastbn_v4d));
    for (int i = 0; i < 4; i += 2) {
        t[i] = __builtin_shufflevector(r[i], r[i + 1], 0, 4, 2, 6);
        t[i + 1] = __builtin_shufflevector(r[i], r[i + 1], 1, 5, 3, 7);
    }
    /* t[0], t[2]: columns 0 and 2 of rows 0-1, 2-3; t[1], t[3]: columns 1 and 3 */
    for (int k = 0; k < 2; k++) {
        fastbn_v4d lo = __builtin_shufflevector(t[k], t[k + 2], 0, 1, 4, 5);
        fastbn_v4d hi = __builtin_shufflevector(t[k], t[k + 2], 2, 3, 6, 7);
        memcpy(dst + k * ds, &lo, sizeof lo);
        memcpy(dst + (k + 2) * ds, &hi, sizeof hi);
    }
}
#define FASTBN_TRANSPOSE_BLOCKS(FT)                                                 \
    enum { K = FASTBN_BLOCK_##FT };                                                 \
    for (; i0 + K <= rows; i0 += K) {                                               \
        ptrdiff_t j = 0;                                                            \
        for (; j + K <= cols; j += K)                                               \
            fastbn_block_##FT(src + i0 * ss + j, ss, dst + j * ds + i0, ds);        \
        for (; j < cols; j++)                                                       \
            for (ptrdiff_t i = i0; i < i0 + K; i++)                                 \
                dst[j * ds + i] = src[i * ss + j];                                  \
    }
#else
#define FASTBN_TRANSPOSE_BLOCKS(FT)
#endif
#define FASTBN_TRANSPOSE(FT)                                                        \
static inline void fastbn_transpose_##FT(const FT* src, ptrdiff_t ss, FT* dst,      \
                                         ptrdiff_t ds, ptrdiff_t rows, ptrdiff_t cols) { \
    ptrdiff_t i0 = 0;                                                               \
    FASTBN_TRANSPOSE_BLOCKS(FT)                                                     \
    for (ptrdiff_t i = i0; i < rows; i++)                                           \
        for (ptrdiff_t j = 0; j < cols; j++)                                        \
            dst[j * ds + i] = src[i * ss + j];                                      \
}
FASTBN_TRANSPOSE(float)
FASTBN_TRANSPOSE(double)

/* The 1-D transforms of F(2x2, 3x3) (Lavin & Gray 2016): B^T (4 x 4), A^T (2 x 4),
   and A (4 x 2) for the gradient; x and y are distinct arrays. */
#define FASTBN_WINO2_BT(d, v) do {                                                  \
    v[0] = d[0] - d[2]; v[1] = d[1] + d[2]; v[2] = d[2] - d[1]; v[3] = d[1] - d[3]; \
} while (0)
#define FASTBN_WINO2_AT(q, y) do {                                                  \
    y[0] = q[0] + q[1] + q[2]; y[1] = q[1] - q[2] - q[3];                           \
} while (0)
#define FASTBN_WINO2_A(g, v) do {                                                   \
    v[0] = g[0]; v[1] = g[0] + g[1]; v[2] = g[0] - g[1]; v[3] = -g[1];              \
} while (0)
/* F(4x4, 3x3), interpolation points 0, +-1, +-2 and infinity. */
#define FASTBN_WINO4_BT(d, v) do {                                                  \
    v[0] = 4 * d[0] - 5 * d[2] + d[4];                                              \
    v[1] = d[3] + d[4] - 4 * (d[1] + d[2]);                                         \
    v[2] = d[4] - d[3] + 4 * (d[1] - d[2]);                                         \
    v[3] = d[4] - d[2] + 2 * (d[3] - d[1]);                                         \
    v[4] = d[4] - d[2] + 2 * (d[1] - d[3]);                                         \
    v[5] = 4 * d[1] - 5 * d[3] + d[5];                                              \
} while (0)
#define FASTBN_WINO4_AT(q, y) do {                                                  \
    y[0] = q[0] + (q[1] + q[2]) + (q[3] + q[4]);                                    \
    y[1] = (q[1] - q[2]) + 2 * (q[3] - q[4]);                                       \
    y[2] = (q[1] + q[2]) + 4 * (q[3] + q[4]);                                       \
    y[3] = (q[1] - q[2]) + 8 * (q[3] - q[4]) + q[5];                                \
} while (0)
#define FASTBN_WINO4_A(g, v) do {                                                   \
    v[0] = g[0];                                                                    \
    v[1] = (g[0] + g[2]) + (g[1] + g[3]);                                           \
    v[2] = (g[0] + g[2]) - (g[1] + g[3]);                                           \
    v[3] = (g[0] + 4 * g[2]) + 2 * (g[1] + 4 * g[3]);                               \
    v[4] = (g[0] + 4 * g[2]) - 2 * (g[1] + 4 * g[3]);                               \
    v[5] = g[3];                                                                    \
} while (0)

#define FASTBN_WINOGRAD_LOOPS(FT, M)                                                \
/* V[k][col + tile][c] = (B^T d B)[k] for every tile of image x (C planes): rows of \
   t->Cp values, channels padded to a multiple of FASTBN_WINO_LANES.  Lanes of      \
   FASTBN_WINO_LANES channels at a time: their padded planes transposed to          \
   X[row][column][lane], then for each row of tiles B^T along the rows (into Hb)    \
   and along the columns (into V), every loop over the lanes: whole vectors,        \
   whatever the plane's size.  scratch: fastbn_winograd_input_scratch. */           \
static FASTBN_DISPATCH void fastbn_winograd##M##_input_##FT(                        \
        const FT* x, ptrdiff_t C, const fastbn_tiles* t, ptrdiff_t col, FT* scratch, \
        FT* v) {                                                                    \
    enum { A = M + 2, L = FASTBN_WINO_LANES };                                      \
    const ptrdiff_t TW = t->TW, PR = t->TW * M + 2, Cp = t->Cp;                     \
    const ptrdiff_t vs = t->cols * Cp;  /* between V's rows k */                    \
    const ptrdiff_t hw = t->H * t->W;   /* between x's planes */                    \
    FT* X = scratch;                    /* (TH M + 2) x PR x L */                   \
    FT* Hb = X + (t->TH * M + 2) * PR * L;  /* A x A x TW x L */                    \
    for (ptrdiff_t c0 = 0; c0 < C; c0 += L) {                                       \
        ptrdiff_t nc = C - c0 < L ? C - c0 : L;                                     \
        ptrdiff_t rows = t->H < t->TH * M + 2 - t->ph ? t->H : t->TH * M + 2 - t->ph; \
        ptrdiff_t w_end = t->W < PR - t->pw ? t->W : PR - t->pw;                    \
        if (nc < L) {  /* lanes past C: zeros */                                    \
            memset(X, 0, (t->TH * M + 2) * PR * L * sizeof(FT));                    \
        } else {       /* the padding around the plane */                           \
            memset(X, 0, t->ph * PR * L * sizeof(FT));                              \
            memset(X + (t->ph + rows) * PR * L, 0,                                  \
                   (t->TH * M + 2 - t->ph - rows) * PR * L * sizeof(FT));           \
            for (ptrdiff_t r = 0; r < rows; r++) {                                  \
                FT* row = X + (r + t->ph) * PR * L;                                 \
                memset(row, 0, t->pw * L * sizeof(FT));                             \
                memset(row + (t->pw + w_end) * L, 0, (PR - t->pw - w_end) * L * sizeof(FT)); \
            }                                                                       \
        }                                                                           \
        for (ptrdiff_t r = 0; r < rows; r++)  /* the planes, transposed into lanes */ \
            fastbn_transpose_##FT(x + (c0 * t->H + r) * t->W, hw,                   \
                                  X + ((r + t->ph) * PR + t->pw) * L, L, nc, w_end); \
        for (ptrdiff_t ty = 0; ty < t->TH; ty++) {                                  \
            for (int i = 0; i < A; i++) {  /* along the rows */                     \
                const FT* row = X + (ty * M + i) * PR * L;                          \
                for (ptrdiff_t q = 0; q < TW; q++) {                                \
                    const FT* in = row + q * M * L;                                 \
                    FT* FASTBN_RESTRICT out = Hb + (i * A * TW + q) * L;            \
                    FASTBN_SIMD                                                     \
                    for (ptrdiff_t l = 0; l < L; l++) {                             \
                        FT d[A], e[A];                                              \
                        for (int j = 0; j < A; j++)                                 \
                            d[j] = in[j * L + l];                                   \
                        FASTBN_WINO##M##_BT(d, e);                                  \
                        for (int j = 0; j < A; j++)                                 \
                            out[j * TW * L + l] = e[j];                             \
                    }                                                               \
                }                                                                   \
            }                                                                       \
            for (int j = 0; j < A; j++)  /* along the columns */                    \
                for (ptrdiff_t q = 0; q < TW; q++) {                                \
                    const FT* in = Hb + (j * TW + q) * L;                           \
                    FT* FASTBN_RESTRICT out = v + j * vs + (col + ty * TW + q) * Cp + c0; \
                    FASTBN_SIMD                                                     \
                    for (ptrdiff_t l = 0; l < L; l++) {                             \
                        FT d[A], e[A];                                              \
                        for (int i = 0; i < A; i++)                                 \
                            d[i] = in[i * A * TW * L + l];                          \
                        FASTBN_WINO##M##_BT(d, e);                                  \
                        for (int i = 0; i < A; i++)                                 \
                            out[i * A * vs + l] = e[i];                             \
                    }                                                               \
                }                                                                   \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* y[o] = A^T m[:, col + tile, o] A + bias[o] (bias NULL: 0), o < O, for every      \
   tile of image y: m's rows k are cols x t->Op (outputs padded to a multiple of    \
   the lanes).  Lanes of FASTBN_WINO_LANES outputs at a time, a row of tiles at a   \
   time: A^T down the columns (into S), along the rows (into Yb), then each         \
   output row gathered from its lane.  scratch: fastbn_winograd_output_scratch. */  \
static FASTBN_DISPATCH void fastbn_winograd##M##_output_##FT(                       \
        const FT* m, ptrdiff_t O, const fastbn_tiles* t, ptrdiff_t col,             \
        const FT* bias, FT* y, FT* scratch) {                                       \
    enum { A = M + 2, L = FASTBN_WINO_LANES };                                      \
    const ptrdiff_t TW = t->TW, Op = t->Op, ms = t->cols * Op;                      \
    FT* S = scratch;              /* S[r][j][q][lane] */                            \
    FT* Yb = S + M * A * TW * L;  /* Yb[r][q M + p][lane]: a row of tiles' outputs */ \
    FT b[L];                                                                        \
    for (ptrdiff_t o0 = 0; o0 < O; o0 += L) {                                       \
        ptrdiff_t no = O - o0 < L ? O - o0 : L;                                     \
        for (ptrdiff_t l = 0; l < L; l++)                                           \
            b[l] = bias != NULL && l < no ? bias[o0 + l] : (FT)0;                   \
        for (ptrdiff_t ty = 0; ty < t->TH; ty++) {                                  \
            for (int j = 0; j < A; j++)                                             \
                for (ptrdiff_t q = 0; q < TW; q++) {                                \
                    const FT* in = m + j * ms + (col + ty * TW + q) * Op + o0;      \
                    FT* FASTBN_RESTRICT out = S + (j * TW + q) * L;                 \
                    FASTBN_SIMD                                                     \
                    for (ptrdiff_t l = 0; l < L; l++) {                             \
                        FT d[A], e[M];                                              \
                        for (int i = 0; i < A; i++)                                 \
                            d[i] = in[i * A * ms + l];                              \
                        FASTBN_WINO##M##_AT(d, e);                                  \
                        for (int r = 0; r < M; r++)                                 \
                            out[r * A * TW * L + l] = e[r];                         \
                    }                                                               \
                }                                                                   \
            for (int r = 0; r < M; r++)                                             \
                for (ptrdiff_t q = 0; q < TW; q++) {                                \
                    const FT* in = S + (r * A * TW + q) * L;                        \
                    FT* FASTBN_RESTRICT out = Yb + (r * TW + q) * M * L;            \
                    FASTBN_SIMD                                                     \
                    for (ptrdiff_t l = 0; l < L; l++) {                             \
                        FT d[A], e[M];                                              \
                        for (int j = 0; j < A; j++)                                 \
                            d[j] = in[j * TW * L + l];                              \
                        FASTBN_WINO##M##_AT(d, e);                                  \
                        for (int p = 0; p < M; p++)                                 \
                            out[p * L + l] = e[p] + b[l];                           \
                    }                                                               \
                }                                                                   \
            for (int r = 0; r < M && ty * M + r < t->OH; r++)  /* lanes to planes */ \
                fastbn_transpose_##FT(Yb + r * TW * M * L, L,                       \
                                      y + (o0 * t->OH + ty * M + r) * t->OW,          \
                                      t->OH * t->OW, t->OW, no);                    \
        }                                                                           \
    }                                                                               \
}                                                                                   \
                                                                                    \
/* d[k][o][col + tile] = (A g A^T)[k] for every m x m tile g of image dy (zero      \
   past its edges), o < O: the adjoint of the output transform.                     \
   scratch: fastbn_winograd_output_scratch. */                                      \
static FASTBN_DISPATCH void fastbn_winograd##M##_grads_##FT(                        \
        const FT* dy, ptrdiff_t O, const fastbn_tiles* t, ptrdiff_t col, FT* scratch, \
        FT* d) {                                                                    \
    enum { A = M + 2 };                                                             \
    const ptrdiff_t Tn = t->T, TW = t->TW, ds = O * t->cols;                        \
    FT* G = scratch;             /* G[r][p][tile]: the gradient, by phase */        \
    FT* E = G + M * M * Tn;      /* E[r][j][tile]: A applied along the rows */      \
    ptrdiff_t full = t->OW / M;                                                     \
    for (ptrdiff_t o = 0; o < O; o++) {                                             \
        for (ptrdiff_t ty = 0; ty < t->TH; ty++) {  /* de-interleave the phases */  \
            for (int r = 0; r < M; r++) {                                           \
                FT* FASTBN_RESTRICT dst = G + r * M * Tn + ty * TW;                 \
                if (ty * M + r >= t->OH) {                                          \
                    for (int p = 0; p < M; p++)                                     \
                        memset(dst + p * Tn, 0, TW * sizeof(FT));                   \
                    continue;                                                       \
                }                                                                   \
                const FT* src = dy + (o * t->OH + ty * M + r) * t->OW;              \
                for (ptrdiff_t tx = 0; tx < full; tx++)                             \
                    for (int p = 0; p < M; p++)                                     \
                        dst[p * Tn + tx] = src[tx * M + p];                         \
                for (ptrdiff_t c = full * M; c < TW * M; c++)                       \
                    dst[(c % M) * Tn + c / M] = c < t->OW ? src[c] : (FT)0;         \
            }                                                                       \
        }                                                                           \
        for (int r = 0; r < M; r++) {                                               \
            const FT* in = G + r * M * Tn;                                          \
            FT* FASTBN_RESTRICT out = E + r * A * Tn;                               \
            FASTBN_SIMD                                                             \
            for (ptrdiff_t g = 0; g < Tn; g++) {                                    \
                FT q[M], e[A];                                                      \
                for (int p = 0; p < M; p++)                                         \
                    q[p] = in[p * Tn + g];                                          \
                FASTBN_WINO##M##_A(q, e);                                           \
                for (int j = 0; j < A; j++)                                         \
                    out[j * Tn + g] = e[j];                                         \
            }                                                                       \
        }                                                                           \
        for (int j = 0; j < A; j++) {                                               \
            const FT* in = E + j * Tn;                                              \
            FT* FASTBN_RESTRICT out = d + j * ds + o * t->cols + col;               \
            FASTBN_SIMD                                                             \
            for (ptrdiff_t g = 0; g < Tn; g++) {                                    \
                FT q[M], e[A];                                                      \
                for (int r = 0; r < M; r++)                                         \
                    q[r] = in[r * A * Tn + g];                                      \
                FASTBN_WINO##M##_A(q, e);                                           \
                for (int i = 0; i < A; i++)                                         \
                    out[i * A * ds + g] = e[i];                                     \
            }                                                                       \
        }                                                                           \
    }                                                                               \
}

FASTBN_WINOGRAD_LOOPS(float, 2)
FASTBN_WINOGRAD_LOOPS(double, 2)
FASTBN_WINOGRAD_LOOPS(float, 4)
FASTBN_WINOGRAD_LOOPS(double, 4)

#endif
