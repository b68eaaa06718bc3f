"""Generator and discriminator: the reference's parameter counts, shapes and wiring."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import config as config_lib
from i2i_jax import models
from i2i_jax.models import layers

from helpers import conv_nhwc, conv_transpose_by_definition, output_shape, param_count


def test_unet_256_batch_norm_has_the_reference_parameter_count():
    generator = models.build_generator(config_lib.pix2pix())
    assert param_count(generator, (1, 256, 256, 3)) == 54_413_955
    assert output_shape(generator, (1, 256, 256, 3)) == (1, 256, 256, 3)


def test_basic_discriminator_on_six_channels_has_the_reference_count_and_30x30_logits():
    discriminator = models.build_discriminator(config_lib.pix2pix())
    assert param_count(discriminator, (1, 256, 256, 6)) == 2_768_705
    assert output_shape(discriminator, (1, 256, 256, 6)) == (1, 30, 30, 1)


@pytest.mark.parametrize("netG,size,downs", [("unet_128", 128, 7), ("unet_64", 64, 6)])
def test_unet_depth_follows_the_name(netG, size, downs):
    config = config_lib.pix2pix()
    config.netG = netG
    generator = models.build_generator(config)
    assert generator.num_downs == downs
    assert output_shape(generator, (2, size, size, 3)) == (2, size, size, 3)


def test_instance_norm_gives_inner_convs_biases_and_no_batch_stats():
    config = config_lib.pix2pix()
    config.norm = "instance"
    generator = models.build_generator(config)
    variables = jax.eval_shape(
        lambda: generator.init(jax.random.key(0), jnp.zeros((1, 256, 256, 3)), train=False)
    )
    assert "batch_stats" not in variables
    assert all("bias" in variables["params"][name] for name in ("down0", "down3", "up3"))
    # Batch norm's scale and shift on 6 down and 7 up norms go; biases on 8 down and 7 up convs
    # come (the outermost up-conv always had one).
    down_norms, up_norms = 128 + 256 + 512 * 4, 64 + 128 + 256 + 512 * 4
    down_biases, up_biases = 64 + 128 + 256 + 512 * 5, 64 + 128 + 256 + 512 * 4
    assert param_count(generator, (1, 256, 256, 3)) == (
        54_413_955 - 2 * (down_norms + up_norms) + down_biases + up_biases
    )


def test_other_discriminators():
    config = config_lib.pix2pix()
    config.netD, config.n_layers_D = "n_layers", 5
    assert output_shape(models.build_discriminator(config), (1, 256, 256, 6)) == (1, 6, 6, 1)
    config.netD = "pixel"
    assert output_shape(models.build_discriminator(config), (1, 64, 64, 6)) == (1, 64, 64, 1)


def test_unknown_names_are_rejected_with_the_choices():
    config = config_lib.pix2pix()
    config.netG = "unet_100"
    with pytest.raises(ValueError, match="unet_256"):
        models.build_generator(config)
    config.netG, config.netD = "unet_256", "huge"
    with pytest.raises(ValueError, match="basic"):
        models.build_discriminator(config)


def test_two_level_unet_matches_a_hand_written_forward_pass():
    """Wiring check, independent of the module code: LeakyReLU'd skip, ReLU before up-convs."""
    config = config_lib.pix2pix()
    config.netG, config.norm, config.ngf = "unet_4", "none", 5
    generator = models.build_generator(config)
    x = jax.random.normal(jax.random.key(1), (2, 4, 4, 3))
    variables = generator.init(jax.random.key(2), x, train=False)
    p = jax.tree.map(lambda v: v * 10, variables["params"])  # Larger weights: clearer signal.

    e0 = conv_nhwc(x, p["down0"]["kernel"], 2, 1) + p["down0"]["bias"]
    a0 = jax.nn.leaky_relu(e0, 0.2)
    e1 = conv_nhwc(a0, p["down1"]["kernel"], 2, 1) + p["down1"]["bias"]
    u1 = conv_transpose_by_definition(jax.nn.relu(e1), p["up1"]["kernel"], 1, 0, p["up1"]["bias"])
    d1 = jnp.concatenate([a0, u1], axis=-1)
    expected = jnp.tanh(
        conv_transpose_by_definition(jax.nn.relu(d1), p["up0"]["kernel"], 1, 0, p["up0"]["bias"])
    )
    actual = generator.apply({"params": p}, x, train=False)
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_dropout_is_on_in_training_and_off_in_eval():
    config = config_lib.pix2pix()
    config.netG, config.ngf = "unet_64", 4  # The smallest U-Net with a dropout level (4).
    generator = models.build_generator(config)
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    variables = generator.init(jax.random.key(1), x, train=False)

    def train_run(seed):
        return generator.apply(
            variables,
            x,
            train=True,
            rngs={"dropout": jax.random.key(seed)},
            mutable=["batch_stats"],
        )[0]

    assert not np.allclose(train_run(0), train_run(1))
    # In eval mode the generator computes what the same network without dropout layers does.
    config.no_dropout = True
    without_dropout = models.build_generator(config)
    np.testing.assert_array_equal(
        generator.apply(variables, x, train=False), without_dropout.apply(variables, x, train=False)
    )
    with_dropout_off = without_dropout.apply(variables, x, train=True, mutable=["batch_stats"])[0]
    assert not np.allclose(train_run(0), with_dropout_off)


def test_weight_inits_have_the_reference_scales():
    shape = (4, 4, 256, 512)
    normal = layers.weight_init("normal", 0.02)(jax.random.key(0), shape)
    assert abs(float(normal.std()) - 0.02) < 5e-4
    xavier = layers.weight_init("xavier", 0.02)(jax.random.key(0), shape)
    fan_in, fan_out = 16 * 256, 16 * 512
    assert abs(float(xavier.std()) - 0.02 * np.sqrt(2 / (fan_in + fan_out))) < 1e-5
    kaiming = layers.weight_init("kaiming", 0.02)(jax.random.key(0), shape)
    assert abs(float(kaiming.std()) - np.sqrt(2 / fan_in)) < 1e-3
    orthogonal = layers.weight_init("orthogonal", 1.0)(jax.random.key(0), (3, 3, 8, 64))
    flat = np.asarray(orthogonal).reshape(-1, 64)
    np.testing.assert_allclose(flat.T @ flat, np.eye(64), atol=1e-4)
