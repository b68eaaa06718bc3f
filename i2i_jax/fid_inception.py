"""pytorch-fid's Inception network in JAX: the 2048-d pool features FID and KID are defined on.

pytorch-fid (and through it most papers) uses the "FID Inception": TensorFlow's 2015 InceptionV3
graph as torchvision's Inception3 with four changes (average pools that do not count padding in
Mixed_5b-d, 6b-e and 7b; a max pool in Mixed_7c's pool branch), fed images in [0, 1] resized to
299 x 299 bilinearly (half-pixel centres, no antialiasing) and scaled to [-1, 1]. This module
computes the same from pytorch-fid's own weights file, so its numbers are comparable to papers'.

The weights cannot be downloaded here: the user supplies `pt_inception-2015-12-05-6726825d.pth`
(`WEIGHTS_URL`). Reading it needs PyTorch once; it is converted to an `.npz` beside it (or in
~/.cache/i2i_jax) that later runs read without PyTorch. Weights are a flat dict named as the
torch module's: `Mixed_5b.branch1x1.conv.kernel` (HWIO), `...bn.scale` and `...bn.shift` (the
batch norm folded, as PyTorch computes it at inference: x * scale + shift).
"""

import hashlib
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np

from i2i_jax import file_trust
from i2i_jax.errors import NotFoundError, UserError

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"
)
FEATURES = 2048
INPUT_SIZE = 299
BN_EPS = 1e-3  # torchvision's BasicConv2d.
log = logging.getLogger("i2i_jax")


def convert_state_dict(state_dict: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """pytorch-fid's Inception state dict (torch names, OIHW kernels, batch norms with running
    statistics) as this module's flat weights. The classifier (`fc`) is not needed."""
    weights = {}
    for key, value in state_dict.items():
        module, _, name = key.rpartition(".")
        if module.endswith(".conv") and name == "weight":
            weights[f"{module}.kernel"] = np.transpose(np.asarray(value, np.float32), (2, 3, 1, 0))
        elif module.endswith(".bn") and name == "weight":
            variance = np.asarray(state_dict[f"{module}.running_var"], np.float32)
            scale = np.asarray(value, np.float32) / np.sqrt(variance + np.float32(BN_EPS))
            mean = np.asarray(state_dict[f"{module}.running_mean"], np.float32)
            weights[f"{module}.scale"] = scale
            weights[f"{module}.shift"] = np.asarray(state_dict[f"{module}.bias"]) - mean * scale
    return weights


def load_weights(path: str) -> dict[str, np.ndarray]:
    """The network's weights from pytorch-fid's `.pth` file (converted once, then read from
    the cached `.npz`) or from such an `.npz`. The weights decide the reported FID and KID, so
    a file that another user could have changed (`file_trust`) is refused: the one given is an
    error; a cached conversion is converted again, into a file of the user's own."""
    if not path or not os.path.isfile(path):
        raise NotFoundError(
            f"fid_weights={path!r}: no such file. FID and KID need pytorch-fid's Inception "
            f"weights, {WEIGHTS_FILE}, which cannot be downloaded at run time.\nFix: download "
            f"{WEIGHTS_URL} on a machine with internet access, copy it here and set "
            f"--config.fid_weights (or --fid_weights) to its path"
        )
    if why := file_trust.trusted(path):
        raise UserError(
            f"fid_weights={path!r}: {why}, so the weights that decide FID and KID could be "
            f"another user's.\nFix: copy it into a directory only you can write (`cp {path} "
            f"~/; chmod go-w ~/{os.path.basename(path)}`) and set --config.fid_weights (or "
            f"--fid_weights) to the copy"
        )
    if path.endswith(".npz"):
        return _read(path)
    for cache in _cache_paths(path):
        if not os.path.isfile(cache):
            break
        if (why := file_trust.trusted(cache)) is None:
            return _read(cache)
        log.warning(
            "not reading the converted FID weights %s: %s, so they could be another user's; "
            "they come from %s instead.\nFix: remove that file, or `chmod go-w` it if it is "
            "yours",
            cache,
            why,
            path,
        )
    else:
        cache = None  # Each place holds a refused file, not ours to replace: keep none.
    import torch  # Only for the first conversion.

    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    weights = convert_state_dict({k: v.numpy() for k, v in state_dict.items()})
    if cache:
        file_trust.make_private_dir(os.path.dirname(cache))
        partial = f"{cache}.partial-{os.getpid()}.npz"
        np.savez(partial, **weights)
        os.chmod(partial, 0o644)  # Whatever the umask: a group-writable file would be refused.
        os.replace(partial, cache)
    return weights


def _read(path: str) -> dict[str, np.ndarray]:
    with np.load(path) as saved:
        return dict(saved)


def _cache_paths(path: str) -> list[str]:
    """Where the `.pth`'s conversion is kept, in order of preference: beside it where that
    directory is writable, and in ~/.cache/i2i_jax; named after the file's content so that a
    replaced file is converted again."""
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    name = f"{os.path.basename(path)}.{digest}.npz"
    directories = [os.path.join(os.path.expanduser("~"), ".cache", "i2i_jax")]
    beside = os.path.dirname(os.path.abspath(path))
    if os.access(beside, os.W_OK):
        directories.insert(0, beside)
    return [os.path.join(directory, name) for directory in directories]


def features(weights: dict, images_uint8: jax.Array) -> jax.Array:
    """[N, 2048] pool features of uint8 NHWC RGB images of any size, as pytorch-fid computes
    them from image files (ToTensor to [0, 1], then the network's resize and scaling)."""
    x = images_uint8.astype(jnp.float32) / 255.0
    x = jax.image.resize(
        x, (x.shape[0], INPUT_SIZE, INPUT_SIZE, x.shape[3]), "bilinear", antialias=False
    )
    x = 2.0 * x - 1.0
    w = weights
    x = _conv(w, "Conv2d_1a_3x3", x, stride=2)
    x = _conv(w, "Conv2d_2a_3x3", x)
    x = _conv(w, "Conv2d_2b_3x3", x, padding=(1, 1))
    x = _max_pool(x, stride=2, padding=0)
    x = _conv(w, "Conv2d_3b_1x1", x)
    x = _conv(w, "Conv2d_4a_3x3", x)
    x = _max_pool(x, stride=2, padding=0)
    for name in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
        x = _inception_a(w, name, x)
    x = _inception_b(w, "Mixed_6a", x)
    for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
        x = _inception_c(w, name, x)
    x = _inception_d(w, "Mixed_7a", x)
    x = _inception_e(w, "Mixed_7b", x, max_pool_branch=False)
    x = _inception_e(w, "Mixed_7c", x, max_pool_branch=True)
    return jnp.mean(x, axis=(1, 2))


def _conv(w, name: str, x, stride: int = 1, padding: tuple[int, int] = (0, 0)):
    """torchvision's BasicConv2d: convolution without bias, batch norm, ReLU."""
    y = jax.lax.conv_general_dilated(
        x,
        jnp.asarray(w[f"{name}.conv.kernel"]),
        (stride, stride),
        [(padding[0], padding[0]), (padding[1], padding[1])],
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        precision=jax.lax.Precision.HIGHEST,
    )
    return jax.nn.relu(y * w[f"{name}.bn.scale"] + w[f"{name}.bn.shift"])


def _max_pool(x, stride: int, padding: int):
    pad = ((0, 0), (padding, padding), (padding, padding), (0, 0))
    return jax.lax.reduce_window(
        x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), pad
    )


def _average_pool(x):
    """3 x 3, stride 1, padding 1, not counting the padding (count_include_pad=False)."""
    pad = ((0, 0), (1, 1), (1, 1), (0, 0))
    window, strides = (1, 3, 3, 1), (1, 1, 1, 1)
    total = jax.lax.reduce_window(x, 0.0, jax.lax.add, window, strides, pad)
    count = jax.lax.reduce_window(
        jnp.ones_like(x[:1, ..., :1]), 0.0, jax.lax.add, window, strides, pad
    )
    return total / count


def _inception_a(w, name, x):
    b1 = _conv(w, f"{name}.branch1x1", x)
    b5 = _conv(w, f"{name}.branch5x5_2", _conv(w, f"{name}.branch5x5_1", x), padding=(2, 2))
    b3 = _conv(w, f"{name}.branch3x3dbl_1", x)
    b3 = _conv(w, f"{name}.branch3x3dbl_2", b3, padding=(1, 1))
    b3 = _conv(w, f"{name}.branch3x3dbl_3", b3, padding=(1, 1))
    bp = _conv(w, f"{name}.branch_pool", _average_pool(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


def _inception_b(w, name, x):
    b3 = _conv(w, f"{name}.branch3x3", x, stride=2)
    bd = _conv(w, f"{name}.branch3x3dbl_1", x)
    bd = _conv(w, f"{name}.branch3x3dbl_2", bd, padding=(1, 1))
    bd = _conv(w, f"{name}.branch3x3dbl_3", bd, stride=2)
    return jnp.concatenate([b3, bd, _max_pool(x, stride=2, padding=0)], axis=-1)


def _inception_c(w, name, x):
    row, column = (0, 3), (3, 0)  # Paddings of the 1 x 7 and 7 x 1 convolutions.
    b1 = _conv(w, f"{name}.branch1x1", x)
    b7 = _conv(w, f"{name}.branch7x7_1", x)
    b7 = _conv(w, f"{name}.branch7x7_2", b7, padding=row)
    b7 = _conv(w, f"{name}.branch7x7_3", b7, padding=column)
    bd = _conv(w, f"{name}.branch7x7dbl_1", x)
    for k, padding in zip((2, 3, 4, 5), (column, row, column, row), strict=True):
        bd = _conv(w, f"{name}.branch7x7dbl_{k}", bd, padding=padding)
    bp = _conv(w, f"{name}.branch_pool", _average_pool(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


def _inception_d(w, name, x):
    b3 = _conv(w, f"{name}.branch3x3_2", _conv(w, f"{name}.branch3x3_1", x), stride=2)
    b7 = _conv(w, f"{name}.branch7x7x3_1", x)
    b7 = _conv(w, f"{name}.branch7x7x3_2", b7, padding=(0, 3))
    b7 = _conv(w, f"{name}.branch7x7x3_3", b7, padding=(3, 0))
    b7 = _conv(w, f"{name}.branch7x7x3_4", b7, stride=2)
    return jnp.concatenate([b3, b7, _max_pool(x, stride=2, padding=0)], axis=-1)


def _inception_e(w, name, x, max_pool_branch: bool):
    b1 = _conv(w, f"{name}.branch1x1", x)
    b3 = _conv(w, f"{name}.branch3x3_1", x)
    b3 = jnp.concatenate(
        [
            _conv(w, f"{name}.branch3x3_2a", b3, padding=(0, 1)),
            _conv(w, f"{name}.branch3x3_2b", b3, padding=(1, 0)),
        ],
        axis=-1,
    )
    bd = _conv(w, f"{name}.branch3x3dbl_1", x)
    bd = _conv(w, f"{name}.branch3x3dbl_2", bd, padding=(1, 1))
    bd = jnp.concatenate(
        [
            _conv(w, f"{name}.branch3x3dbl_3a", bd, padding=(0, 1)),
            _conv(w, f"{name}.branch3x3dbl_3b", bd, padding=(1, 0)),
        ],
        axis=-1,
    )
    pooled = _max_pool(x, stride=1, padding=1) if max_pool_branch else _average_pool(x)
    bp = _conv(w, f"{name}.branch_pool", pooled)
    return jnp.concatenate([b1, b3, bd, bp], axis=-1)
