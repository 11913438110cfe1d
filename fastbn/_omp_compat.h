/* OpenMP runtime calls with serial stand-ins, so every .pyx compiles with or
   without -fopenmp (the build falls back to serial where OpenMP is missing). */
#ifndef FASTBN_OMP_COMPAT_H
#define FASTBN_OMP_COMPAT_H
#ifdef _OPENMP
#include <omp.h>
#define FASTBN_OPENMP 1
#define FASTBN_OPENMP_VERSION _OPENMP
#else
#define FASTBN_OPENMP 0
#define FASTBN_OPENMP_VERSION 0
static inline int omp_get_max_threads(void) { return 1; }
static inline int omp_get_num_procs(void) { return 1; }
#endif
/* threads of the current team; a barrier for them (an orphaned `omp barrier`:
   kernels run their phases in one parallel region) */
static inline int fastbn_team_size(void) {
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}
static inline void fastbn_barrier(void) {
#ifdef _OPENMP
#pragma omp barrier
#endif
}
#ifndef FASTBN_BUILD_FLAGS
#define FASTBN_BUILD_FLAGS ""
#endif
#endif
