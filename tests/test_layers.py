"""Normalisation layers against NumPy computations of the PyTorch formulas."""

import jax
import numpy as np

from i2i_jax.models.layers import BatchNorm, InstanceNorm

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

    eval_out = layer.apply({"params": variables["params"], "batch_stats": stats}, x,
                           use_running_average=True)
    expected_eval = (x - stats["mean"]) / np.sqrt(stats["var"] + EPS) * scale + bias
    np.testing.assert_allclose(eval_out, expected_eval, atol=1e-5)


def test_batch_norm_scale_starts_near_one_like_the_reference_init():
    variables = BatchNorm().init(jax.random.key(0), np.zeros((2, 4, 4, 4096), np.float32),
                                 use_running_average=False)
    scale = np.asarray(variables["params"]["scale"])
    assert abs(scale.mean() - 1) < 2e-3 and abs(scale.std() - 0.02) < 2e-3
    np.testing.assert_array_equal(variables["params"]["bias"], 0)


def test_grouped_batch_norm_normalises_each_group_by_its_own_statistics():
    """Per-device batch norm: each contiguous quarter of the batch is a separate batch."""
    x = np.random.default_rng(1).normal(0, 1, (8, 3, 3, 2)).astype(np.float32)
    x[4:] = x[4:] * 5 + 7  # Groups with very different statistics.
    layer = BatchNorm(stats_groups=4)
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    scale, bias = (np.asarray(variables["params"][k]) for k in ("scale", "bias"))
    out, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    groups = [numpy_batch_norm(x[i:i + 2].astype(np.float64), scale, bias) for i in range(0, 8, 2)]
    np.testing.assert_allclose(out, np.concatenate([g[0] for g in groups]), atol=1e-5)
    np.testing.assert_allclose(updates["batch_stats"]["mean"],
                               0.1 * np.mean([g[1] for g in groups], axis=0), rtol=1e-5)


def test_instance_norm_normalises_each_image_and_channel_without_parameters():
    x = np.random.default_rng(2).normal(1.0, 4.0, (3, 6, 7, 2)).astype(np.float32)
    layer = InstanceNorm()
    variables = layer.init(jax.random.key(0), x)
    assert not variables
    mean = x.mean(axis=(1, 2), keepdims=True)
    var = x.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(layer.apply(variables, x), (x - mean) / np.sqrt(var + EPS),
                               atol=1e-5)


def test_grouped_batch_norm_running_variance_averages_the_groups_unbiased_variances():
    x = np.random.default_rng(3).normal(0, 1, (6, 2, 2, 3)).astype(np.float32)
    x[3:] *= 4
    layer = BatchNorm(stats_groups=2)
    variables = layer.init(jax.random.key(0), x, use_running_average=False)
    _, updates = layer.apply(variables, x, use_running_average=False, mutable=["batch_stats"])
    unbiased = [x[i:i + 3].astype(np.float64).var(axis=(0, 1, 2), ddof=1) for i in (0, 3)]
    np.testing.assert_allclose(updates["batch_stats"]["var"], 0.9 + 0.1 * np.mean(unbiased, 0),
                               rtol=1e-5)
