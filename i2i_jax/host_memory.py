"""The process's host memory: returns what it has freed to the operating system, and reads
its peak.

glibc's malloc keeps freed heap memory for reuse rather than giving it back. Building the
train state and compiling the step free several hundred MB that the step itself never needs
again (0.5 to 0.9 GB at 256 px), which would otherwise stay in the process's resident memory
for the whole run. `malloc_trim` hands it back, or tcmalloc's own call where that is the
allocator.
"""

import ctypes
import ctypes.util
import functools
import resource
import sys


@functools.cache
def _malloc_trim():
    """glibc's `malloc_trim`, or None where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    library = ctypes.CDLL(name) if name else None
    return getattr(library, "malloc_trim", None)


@functools.cache
def tcmalloc_release():
    """tcmalloc's `MallocExtension_ReleaseFreeMemory` where tcmalloc is this process's
    allocator (see `allocator`), else None: glibc's `malloc_trim` cannot reach its memory."""
    return getattr(ctypes.CDLL(None), "MallocExtension_ReleaseFreeMemory", None)


def release_freed_memory() -> bool:
    """Gives freed heap memory back to the OS; True if there was some to give back (always
    True under tcmalloc, which does not say)."""
    release = tcmalloc_release()
    if release:
        release()
        return True
    trim = _malloc_trim()
    return bool(trim and trim(0))


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports kilobytes, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024 if sys.platform == "darwin" else 1024)
