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

/* AdamW, RMSprop and Adadelta follow PyTorch's single-tensor updates operation by
   operation, every hyperparameter in the parameter's type as PyTorch's scalars are:
   addcmul(s, a, b, c) = s + c * a * b, addcdiv(s, a, b, c) = s + c * a / b, and lerp
   in PyTorch's two forms (the one for its weight).  PyTorch's vector loops fuse some
   of these into FMAs, which these (-ffp-contract=off) do not: results differ from
   PyTorch's in the last bits. */
#define FASTBN_LERP(T, a, b, w)                                                        \
    ((w) < (T)0.5 && (w) > (T)-0.5 ? (a) + (w) * ((b) - (a))                          \
                                   : (b) - ((b) - (a)) * ((T)1 - (w)))

/* RMSprop's loop (below) with CENTERED and MOMENTUM fixed */
#define FASTBN_RMSPROP_LOOP(T, SQRT, CENTERED, MOMENTUM)                               \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T d = FASTBN_DECAYED(g[i], p[i], wd);                                        \
        T s = sq[i] * alpha + c * d * d;                                             \
        sq[i] = s;                                                                   \
        if (CENTERED) {                                                              \
            T a = FASTBN_LERP(T, ga[i], d, c);                                       \
            ga[i] = a;                                                               \
            s = s + (T)(-1) * a * a;                                                 \
        }                                                                            \
        T avg = SQRT(s) + eps;                                                       \
        if (MOMENTUM) {                                                              \
            T b = buf[i] * momentum + d / avg;                                       \
            buf[i] = b;                                                              \
            p[i] += neg_lr * b;                                                      \
        } else {                                                                     \
            p[i] += neg_lr * d / avg;                                                \
        }                                                                            \
    }

#define FASTBN_OPTIM_TORCH_LOOPS(T, SQRT)                                               \
/* AdamW: p *= decay (1 - lr * weight_decay); m = lerp(m, g, c1);                    \
   v = v * b2 + c2 * g * g; vmax = max(vmax, v) (amsgrad: vmax not NULL);             \
   p += neg_step * m / (sqrt(v or vmax) / bc2_sqrt + eps). */                          \
static FASTBN_DISPATCH void fastbn_adamw_##T(                                       \
        T* FASTBN_RESTRICT p, const T* FASTBN_RESTRICT g, T* FASTBN_RESTRICT m,       \
        T* FASTBN_RESTRICT v, T* FASTBN_RESTRICT vmax, ptrdiff_t n, T decay, T c1,    \
        T b2, T c2, T neg_step, T bc2_sqrt, T eps) {                                 \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T gi = g[i];                                                                 \
        T pi = decay != 1 ? p[i] * decay : p[i];                                     \
        T mi = FASTBN_LERP(T, m[i], gi, c1);                                         \
        T vi = v[i] * b2 + c2 * gi * gi;                                             \
        m[i] = mi;                                                                   \
        v[i] = vi;                                                                   \
        if (vmax != NULL) {                                                          \
            vi = vmax[i] > vi ? vmax[i] : vi;                                        \
            vmax[i] = vi;                                                            \
        }                                                                            \
        p[i] = pi + neg_step * mi / (SQRT(vi) / bc2_sqrt + eps);                     \
    }                                                                                \
}                                                                                    \
                                                                                     \
/* RMSprop: d = g + wd * p; sq = sq * alpha + c * d * d; centered (ga not NULL):     \
   ga = lerp(ga, d, c), avg = sqrt(sq - ga * ga) + eps, else sqrt(sq) + eps;          \
   momentum (buf not NULL): buf = buf * momentum + d / avg, p += neg_lr * buf;        \
   otherwise p += neg_lr * d / avg.  c = 1 - alpha.  One loop per variant: left to   \
   unswitch them, gcc kept the common one (neither) scalar, 3.7x slower. */          \
static FASTBN_DISPATCH void fastbn_rmsprop_##T(                                     \
        T* FASTBN_RESTRICT p, const T* FASTBN_RESTRICT g, T* FASTBN_RESTRICT sq,      \
        T* FASTBN_RESTRICT ga, T* FASTBN_RESTRICT buf, ptrdiff_t n, T neg_lr, T wd,   \
        T alpha, T c, T eps, T momentum) {                                           \
    if (ga == NULL && buf == NULL)                                                   \
        FASTBN_RMSPROP_LOOP(T, SQRT, 0, 0)                                           \
    else if (ga == NULL)                                                             \
        FASTBN_RMSPROP_LOOP(T, SQRT, 0, 1)                                           \
    else if (buf == NULL)                                                            \
        FASTBN_RMSPROP_LOOP(T, SQRT, 1, 0)                                           \
    else                                                                             \
        FASTBN_RMSPROP_LOOP(T, SQRT, 1, 1)                                           \
}                                                                                    \
                                                                                     \
/* Adadelta: d = g + wd * p; sq = sq * rho + c * d * d;                              \
   delta = sqrt(acc + eps) / sqrt(sq + eps) * d; acc = acc * rho + c * delta * delta; \
   p += neg_lr * delta.  c = 1 - rho. */                                              \
static FASTBN_DISPATCH void fastbn_adadelta_##T(                                    \
        T* FASTBN_RESTRICT p, const T* FASTBN_RESTRICT g, T* FASTBN_RESTRICT sq,      \
        T* FASTBN_RESTRICT acc, ptrdiff_t n, T neg_lr, T wd, T rho, T c, T eps) {     \
    FASTBN_SIMD                                                                      \
    for (ptrdiff_t i = 0; i < n; i++) {                                              \
        T d = FASTBN_DECAYED(g[i], p[i], wd);                                        \
        T s = sq[i] * rho + c * d * d;                                               \
        sq[i] = s;                                                                   \
        T delta = SQRT(acc[i] + eps) / SQRT(s + eps) * d;                            \
        acc[i] = acc[i] * rho + c * delta * delta;                                   \
        p[i] += neg_lr * delta;                                                      \
    }                                                                                \
}

FASTBN_OPTIM_TORCH_LOOPS(float, sqrtf)
FASTBN_OPTIM_TORCH_LOOPS(double, sqrt)

#endif
