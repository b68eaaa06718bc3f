"""Adversarial and reconstruction losses: pure functions of logits and images."""

import jax.numpy as jnp
import optax

GAN_MODES = ("vanilla", "lsgan")


def gan_loss(logits: jnp.ndarray, target_is_real: bool, gan_mode: str) -> jnp.ndarray:
    """Mean adversarial loss of a patch map of logits against an all-real or all-fake label.

    `vanilla` is binary cross-entropy on logits in its stable form (never sigmoid then log);
    `lsgan` is the mean squared distance to the label (LSGAN, used by CycleGAN).
    """
    label = jnp.full_like(logits, 1.0 if target_is_real else 0.0)
    if gan_mode == "vanilla":
        return optax.sigmoid_binary_cross_entropy(logits, label).mean()
    if gan_mode == "lsgan":
        return jnp.square(logits - label).mean()
    raise ValueError(f"gan_mode={gan_mode!r} is not one of {GAN_MODES}")


def l1_loss(prediction: jnp.ndarray, target: jnp.ndarray) -> jnp.ndarray:
    return jnp.abs(prediction - target).mean()
