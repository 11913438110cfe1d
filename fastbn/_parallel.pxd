# fastbn's thread team (_parallel.h says how it works): every parallel kernel
# is a sequence of parallel_for loops over work units fixed by the shape.

# fn(ctx, begin, end, slot): run units begin to end - 1; slot (< nthreads)
# indexes per-thread scratch.
# A kernel passes its call's arguments as a struct (ctx); a unit function copies
# it into a local first: the extensions build with -fno-strict-aliasing (as
# Python's flags say), so through a pointer the compiler must assume that every
# store to the data may change the struct's fields, and reloads them in inner
# loops (im2col's 32->64 forward ran 8% slower).
ctypedef void (*unit_fn)(void* ctx, Py_ssize_t begin, Py_ssize_t end,
                        int slot) noexcept nogil

cdef void parallel_for(Py_ssize_t units, int nthreads, unit_fn fn, void* ctx) noexcept nogil
