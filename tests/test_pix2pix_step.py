"""The Pix2Pix train step: it learns, and data parallelism does not change its mathematics."""

import jax
import numpy as np
import pytest

from i2i_jax import parallel, tasks
from i2i_jax.data import pipeline, sources


def fixed_batches(config, count):
    source = sources.paired_source(config, "train")
    stream = pipeline.train_batches(source, config, config.batch_size)
    return [next(stream) for _ in range(count)]


def run(config, devices, batches):
    mesh = parallel.make_mesh(devices)
    task = tasks.build_task(config, steps_per_epoch=4,
                            stats_groups=parallel.stats_groups(config, mesh))
    state = parallel.init_replicated(task.init_state, config.seed, mesh)
    step = parallel.jit_train_step(task.train_step, mesh)
    history = []
    for batch in batches:
        state, step_metrics = step(state, parallel.to_global(batch, mesh))
        history.append(jax.device_get(step_metrics))
    return jax.device_get(state), history


def test_the_l1_loss_falls_on_a_fixed_batch(tiny_config):
    tiny_config.lr = 1e-3
    tiny_config.num_train_steps = 1000  # Keep the learning rate constant over these steps.
    batch = fixed_batches(tiny_config, 1)[0]
    _, history = run(tiny_config, jax.devices()[:1], [batch] * 30)
    assert history[-1]["G_L1"] < 0.7 * history[0]["G_L1"]
    assert history[0]["lr"] == pytest.approx(tiny_config.lr)


def inert_bias(path, innermost: str) -> bool:
    """A conv bias that instance norm subtracts right away: its true gradient is 0, so Adam's
    update is the sign of float noise and differs between any two reduction orders."""
    names = [key.key for key in path if hasattr(key, "key")]
    layer = names[-2] if len(names) > 1 else ""
    inner_g = layer.startswith(("down", "up")) and layer not in ("down0", "up0", innermost)
    inner_d = layer.startswith("conv") and layer != "conv0"
    return names[-1] == "bias" and (inner_g or inner_d)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_four_devices_give_the_single_device_parameters(tiny_config, norm):
    """Same global batches on 1 and on 4 devices; batch norm in its synchronised form."""
    tiny_config.norm = norm
    tiny_config.sync_batch_stats = True
    batches = fixed_batches(tiny_config, 2)
    one, one_history = run(tiny_config, jax.devices()[:1], batches)
    four, four_history = run(tiny_config, jax.devices()[:4], batches)
    assert int(one.step) == int(four.step) == 2
    innermost = f"down{tasks.build_task(tiny_config, 4).generator.num_downs - 1}"
    one_leaves = jax.tree_util.tree_flatten_with_path(one.nets)[0]
    four_leaves = jax.tree_util.tree_flatten_with_path(four.nets)[0]
    for (path, a), (_, b) in zip(one_leaves, four_leaves, strict=True):
        if norm == "instance" and inert_bias(path, innermost):
            continue
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path))
    for a, b in zip(one_history, four_history):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4)


def test_per_device_batch_norm_differs_from_synchronised(tiny_config):
    """With `sync_batch_stats=False` each device normalises its own share of the batch."""
    batches = fixed_batches(tiny_config, 1)
    tiny_config.sync_batch_stats = True
    synced, _ = run(tiny_config, jax.devices()[:4], batches)
    tiny_config.sync_batch_stats = False
    per_device, _ = run(tiny_config, jax.devices()[:4], batches)
    difference = jax.tree.map(lambda a, b: float(np.abs(a - b).max()),
                              synced.nets["G"].params, per_device.nets["G"].params)
    assert max(jax.tree.leaves(difference)) > 1e-4
