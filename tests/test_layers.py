"""Normalisation layers against NumPy computations of the PyTorch formulas."""

import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from i2i_jax import parallel
from i2i_jax.models.layers import BatchNorm, Dropout, InstanceNorm

EPS = 1e-5


def numpy_batch_norm(x, scale, bias):
    mean = x.mean(axis=(0, 1, 2))
    var = x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + EPS) * scale + bias, mean, x.var(axis=(0, 1, 2), ddof=1)


def test_batch_norm_training_output_and_running_statistics_follow_pytorch():
    x = np.random.default_rng(0).normal(2.0, 3.0, (4, 5, 5, 3)).astype(np.float32)
    layer = BatchNorm()
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    scale, bias = (np.asarray(variables["params"][k]) for k in ("scale", "bias"))
    out, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    expected, mean, unbiased_var = numpy_batch_norm(x.astype(np.float64), scale, bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    stats = updates["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.9 * 0 + 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 * 1 + 0.1 * unbiased_var, rtol=1e-5)

    eval_out = layer.apply(
        {"params": variables["params"], "batch_stats": stats}, x, use_running_average=True
    )
    expected_eval = (x - stats["mean"]) / np.sqrt(stats["var"] + EPS) * scale + bias
    np.testing.assert_allclose(eval_out, expected_eval, atol=1e-5)


def test_batch_norm_scale_starts_near_one_like_the_reference_init():
    variables = BatchNorm().init(
        jax.random.key(0), np.zeros((2, 4, 4, 4096), np.float32), use_running_average=False
    )
    scale = np.asarray(variables["params"]["scale"])
    assert abs(scale.mean() - 1) < 2e-3 and abs(scale.std() - 0.02) < 2e-3
    np.testing.assert_array_equal(variables["params"]["bias"], 0)


def test_instance_norm_normalises_each_image_and_channel_without_parameters():
    x = np.random.default_rng(2).normal(1.0, 4.0, (3, 6, 7, 2)).astype(np.float32)
    layer = InstanceNorm()
    variables = layer.init(jax.random.key(0), x)
    assert not variables
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(
        layer.apply(variables, x), (x - mean) / np.sqrt(var + EPS), atol=1e-5
    )


def on_four_devices(fn, out_specs):
    """`fn` of a batch, run per device on quarters of it, as the train step runs."""
    mesh = parallel.make_mesh(jax.devices()[:4])
    return jax.jit(
        jax.shard_map(fn, mesh=mesh, in_specs=P(parallel.DATA_AXIS), out_specs=out_specs)
    )


def batch_norm_on_quarters(synchronised: bool, stats_spec):
    """A batch whose halves differ in mean and scale, normalised on 4 devices (2 images each).
    Returns the batch, the layer's scale and bias, and the outputs and running statistics."""
    x = np.random.default_rng(1).normal(0, 1, (8, 3, 3, 2)).astype(np.float32)
    x[4:] = x[4:] * 5 + 7
    layer = BatchNorm(synchronised=synchronised, batch_axis=parallel.DATA_AXIS)
    variables = layer.init(jax.random.key(0), x, use_running_average=False)

    def apply(x):
        out, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
        stats = updates["batch_stats"]
        return out, stats if synchronised else jax.tree.map(lambda v: v[None], stats)

    out, stats = on_four_devices(apply, (P(parallel.DATA_AXIS), stats_spec))(x)
    scale, bias = (np.asarray(variables["params"][k]) for k in ("scale", "bias"))
    return x.astype(np.float64), scale, bias, out, stats


def test_synchronised_batch_norm_on_four_devices_normalises_the_global_batch():
    """Each device holds a quarter with its own statistics; the result is one batch's norm."""
    x, scale, bias, out, stats = batch_norm_on_quarters(True, P())
    expected, mean, unbiased_var = numpy_batch_norm(x, scale, bias)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_allclose(stats["mean"], 0.1 * mean, rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * unbiased_var, rtol=1e-5)


def test_per_device_batch_norm_normalises_each_share_by_its_own_statistics():
    """What pmap gave: each device's quarter of the batch is a batch of its own."""
    x, scale, bias, out, stats = batch_norm_on_quarters(False, P(parallel.DATA_AXIS))
    shares = [numpy_batch_norm(x[i : i + 2], scale, bias) for i in range(0, 8, 2)]
    np.testing.assert_allclose(out, np.concatenate([s[0] for s in shares]), atol=1e-5)
    np.testing.assert_allclose(stats["mean"], 0.1 * np.stack([s[1] for s in shares]), rtol=1e-5)
    np.testing.assert_allclose(
        stats["var"], 0.9 + 0.1 * np.stack([s[2] for s in shares]), rtol=1e-5
    )


def test_dropout_draws_the_same_masks_on_one_device_and_on_four():
    x = np.ones((8, 4, 4, 16), np.float32)
    layer = Dropout(0.5, batch_axis=parallel.DATA_AXIS)

    def apply(x):
        return layer.apply({}, x, deterministic=False, rngs={"dropout": jax.random.key(3)})

    one = jax.jit(apply)(x)
    four = on_four_devices(apply, P(parallel.DATA_AXIS))(x)
    np.testing.assert_array_equal(one, four)
    assert set(np.unique(one)) == {0.0, 2.0}  # Kept values are scaled by 1 / (1 - rate).
    assert 0.4 < float((one == 0).mean()) < 0.6
    assert not np.array_equal(one[0], one[1])  # Each example has a mask of its own.
