/* What the C loops (_simd.h, _winograd.h, _activation.h) share: runtime
   dispatch, the spellings of `restrict` and `omp simd`, and the ReLU.
   - target_clones: the wheel is built for baseline x86-64 (SSE2), and each
     loop also gets AVX2 and AVX-512 versions, picked once at load time for
     the CPU it runs on.  Same CPU, same code: results do not depend on the
     thread count.
   - `omp simd` is honoured without an OpenMP runtime (setup.py adds
     -fopenmp-simd), so the serial build vectorizes too. */
#ifndef FASTBN_DISPATCH_H
#define FASTBN_DISPATCH_H
#include <stddef.h>

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && \
    !defined(FASTBN_NO_DISPATCH)
#define FASTBN_DISPATCH __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FASTBN_DISPATCH
#endif

#if defined(_MSC_VER)  /* MSVC's C has neither `restrict` nor (older) _Pragma */
#define FASTBN_RESTRICT __restrict
#define FASTBN_SIMD __pragma(omp simd)
#else
#define FASTBN_RESTRICT restrict
#define FASTBN_SIMD _Pragma("omp simd")
#endif

/* relu(v) that keeps a NaN, as PyTorch's: the fused BN+ReLU's and ReLU's */
#define FASTBN_RELU(v) ((v) < 0 ? 0 : (v))

#endif
