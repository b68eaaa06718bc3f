"""The forms of convolution the layers compute: XLA's own (`native_conv`,
`native_conv_transpose`) and the same functions in the forms XLA:CPU runs fastest.

XLA:CPU runs some convolutions several times slower than the same arithmetic written
differently: unpadded convolutions, kernel gradients (a convolution whose kernel is the whole
output) and transposed convolutions (multiplications by inserted zeros). The forms here compute
the same outputs and gradients as padded convolutions, GEMMs and sub-pixel phases, which
XLA:CPU runs faster; `lowered` picks XLA's own or these per platform. Each form is pinned to
XLA's own convolution, outputs and gradients, by tests/test_lowering.py.
"""

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.models.custom_gradients import summed_like_autodiff
from i2i_jax.models.winograd import winograd_conv

LOWERINGS = ("auto", "native", "cpu", "winograd")


def native_conv(x, kernel, stride: int, padding: int):
    """torch.nn.Conv2d's convolution (symmetric zero padding) as XLA's own; kernel [k, k, in,
    out]."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        ((padding, padding),) * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


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
    _, out_h, out_w, out_c = dy.shape
    in_c = x.shape[-1]
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    # Ties the input to the output gradient, so that the per-tap copies of it below are made
    # in the backward pass: XLA would make them as soon as the input exists, in the forward
    # pass, and hold those of every layer at once (0.6 GB for the CycleGAN generator at 256
    # px). A NaN or infinity in dy's first element reaches every kernel entry anyway.
    padded = padded.at[0, 0, 0, 0].add(0 * dy[0, 0, 0, 0])

    def reached_by(a, b):  # [positions, in_c]
        return padded[
            :, a : a + stride * (out_h - 1) + 1 : stride, b : b + stride * (out_w - 1) + 1 : stride
        ].reshape(-1, in_c)

    taps = [(a, b) for a in range(kh) for b in range(kw)]
    flat_dy = dy.reshape(-1, out_c)
    if in_c * len(taps) <= _STACKED_GEMM_MAX_COLUMNS:
        stacked = jnp.concatenate([reached_by(a, b) for a, b in taps], axis=1)
        return jnp.dot(stacked.T, flat_dy).reshape(kh, kw, in_c, out_c)
    if stride == 1 and out_c * len(taps) <= _STACKED_GEMM_MAX_COLUMNS:
        # dW[a, b] = sum over padded positions (u, v) of x[u, v] dy[u - a, v - b].
        wide = jnp.pad(dy, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))
        size_h, size_w = padded.shape[1:3]
        shifted = jnp.concatenate(
            [
                wide[:, kh - 1 - a : kh - 1 - a + size_h, kw - 1 - b : kw - 1 - b + size_w]
                for a, b in taps
            ],
            axis=-1,
        )
        gradient = jnp.dot(padded.reshape(-1, in_c).T, shifted.reshape(-1, len(taps) * out_c))
        return gradient.reshape(in_c, kh, kw, out_c).transpose(1, 2, 0, 3)
    return jnp.stack([jnp.dot(reached_by(a, b).T, flat_dy) for a, b in taps]).reshape(
        kh, kw, in_c, out_c
    )


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
    return input_vjp(dy)[0], summed_like_autodiff(kernel_gradient, kernel).astype(kernel.dtype)


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
        [
            padded[
                :,
                a : a + stride * (out_h - 1) + 1 : stride,
                b : b + stride * (out_w - 1) + 1 : stride,
            ]
            for a in range(kh)
            for b in range(kw)
        ],
        axis=-1,
    )
    return jnp.dot(fields, kernel.reshape(kh * kw * in_c, out_c))


# Images with at most this many positions count as tiny for the GEMM forms.
_TINY_POSITIONS = 256

# Where Winograd beats `cpu_conv` (measured, forward + both gradients, batch 1, 2 cores):
# F(4, 3) for the 3x3 convolutions at 64 x 64 x 256 -> 256 (CycleGAN's ResNet blocks at 256 px)
# by 1.6x, and at 32 x 32 x 256 (the same at 128 px) by 1.3x on an AVX2 Zen 3 (22 against
# 30-35 ms; a tie on an AVX-512 Zen 4: 44.4 against 43.9 ms), which took the CycleGAN 128 step
# from 3.97 to 3.08 s there; F(3, 4) for the 4x4 stride-1 convolution at 32 x 32 x 256 -> 512
# (the PatchGAN's widest, at 256 px) by 1.5x. At 16 x 16 x 256 (4x4) the GEMMs are too short
# for the transforms' cost: Winograd loses on the Zen 4 and gains nothing in the Zen 3's step.
_WINOGRAD_TILES = {3: (4, 32 * 32), 4: (3, 32 * 32)}  # kernel size: (tile m, min positions)
_WINOGRAD_MIN_CHANNELS = 256


def _winograd_tile(x, kernel, stride: int) -> int | None:
    """The Winograd tile m that pays for this convolution, or None."""
    size = _spatial_size(x)
    k = kernel.shape[0]
    if stride != 1 or kernel.shape[1] != k or k not in _WINOGRAD_TILES or size is None:
        return None
    m, min_positions = _WINOGRAD_TILES[k]
    if size >= min_positions and min(kernel.shape[2:]) >= _WINOGRAD_MIN_CHANNELS:
        return m
    return None


def cpu_best_conv(x, kernel, stride: int, padding: int, winograd: bool = False):
    """The fastest form on XLA:CPU: `im2col_conv` for tiny outputs, with `winograd` a Winograd
    form for the wide stride-1 convolutions of large images (`_winograd_tile`), else
    `cpu_conv`. `winograd=False` keeps the direct arithmetic, whose FLOPs are the reference's."""
    size = _spatial_size(x)
    if size is not None and size // (stride * stride) <= _TINY_POSITIONS // 4:
        return im2col_conv(x, kernel, stride, padding)
    tile = _winograd_tile(x, kernel, stride) if winograd else None
    if tile is not None:
        return winograd_conv(x, kernel, padding, tile)
    return cpu_conv(x, kernel, stride, padding)


def native_conv_transpose(x, kernel, padding: int, output_padding: int):
    """torch.nn.ConvTranspose2d(stride=2, padding, output_padding) as XLA's transposed
    convolution: a convolution of the zero-dilated input with the flipped kernel."""
    k = kernel.shape[0]
    pads = ((k - 1 - padding, k - 1 - padding + output_padding),) * 2
    return jax.lax.conv_transpose(x, kernel, (2, 2), pads, transpose_kernel=True)


def _phase_taps(kernel_size: int, padding: int, phase: int) -> list[tuple[int, int]]:
    """(input offset, kernel tap) pairs, by offset: along one axis, output 2i + phase of a
    stride-2 transposed convolution sums input i + offset times kernel tap `tap`."""
    return sorted(
        ((phase + padding - tap) // 2, tap)
        for tap in range(kernel_size)
        if (phase + padding - tap) % 2 == 0
    )


def subpixel_conv_transpose(
    x, kernel, padding: int, output_padding: int, conv: Callable = native_conv
):
    """The same transposed convolution as four stride-1 convolutions, one per output phase
    (even or odd row and column), interleaved: no multiplications by inserted zeros, and the
    kernel's gradient is an ordinary convolution's (on XLA:CPU, many times faster than a
    transposed convolution's). `conv(x, kernel, stride, padding)` computes them."""
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    if (h - 1) * 2 - 2 * padding + k + output_padding != 2 * h:
        raise ValueError(
            f"a {k}x{k} transposed convolution with padding {padding} and output "
            f"padding {output_padding} does not double the size"
        )
    phases = [_phase_taps(k, padding, phase) for phase in (0, 1)]
    margin = max(abs(offset) for taps in phases for offset, _ in taps)
    padded = jnp.pad(x, ((0, 0), (margin, margin), (margin, margin), (0, 0)))
    rows = []
    for taps_y in phases:
        row = []
        for taps_x in phases:
            taps = kernel[np.array([t for _, t in taps_y])][:, np.array([t for _, t in taps_x])]
            top, left = margin + taps_y[0][0], margin + taps_x[0][0]
            window = padded[:, top : top + h + len(taps_y) - 1, left : left + w + len(taps_x) - 1]
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
        raise ValueError(
            f"a {k}x{k} transposed convolution with padding {padding} and output "
            f"padding {output_padding} does not double the size"
        )
    # The kernel as it is stored, [k * k * out_c, in_c], transposed inside the GEMM: a 4-D
    # transpose to [in_c, k * k * out_c] first would be a copy, which XLA:CPU makes on every
    # call and which took ten times as long as the GEMM itself for the U-Net's inner layers.
    products = jnp.dot(x.reshape(-1, in_c), kernel.reshape(-1, in_c).T)
    phases = [_phase_taps(k, padding, phase) for phase in (0, 1)]
    margin = max(abs(offset) for taps in phases for offset, _ in taps)
    products = jnp.pad(
        products.reshape(n, h, w, k, k, out_c),
        ((0, 0), (margin, margin), (margin, margin), (0, 0), (0, 0), (0, 0)),
    )
    rows = []
    for taps_y in phases:
        row = []
        for taps_x in phases:
            row.append(
                sum(
                    products[
                        :, margin + dy : margin + dy + h, margin + dx : margin + dx + w, ty, tx
                    ]
                    for dy, ty in taps_y
                    for dx, tx in taps_x
                )
            )
        rows.append(jnp.stack(row, axis=3))  # [n, h, w, column phase, c]
    return jnp.stack(rows, axis=2).reshape(n, 2 * h, 2 * w, out_c)


def cpu_best_conv_transpose(x, kernel, padding: int, output_padding: int):
    """The fastest form on XLA:CPU: `gemm_conv_transpose` for tiny inputs or few output
    channels, else `subpixel_conv_transpose` of `cpu_best_conv`s."""
    size = _spatial_size(x)
    if size is not None and (size <= _TINY_POSITIONS or kernel.shape[2] <= 4):
        return gemm_conv_transpose(x, kernel, padding, output_padding)
    return subpixel_conv_transpose(x, kernel, padding, output_padding, cpu_best_conv)


def for_platform(lowering: str, platform: str) -> str:
    """`lowering` with `auto` resolved for a step that will only ever run on `platform`:
    `auto` traces both platforms' forms and picks one when lowering, and the CPU forms and
    their custom gradients are most of the tracing (Pix2Pix at 256 px: 4.2 s of tracing and
    lowering under `auto`, 2.7 s under `winograd`). An exported generator keeps `auto`."""
    if lowering != "auto":
        return lowering
    return "winograd" if platform == "cpu" else "native"


def lowered(lowering: str, native: Callable, cpu: Callable, *args):
    """`native(*args)` or `cpu(*args)` by `lowering`; `auto` picks per platform when the step
    is lowered (cpu on CPU, native on GPU and TPU), so an exported function carries both.
    `cpu` and `winograd` take `cpu` on every platform; the layers pass a `cpu` that uses
    Winograd where it pays for `auto` and `winograd`, and the direct forms alone for `cpu`."""
    if lowering == "native":
        return native(*args)
    if lowering in ("cpu", "winograd"):
        return cpu(*args)
    if lowering == "auto":
        return jax.lax.platform_dependent(*args, cpu=cpu, default=native)
    raise ValueError(f"conv_lowering={lowering!r} is not one of {LOWERINGS}")
