"""The saved traced train step (`traced_steps`): compiled from the saved program, the step is
the usual `jit_train_step` bit for bit, on one device and on four; a second start reads the
program instead of tracing; whatever the program depends on changes its file name; a damaged
or unwritable file costs a trace, never the run."""

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import parallel, tasks, traced_steps
from i2i_jax.config import workdir as workdir_config

from helpers import fixed_batches
from tiny_configs import tiny_pix2pix_config


class Inputs:
    """A tiny Pix2Pix task with its initial state and first batch, on the first `devices`."""

    def __init__(self, devices: int, config=None):
        self.config = config or tiny_pix2pix_config()
        self.mesh = parallel.make_mesh(jax.devices()[:devices])
        self.task = tasks.build_task(self.config, steps_per_epoch=4)
        self.state = parallel.init_replicated(self.task.init_state, self.config.seed, self.mesh)
        self.batch = parallel.to_global(fixed_batches(self.config, 1)[0], self.mesh)
        self.identity = workdir_config.to_json(self.config)
        self.traced = 0

    def counted_step(self, state, batch):
        """The task's step, counting how often it is traced."""
        self.traced += 1
        return self.task.train_step(state, batch)

    def compile(self, directory):
        return traced_steps.compile_train_step(
            self.counted_step, self.mesh, self.state, self.batch, self.identity, str(directory)
        )

    def fresh_state(self):
        return jax.tree.map(jnp.copy, self.state)


@pytest.fixture(scope="module")
def one_device():
    return Inputs(devices=1)


def saved_files(directory) -> list[str]:
    return sorted(os.listdir(directory / traced_steps.SUBDIRECTORY))


def assert_bit_identical(a, b):
    leaves_a, leaves_b = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("devices", [1, 4])
def test_the_saved_program_is_the_traced_step_bit_for_bit(devices, tmp_path, caplog):
    inputs = Inputs(devices)
    expected = parallel.jit_train_step(inputs.task.train_step, inputs.mesh)(
        inputs.fresh_state(), inputs.batch
    )

    first = inputs.compile(tmp_path)
    donated = inputs.fresh_state()
    assert_bit_identical(first(donated, inputs.batch), expected)
    assert all(leaf.is_deleted() for leaf in jax.tree.leaves(donated)), "the state is donated"
    assert inputs.traced == 1 and len(saved_files(tmp_path)) == 1

    with caplog.at_level(logging.INFO, logger="i2i_jax"):
        second = inputs.compile(tmp_path)
    assert inputs.traced == 1, "the second start read the program instead of tracing"
    assert "the train step: read its traced program from" in caplog.text
    assert_bit_identical(second(inputs.fresh_state(), inputs.batch), expected)


def test_the_file_name_changes_with_what_the_program_depends_on(one_device):
    inputs = one_device
    key = traced_steps.program_key(inputs.identity, inputs.mesh, inputs.state, inputs.batch)
    assert key == traced_steps.program_key(
        inputs.identity, inputs.mesh, inputs.fresh_state(), inputs.batch
    ), "the values of the state do not matter, only their kind"
    other_config = tiny_pix2pix_config()
    other_config.lambda_L1 = 10.0
    half_batch = jax.tree.map(lambda x: x[:2], inputs.batch)
    four_devices = parallel.make_mesh(jax.devices()[:4])
    others = [
        (workdir_config.to_json(other_config), inputs.mesh, inputs.state, inputs.batch),
        (inputs.identity, inputs.mesh, inputs.state, half_batch),
        (inputs.identity, inputs.mesh, (inputs.state,), inputs.batch),
        (inputs.identity, four_devices, inputs.state, inputs.batch),
    ]
    keys = {traced_steps.program_key(*other) for other in others}
    assert len(keys) == len(others) and key not in keys


def test_a_damaged_file_is_traced_again_and_rewritten(one_device, tmp_path, caplog):
    inputs = one_device
    expected = inputs.compile(tmp_path)(inputs.fresh_state(), inputs.batch)
    (name,) = saved_files(tmp_path)
    path = tmp_path / traced_steps.SUBDIRECTORY / name
    path.write_bytes(path.read_bytes()[:-1000])
    traced_before = inputs.traced
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        step = inputs.compile(tmp_path)
    assert f"the traced train step in {path} cannot be read" in caplog.text
    assert inputs.traced == traced_before + 1
    assert_bit_identical(step(inputs.fresh_state(), inputs.batch), expected)
    inputs.compile(tmp_path)
    assert inputs.traced == traced_before + 1, "the file was rewritten whole"


def test_a_cache_it_cannot_write_to_costs_the_next_start_a_trace(one_device, tmp_path, caplog):
    inputs = one_device
    (tmp_path / traced_steps.SUBDIRECTORY).write_text("a file where the directory should be")
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        step = inputs.compile(tmp_path)
    assert "cannot save the traced train step to" in caplog.text
    assert "the next start will trace it again" in caplog.text
    expected = parallel.jit_train_step(inputs.task.train_step, inputs.mesh)(
        inputs.fresh_state(), inputs.batch
    )
    assert_bit_identical(step(inputs.fresh_state(), inputs.batch), expected)
