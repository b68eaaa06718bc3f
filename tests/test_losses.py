"""Losses against hand-computed values."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import losses


def bce(logit: float, label: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(label * math.log(p) + (1 - label) * math.log(1 - p))


def test_vanilla_loss_is_binary_cross_entropy_on_logits():
    logits = [-3.0, -0.5, 0.0, 0.7, 4.0]
    x = jnp.array(logits).reshape(1, 5, 1, 1)
    assert float(losses.gan_loss(x, True, "vanilla")) == pytest.approx(
        np.mean([bce(v, 1) for v in logits]), rel=1e-6)
    assert float(losses.gan_loss(x, False, "vanilla")) == pytest.approx(
        np.mean([bce(v, 0) for v in logits]), rel=1e-6)


def test_vanilla_loss_is_stable_for_confident_logits():
    """log(sigmoid(-100)) underflows in float32; the stable form gives 100 exactly."""
    x = jnp.array([[-100.0, 100.0]])
    assert float(losses.gan_loss(x, True, "vanilla")) == pytest.approx(50.0, rel=1e-6)
    assert float(losses.gan_loss(x, False, "vanilla")) == pytest.approx(50.0, rel=1e-6)


def test_lsgan_loss_is_mean_squared_distance_to_the_label():
    x = jnp.array([0.5, 2.0, -1.0])
    assert float(losses.gan_loss(x, True, "lsgan")) == pytest.approx((0.25 + 1 + 4) / 3)
    assert float(losses.gan_loss(x, False, "lsgan")) == pytest.approx((0.25 + 4 + 1) / 3)


def test_l1_loss_and_unknown_mode():
    assert float(losses.l1_loss(jnp.array([1.0, -1.0]), jnp.array([0.5, 0.0]))) == 0.75
    with pytest.raises(ValueError, match="lsgan"):
        losses.gan_loss(jnp.zeros(2), True, "hinge")
