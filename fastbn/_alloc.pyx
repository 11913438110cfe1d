"""A caching NumPy data allocator (NEP 49) for large arrays.

A training step allocates and frees the same large temporaries (activations,
im2col columns, gradients) every step.  glibc serves such blocks with fresh
mmap'd pages or trims its heap between steps, so every step faults every page
in again: 10,000 page faults and ~40% of the small convnet's step time here.
This handler keeps freed blocks of at least MIN_BLOCK bytes, up to a byte
limit, and hands them out again for requests of the same page-rounded size.

New large blocks are aligned to a cache line (NumPy's own allocator gives 16
bytes): a 64-byte vector load from an array 16 bytes off a line spans two
lines: BatchNorm forward+backward ran 4-15% slower on such arrays.
Blocks come from posix_memalign, malloc or calloc and go back to free, so
realloc works on them as is.  A lock guards the cache: NumPy may free arrays
from any thread.
"""
cimport numpy as cnp
from cpython.object cimport PyObject
from cpython.pycapsule cimport PyCapsule_New
from cpython.pythread cimport (PyThread_type_lock, PyThread_allocate_lock,
                               PyThread_acquire_lock, PyThread_release_lock, WAIT_LOCK)
from libc.stdint cimport uint8_t
from libc.stdlib cimport malloc, calloc, realloc, free
from libc.string cimport memset, strncpy

cdef extern from "numpy/arrayobject.h":
    ctypedef struct PyDataMemAllocator:
        void* ctx
        void* (*malloc)(void* ctx, size_t size) noexcept nogil
        void* (*calloc)(void* ctx, size_t nelem, size_t elsize) noexcept nogil
        void* (*realloc)(void* ctx, void* ptr, size_t new_size) noexcept nogil
        void (*free)(void* ctx, void* ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator
    object PyDataMem_SetHandler(object handler)
    object PyDataMem_GetHandler()
    PyObject* PyDataMem_DefaultHandler

cdef extern from *:
    """
    #include <stdlib.h>
    /* a cache-line-aligned block that free() and realloc() accept */
    static void* fastbn_line_aligned(size_t size) {
    #if defined(_WIN32)
        return malloc(size);   /* _aligned_malloc's blocks need _aligned_free */
    #else
        void* p;
        return posix_memalign(&p, 64, size) == 0 ? p : NULL;
    #endif
    }
    """
    void* fastbn_line_aligned(size_t size) nogil

cnp.import_array()

cdef enum:
    MIN_BLOCK = 1 << 18   # smaller blocks come from malloc's own free lists
    PAGE = 4096
    SLOTS = 128           # cached blocks at most (a step has a few dozen large temporaries)

cdef struct Cache:
    size_t limit          # bytes kept at most
    size_t held           # bytes kept now
    size_t hits, misses
    size_t sizes[SLOTS]   # 0: an empty slot
    void* blocks[SLOTS]
    size_t ages[SLOTS]    # when the slot was filled: the oldest is dropped first
    size_t clock

cdef Cache _cache
cdef PyThread_type_lock _lock = PyThread_allocate_lock()
cdef PyDataMem_Handler _handler


cdef inline size_t _rounded(size_t size) noexcept nogil:
    return (size + PAGE - 1) // PAGE * PAGE


cdef void* _take(size_t size) noexcept nogil:
    """A cached block of this rounded size, or NULL."""
    cdef int i
    cdef void* p = NULL
    PyThread_acquire_lock(_lock, WAIT_LOCK)
    for i in range(SLOTS):
        if _cache.sizes[i] == size:
            p = _cache.blocks[i]
            _cache.sizes[i] = 0
            _cache.held -= size
            break
    if p == NULL:
        _cache.misses += 1
    else:
        _cache.hits += 1
    PyThread_release_lock(_lock)
    return p


cdef void _drop_oldest() noexcept nogil:
    """Free the oldest cached block (the lock is held)."""
    cdef int i, j = -1
    for i in range(SLOTS):
        if _cache.sizes[i] and (j < 0 or _cache.ages[i] < _cache.ages[j]):
            j = i
    free(_cache.blocks[j])
    _cache.held -= _cache.sizes[j]
    _cache.sizes[j] = 0


cdef void* _malloc(void* ctx, size_t size) noexcept nogil:
    cdef void* p
    if size < MIN_BLOCK:
        return malloc(size)
    size = _rounded(size)
    p = _take(size)
    return p if p != NULL else fastbn_line_aligned(size)


cdef void* _calloc(void* ctx, size_t nelem, size_t elsize) noexcept nogil:
    cdef size_t size
    cdef void* p
    if elsize and nelem > (<size_t>-1) // elsize:
        return NULL
    size = nelem * elsize
    if size < MIN_BLOCK:
        return calloc(nelem, elsize)
    size = _rounded(size)
    p = _take(size)
    if p == NULL:  # calloc: fresh pages come zeroed without a pass (16-byte aligned)
        return calloc(size, 1)
    memset(p, 0, size)  # one pass over warm pages beats faulting fresh ones in
    return p


cdef void* _realloc(void* ctx, void* ptr, size_t new_size) noexcept nogil:
    # a resized block leaves the cache's size classes; it is freed by size later
    return realloc(ptr, _rounded(new_size) if new_size >= MIN_BLOCK else new_size)


cdef void _free(void* ctx, void* ptr, size_t size) noexcept nogil:
    cdef int i
    if ptr == NULL:
        return
    if size < MIN_BLOCK:
        free(ptr)
        return
    size = _rounded(size)  # the size _malloc gave it
    PyThread_acquire_lock(_lock, WAIT_LOCK)
    if size > _cache.limit:
        PyThread_release_lock(_lock)
        free(ptr)
        return
    while _cache.held + size > _cache.limit:
        _drop_oldest()
    for i in range(SLOTS):
        if _cache.sizes[i] == 0:
            break
    else:
        _drop_oldest()
        for i in range(SLOTS):
            if _cache.sizes[i] == 0:
                break
    _cache.sizes[i] = size
    _cache.blocks[i] = ptr
    _cache.ages[i] = _cache.clock
    _cache.clock += 1
    _cache.held += size
    PyThread_release_lock(_lock)


def _make_handler():
    strncpy(_handler.name, b"fastbn_caching_allocator", 127)
    _handler.version = 1
    _handler.allocator.ctx = NULL
    _handler.allocator.malloc = _malloc
    _handler.allocator.calloc = _calloc
    _handler.allocator.realloc = _realloc
    _handler.allocator.free = _free
    return PyCapsule_New(&_handler, "mem_handler", NULL)


_capsule = _make_handler()


def set_handler(bint enable):
    """Install the caching handler (or NumPy's default) in the current context."""
    PyDataMem_SetHandler(_capsule if enable else <object>PyDataMem_DefaultHandler)


def handler_is_installed():
    return PyDataMem_GetHandler() is _capsule


def set_limit(size_t limit):
    """Keep at most `limit` bytes of freed blocks (0: keep none); frees the excess."""
    PyThread_acquire_lock(_lock, WAIT_LOCK)
    _cache.limit = limit
    while _cache.held > limit:
        _drop_oldest()
    PyThread_release_lock(_lock)


def info():
    """(limit, held bytes, hits, misses) of the cache."""
    return _cache.limit, _cache.held, _cache.hits, _cache.misses


def empty():
    """Free every cached block."""
    PyThread_acquire_lock(_lock, WAIT_LOCK)
    while _cache.held:
        _drop_oldest()
    PyThread_release_lock(_lock)
