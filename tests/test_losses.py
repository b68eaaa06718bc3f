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
        np.mean([bce(v, 1) for v in logits]), rel=1e-6
    )
    assert float(losses.gan_loss(x, False, "vanilla")) == pytest.approx(
        np.mean([bce(v, 0) for v in logits]), rel=1e-6
    )


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


def test_wgangp_critic_loss_is_the_signed_mean():
    x = jnp.array([0.5, 2.0, -1.0])
    assert float(losses.gan_loss(x, True, "wgangp")) == pytest.approx(-0.5)
    assert float(losses.gan_loss(x, False, "wgangp")) == pytest.approx(0.5)


@pytest.mark.slow
def test_gradient_penalty_against_finite_differences():
    """With real == fake every interpolate is that image, so the penalty is
    weight * mean((|grad sum D(x)| - 1)^2), with the gradient taken by central differences."""
    import jax

    from i2i_jax.models.patchgan import NLayerDiscriminator

    critic = NLayerDiscriminator(ndf=4, n_layers=1, norm="none")
    x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
    variables = critic.init(jax.random.key(1), x, train=False)
    variables = jax.tree.map(lambda v: v * 10, variables)

    total = jax.jit(lambda images: critic.apply(variables, images, train=False).sum())

    def critic_fn(images):
        return critic.apply(variables, images, train=False)

    flat = np.asarray(x, np.float64).reshape(2, -1)
    eps = 1e-2
    norms = []
    for example in range(2):
        grad = np.zeros(flat.shape[1])
        for i in range(flat.shape[1]):
            plus, minus = flat.copy(), flat.copy()
            plus[example, i] += eps
            minus[example, i] -= eps
            grad[i] = (
                float(total(jnp.asarray(plus.reshape(x.shape), jnp.float32)))
                - float(total(jnp.asarray(minus.reshape(x.shape), jnp.float32)))
            ) / (2 * eps)
        norms.append(np.linalg.norm(grad))
    expected = 10.0 * np.mean((np.array(norms) - 1) ** 2)
    actual = float(losses.gradient_penalty(critic_fn, x, x, jax.random.key(2), weight=10.0))
    assert actual == pytest.approx(expected, rel=2e-2)
    assert expected > 1.0  # The check is not vacuous: the gradient norm is far from 1.
