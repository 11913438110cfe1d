cdef int effective_threads(int requested) noexcept nogil
