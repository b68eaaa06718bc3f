"""Per-example image quality metrics on images in [-1, 1]: L1, PSNR and SSIM."""

import jax
import jax.numpy as jnp

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03


def to_unit_range(images: jnp.ndarray) -> jnp.ndarray:
    return (images.astype(jnp.float32) + 1.0) / 2.0


def l1(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Mean absolute error per example, on the [-1, 1] scale the models use."""
    return jnp.abs(prediction - target).mean(axis=(1, 2, 3))


def psnr(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Peak signal-to-noise ratio per example in dB, with images mapped to [0, 1]."""
    mse = jnp.square(to_unit_range(prediction) - to_unit_range(target)).mean(axis=(1, 2, 3))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-12))


def _gaussian_blur(images: jnp.ndarray) -> jnp.ndarray:
    """Valid-mode separable Gaussian filter, channel by channel."""
    coords = jnp.arange(SSIM_WINDOW, dtype=jnp.float32) - (SSIM_WINDOW - 1) / 2.0
    taps = jnp.exp(-0.5 * jnp.square(coords / SSIM_SIGMA))
    taps = taps / taps.sum()
    channels = images.shape[-1]
    dims = ("NHWC", "HWIO", "NHWC")
    rows = jnp.tile(taps.reshape(SSIM_WINDOW, 1, 1, 1), (1, 1, 1, channels))
    cols = jnp.tile(taps.reshape(1, SSIM_WINDOW, 1, 1), (1, 1, 1, channels))
    out = jax.lax.conv_general_dilated(
        images, rows, (1, 1), "VALID", dimension_numbers=dims, feature_group_count=channels
    )
    return jax.lax.conv_general_dilated(
        out, cols, (1, 1), "VALID", dimension_numbers=dims, feature_group_count=channels
    )


def ssim(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    """Structural similarity per example (Wang et al. 2004: 11x11 Gaussian, sigma 1.5)."""
    x, y = to_unit_range(prediction), to_unit_range(target)
    c1, c2 = SSIM_K1**2, SSIM_K2**2
    mu_x, mu_y = _gaussian_blur(x), _gaussian_blur(y)
    var_x = _gaussian_blur(x * x) - mu_x**2
    var_y = _gaussian_blur(y * y) - mu_y**2
    cov = _gaussian_blur(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    )
    return ssim_map.mean(axis=(1, 2, 3))


def image_metrics(prediction: jnp.ndarray, target: jnp.ndarray) -> dict[str, jnp.ndarray]:
    return {
        "l1": l1(prediction, target),
        "psnr": psnr(prediction, target),
        "ssim": ssim(prediction, target),
    }
