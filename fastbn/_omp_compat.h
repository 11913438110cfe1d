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
#ifndef FASTBN_BUILD_FLAGS
#define FASTBN_BUILD_FLAGS ""
#endif
#endif
