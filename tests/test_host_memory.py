"""Freed heap memory goes back to the OS (glibc), shrinking the process's resident memory."""

import json
import subprocess
import sys

import pytest

# Run in a fresh interpreter: the test process's own heap (and its malloc tuning, after the
# other tests' large allocations) would blur the figures.
_PROGRAM = """
import ctypes, ctypes.util, json
from i2i_jax import host_memory

def resident_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))

libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
# 200 MB in blocks below the mmap threshold, so they live on the heap; the last one stays,
# so that free() cannot simply shrink the heap's top.
blocks = [libc.malloc(100_000) for _ in range(2001)]
for block in blocks:
    ctypes.memset(block, 1, 100_000)
for block in blocks[:-1]:
    libc.free(block)
freed = resident_mb()
released = host_memory.release_freed_memory()
print(json.dumps({"freed": freed, "released": released, "after": resident_mb()}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc and /proc only")
def test_release_returns_freed_heap_memory_to_the_os():
    output = subprocess.run(
        [sys.executable, "-c", _PROGRAM], check=True, capture_output=True, text=True
    ).stdout
    figures = json.loads(output)
    assert figures["released"]
    assert figures["freed"] - figures["after"] > 150, figures
