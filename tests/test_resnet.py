"""The CycleGAN ResNet generator: reference counts, shapes, residual add, reflection padding."""

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax import config as config_lib
from i2i_jax import models
from i2i_jax.models.resnet import ResnetBlock, reflect_pad

from helpers import conv_nhwc, conv_transpose_by_definition, output_shape, param_count


def test_resnet_9blocks_and_the_3_channel_discriminator_have_the_reference_counts():
    config = config_lib.cyclegan()
    generator = models.build_generator(config)
    assert param_count(generator, (1, 256, 256, 3)) == 11_378_179
    assert output_shape(generator, (1, 256, 256, 3)) == (1, 256, 256, 3)
    discriminator = models.build_discriminator(config)
    assert param_count(discriminator, (1, 256, 256, 3)) == 2_764_737
    assert output_shape(discriminator, (1, 256, 256, 3)) == (1, 30, 30, 1)


def test_resnet_6blocks_at_128_and_non_square_inputs():
    config = config_lib.cyclegan()
    config.netG = "resnet_6blocks"
    generator = models.build_generator(config)
    assert generator.n_blocks == 6
    assert output_shape(generator, (2, 128, 128, 3)) == (2, 128, 128, 3)
    assert output_shape(generator, (1, 96, 160, 3)) == (1, 96, 160, 3)


def test_reflection_padding_mirrors_without_repeating_the_edge():
    x = jnp.arange(3.0).reshape(1, 1, 3, 1) + jnp.zeros((1, 3, 1, 1))
    padded = reflect_pad(x, 2)
    np.testing.assert_array_equal(padded[0, 2, :, 0], [2, 1, 0, 1, 2, 1, 0])


def test_residual_block_adds_its_input_to_a_hand_computed_branch():
    block = ResnetBlock(norm="none")
    x = jax.random.normal(jax.random.key(0), (2, 5, 6, 4))
    variables = block.init(jax.random.key(1), x, train=False)
    p = jax.tree.map(lambda v: v * 20, variables["params"])

    def padded_conv(h, layer):
        h = jnp.pad(h, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
        return conv_nhwc(h, p[layer]["kernel"], 1, 0) + p[layer]["bias"]

    expected = x + padded_conv(jax.nn.relu(padded_conv(x, "conv1")), "conv2")
    actual = block.apply({"params": p}, x, train=False)
    assert actual.shape == x.shape  # An add, not a concatenation.
    np.testing.assert_allclose(actual, expected, atol=1e-4)


def test_upsampling_matches_pytorch_transposed_conv_with_output_padding():
    from i2i_jax.models import layers

    up = layers.UpConv(
        5, 3, padding=1, output_padding=1, kernel_init=jax.nn.initializers.normal(1.0)
    )
    x = jax.random.normal(jax.random.key(0), (2, 4, 3, 6))
    variables = up.init(jax.random.key(1), x)
    p = variables["params"]
    p = {"kernel": p["kernel"], "bias": p["bias"] + 0.3}
    np.testing.assert_allclose(
        up.apply({"params": p}, x),
        conv_transpose_by_definition(x, p["kernel"], 1, 1, p["bias"]),
        atol=1e-4,
    )
