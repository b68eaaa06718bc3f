"""Freed heap memory goes back to the OS, under glibc's malloc and under tcmalloc, shrinking
the process's resident memory."""

import json
import os
import subprocess
import sys

import pytest

from i2i_jax import allocator

# Run in a fresh interpreter: the test process's own heap (and its malloc tuning, after the
# other tests' large allocations) would blur the figures.
_PROGRAM = """
import ctypes, json
from i2i_jax import host_memory

def resident_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS:"))

libc = ctypes.CDLL(None)  # The process's malloc: tcmalloc's where it is preloaded.
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
# 200 MB in blocks below glibc's mmap threshold, so they live on the heap; the last one
# stays, so that free() cannot simply shrink the heap's top.
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
@pytest.mark.parametrize("malloc", ["system", "tcmalloc"])
def test_release_returns_freed_heap_memory_to_the_os(malloc):
    if malloc == "tcmalloc" and allocator.tcmalloc_library() is None:
        pytest.skip(f"tcmalloc is not installed ({allocator.INSTALL_HINT})")
    env = allocator.environment({**os.environ, allocator.ENVIRONMENT_VARIABLE: malloc})
    output = subprocess.run(
        [sys.executable, "-c", _PROGRAM], check=True, capture_output=True, text=True, env=env
    ).stdout
    figures = json.loads(output)
    assert figures["released"]
    assert figures["freed"] - figures["after"] > 150, figures


_CALL_PROGRAM = """
import json, sys
import jax, jax.numpy as jnp
from i2i_jax import host_memory

if sys.argv[1] == "inline":
    host_memory.run_cpu_calls_inline()
chain = jax.jit(lambda x: ((x @ x) @ x) @ x)  # About 0.1 s of work.
x = jnp.full((1024, 1024), 1 / 1024)
chain(x).block_until_ready()
print(json.dumps(chain(x).is_ready()))
"""


@pytest.mark.parametrize("dispatch", ["inline", "async"])
def test_inline_calls_return_finished_and_async_ones_before(dispatch):
    """Inline, a call has run (and freed its scratch) when it returns; JAX's default returns
    first. The memory this saves is measured by the benchmark (docs/performance.md)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    output = subprocess.run(
        [sys.executable, "-c", _CALL_PROGRAM, dispatch],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    assert json.loads(output) is (dispatch == "inline")
