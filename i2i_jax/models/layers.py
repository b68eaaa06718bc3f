"""Building blocks shared by the generators and discriminators: norms, dropout, weight init,
and the convolution layers.

Convolutions use explicit PyTorch-style padding so that output shapes and parameter layouts
match the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix) exactly. The forms
they compute (XLA's own, or those XLA:CPU runs fastest) are in `conv_forms`.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from i2i_jax.models.conv_forms import (
    cpu_best_conv,
    cpu_best_conv_transpose,
    lowered,
    native_conv,
    native_conv_transpose,
)

NORMS = ("batch", "instance", "none")
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
NORM_EPS = 1e-5  # PyTorch's default for BatchNorm2d and InstanceNorm2d.
BATCH_NORM_MOMENTUM = 0.1  # PyTorch convention: running = (1 - m) * running + m * batch.
CONV_OUTPUT = "conv_output"  # The name every convolution's output carries (see `remat`).


def weight_init(init_type: str, gain: float) -> Callable:
    """The reference's `init_weights` for conv kernels (biases always start at zero)."""
    if init_type == "normal":
        return nn.initializers.normal(stddev=gain)
    if init_type == "xavier":
        return nn.initializers.variance_scaling(gain**2, "fan_avg", "normal")
    if init_type == "kaiming":
        return nn.initializers.variance_scaling(2.0, "fan_in", "normal")
    if init_type == "orthogonal":
        return nn.initializers.orthogonal(scale=gain)
    raise ValueError(f"init_type={init_type!r} is not one of {INIT_TYPES}")


def conv_has_bias(norm: str) -> bool:
    """The reference's `use_bias` for every conv that is not an always-biased outer one: off
    with batch norm (whose shift makes a bias redundant), including the U-Net's first and
    innermost down-convs that no norm follows. The reference also drops it for norm `none`;
    that quirk is not copied."""
    return norm != "batch"


def bound_axis(name: str | None) -> str | None:
    """`name` if a `shard_map` around this call binds it, else None.

    Inside the data-parallel train step an array is one device's share of the global batch,
    which is split along that axis; anywhere else (evaluation, export) it is the whole batch.
    """
    if name is None:
        return None
    try:
        jax.lax.axis_index(name)
    except NameError:
        return None
    return name


class BatchNorm(nn.Module):
    """Batch norm with PyTorch semantics, over the global batch or over each device's share.

    Inside the data-parallel step (`batch_axis` bound) the statistics span the global batch
    when `synchronised`, with one all-reduce per application, or only this device's share when
    not (what pmap gave; the task then averages the running statistics over devices). Running
    statistics use the unbiased variance, as PyTorch does.
    """

    synchronised: bool = True
    batch_axis: str | None = None
    scale_init: Callable = nn.initializers.normal(stddev=0.02)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, use_running_average: bool):
        features = x.shape[-1]
        scale = self.param("scale", lambda k, s: 1.0 + self.scale_init(k, s), (features,))
        bias = self.param("bias", nn.initializers.zeros, (features,))
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (features,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (features,), jnp.float32)

        x32 = x.astype(jnp.float32)
        if use_running_average:
            mean, var = ra_mean.value, ra_var.value
        else:
            mean = x32.mean(axis=(0, 1, 2))
            var = jnp.square(x32 - mean).mean(axis=(0, 1, 2))
            count = x32.size // features
            axis = bound_axis(self.batch_axis) if self.synchronised else None
            if axis:
                # Chan et al.'s parallel variance: the mean of the devices' variances plus the
                # variance of their means, from one all-reduce of equal-sized shares.
                mean_all, mean_of_squares, var_all = jax.lax.pmean(
                    jnp.stack([mean, jnp.square(mean), var]), axis
                )
                var = var_all + jnp.maximum(mean_of_squares - jnp.square(mean_all), 0.0)
                mean, count = mean_all, count * jax.lax.axis_size(axis)
            if not self.is_initializing():
                m = BATCH_NORM_MOMENTUM
                ra_mean.value = (1 - m) * ra_mean.value + m * mean
                ra_var.value = (1 - m) * ra_var.value + m * var * count / max(count - 1, 1)
        y = (x32 - mean) * jax.lax.rsqrt(var + NORM_EPS)
        return (y * scale + bias).astype(self.dtype)


class Dropout(nn.Module):
    """Dropout whose mask for each example derives from the example's position in the global
    batch, so that a step draws the same masks on one device or on many."""

    rate: float
    batch_axis: str | None = None

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0:
            return x
        key = self.make_rng("dropout")
        axis = bound_axis(self.batch_axis)
        first = jax.lax.axis_index(axis) * x.shape[0] if axis else 0

        def keep(position):
            return jax.random.bernoulli(
                jax.random.fold_in(key, position), 1 - self.rate, x.shape[1:]
            )

        mask = jax.vmap(keep)(first + jnp.arange(x.shape[0]))
        return jnp.where(mask, x / (1 - self.rate), jnp.zeros_like(x))


class InstanceNorm(nn.Module):
    """Instance norm without affine parameters or running statistics (reference default)."""

    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, use_running_average: bool = False):
        del use_running_average  # Instance statistics are the same in training and test.
        x32 = x.astype(jnp.float32)
        mean = x32.mean(axis=(1, 2), keepdims=True)
        var = jnp.square(x32 - mean).mean(axis=(1, 2), keepdims=True)
        return ((x32 - mean) * jax.lax.rsqrt(var + NORM_EPS)).astype(self.dtype)


def make_norm(
    norm: str, synchronised: bool, batch_axis: str | None, init_gain: float, dtype
) -> Callable[[], nn.Module] | None:
    """A factory of fresh norm layers, or None for norm `none`."""
    if norm == "batch":
        return lambda: BatchNorm(
            synchronised=synchronised,
            batch_axis=batch_axis,
            scale_init=nn.initializers.normal(stddev=init_gain),
            dtype=dtype,
        )
    if norm == "instance":
        return lambda: InstanceNorm(dtype=dtype)
    if norm == "none":
        return None
    raise ValueError(f"norm={norm!r} is not one of {NORMS}")


class _Convolution(nn.Module):
    """What Conv and UpConv share: a square kernel, symmetric padding, an optional bias, the
    compute dtype and the lowering. Their outputs are tagged `CONV_OUTPUT`, the values that
    `remat="conv_outputs"` keeps for the backward pass."""

    features: int
    kernel_size: int
    padding: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.lecun_normal()
    dtype: Any = jnp.float32
    lowering: str = "auto"

    def kernel_and_input(self, x, kernel_shape: tuple[int, ...]):
        kernel = self.param("kernel", self.kernel_init, kernel_shape)
        return x.astype(self.dtype), kernel.astype(self.dtype)

    def finish(self, y):
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(self.dtype)
        return checkpoint_name(y, CONV_OUTPUT)


class Conv(_Convolution):
    """A square-kernel convolution with symmetric zero padding, like torch.nn.Conv2d. Its
    parameters are flax nn.Conv's (kernel [k, k, in, out], bias), whatever the `lowering`."""

    stride: int = 1

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        x, kernel = self.kernel_and_input(x, (k, k, x.shape[-1], self.features))
        stride, padding, winograd = self.stride, self.padding, self.lowering != "cpu"
        return self.finish(
            lowered(
                self.lowering,
                lambda x, k: native_conv(x, k, stride, padding),
                lambda x, k: cpu_best_conv(x, k, stride, padding, winograd),
                x,
                kernel,
            )
        )


class UpConv(_Convolution):
    """A stride-2 transposed convolution with torch.nn.ConvTranspose2d's `padding` and
    `output_padding`: doubles height and width. Its parameters are flax ConvTranspose's with
    `transpose_kernel=True` (kernel [kh, kw, out, in]: torch's weight [in, out, kh, kw]
    transposed), so checkpoints do not depend on `lowering`.

    `lowering`: `native` (XLA's transposed convolution), `cpu`
    (`conv_forms.cpu_best_conv_transpose`), or `auto` (see `conv_forms.lowered`).
    """

    output_padding: int = 0

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        x, kernel = self.kernel_and_input(x, (k, k, self.features, x.shape[-1]))
        native = functools.partial(
            native_conv_transpose, padding=self.padding, output_padding=self.output_padding
        )
        cpu = functools.partial(
            cpu_best_conv_transpose, padding=self.padding, output_padding=self.output_padding
        )
        return self.finish(lowered(self.lowering, native, cpu, x, kernel))


class ConvNet(nn.Module):
    """Options every network shares, and the helpers derived from them."""

    norm: str = "batch"
    init_type: str = "normal"
    init_gain: float = 0.02
    sync_batch_stats: bool = True
    batch_axis: str | None = None  # The mesh axis the global batch is split along, if any.
    dtype: Any = jnp.float32
    conv_lowering: str = "auto"  # How convolutions are computed; see `conv_forms.lowered`.

    def kernel_init(self) -> Callable:
        return weight_init(self.init_type, self.init_gain)

    def _layer_options(self) -> dict:
        return dict(kernel_init=self.kernel_init(), dtype=self.dtype, lowering=self.conv_lowering)

    # Layers with this network's init, dtype and lowering; called from a compact `__call__`,
    # so they belong to the calling network.
    def conv(
        self, features: int, kernel: int, stride: int, padding: int, use_bias: bool, name: str
    ) -> Conv:
        return Conv(
            features, kernel, padding, use_bias, stride=stride, name=name, **self._layer_options()
        )

    def up_conv(self, features: int, use_bias: bool, name: str) -> UpConv:
        """4x4, stride 2, padding 1: the U-Net's upsampling."""
        return UpConv(
            features, 4, 1, use_bias, output_padding=0, name=name, **self._layer_options()
        )

    def up_conv3(self, features: int, use_bias: bool, name: str) -> UpConv:
        """3x3, stride 2, padding 1, output padding 1: CycleGAN's upsampling."""
        return UpConv(
            features, 3, 1, use_bias, output_padding=1, name=name, **self._layer_options()
        )

    def normalize(self, x, train: bool):
        """A fresh layer of the configured norm applied to `x` (`x` itself for norm `none`).
        Called from a compact `__call__`, so the layer belongs to the calling network."""
        new_norm = make_norm(
            self.norm, self.sync_batch_stats, self.batch_axis, self.init_gain, self.dtype
        )
        return new_norm()(x, use_running_average=not train) if new_norm else x

    def dropout(self, x, train: bool):
        """Dropout 0.5, the reference's rate."""
        return Dropout(0.5, batch_axis=self.batch_axis)(x, deterministic=not train)

    def inner_conv_bias(self) -> bool:
        return conv_has_bias(self.norm)
