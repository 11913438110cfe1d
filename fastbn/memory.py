"""A caching allocator for NumPy's large arrays, installed when fastbn is imported.

Training allocates and frees the same large temporaries every step; without a
cache, glibc gives them back to the system and every step faults every page in
again (the small convnet's step: 10,000 page faults, 51 ms; with the cache: 6,
29 ms).  Freed blocks of 256 KiB or more are kept, up to a limit (512 MiB by
default), and reused for arrays of the same size.  New blocks of that size start
on a 64-byte cache line (NumPy's own start 16 bytes into one), which the
BatchNorm passes read faster.

NumPy keeps the allocator in a context variable (NEP 49): ``import fastbn``
installs it in the importing context (the main thread's, usually); threads
started later use NumPy's default unless they call :func:`enable`.  Set
``FASTBN_CACHING_ALLOCATOR=0`` to leave NumPy's allocator alone.
"""
import os

from . import _alloc

__all__ = ["enable", "disable", "is_enabled", "empty_cache", "cache_info", "set_cache_limit"]

DEFAULT_LIMIT = 512 << 20


def enable():
    """Use the caching allocator for arrays created from now on in this context."""
    _alloc.set_handler(True)


def disable():
    """Back to NumPy's default allocator in this context; frees the cached blocks
    (arrays already allocated from the cache are freed normally)."""
    _alloc.set_handler(False)
    _alloc.empty()


def is_enabled():
    return _alloc.handler_is_installed()


def empty_cache():
    """Free every cached block (like torch.cuda.empty_cache)."""
    _alloc.empty()


def set_cache_limit(nbytes):
    """Keep at most ``nbytes`` of freed blocks (0: keep none)."""
    if isinstance(nbytes, bool) or not isinstance(nbytes, int) or nbytes < 0:
        raise ValueError(f"the cache limit must be a non-negative int of bytes, got {nbytes!r}")
    _alloc.set_limit(nbytes)


def cache_info():
    """``{"limit", "cached", "hits", "misses"}``: bytes, and large-block requests
    served from the cache or not since the process started."""
    limit, held, hits, misses = _alloc.info()
    return {"limit": limit, "cached": held, "hits": hits, "misses": misses}


_alloc.set_limit(DEFAULT_LIMIT)
if os.environ.get("FASTBN_CACHING_ALLOCATOR", "1") != "0":
    enable()
