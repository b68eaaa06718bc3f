"""Winograd convolutions: the same stride-1 correlations as `native_conv` with fewer
multiplications, written in plain JAX ops (reshapes, slices, small dots with the transforms,
one batched GEMM) so that an exported function needs nothing else.

F(m, r) computes an m x m tile of output from an (m + r - 1)^2 tile of input with
(m + r - 1)^2 multiplications per channel pair instead of m^2 r^2 (Lavin & Gray, 2016):
Y = A^T [(G g G^T) . (B^T d B)] A, summed over input channels, where the transforms are fixed
small matrices built from interpolation points. F(4, 3) does a 3x3 convolution with 4x fewer
multiplications, F(2, 3) with 2.25x fewer. The price is rounding: the transforms' entries grow
with the tile, so the float32 error grows too. Measured against XLA's convolution (max error
over max output, float32, outputs and both gradients): F(2, 3) and F(2, 2), F(3, 2) below
1e-6; F(4, 3) and F(6, 3) below 6e-6, though the largest entries of A^T grow from 1 (F(2, 3))
to 8 (F(4, 3)) and 32 (F(6, 3)), and the error with them as the channels grow.
tests/test_winograd.py holds each at 2e-6 (m = 2, 3) or 2e-5 (m >= 4).

The backward pass has its own Winograd forms, tied together by a custom VJP: the input gradient
is a Winograd correlation of the output gradient, padded by r - 1 - padding, with the flipped
kernel (swapped inside the GEMM); the kernel gradient is a batched GEMM in the transformed domain
(the transformed input against the output gradient pulled back through A) followed by G's
transpose.
"""

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax.models.custom_gradients import summed_like_autodiff

# Interpolation points, in the order that keeps the transforms' entries smallest; the point at
# infinity is implied.
_POINTS = (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))


@functools.cache
def transforms(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(A^T [m, a], G [a, r], B^T [a, a]) of F(m, r), a = m + r - 1, exact rationals.

    A^T and G are Vandermonde rows of the points (scaled by their Lagrange denominators for G),
    with the point at infinity as the last column / row; B^T is the one matrix that then makes
    the 1-D algorithm an exact correlation, y_i = sum_k g_k d_(i + k), solved for in rationals.
    """
    a = m + r - 1
    points = _POINTS[: a - 1]
    at = [[Fraction(p) ** i for p in points] + [Fraction(int(i == m - 1))] for i in range(m)]
    g = []
    for j, p in enumerate(points):
        denominator = np.prod([Fraction(p - q) for k, q in enumerate(points) if k != j])
        g.append([Fraction(p) ** k / denominator for k in range(r)])
    g.append([Fraction(int(k == r - 1)) for k in range(r)])
    # sum_t AT[i, t] G[t, k] BT[t, j] = [j == i + k] for all i, k: one linear system per j.
    system = [[at[i][t] * g[t][k] for t in range(a)] for i in range(m) for k in range(r)]
    bt = np.empty((a, a), dtype=object)
    for j in range(a):
        target = [Fraction(int(j == i + k)) for i in range(m) for k in range(r)]
        bt[:, j] = _solve_exactly(system, target)
    return np.array(at, dtype=object), np.array(g, dtype=object), bt


def _solve_exactly(rows: list[list[Fraction]], target: list[Fraction]) -> list[Fraction]:
    """The solution of a consistent, full-column-rank linear system, by Gaussian elimination in
    rationals."""
    augmented = [[*row, t] for row, t in zip(rows, target, strict=True)]
    unknowns = len(rows[0])
    pivot_rows = []
    for col in range(unknowns):
        pivot = next(i for i, row in enumerate(augmented) if row[col] != 0 and i not in pivot_rows)
        pivot_rows.append(pivot)
        scale = augmented[pivot][col]
        augmented[pivot] = [v / scale for v in augmented[pivot]]
        for i, row in enumerate(augmented):
            if i != pivot and row[col] != 0:
                factor = row[col]
                augmented[i] = [v - factor * w for v, w in zip(row, augmented[pivot], strict=True)]
    if any(row[-1] != 0 for i, row in enumerate(augmented) if i not in pivot_rows):
        raise ValueError("the Winograd system has no solution")
    return [augmented[pivot_rows[col]][-1] for col in range(unknowns)]


@functools.cache
def _kronecker(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A^T (x) A^T [m * m, a * a], G (x) G [a * a, r * r], B^T (x) B^T [a * a, a * a] in
    float32: each 2-D transform of a flattened tile as one small dot. XLA compiles a dot in
    one piece; the same transforms as unrolled sums of strided slices were hundreds of small
    fusions, 2 s of compile per convolution with its gradients (0.3 s as dots), and no faster."""
    at, g, bt = transforms(m, r)
    return tuple(np.kron(t, t).astype(np.float64).astype(np.float32) for t in (at, g, bt))


def _tiles(count: int, m: int) -> int:
    return -(-count // m)


def _padded_to_tiles(x, m: int, r: int):
    """`x` padded at the bottom and right so that its valid output is a whole number of
    m x m tiles."""
    extra_h = -(x.shape[1] - r + 1) % m
    extra_w = -(x.shape[2] - r + 1) % m
    if extra_h or extra_w:
        x = jnp.pad(x, ((0, 0), (0, extra_h), (0, extra_w), (0, 0)))
    return x


def _windows(x, axis: int, m: int, r: int, count: int):
    """`count` windows of a = m + r - 1 along `axis`, m apart: [..., count, a, ...].

    Blocks of m by a reshape; window i is blocks i, i + 1, ... side by side, cut to a: a few
    slices and one concatenation, where one strided slice per window row was one fusion each."""
    a = m + r - 1
    spans = -(-a // m)  # blocks per window
    needed = m * (count + spans - 1)
    if x.shape[axis] < needed:
        padding = [(0, 0)] * x.ndim
        padding[axis] = (0, needed - x.shape[axis])
        x = jnp.pad(x, padding)
    x = jax.lax.slice_in_dim(x, 0, needed, axis=axis)
    blocks = x.reshape(*x.shape[:axis], count + spans - 1, m, *x.shape[axis + 1 :])
    shifted = [jax.lax.slice_in_dim(blocks, j, j + count, axis=axis) for j in range(spans)]
    return jax.lax.slice_in_dim(jnp.concatenate(shifted, axis=axis + 1), 0, a, axis=axis + 1)


def _transformed_input(x, m: int, r: int):
    """B^T d B of every (overlapping) input tile, [a * a, n * tiles, c], for an input padded
    to whole tiles."""
    n, h, w, c = x.shape
    a = m + r - 1
    tiles_h, tiles_w = (h - r + 1) // m, (w - r + 1) // m
    tiles = _windows(_windows(x, 1, m, r, tiles_h), 3, m, r, tiles_w)  # [n, th, a, tw, a, c]
    tiles = tiles.transpose(2, 4, 0, 1, 3, 5).reshape(a * a, -1)
    return jnp.dot(_kronecker(m, r)[2], tiles).reshape(a * a, n * tiles_h * tiles_w, c)


def _transformed_kernel(kernel, m: int, tie):
    """G g G^T: [a * a, in, out], computed after the scalar `tie` (see the callers)."""
    r = kernel.shape[0]
    a = m + r - 1
    transform = _kronecker(m, r)[1] + 0 * tie.astype(kernel.dtype)
    return jnp.dot(transform, kernel.reshape(r * r, -1)).reshape(a * a, *kernel.shape[2:])


def _kernel_transform_transposed(products, m: int, r: int):
    """G^T P G of the transformed-domain products [a * a, in, out]: [r, r, in, out]."""
    a = m + r - 1
    pulled = jnp.dot(_kronecker(m, r)[1].T, products.reshape(a * a, -1))
    return pulled.reshape(r, r, *products.shape[1:])


def _output_tiles(products, n: int, tiles_h: int, tiles_w: int, m: int, r: int):
    """A^T M A of every tile's products [a * a, n * tiles, out], interleaved into the image
    [n, tiles_h * m, tiles_w * m, out]."""
    a = m + r - 1
    out_c = products.shape[-1]
    y = jnp.dot(_kronecker(m, r)[0], products.reshape(a * a, -1))
    y = y.reshape(m, m, n, tiles_h, tiles_w, out_c).transpose(2, 3, 0, 4, 1, 5)
    return y.reshape(n, tiles_h * m, tiles_w * m, out_c)


def _tiles_pulled_back(dy, m: int, r: int):
    """A dY A^T of every output gradient tile: the output transform's transpose, [a * a,
    n * tiles, out], for an output gradient padded to whole tiles."""
    n, h, w, out_c = dy.shape
    a = m + r - 1
    tiles = dy.reshape(n, h // m, m, w // m, m, out_c).transpose(2, 4, 0, 1, 3, 5)
    pulled = jnp.dot(_kronecker(m, r)[0].T, tiles.reshape(m * m, -1))
    return pulled.reshape(a * a, -1, out_c)


def _correlation(x, kernel, m: int, swapped: bool = False):
    """The valid stride-1 correlation of x [n, h, w, in] with kernel [r, r, in, out], or with
    kernel [r, r, out, in] if `swapped` (swapping inside the GEMM costs nothing; swapping
    the kernel first is a slow copy).

    The kernel's transform is tied to x: XLA would otherwise make the transform of every
    layer's kernel as soon as the kernel exists and hold them all (9.4 MB each at 256
    channels): the forward ones from a generator's first call to its last, the flipped ones of
    the input gradients through the whole backward pass. Tied, each is made where it is used:
    the CycleGAN 128 step's scratch memory went from 1264 to 885 MB."""
    n, h, w, _ = x.shape
    r = kernel.shape[0]
    out_h, out_w = h - r + 1, w - r + 1
    v = _transformed_input(_padded_to_tiles(x, m, r), m, r)
    transformed = _transformed_kernel(kernel, m, tie=x[0, 0, 0, 0])
    products = jnp.matmul(v, transformed.transpose(0, 2, 1) if swapped else transformed)
    y = _output_tiles(products, n, _tiles(out_h, m), _tiles(out_w, m), m, r)
    return y[:, :out_h, :out_w]


def _padded(x, padding: int):
    return jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def winograd_conv(x, kernel, padding: int, m: int):
    """`native_conv(x, kernel, 1, padding)` by F(m, r), r the kernel's size, its gradients by
    Winograd forms too."""
    return _correlation(_padded(x, padding), kernel, m)


def _forward(x, kernel, padding, m):
    return winograd_conv(x, kernel, padding, m), (x, kernel)


def _backward(padding, m, residuals, dy):
    x, kernel = residuals
    r = kernel.shape[0]
    # The input gradient is the full correlation of dy with the flipped, transposed kernel:
    # for padding (r - 1) / 2, a convolution of the forward pass's own shape.
    dx = _correlation(_padded(dy, r - 1 - padding), kernel[::-1, ::-1], m, swapped=True)
    # Ties the input to dy, so that its transform is computed here and not held from the
    # forward pass (see `conv_forms.gemm_kernel_gradient`).
    x = x.at[0, 0, 0, 0].add(0 * dy[0, 0, 0, 0])
    v = _transformed_input(_padded_to_tiles(_padded(x, padding), m, r), m, r)
    out_h, out_w = dy.shape[1:3]
    dy = jnp.pad(dy, ((0, 0), (0, -out_h % m), (0, -out_w % m), (0, 0)))
    pulled = _tiles_pulled_back(dy, m, r)  # [a * a, n * tiles, out]
    transformed_gradient = jnp.matmul(v.transpose(0, 2, 1), pulled)
    kernel_gradient = _kernel_transform_transposed(transformed_gradient, m, r)
    return dx.astype(x.dtype), summed_like_autodiff(kernel_gradient, kernel).astype(kernel.dtype)


winograd_conv.defvjp(_forward, _backward)
