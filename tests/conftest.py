"""Four virtual CPU devices for every test, so multi-device code runs on any machine, and one
persistent compilation cache for the whole suite.

Both must be set before any JAX computation; single-device checks build a mesh of one device.
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
