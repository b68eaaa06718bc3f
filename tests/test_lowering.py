"""Every lowering of the transposed convolutions computes the same function and gradients as
torch.nn.ConvTranspose2d's definition, written out by hand."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import models
from i2i_jax.models import layers

# (kernel, padding, output padding): the U-Net's and the ResNet generator's upsampling.
CASES = [(4, 1, 0), (3, 1, 1)]


def torch_definition(x, kernel, padding, output_padding):
    """ConvTranspose2d(stride=2) by its definition: input (i, j) adds x * w[:, :, a, b] to
    output (2i - padding + a, 2j - padding + b). `kernel` is [kh, kw, out, in]."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    size_h, size_w = (2 * (h - 1) - 2 * padding + k + output_padding,
                      2 * (w - 1) - 2 * padding + k + output_padding)
    out = np.zeros((n, size_h, size_w, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    oy, ox = 2 * i - padding + a, 2 * j - padding + b
                    if 0 <= oy < size_h and 0 <= ox < size_w:
                        out[:, oy, ox] += x[:, i, j] @ kernel[a, b].T
    return out


@pytest.mark.parametrize("lowering", ["native", "subpixel"])
@pytest.mark.parametrize("kernel_size, padding, output_padding", CASES)
def test_each_lowering_is_the_transposed_convolution(lowering, kernel_size, padding,
                                                     output_padding):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)  # Odd, non-square.
    kernel = rng.normal(size=(kernel_size, kernel_size, 4, 3)).astype(np.float32)
    function = {"native": layers.native_conv_transpose,
                "subpixel": layers.subpixel_conv_transpose}[lowering]
    y = function(jnp.asarray(x), jnp.asarray(kernel), padding, output_padding)
    np.testing.assert_allclose(y, torch_definition(x, kernel, padding, output_padding),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel_size, padding, output_padding", CASES)
def test_lowerings_have_the_same_gradients(kernel_size, padding, output_padding):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 6, 4, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 3, 5)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(2, 12, 8, 3)), jnp.float32)
    grads = {}
    for name, function in (("native", layers.native_conv_transpose),
                           ("subpixel", layers.subpixel_conv_transpose)):
        _, vjp = jax.vjp(lambda x, k, f=function: f(x, k, padding, output_padding), x, kernel)
        grads[name] = vjp(cotangent)
    for native, subpixel in zip(grads["native"], grads["subpixel"], strict=True):
        np.testing.assert_allclose(subpixel, native, rtol=1e-4, atol=1e-4)


def test_the_layer_keeps_flax_conv_transpose_parameters():
    """Same names, shapes and initial values as the flax layer it replaced, so checkpoints and
    seeds carry over; `auto` on this CPU is the subpixel form."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 4, 6)), jnp.float32)
    init = nn.initializers.normal(0.02)
    flax_layer = nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)),
                                  transpose_kernel=True, kernel_init=init)
    expected = flax_layer.init(jax.random.PRNGKey(3), x)
    outputs = {}
    for lowering in layers.LOWERINGS:
        layer = layers.up_conv(5, True, init, jnp.float32, "up", lowering)
        variables = layer.init(jax.random.PRNGKey(3), x)
        jax.tree.map(np.testing.assert_array_equal, variables, expected)
        variables = jax.tree.map(lambda v: v + 0.1, variables)  # A non-zero bias too.
        outputs[lowering] = jax.jit(layer.apply)(variables, x)
    np.testing.assert_allclose(outputs["native"], flax_layer.apply(
        jax.tree.map(lambda v: v + 0.1, expected), x), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(outputs["subpixel"], outputs["native"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["auto"], outputs["subpixel"])


@pytest.mark.parametrize("netG", ["unet_32", "resnet_2blocks"])
def test_generators_compute_the_same_with_either_lowering(netG, tiny_config):
    tiny_config.netG, tiny_config.no_dropout = netG, True
    images = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    results = {}
    for lowering in ("native", "subpixel"):
        tiny_config.conv_lowering = lowering
        generator = models.build_generator(tiny_config)
        variables = generator.init(jax.random.PRNGKey(0), images, train=False)

        def loss(params, generator=generator, variables=variables):
            out, _ = generator.apply({**variables, "params": params}, images, train=True,
                                     mutable=["batch_stats"])
            return jnp.mean(jnp.square(out - 0.3))

        results[lowering] = jax.jit(jax.value_and_grad(loss))(variables["params"])
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
                 results["subpixel"], results["native"])
