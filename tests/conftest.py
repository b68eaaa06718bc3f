"""Four virtual CPU devices for every test, so multi-device code runs on any machine.

This must happen before any JAX computation; single-device checks build a mesh of one device.
"""

import pathlib
import sys

import jax
import numpy as np
import pytest

NUM_DEVICES = 4
jax.config.update("jax_num_cpu_devices", NUM_DEVICES)
# The PyTorch baseline, benchmarks/torch_reference.py, imports as `torch_reference`.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))

from tiny_configs import tiny_cyclegan_config, tiny_pix2pix_config  # noqa: E402

from i2i_jax import parallel, tasks  # noqa: E402  (after the device count)
from i2i_jax.data import pipeline, sources  # noqa: E402


@pytest.fixture
def tiny_config():
    return tiny_pix2pix_config()


@pytest.fixture
def tiny_cycle_config():
    return tiny_cyclegan_config()


# Convs whose output no norm follows; every other conv bias feeds a norm.
_OUTER_LAYERS = {"down0", "up0", "out", "conv0", "logits"}


def inert_bias(path, innermost: str = "") -> bool:
    """A conv bias that instance norm subtracts right away. Its true gradient is 0, so Adam's
    update is the sign of float noise and differs between any two reduction orders; tests that
    compare two runs leave such biases out. `innermost` names the U-Net's innermost down-conv."""
    names = [key.key for key in path if hasattr(key, "key")]
    return names[-1] == "bias" and names[-2] not in _OUTER_LAYERS | {innermost}


def assert_same_parameters(one, other, norm: str, innermost: str = "", **tolerance):
    """Every leaf equal to float tolerance, but instance norm's inert biases."""
    one_leaves = jax.tree_util.tree_flatten_with_path(one)[0]
    other_leaves = jax.tree_util.tree_flatten_with_path(other)[0]
    for (path, a), (_, b) in zip(one_leaves, other_leaves, strict=True):
        if norm == "instance" and inert_bias(path, innermost):
            continue
        np.testing.assert_allclose(a, b, err_msg=jax.tree_util.keystr(path), **tolerance)


def fixed_batches(config, count: int) -> list[dict]:
    """The first `count` training batches of a config, as numpy arrays."""
    stream = pipeline.train_batches(sources.train_sources(config), config, config.batch_size)
    return [next(stream) for _ in range(count)]


def run_steps(config, devices, batches):
    """Trains from the initial state on the given batches over a mesh of `devices`; returns
    the final state and each step's metrics, on the host."""
    mesh = parallel.make_mesh(devices)
    task = tasks.build_task(config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, config.seed, mesh)
    step = parallel.jit_train_step(task.train_step, mesh)
    history = []
    for batch in batches:
        state, step_metrics = step(state, parallel.to_global(batch, mesh))
        history.append(jax.device_get(step_metrics))
    return jax.device_get(state), history
