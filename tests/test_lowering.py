"""`models/conv_forms`: every form of the convolutions computes the same function and
gradients as XLA's own (transposed convolutions also as torch.nn.ConvTranspose2d's definition
written out by hand, the GEMM kernel gradients as autodiff of XLA's convolution), and the layers
and generators compute the same with either lowering."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax import models
from i2i_jax.models import conv_forms, layers
from i2i_jax.models.winograd import winograd_conv

from helpers import conv_transpose_by_definition

# (kernel, padding, output padding): the U-Net's and the ResNet generator's upsampling.
CASES = [(4, 1, 0), (3, 1, 1)]


@pytest.mark.parametrize("lowering", ["native", "subpixel", "gemm"])
@pytest.mark.parametrize("kernel_size, padding, output_padding", CASES)
def test_each_lowering_is_the_transposed_convolution(
    lowering, kernel_size, padding, output_padding
):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 7, 3)).astype(np.float32)  # Odd, non-square.
    kernel = rng.normal(size=(kernel_size, kernel_size, 4, 3)).astype(np.float32)
    function = {
        "native": conv_forms.native_conv_transpose,
        "subpixel": functools.partial(
            conv_forms.subpixel_conv_transpose, conv=conv_forms.cpu_best_conv
        ),
        "gemm": conv_forms.gemm_conv_transpose,
    }[lowering]
    y = function(jnp.asarray(x), jnp.asarray(kernel), padding, output_padding)
    np.testing.assert_allclose(
        y, conv_transpose_by_definition(x, kernel, padding, output_padding), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("kernel_size, padding, output_padding", CASES)
def test_lowerings_have_the_same_gradients(kernel_size, padding, output_padding):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 6, 4, 5)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(kernel_size, kernel_size, 3, 5)), jnp.float32)
    cotangent = jnp.asarray(rng.normal(size=(2, 12, 8, 3)), jnp.float32)
    grads = {}
    for name, function in (
        ("native", conv_forms.native_conv_transpose),
        (
            "subpixel",
            functools.partial(conv_forms.subpixel_conv_transpose, conv=conv_forms.cpu_conv),
        ),
        ("gemm", conv_forms.gemm_conv_transpose),
    ):
        _, vjp = jax.vjp(lambda x, k, f=function: f(x, k, padding, output_padding), x, kernel)
        grads[name] = vjp(cotangent)
    for other in ("subpixel", "gemm"):
        for native, cpu in zip(grads["native"], grads[other], strict=True):
            np.testing.assert_allclose(cpu, native, rtol=1e-4, atol=1e-4, err_msg=other)


def test_the_layer_keeps_flax_conv_transpose_parameters():
    """Same names, shapes and initial values as the flax layer it replaced, so checkpoints and
    seeds carry over; `auto` on this CPU is the cpu form."""
    x = jnp.asarray(np.random.default_rng(2).normal(size=(1, 4, 4, 6)), jnp.float32)
    init = nn.initializers.normal(0.02)
    flax_layer = nn.ConvTranspose(
        5, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)), transpose_kernel=True, kernel_init=init
    )
    expected = flax_layer.init(jax.random.PRNGKey(3), x)
    outputs = {}
    for lowering in conv_forms.LOWERINGS:
        layer = layers.UpConv(5, 4, 1, kernel_init=init, lowering=lowering)
        variables = layer.init(jax.random.PRNGKey(3), x)
        jax.tree.map(np.testing.assert_array_equal, variables, expected)
        variables = jax.tree.map(lambda v: v + 0.1, variables)  # A non-zero bias too.
        outputs[lowering] = jax.jit(layer.apply)(variables, x)
    np.testing.assert_allclose(
        outputs["native"],
        flax_layer.apply(jax.tree.map(lambda v: v + 0.1, expected), x),
        rtol=1e-5,
        atol=1e-6,
    )
    np.testing.assert_allclose(outputs["cpu"], outputs["native"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(outputs["auto"], outputs["cpu"])


@pytest.mark.slow
@pytest.mark.parametrize("netG", ["unet_32", "resnet_2blocks"])
def test_generators_compute_the_same_with_either_lowering(netG, tiny_config):
    tiny_config.netG, tiny_config.no_dropout = netG, True
    images = jnp.asarray(np.random.default_rng(4).uniform(-1, 1, (2, 32, 32, 3)), jnp.float32)
    results = {}
    for lowering in ("native", "cpu"):
        tiny_config.conv_lowering = lowering
        generator = models.build_generator(tiny_config)
        variables = generator.init(jax.random.PRNGKey(0), images, train=False)

        def loss(params, generator=generator, variables=variables):
            out, _ = generator.apply(
                {**variables, "params": params}, images, train=True, mutable=["batch_stats"]
            )
            return jnp.mean(jnp.square(out - 0.3))

        results[lowering] = jax.jit(jax.value_and_grad(loss))(variables["params"])
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        results["cpu"],
        results["native"],
    )


# (in, out, kernel, stride, padding): each way `gemm_kernel_gradient` takes. Few input channels
# (one stacked GEMM), few output channels at stride 1 (stacked shifts of the output gradient),
# and wide layers (one GEMM per tap), at stride 1 and 2; unpadded ones too, which
# `padded_native_conv` pads and crops.
CONV_CASES = [
    (3, 16, 4, 2, 1),
    (6, 8, 7, 1, 3),
    (64, 3, 7, 1, 3),
    (48, 1, 4, 1, 1),
    (40, 24, 3, 1, 1),
    (40, 24, 4, 2, 1),
    (40, 24, 3, 2, 1),
    (40, 24, 3, 1, 0),
    (64, 3, 7, 1, 0),
]


@pytest.mark.parametrize("in_c, out_c, k, stride, padding", CONV_CASES)
def test_cpu_forms_have_xla_convolution_outputs_and_gradients(in_c, out_c, k, stride, padding):
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.normal(size=(2, 11, 9, in_c)), jnp.float32)
    kernel_w = k - 1 if k > 3 else k  # Non-square too, as the sub-pixel phases are.
    kernel = jnp.asarray(rng.normal(size=(k, kernel_w, in_c, out_c)), jnp.float32)
    results = {}
    for name, function in (
        ("native", conv_forms.native_conv),
        ("cpu", conv_forms.cpu_conv),
        ("im2col", conv_forms.im2col_conv),
    ):
        y, vjp = jax.vjp(lambda x, w, f=function: f(x, w, stride, padding), x, kernel)
        cotangent = jnp.asarray(np.random.default_rng(6).normal(size=y.shape), jnp.float32)
        results[name] = (y, *vjp(cotangent))
    for other in ("cpu", "im2col"):
        for native, cpu in zip(results["native"], results[other], strict=True):
            np.testing.assert_allclose(cpu, native, rtol=1e-4, atol=1e-3, err_msg=other)


@pytest.mark.parametrize(
    "x_shape, kernel_shape, padding",
    [((1, 48, 48, 40), (3, 3, 40, 24), 1), ((1, 128, 128, 16), (7, 7, 16, 3), 3)],
)
def test_gemm_kernel_gradient_on_large_images_is_xlas(x_shape, kernel_shape, padding):
    """Images large enough for the shifted form (the padded input at most 10 % larger)."""
    rng = np.random.default_rng(9)
    x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=kernel_shape), jnp.float32)
    y, vjp = jax.vjp(lambda k: conv_forms.native_conv(x, k, 1, padding), kernel)
    dy = jnp.asarray(rng.normal(size=y.shape), jnp.float32)
    np.testing.assert_allclose(
        conv_forms.gemm_kernel_gradient(x, dy, kernel_shape[:2], 1, padding),
        vjp(dy)[0],
        rtol=1e-4,
        atol=1e-2,
    )


def test_the_conv_layer_keeps_flax_conv_parameters():
    x = jnp.asarray(np.random.default_rng(7).normal(size=(1, 8, 8, 6)), jnp.float32)
    init = nn.initializers.normal(0.02)
    expected = nn.Conv(5, (4, 4), strides=2, padding=((1, 1), (1, 1)), kernel_init=init).init(
        jax.random.PRNGKey(3), x
    )
    for lowering in conv_forms.LOWERINGS:
        layer = layers.Conv(5, 4, 1, stride=2, kernel_init=init, lowering=lowering)
        jax.tree.map(np.testing.assert_array_equal, layer.init(jax.random.PRNGKey(3), x), expected)


@pytest.mark.slow
def test_cpu_forms_average_gradients_over_devices_like_one_device():
    """Under shard_map, with the kernel cast to per-device values (as the train step does) or
    left the same on every device (the custom gradient must then sum it)."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = jax.make_mesh((4,), ("data",), devices=jax.devices()[:4])
    rng = np.random.default_rng(8)
    cases = [
        (lambda x, w: conv_forms.cpu_conv(x, w, 2, 1), (4, 16, 16, 40), (4, 4, 40, 24)),
        (lambda x, w: conv_forms.cpu_conv(x, w, 1, 0), (4, 16, 16, 8), (7, 7, 8, 3)),
        (lambda x, w: conv_forms.im2col_conv(x, w, 2, 1), (4, 8, 8, 8), (4, 4, 8, 6)),
        (lambda x, w: winograd_conv(x, w, 1, 4), (4, 12, 12, 8), (3, 3, 8, 6)),
        (lambda x, w: conv_forms.gemm_conv_transpose(x, w, 1, 0), (4, 4, 4, 8), (4, 4, 6, 8)),
    ]
    for function, x_shape, w_shape in cases:
        x = jnp.asarray(rng.normal(size=x_shape), jnp.float32)
        w = jnp.asarray(rng.normal(size=w_shape), jnp.float32)

        def loss(w, x, function=function):
            return jnp.sum(jnp.sin(function(x, w)))

        expected = jax.grad(loss)(w, x) / 4
        sharded = jax.device_put(x, NamedSharding(mesh, P("data")))
        for cast in (True, False):

            def per_device(w, x, cast=cast):
                if cast:
                    w = jax.lax.pcast(w, "data", to="varying")
                    return jax.lax.pmean(jax.grad(loss)(w, x), "data")
                return jax.grad(loss)(w, x) / 4

            got = jax.jit(
                jax.shard_map(per_device, mesh=mesh, in_specs=(P(), P("data")), out_specs=P())
            )(w, sharded)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
