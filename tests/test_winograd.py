"""Winograd convolutions against XLA's own convolution, and the transforms against the
published ones."""

from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from i2i_jax.models import conv_forms, layers
from i2i_jax.models.winograd import transforms, winograd_conv

# (m, r, padding, height, width): every tile size, whole and partial tiles, both paddings.
CASES = [
    (2, 3, 1, 16, 17),
    (2, 3, 0, 18, 19),
    (4, 3, 1, 16, 16),
    (4, 3, 1, 19, 22),
    (4, 3, 0, 21, 18),
    (6, 3, 1, 18, 20),
    (2, 2, 0, 17, 18),
    (3, 2, 0, 17, 16),
    (2, 4, 1, 16, 17),
    (3, 4, 1, 17, 16),
]


def _relative_error(got, expected) -> float:
    return float(jnp.max(jnp.abs(got - expected)) / jnp.max(jnp.abs(expected)))


@pytest.mark.parametrize("m, r, padding, height, width", CASES)
def test_winograd_has_xla_convolution_outputs_and_gradients(m, r, padding, height, width):
    """Max error over max value, at the bound the tile's transforms justify (the docstring's)."""
    rng = np.random.default_rng(m * 10 + r)
    in_c, out_c = 24, 16
    x = jnp.asarray(rng.normal(size=(2, height, width, in_c)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(r, r, in_c, out_c)) / np.sqrt(r * r * in_c), jnp.float32)
    expected, expected_vjp = jax.vjp(
        lambda x, k: conv_forms.native_conv(x, k, 1, padding), x, kernel
    )
    got, got_vjp = jax.vjp(lambda x, k: winograd_conv(x, k, padding, m), x, kernel)
    cotangent = jnp.asarray(rng.normal(size=expected.shape), jnp.float32)
    bound = 2e-6 if m + r - 1 <= 4 else 2e-5
    assert got.shape == expected.shape
    pairs = zip(
        ("output", "dx", "dW"),
        (got, *got_vjp(cotangent)),
        (expected, *expected_vjp(cotangent)),
        strict=True,
    )
    for name, value, reference in pairs:
        assert _relative_error(value, reference) < bound, (name, _relative_error(value, reference))


def test_f23_transforms_are_lavin_and_grays():
    """Lavin & Gray (2016), eq. 7-8; each interpolation point's rows may differ in sign,
    which cancels in A^T[:, t] G[t] B^T[t]."""
    half = Fraction(1, 2)
    published = (
        [[1, 1, 1, 0], [0, 1, -1, -1]],
        [[1, 0, 0], [half, half, half], [half, -half, half], [0, 0, 1]],
        [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
    )
    ours = transforms(2, 3)
    for t in range(4):
        term = [np.array(matrix, dtype=object) for matrix in published]
        expected = np.einsum("i,k,j->ikj", term[0][:, t], term[1][t], term[2][t])
        got = np.einsum("i,k,j->ikj", ours[0][:, t], ours[1][t], ours[2][t])
        assert (got == expected).all(), t


def test_cpu_best_conv_takes_winograd_only_where_it_pays():
    def forms(x_shape, kernel_shape, stride, winograd=True):
        x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
        kernel = jax.ShapeDtypeStruct(kernel_shape, jnp.float32)
        jaxpr = jax.make_jaxpr(lambda x, k: conv_forms.cpu_best_conv(x, k, stride, 0, winograd))(
            x, kernel
        )
        return "winograd_conv" in str(jaxpr)

    assert forms((1, 66, 66, 256), (3, 3, 256, 256), 1)  # CycleGAN 256's ResNet blocks
    assert not forms((1, 66, 66, 256), (3, 3, 256, 256), 1, winograd=False)
    assert forms((1, 34, 34, 256), (3, 3, 256, 256), 1)  # CycleGAN 128's
    assert not forms((1, 18, 18, 256), (3, 3, 256, 256), 1)  # and at 64 px
    assert not forms((1, 66, 66, 256), (3, 3, 256, 256), 2)
    assert not forms((1, 130, 130, 64), (3, 3, 64, 64), 1)
    assert forms((1, 32, 32, 256), (4, 4, 256, 512), 1)  # The PatchGAN's widest at 256 px
    assert not forms((1, 16, 16, 256), (4, 4, 256, 512), 1)  # and at 128 px
    assert not forms((1, 31, 31, 512), (4, 4, 512, 1), 1)  # Its logits
    assert not forms((1, 64, 64, 256), (4, 4, 256, 512), 2)


@pytest.mark.parametrize(
    "lowering, takes_winograd",
    [("auto", True), ("winograd", True), ("cpu", False), ("native", False)],
)
def test_auto_takes_winograd_on_cpu_and_cpu_keeps_the_direct_forms(lowering, takes_winograd):
    x = jax.ShapeDtypeStruct((1, 32, 32, 256), jnp.float32)
    layer = layers.Conv(512, 4, 1, lowering=lowering)
    params = jax.eval_shape(layer.init, jax.random.PRNGKey(0), x)
    jaxpr = str(jax.make_jaxpr(layer.apply)(params, x))
    assert ("winograd_conv" in jaxpr) == takes_winograd


def test_winograd_exports():
    """Plain JAX ops only: the exported function runs without this package's code."""
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(1, 12, 12, 8)), jnp.float32)
    kernel = jnp.asarray(rng.normal(size=(3, 3, 8, 4)), jnp.float32)
    exported = jax.export.export(jax.jit(lambda x, k: winograd_conv(x, k, 1, 4)))(x, kernel)
    restored = jax.export.deserialize(exported.serialize())
    np.testing.assert_allclose(
        restored.call(x, kernel), conv_forms.native_conv(x, kernel, 1, 1), rtol=1e-5, atol=1e-4
    )


def test_the_winograd_lowering_of_a_resnet_block_conv_is_xlas():
    """The layer as CycleGAN 256's ResNet blocks use it (66 x 66 x 256, padding 0), where
    `conv_lowering=winograd` takes F(4, 3): outputs and both gradients."""
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(1, 66, 66, 256)), jnp.float32)
    results = {}
    for lowering in ("native", "winograd"):
        layer = layers.Conv(256, 3, 0, lowering=lowering)
        params = layer.init(jax.random.PRNGKey(0), x)
        y, vjp = jax.vjp(jax.jit(layer.apply), params, x)
        results[lowering] = (y, *jax.tree.leaves(vjp(jnp.sin(y))))
    for got, expected in zip(results["winograd"], results["native"], strict=True):
        assert _relative_error(got, expected) < 2e-5
