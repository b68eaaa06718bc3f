"""The host allocator: training and timed processes run under gperftools' tcmalloc where the
machine has it (Debian/Ubuntu: `apt install libtcmalloc-minimal4`).

XLA:CPU allocates the buffers of every step afresh and frees them after it: about 1 GB a
Pix2Pix 256 step at batch 4. glibc's malloc serves every block over 32 MB with a fresh `mmap`
and unmaps it when freed, so each step faults its whole scratch memory in again (300 k page
faults a step, every page zeroed by the kernel). tcmalloc, the allocator XLA is built and tuned
with at Google, keeps freed spans for the next step: under 1 k faults a step, and the step
about a quarter faster (docs/performance.md). Freed memory still goes back to the OS when the
process asks (`host_memory.release_freed_memory`) and gradually otherwise.

Every model gains at the same or lower peak RSS (CycleGAN's 64-px synthetic step 310 against
410 ms). That needs XLA:CPU's calls to run inline (`host_memory.run_cpu_calls_inline`): with
async dispatch the next step sometimes allocated its scratch before the last one had freed its
own, tcmalloc took a second span for it, and both stayed resident (CycleGAN 128 3.06 against
2.13 GB), which had kept CycleGAN on glibc. `$I2I_JAX_MALLOC=system` keeps the C library's
malloc; `auto` (the default) and `tcmalloc` take tcmalloc where the machine has it.

The allocator is chosen when a process starts (the dynamic loader's LD_PRELOAD), so
`python -m i2i_jax.main` replaces itself, same PID, same arguments, by itself under tcmalloc
before it imports anything heavy.
"""

import ctypes
import ctypes.util
import os
import sys

from i2i_jax import host_memory
from i2i_jax.errors import UsageError

ENVIRONMENT_VARIABLE = "I2I_JAX_MALLOC"
CHOICES = ("auto", "tcmalloc", "system")
# How eagerly tcmalloc hands freed spans back to the OS (gperftools' default 1). The tables
# in docs/performance.md ran at 10; Pix2Pix 256 b4 peaked at 2.1 GB at either rate.
_RELEASE_RATE = "10"
_LIBRARIES = ("tcmalloc_minimal", "tcmalloc")  # gperftools' library names, leanest first.
_REEXECUTED = "I2I_JAX_MALLOC_REEXECUTED"  # Set in the replaced process: never loops.
INSTALL_HINT = "apt install libtcmalloc-minimal4 (Debian/Ubuntu) or gperftools"


def choice(environ=os.environ) -> str:
    value = environ.get(ENVIRONMENT_VARIABLE, "auto")
    if value not in CHOICES:
        raise UsageError(
            f"${ENVIRONMENT_VARIABLE}={value!r} is not one of {CHOICES}.\n"
            f"Fix: export {ENVIRONMENT_VARIABLE}=tcmalloc or {ENVIRONMENT_VARIABLE}=system, or "
            "unset it (auto: tcmalloc where the machine has it)"
        )
    return value


def wants_tcmalloc(environ=os.environ) -> bool:
    """Whether a training or timed process should run under tcmalloc."""
    return choice(environ) != "system"


def tcmalloc_library() -> str | None:
    """The soname of gperftools' tcmalloc as the dynamic loader finds it, or None."""
    for name in _LIBRARIES:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def tcmalloc_loaded() -> bool:
    """Whether this process allocates through tcmalloc."""
    return host_memory.tcmalloc_release() is not None


def environment(environ=os.environ) -> dict[str, str]:
    """`environ` for a training or timed process: where it should run under tcmalloc and
    tcmalloc is found, LD_PRELOAD names it (and TCMALLOC_RELEASE_RATE is set, unless given);
    else unchanged."""
    env = dict(environ)
    library = tcmalloc_library() if wants_tcmalloc(environ) else None
    if library is None or preloads_tcmalloc(env):
        return env
    env["LD_PRELOAD"] = f"{library} {env.get('LD_PRELOAD', '')}".strip()
    env.setdefault("TCMALLOC_RELEASE_RATE", _RELEASE_RATE)
    return env


def preloads_tcmalloc(env: dict[str, str]) -> bool:
    """Whether a process started with `env` runs under tcmalloc."""
    return "tcmalloc" in env.get("LD_PRELOAD", "")


def run_under_tcmalloc() -> None:
    """Replaces this process by the same command under tcmalloc (`os.execve`: the PID, the
    arguments and the rest of the environment stay) where `environment` asks for it, unless
    tcmalloc is loaded already or this process is that replacement."""
    if tcmalloc_loaded() or os.environ.get(_REEXECUTED):
        return
    env = environment()
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        return
    env[_REEXECUTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def describe() -> str:
    """One log line: which allocator this process runs, and how to get tcmalloc where it
    would run under it but does not."""
    if tcmalloc_loaded():
        return "host allocator: tcmalloc"
    if not wants_tcmalloc():
        return f"host allocator: the C library's malloc (${ENVIRONMENT_VARIABLE}={choice()})"
    return (
        "host allocator: the C library's malloc (tcmalloc not found; XLA:CPU's steps run "
        f"faster under it: {INSTALL_HINT})"
    )
