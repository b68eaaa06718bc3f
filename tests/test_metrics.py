"""PSNR and SSIM against the formula and against TensorFlow's independent implementation."""

import numpy as np
import tensorflow as tf

from i2i_jax import metrics


def random_images(seed, shape=(3, 32, 40, 3)):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, shape).astype(np.float32)


def test_psnr_follows_the_formula_on_a_unit_range():
    a = random_images(0)
    b = np.clip(a + np.random.default_rng(1).normal(0, 0.1, a.shape), -1, 1).astype(np.float32)
    mse = np.mean(((a + 1) / 2 - (b + 1) / 2) ** 2, axis=(1, 2, 3))
    np.testing.assert_allclose(metrics.psnr(a, b), 10 * np.log10(1 / mse), rtol=1e-5)


def test_ssim_matches_tensorflow():
    a = random_images(2)
    b = np.clip(0.7 * a + 0.3 * random_images(3), -1, 1)
    expected = tf.image.ssim(
        tf.constant((a + 1) / 2),
        tf.constant((b + 1) / 2),
        max_val=1.0,
        filter_size=11,
        filter_sigma=1.5,
        k1=0.01,
        k2=0.03,
    ).numpy()
    np.testing.assert_allclose(metrics.ssim(a, b), expected, atol=1e-4)
    np.testing.assert_allclose(metrics.ssim(a, a), 1.0, atol=1e-5)


def test_l1_is_per_example_mean_absolute_error():
    a, b = random_images(4), random_images(5)
    np.testing.assert_allclose(metrics.l1(a, b), np.abs(a - b).mean(axis=(1, 2, 3)), rtol=1e-6)
