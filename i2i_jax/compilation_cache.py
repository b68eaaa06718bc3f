"""XLA's persistent compilation cache for training processes: a resume after preemption (or
another run of the same config) loads its compiled step from disk in about a second instead of
compiling it again, which takes tens of seconds at 256 px on a CPU.

JAX keys each entry by the program, the compiler options and the devices, so a cache is safe to
share between configs, workdirs and JAX versions; only process 0 of a job writes to it. It is
not safe to share between users: whoever can write to it chooses the programs training runs.
"""

import logging
import os
import time

import jax
import jax.monitoring

from i2i_jax import file_trust
from i2i_jax.errors import ConfigError

log = logging.getLogger("i2i_jax")
ENVIRONMENT_VARIABLE = "JAX_COMPILATION_CACHE_DIR"
_HIT = "/jax/compilation_cache/cache_hits"
_hits = 0


def _count_hits(event: str, **_) -> None:
    global _hits
    if event == _HIT:
        _hits += 1


jax.monitoring.register_event_listener(_count_hits)


def enable(configured: str) -> str | None:
    """Points JAX's compilation cache at `configured` (`~` expanded, created private to the user
    if missing), or at $JAX_COMPILATION_CACHE_DIR where that is set; '' turns the cache off.
    Returns the directory in use, None when off. Call it before the first compilation.

    JAX reads the cache's entries itself, so the directory is what is checked: one that another
    user could write to (`file_trust.trusted`) is not used, with a warning, and this run
    compiles afresh. A bucket (gs://...) is not checked: its writers are trusted."""
    if not configured:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    directory = os.environ.get(ENVIRONMENT_VARIABLE) or os.path.expanduser(configured)
    if "://" not in directory:  # A bucket (gs://...) needs no directory made.
        try:
            file_trust.make_private_dir(directory)
        except OSError as error:
            raise ConfigError(
                "compilation_cache_dir",
                directory,
                f"cannot be created as a directory ({error.strerror})",
                "--config.compilation_cache_dir=<a writable directory>, or '' to compile "
                "every run afresh",
            ) from error
    if why := file_trust.trusted(directory):
        log.warning(
            "not using the compilation cache %s: %s, so its programs could be another user's; "
            "this run compiles every program afresh.\nFix: `chmod go-w` the directory named if it "
            "is yours; else point --config.compilation_cache_dir (or $%s) at a directory only "
            "you can write",
            directory,
            why,
            ENVIRONMENT_VARIABLE,
        )
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_enable_compilation_cache", True)
    jax.config.update("jax_compilation_cache_dir", directory)
    return directory


def directory() -> str | None:
    """The cache directory in use, None when the cache is off."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir


def compile_logged(name: str, lower):
    """`lower()`'s program compiled, with one log line saying how long lowering and compiling
    took and whether the program came from the cache. `lower()` returns a `jax.stages.Lowered`
    and how it got it ("traced", or where it read a saved trace from)."""
    hits_before, start = _hits, time.perf_counter()
    lowered, how = lower()
    traced = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    source = "loaded from the compilation cache" if _hits > hits_before else "compiled"
    log.info("%s: %s in %.1f s, %s in %.1f s", name, how, traced - start, source, done - traced)
    return compiled
