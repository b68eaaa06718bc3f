"""Building blocks shared by the generators and discriminators.

Convolutions use explicit PyTorch-style padding so that output shapes and parameter layouts
match the reference implementation (junyanz/pytorch-CycleGAN-and-pix2pix) exactly.
"""

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

NORMS = ("batch", "instance", "none")
LOWERINGS = ("auto", "native", "cpu")
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
                    jnp.stack([mean, jnp.square(mean), var]), axis)
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
            return jax.random.bernoulli(jax.random.fold_in(key, position), 1 - self.rate,
                                        x.shape[1:])

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


def make_norm(norm: str, synchronised: bool, batch_axis: str | None, init_gain: float,
              dtype) -> Callable[[], nn.Module] | None:
    """A factory of fresh norm layers, or None for norm `none`."""
    if norm == "batch":
        return lambda: BatchNorm(synchronised=synchronised, batch_axis=batch_axis,
                                 scale_init=nn.initializers.normal(stddev=init_gain), dtype=dtype)
    if norm == "instance":
        return lambda: InstanceNorm(dtype=dtype)
    if norm == "none":
        return None
    raise ValueError(f"norm={norm!r} is not one of {NORMS}")


def native_conv(x, kernel, stride: int, padding: int):
    """torch.nn.Conv2d's convolution (symmetric zero padding) as XLA's own; kernel [k, k, in,
    out]."""
    return jax.lax.conv_general_dilated(x, kernel, (stride, stride), ((padding, padding),) * 2,
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _spatial_size(x) -> int | None:
    """Height x width, or None while shapes are symbolic (an export for every size)."""
    h, w = x.shape[1:3]
    return h * w if isinstance(h, int) and isinstance(w, int) else None


# A side (input or output gradient) with at most this many channels x taps is stacked whole
# into one GEMM; wider ones take one GEMM per kernel tap.
_STACKED_GEMM_MAX_COLUMNS = 512


def gemm_kernel_gradient(x, dy, kernel_shape: tuple[int, int], stride: int, padding: int):
    """The kernel gradient of `native_conv` as GEMMs over all positions, which XLA:CPU runs
    several times faster than its own (a convolution whose kernel is the whole output).

    Few input channels: all taps stacked into one GEMM. Few output channels (stride 1): the
    output gradient shifted once per tap and stacked instead.
    """
    kh, kw = kernel_shape
    n, out_h, out_w, out_c = dy.shape
    in_c = x.shape[-1]
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    # Ties the input to the output gradient, so that the per-tap copies of it below are made
    # in the backward pass: XLA would make them as soon as the input exists, in the forward
    # pass, and hold those of every layer at once (0.6 GB for the CycleGAN generator at 256
    # px). A NaN or infinity in dy's first element reaches every kernel entry anyway.
    padded = padded.at[0, 0, 0, 0].add(0 * dy[0, 0, 0, 0])

    def reached_by(a, b):  # [positions, in_c]
        return padded[:, a:a + stride * (out_h - 1) + 1:stride,
                      b:b + stride * (out_w - 1) + 1:stride].reshape(-1, in_c)

    taps = [(a, b) for a in range(kh) for b in range(kw)]
    flat_dy = dy.reshape(-1, out_c)
    if in_c * len(taps) <= _STACKED_GEMM_MAX_COLUMNS:
        stacked = jnp.concatenate([reached_by(a, b) for a, b in taps], axis=1)
        return jnp.dot(stacked.T, flat_dy).reshape(kh, kw, in_c, out_c)
    if stride == 1 and out_c * len(taps) <= _STACKED_GEMM_MAX_COLUMNS:
        # dW[a, b] = sum over padded positions (u, v) of x[u, v] dy[u - a, v - b].
        wide = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
        size_h, size_w = padded.shape[1:3]
        shifted = jnp.concatenate([wide[:, kh - 1 - a:kh - 1 - a + size_h,
                                        kw - 1 - b:kw - 1 - b + size_w] for a, b in taps],
                                  axis=-1)
        gradient = jnp.dot(padded.reshape(-1, in_c).T, shifted.reshape(-1, len(taps) * out_c))
        return gradient.reshape(in_c, kh, kw, out_c).transpose(1, 2, 0, 3)
    return jnp.stack([jnp.dot(reached_by(a, b).T, flat_dy) for a, b in taps]).reshape(
        kh, kw, in_c, out_c)


def padded_native_conv(x, kernel, stride: int, padding: int):
    """`native_conv`, but an unpadded stride-1 convolution pads by one and crops the border it
    adds: XLA:CPU runs unpadded convolutions several times slower than padded ones, much more
    than the extra border costs."""
    if padding == 0 and stride == 1 and max(kernel.shape[:2]) > 1:
        return native_conv(x, kernel, 1, 1)[:, 1:-1, 1:-1]
    return native_conv(x, kernel, stride, padding)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def cpu_conv(x, kernel, stride: int, padding: int):
    """`native_conv` computed as XLA:CPU runs fastest: the forward pass by
    `padded_native_conv`, the input gradient by XLA's own rule and the kernel gradient by
    `gemm_kernel_gradient`."""
    return padded_native_conv(x, kernel, stride, padding)


def _cpu_conv_forward(x, kernel, stride, padding):
    return padded_native_conv(x, kernel, stride, padding), (x, kernel)


def _cpu_conv_backward(stride, padding, residuals, dy):
    x, kernel = residuals
    _, input_vjp = jax.vjp(lambda x: native_conv(x, kernel, stride, padding), x)
    kernel_gradient = gemm_kernel_gradient(x, dy, kernel.shape[:2], stride, padding)
    # Under shard_map, a kernel that is the same on every device (one autodiff does not
    # differentiate) gets its per-device gradients summed, as autodiff would.
    summed_over = tuple(sorted(jax.typeof(kernel_gradient).manual_axis_type.varying
                               - jax.typeof(kernel).manual_axis_type.varying))
    if summed_over:
        kernel_gradient = jax.lax.psum(kernel_gradient, summed_over)
    return input_vjp(dy)[0], kernel_gradient.astype(kernel.dtype)


cpu_conv.defvjp(_cpu_conv_forward, _cpu_conv_backward)


def im2col_conv(x, kernel, stride: int, padding: int):
    """`native_conv` as one GEMM: every output position's receptive field, all taps stacked,
    times the kernel. Cheapest on XLA:CPU for tiny images, where a convolution's overheads
    dominate its arithmetic."""
    kh, kw, in_c, out_c = kernel.shape
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    out_h = (padded.shape[1] - kh) // stride + 1
    out_w = (padded.shape[2] - kw) // stride + 1
    fields = jnp.concatenate(
        [padded[:, a:a + stride * (out_h - 1) + 1:stride, b:b + stride * (out_w - 1) + 1:stride]
         for a in range(kh) for b in range(kw)], axis=-1)
    return jnp.dot(fields, kernel.reshape(kh * kw * in_c, out_c))


# Images with at most this many positions count as tiny for the GEMM forms.
_TINY_POSITIONS = 256


def cpu_best_conv(x, kernel, stride: int, padding: int):
    """The fastest form on XLA:CPU: `im2col_conv` for tiny outputs, else `cpu_conv`."""
    size = _spatial_size(x)
    if size is not None and size // (stride * stride) <= _TINY_POSITIONS // 4:
        return im2col_conv(x, kernel, stride, padding)
    return cpu_conv(x, kernel, stride, padding)


def lowered(lowering: str, native: Callable, cpu: Callable, *args):
    """`native(*args)` or `cpu(*args)` by `lowering`; `auto` picks per platform when the step
    is lowered (cpu on CPU, native on GPU and TPU), so an exported function carries both."""
    if lowering == "native":
        return native(*args)
    if lowering == "cpu":
        return cpu(*args)
    if lowering == "auto":
        return jax.lax.platform_dependent(*args, cpu=cpu, default=native)
    raise ValueError(f"conv_lowering={lowering!r} is not one of {LOWERINGS}")


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
        stride, padding = self.stride, self.padding
        return self.finish(lowered(
            self.lowering, lambda x, k: native_conv(x, k, stride, padding),
            lambda x, k: cpu_best_conv(x, k, stride, padding), x, kernel))


def native_conv_transpose(x, kernel, padding: int, output_padding: int):
    """torch.nn.ConvTranspose2d(stride=2, padding, output_padding) as XLA's transposed
    convolution: a convolution of the zero-dilated input with the flipped kernel."""
    k = kernel.shape[0]
    pads = ((k - 1 - padding, k - 1 - padding + output_padding),) * 2
    return jax.lax.conv_transpose(x, kernel, (2, 2), pads, transpose_kernel=True)


def _phase_taps(kernel_size: int, padding: int, phase: int) -> list[tuple[int, int]]:
    """(input offset, kernel tap) pairs, by offset: along one axis, output 2i + phase of a
    stride-2 transposed convolution sums input i + offset times kernel tap `tap`."""
    return sorted(((phase + padding - tap) // 2, tap) for tap in range(kernel_size)
                  if (phase + padding - tap) % 2 == 0)


def subpixel_conv_transpose(x, kernel, padding: int, output_padding: int,
                            conv: Callable = native_conv):
    """The same transposed convolution as four stride-1 convolutions, one per output phase
    (even or odd row and column), interleaved: no multiplications by inserted zeros, and the
    kernel's gradient is an ordinary convolution's (on XLA:CPU, many times faster than a
    transposed convolution's). `conv(x, kernel, stride, padding)` computes them."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    if (h - 1) * 2 - 2 * padding + k + output_padding != 2 * h:
        raise ValueError(f"a {k}x{k} transposed convolution with padding {padding} and output "
                         f"padding {output_padding} does not double the size")
    phases = [_phase_taps(k, padding, phase) for phase in (0, 1)]
    margin = max(abs(offset) for taps in phases for offset, _ in taps)
    padded = jnp.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    rows = []
    for taps_y in phases:
        row = []
        for taps_x in phases:
            taps = kernel[np.array([t for _, t in taps_y])][:, np.array([t for _, t in taps_x])]
            top, left = margin + taps_y[0][0], margin + taps_x[0][0]
            window = padded[:, top:top + h + len(taps_y) - 1, left:left + w + len(taps_x) - 1]
            row.append(conv(window, taps.transpose(0, 1, 3, 2), 1, 0))
        rows.append(jnp.stack(row, axis=3))  # [n, h, w, column phase, c]
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, kernel.shape[2])


def gemm_conv_transpose(x, kernel, padding: int, output_padding: int):
    """The same transposed convolution as one GEMM, every input pixel times the whole kernel,
    whose products are then added at their output positions, phase by phase. Cheapest on
    XLA:CPU for tiny inputs and for few output channels (the U-Net's last layer)."""
    n, h, w, in_c = x.shape
    k, out_c = kernel.shape[0], kernel.shape[2]
    if (h - 1) * 2 - 2 * padding + k + output_padding != 2 * h:
        raise ValueError(f"a {k}x{k} transposed convolution with padding {padding} and output "
                         f"padding {output_padding} does not double the size")
    # The kernel as it is stored, [k * k * out_c, in_c], transposed inside the GEMM: a 4-D
    # transpose to [in_c, k * k * out_c] first would be a copy, which XLA:CPU makes on every
    # call and which took ten times as long as the GEMM itself for the U-Net's inner layers.
    products = jnp.dot(x.reshape(-1, in_c), kernel.reshape(-1, in_c).T)
    phases = [_phase_taps(k, padding, phase) for phase in (0, 1)]
    margin = max(abs(offset) for taps in phases for offset, _ in taps)
    products = jnp.pad(products.reshape(n, h, w, k, k, out_c),
                       ((0, 0), (margin, margin), (margin, margin), (0, 0), (0, 0), (0, 0)))
    rows = []
    for taps_y in phases:
        row = []
        for taps_x in phases:
            row.append(sum(products[:, margin + dy:margin + dy + h, margin + dx:margin + dx + w,
                                    ty, tx] for dy, ty in taps_y for dx, tx in taps_x))
        rows.append(jnp.stack(row, axis=3))  # [n, h, w, column phase, c]
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, out_c)


def cpu_best_conv_transpose(x, kernel, padding: int, output_padding: int):
    """The fastest form on XLA:CPU: `gemm_conv_transpose` for tiny inputs or few output
    channels, else `subpixel_conv_transpose` of `cpu_best_conv`s."""
    size = _spatial_size(x)
    if size is not None and (size <= _TINY_POSITIONS or kernel.shape[2] <= 4):
        return gemm_conv_transpose(x, kernel, padding, output_padding)
    return subpixel_conv_transpose(x, kernel, padding, output_padding, cpu_best_conv)


class UpConv(_Convolution):
    """A stride-2 transposed convolution with torch.nn.ConvTranspose2d's `padding` and
    `output_padding`: doubles height and width. Its parameters are flax ConvTranspose's with
    `transpose_kernel=True` (kernel [kh, kw, out, in]: torch's weight [in, out, kh, kw]
    transposed), so checkpoints do not depend on `lowering`.

    `lowering`: `native` (XLA's transposed convolution), `cpu` (`cpu_best_conv_transpose`), or
    `auto` (see `lowered`).
    """

    output_padding: int = 0

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        x, kernel = self.kernel_and_input(x, (k, k, self.features, x.shape[-1]))
        native = functools.partial(native_conv_transpose, padding=self.padding,
                                   output_padding=self.output_padding)
        cpu = functools.partial(cpu_best_conv_transpose, padding=self.padding,
                                output_padding=self.output_padding)
        return self.finish(lowered(self.lowering, native, cpu, x, kernel))


class ConvNet(nn.Module):
    """Options every network shares, and the helpers derived from them."""

    norm: str = "batch"
    init_type: str = "normal"
    init_gain: float = 0.02
    sync_batch_stats: bool = True
    batch_axis: str | None = None  # The mesh axis the global batch is split along, if any.
    dtype: Any = jnp.float32
    conv_lowering: str = "auto"  # How convolutions are computed; see `lowered`.

    def kernel_init(self) -> Callable:
        return weight_init(self.init_type, self.init_gain)

    def _layer_options(self) -> dict:
        return dict(kernel_init=self.kernel_init(), dtype=self.dtype, lowering=self.conv_lowering)

    # Layers with this network's init, dtype and lowering; called from a compact `__call__`,
    # so they belong to the calling network.
    def conv(self, features: int, kernel: int, stride: int, padding: int, use_bias: bool,
             name: str) -> Conv:
        return Conv(features, kernel, padding, use_bias, stride=stride, name=name,
                    **self._layer_options())

    def up_conv(self, features: int, use_bias: bool, name: str) -> UpConv:
        """4x4, stride 2, padding 1: the U-Net's upsampling."""
        return UpConv(features, 4, 1, use_bias, output_padding=0, name=name,
                      **self._layer_options())

    def up_conv3(self, features: int, use_bias: bool, name: str) -> UpConv:
        """3x3, stride 2, padding 1, output padding 1: CycleGAN's upsampling."""
        return UpConv(features, 3, 1, use_bias, output_padding=1, name=name,
                      **self._layer_options())

    def normalize(self, x, train: bool):
        """A fresh layer of the configured norm applied to `x` (`x` itself for norm `none`).
        Called from a compact `__call__`, so the layer belongs to the calling network."""
        new_norm = make_norm(self.norm, self.sync_batch_stats, self.batch_axis, self.init_gain,
                             self.dtype)
        return new_norm()(x, use_running_average=not train) if new_norm else x

    def dropout(self, x, train: bool):
        """Dropout 0.5, the reference's rate."""
        return Dropout(0.5, batch_axis=self.batch_axis)(x, deterministic=not train)

    def inner_conv_bias(self) -> bool:
        return conv_has_bias(self.norm)
