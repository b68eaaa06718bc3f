"""The host allocator: training and timed processes run under gperftools' tcmalloc where the
machine has it (Debian/Ubuntu: `apt install libtcmalloc-minimal4`).

XLA:CPU allocates the buffers of every step afresh and frees them after it: about 1 GB a
Pix2Pix 256 step at batch 4. glibc's malloc serves every block over 32 MB with a fresh `mmap`
and unmaps it when freed, so each step faults its whole scratch memory in again (300 k page
faults a step, every page zeroed by the kernel). tcmalloc, the allocator XLA is built and tuned
with at Google, keeps freed spans for the next step: under 1 k faults a step, and the step
about a quarter faster (docs/performance.md). Freed memory still goes back to the OS when the
process asks (`host_memory.release_freed_memory`) and gradually otherwise.

The price is memory for CycleGAN: its step's scratch block (0.73 GB at 128 px) is freed between
steps, and once a small allocation lands in the freed span the next step needs a second one
(peak RSS 2.54 GB against glibc's 1.83 at 128 px, 7.2 against 4.3 GB at 256 px, while its
steps gain only 5-10 %). So `auto` (the default) takes tcmalloc for Pix2Pix and glibc's
malloc for CycleGAN; `$I2I_JAX_MALLOC=tcmalloc` or `=system` decides for every model.

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
TCMALLOC_MODELS = ("pix2pix",)  # The models `auto` runs under tcmalloc (see above).
# How eagerly tcmalloc hands freed spans back to the OS (gperftools' default 1). The tables
# in docs/performance.md ran at 10; Pix2Pix 256 b4 peaked at 2.1 GB at either rate, and no
# rate (1, 10, 100) kept CycleGAN from taking its second scratch span.
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
            "unset it (auto: tcmalloc for Pix2Pix, the C library's malloc for CycleGAN)"
        )
    return value


def wants_tcmalloc(model: str | None, environ=os.environ) -> bool:
    """Whether a process training `model` (None: not known) should run under tcmalloc."""
    value = choice(environ)
    return value == "tcmalloc" or (value == "auto" and model in TCMALLOC_MODELS)


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


def environment(model: str | None, environ=os.environ) -> dict[str, str]:
    """`environ` for a process training `model`: where it should run under tcmalloc and
    tcmalloc is found, LD_PRELOAD names it (and TCMALLOC_RELEASE_RATE is set, unless given);
    else unchanged."""
    env = dict(environ)
    library = tcmalloc_library() if wants_tcmalloc(model, environ) else None
    preloaded = env.get("LD_PRELOAD", "")
    if library is None or "tcmalloc" in preloaded:
        return env
    env["LD_PRELOAD"] = f"{library} {preloaded}".strip()
    env.setdefault("TCMALLOC_RELEASE_RATE", _RELEASE_RATE)
    return env


def run_under_tcmalloc(model: str | None) -> None:
    """Replaces this process by the same command under tcmalloc (`os.execve`: the PID, the
    arguments and the rest of the environment stay) where `environment` asks for it, unless
    tcmalloc is loaded already or this process is that replacement."""
    if tcmalloc_loaded() or os.environ.get(_REEXECUTED):
        return
    env = environment(model)
    if env.get("LD_PRELOAD") == os.environ.get("LD_PRELOAD"):
        return
    env[_REEXECUTED] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def describe(model: str | None) -> str:
    """One log line: which allocator this process runs, and how to get tcmalloc where it
    would run under it but does not."""
    if tcmalloc_loaded():
        return "host allocator: tcmalloc"
    if not wants_tcmalloc(model):
        return (
            f"host allocator: the C library's malloc (${ENVIRONMENT_VARIABLE}={choice()}, "
            f"model {model})"
        )
    return (
        "host allocator: the C library's malloc (tcmalloc not found; XLA:CPU's steps run "
        f"faster under it: {INSTALL_HINT})"
    )
