"""Four virtual CPU devices for every test, so multi-device code runs on any machine, one
persistent compilation cache for the whole suite, and XLA's quick backend.

All must be set before any JAX computation; single-device checks build a mesh of one device.
The cache directory is also exported through the environment, so the command-line tools and
multi-process jobs the tests start reuse what the suite compiled (most tests compile the same
tiny networks again: the cache turns those compilations into file reads).
"""

import os
import pathlib

# Pinned to the CPU: on a GPU or TPU jaxlib the "1 vs 4 devices" tests would otherwise run on
# the accelerator's devices (often one) and compare one device with itself.
os.environ["JAX_PLATFORMS"] = "cpu"
COMPILATION_CACHE = os.environ.setdefault(
    "JAX_COMPILATION_CACHE_DIR",
    str(pathlib.Path(__file__).resolve().parents[1] / ".jax_compilation_cache"),
)
# Every compilation is cached, however quick (JAX's default skips those under a second).
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# The suite is compile-bound: a tiny CycleGAN step compiles in ~30 s and runs in ~0.1 s. XLA:CPU's
# backend optimisation level 0 halves that compile (and initialisation's) and leaves the program's
# meaning alone: the numerics tests compare with independent computations within tolerances, and
# the exactness tests compare two programs built with the same flags. Products run at XLA's
# default level; the benchmark's figures never come from the test process. Exported through the
# environment, so the tools and multi-process jobs the tests start compile the same way.
_QUICK_BACKEND = "--xla_backend_optimization_level=0"
if _QUICK_BACKEND not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_QUICK_BACKEND}".strip()

import jax  # noqa: E402  (after the environment it reads)
import pytest  # noqa: E402

from tiny_configs import tiny_cyclegan_config, tiny_pix2pix_config  # noqa: E402

NUM_DEVICES = 4
jax.config.update("jax_num_cpu_devices", NUM_DEVICES)


@pytest.fixture(autouse=True, scope="session")
def four_cpu_devices():
    """The multi-device tests are only meaningful on the four virtual CPU devices."""
    devices = jax.devices()
    assert [d.platform for d in devices] == ["cpu"] * NUM_DEVICES, devices


@pytest.fixture
def tiny_config():
    return tiny_pix2pix_config()


@pytest.fixture
def tiny_cycle_config():
    return tiny_cyclegan_config()


def pytest_collection_modifyitems(items):
    """The files with multi-process jobs first: they take the longest, and xdist hands out
    whole files in this order, so the other files fill in around them instead of one of them
    running alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("multiprocess") is None)
