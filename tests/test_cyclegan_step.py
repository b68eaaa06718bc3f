"""The CycleGAN train step: it learns, it is data-parallel exact, and all its losses run."""

import jax
import numpy as np
import pytest

from helpers import assert_same_parameters, fixed_batches, run_steps

pytestmark = pytest.mark.slow


def test_the_cycle_loss_falls_on_a_fixed_batch(tiny_cycle_config):
    tiny_cycle_config.lr = 1e-3
    tiny_cycle_config.num_train_steps = 1000  # Keep the learning rate constant.
    batch = fixed_batches(tiny_cycle_config, 1)[0]
    _, history = run_steps(tiny_cycle_config, jax.devices()[:1], [batch] * 20)
    first, last = history[0], history[-1]
    assert last["cycle_A"] + last["cycle_B"] < 0.75 * (first["cycle_A"] + first["cycle_B"])
    assert set(first) >= {"D_A", "D_B", "G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B"}


def test_four_devices_give_the_single_device_parameters_and_pools(tiny_cycle_config):
    # Batch norm: instance norm cancels some conv biases exactly, their gradients are float
    # noise that Adam turns into +-lr steps, and those differ between any two reduction orders
    # (conftest.inert_bias); batch norm is also the norm whose statistics cross devices.
    tiny_cycle_config.norm = "batch"
    batches = fixed_batches(tiny_cycle_config, 2)
    one, one_history = run_steps(tiny_cycle_config, jax.devices()[:1], batches)
    four, four_history = run_steps(tiny_cycle_config, jax.devices()[:4], batches)
    # Adam scales every update to about lr (2e-4), so the rare weight whose gradient is at the
    # level of float noise may move by a fraction of lr differently; weights are ~0.02.
    assert_same_parameters(one.nets, four.nets, "batch", rtol=1e-4, atol=1e-4)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-4), one.pools, four.pools)
    assert int(one.pools["fake_B"].count) == 3  # pool_size 3, filled by the first batch.
    for a, b in zip(one_history, four_history, strict=True):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4, err_msg=key)


@pytest.mark.parametrize("model", ["cycle_gan", "pix2pix"])
def test_wgangp_trains_both_tasks(tiny_cycle_config, tiny_config, model):
    config = tiny_cycle_config if model == "cycle_gan" else tiny_config
    config.gan_mode = "wgangp"
    state, history = run_steps(config, jax.devices()[:1], fixed_batches(config, 2))
    assert int(state.step) == 2
    assert all(np.isfinite(v) for step in history for v in step.values())


def test_identity_weight_zero_turns_the_identity_loss_off(tiny_cycle_config):
    tiny_cycle_config.lambda_identity = 0.0
    _, history = run_steps(
        tiny_cycle_config, jax.devices()[:1], fixed_batches(tiny_cycle_config, 1)
    )
    assert "idt_A" not in history[0] and "cycle_A" in history[0]
