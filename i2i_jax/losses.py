"""Adversarial and reconstruction losses: pure functions of logits and images."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

GAN_MODES = ("vanilla", "lsgan", "wgangp")


def gan_loss(logits: jnp.ndarray, target_is_real: bool, gan_mode: str) -> jnp.ndarray:
    """Mean adversarial loss of a patch map of logits against an all-real or all-fake label.

    `vanilla` is binary cross-entropy on logits in its stable form (never sigmoid then log);
    `lsgan` is the mean squared distance to the label (LSGAN, CycleGAN's default); `wgangp` is
    the Wasserstein critic's -mean (real) or mean (fake), used with `gradient_penalty`.
    """
    if gan_mode == "wgangp":
        return -logits.mean() if target_is_real else logits.mean()
    label = jnp.full_like(logits, 1.0 if target_is_real else 0.0)
    if gan_mode == "vanilla":
        return optax.sigmoid_binary_cross_entropy(logits, label).mean()
    if gan_mode == "lsgan":
        return jnp.square(logits - label).mean()
    raise ValueError(f"gan_mode={gan_mode!r} is not one of {GAN_MODES}")


def gradient_penalty(
    critic: Callable[[jnp.ndarray], jnp.ndarray],
    real: jnp.ndarray,
    fake: jnp.ndarray,
    key: jax.Array,
    weight: float,
    target_norm: float = 1.0,
) -> jnp.ndarray:
    """WGAN-GP (Gulrajani et al. 2017), as the reference's `cal_gradient_penalty('mixed')`:
    weight * mean over examples of (||d sum(critic(x)) / dx|| - 1)^2 at random interpolates
    x = alpha * real + (1 - alpha) * fake, one alpha per example."""
    alpha = jax.random.uniform(key, (real.shape[0],) + (1,) * (real.ndim - 1))
    interpolates = alpha * real + (1 - alpha) * jax.lax.stop_gradient(fake)
    grads = jax.grad(lambda x: critic(x).sum())(interpolates)
    norms = jnp.sqrt(jnp.sum(jnp.square(grads.reshape(real.shape[0], -1) + 1e-16), axis=1))
    return weight * jnp.square(norms - target_norm).mean()


def l1_loss(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    return jnp.abs(prediction - target).mean()
