"""The process's host memory: returns what it has freed to the operating system, has XLA:CPU
free each step's scratch before the next step takes its own, and reads the peak.

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


def run_cpu_calls_inline() -> None:
    """Has XLA:CPU run one-device computations on the calling thread (JAX's CPU async dispatch
    off), so that a call frees its scratch buffer before it returns.

    With async dispatch, XLA:CPU frees a step's scratch on its worker thread after it has marked
    the outputs ready, and the next step can allocate its own scratch first. Under tcmalloc that
    second block comes from a second span, and both then stay resident: Pix2Pix 256 at batch 4
    peaked at 2.81 GB instead of 2.07 in some runs, CycleGAN 128 at 3.06 GB instead of 2.13.
    Steps take as long either way (docs/performance.md), and JAX releases the GIL while they
    run. Call it before JAX creates its CPU backend; it changes nothing after.
    """
    import jax  # Not at the top: `allocator` imports this module before the heavy imports.

    jax.config.update("jax_cpu_enable_async_dispatch", False)
