"""The PyTorch reference's state dicts in flax terms, for `convert_torch`.

For each of the reference's networks (junyanz/pytorch-CycleGAN-and-pix2pix, models/networks.py)
the list of its layers as (torch key prefix, flax path, kind); `load_state_dict` reads a saved
file, and `convert` matches its keys against a network's list and turns its tensors into flax
variables, or says which options the file does fit. Needs no workdir, config or train state.
"""

import itertools
import os
from collections.abc import Iterator, Mapping

import numpy as np
from flax import traverse_util

from i2i_jax.errors import UserError
from i2i_jax.generator_names import GeneratorName, parse_generator_name
from i2i_jax.models.layers import NORMS


class ConversionError(UserError, ValueError):
    """A file or option the converter cannot use; the message says which and what to try."""


# --- The reference's layers, as (torch key prefix, flax path, kind) -------------------------
# kind: `conv` (Conv2d or ConvTranspose2d with a bias), `conv_no_bias`, or `batch_norm`.
# Flax paths are '/'-joined module names; batch norms are named in order of creation.


def _conv(norm: str) -> str:
    """The reference's `use_bias` for inner convs: only with instance norm."""
    return "conv" if norm == "instance" else "conv_no_bias"


def unet_layers(num_downs: int, norm: str) -> Iterator[tuple[str, str, str]]:
    """Level i holds `down{i}` and `up{i}`; in the reference each level is a Sequential whose
    child level sits at index 1 (outermost) or 3, so level i's keys start with i+1 `model.`s."""
    batch_norms = (f"BatchNorm_{i}" for i in itertools.count())
    innermost = num_downs - 1
    prefixes = ["model.model."]
    for i in range(1, num_downs):
        prefixes.append(f"{prefixes[-1]}{1 if i == 1 else 3}.model.")
    yield prefixes[0] + "0", "down0", _conv(norm)
    for i in range(1, num_downs):  # [LeakyReLU, down, norm (not innermost), child, ...]
        yield prefixes[i] + "1", f"down{i}", _conv(norm)
        if i < innermost and norm == "batch":
            yield prefixes[i] + "2", next(batch_norms), "batch_norm"
    for i in range(innermost, 0, -1):  # Middle: [..., ReLU, up, norm]; innermost: [.., up, norm]
        up = 3 if i == innermost else 5
        yield prefixes[i] + str(up), f"up{i}", _conv(norm)
        if norm == "batch":
            yield prefixes[i] + str(up + 1), next(batch_norms), "batch_norm"
    yield prefixes[0] + "3", "up0", "conv"  # [down, child, ReLU, up, Tanh]


def resnet_layers(n_blocks: int, norm: str, no_dropout: bool) -> Iterator[tuple[str, str, str]]:
    """One Sequential: pad, conv, norm, ReLU; 2 x (conv, norm, ReLU); the blocks; 2 x (transposed
    conv, norm, ReLU); pad, conv, Tanh. Norm `none` keeps an Identity in each norm slot."""
    batch_norms = (f"BatchNorm_{i}" for i in itertools.count())
    for index, flax_path in ((1, "in"), (4, "downsample0"), (7, "downsample1")):
        yield f"model.{index}", flax_path, _conv(norm)
        if norm == "batch":
            yield f"model.{index + 1}", next(batch_norms), "batch_norm"
    for i in range(n_blocks):
        # conv_block: pad, conv, norm, ReLU, [Dropout], pad, conv, norm.
        block = f"model.{10 + i}.conv_block."
        for j, index in enumerate((1, 5 if no_dropout else 6)):
            yield f"{block}{index}", f"block{i}/conv{j + 1}", _conv(norm)
            if norm == "batch":
                yield f"{block}{index + 1}", f"block{i}/BatchNorm_{j}", "batch_norm"
    for i in range(2):
        index = 10 + n_blocks + 3 * i
        yield f"model.{index}", f"upsample{i}", _conv(norm)
        if norm == "batch":
            yield f"model.{index + 1}", next(batch_norms), "batch_norm"
    yield f"model.{17 + n_blocks}", "out", "conv"


def nlayer_layers(n_layers: int, norm: str) -> Iterator[tuple[str, str, str]]:
    """conv, LeakyReLU; n_layers x (conv, norm, LeakyReLU); conv to one channel."""
    yield "model.0", "conv0", "conv"
    for n in range(1, n_layers + 1):
        yield f"model.{3 * n - 1}", f"conv{n}", _conv(norm)
        if norm == "batch":
            yield f"model.{3 * n}", f"BatchNorm_{n - 1}", "batch_norm"
    yield f"model.{3 * n_layers + 2}", "logits", "conv"


def pixel_layers(norm: str) -> Iterator[tuple[str, str, str]]:
    """`net`: conv, LeakyReLU, conv, norm, LeakyReLU, conv (biased like the inner convs)."""
    yield "net.0", "conv0", "conv"
    yield "net.2", "conv1", _conv(norm)
    if norm == "batch":
        yield "net.3", "BatchNorm_0", "batch_norm"
    yield "net.5", "logits", _conv(norm)


def generator_name(netG: str) -> GeneratorName:
    """`--netG` parsed, or a ConversionError."""
    try:
        return parse_generator_name(netG)
    except ValueError:
        raise ConversionError(f"--netG={netG} is not unet_<2**k> or resnet_<n>blocks") from None


def generator_layers(netG: str, norm: str, no_dropout: bool) -> list[tuple[str, str, str]]:
    name = generator_name(netG)
    if name.kind == "unet":
        return list(unet_layers(name.num_downs, norm))
    return list(resnet_layers(name.n_blocks, norm, no_dropout))


def discriminator_layers(netD: str, norm: str, n_layers_D: int) -> list[tuple[str, str, str]]:
    if netD == "pixel":
        return list(pixel_layers(norm))
    return list(nlayer_layers(3 if netD == "basic" else n_layers_D, norm))


LAYERS = {"generator": generator_layers, "discriminator": discriminator_layers}

# Options that change a network's keys, and other values to suggest when a file does not fit.
_CANDIDATES = {
    "generator": [
        dict(netG=g, norm=n, no_dropout=d)
        for g in (
            *(f"unet_{2**k}" for k in range(5, 11)),
            *(f"resnet_{n}blocks" for n in range(1, 13)),
        )
        for n in NORMS
        for d in (True, False)
    ],
    "discriminator": [
        dict(netD=d, norm=n, n_layers_D=k)
        for d, k in (("basic", 3), ("pixel", 3), *(("n_layers", k) for k in range(1, 7)))
        for n in NORMS
    ],
}


# --- Loading and converting ------------------------------------------------------------------


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """A state dict as float32 numpy arrays, without DataParallel's `module.` prefix."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    try:
        import torch
    except ImportError as e:
        raise ConversionError("reading PyTorch files needs torch: pip install -e '.[torch]'") from e
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # Pickle, zip and torch errors alike.
        first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConversionError(
            f"{path}: torch.load(weights_only=True) failed ({first_line}). The "
            f"converter reads state dicts, as the reference's save_networks "
            f"writes them (torch.save(net.state_dict(), path))."
        ) from e
    if not isinstance(loaded, Mapping) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
    ):
        nested = (
            [k for k, v in loaded.items() if isinstance(v, Mapping)]
            if isinstance(loaded, Mapping)
            else []
        )
        hint = f"; it holds mappings under {nested[:3]}: save one of them" if nested else ""
        raise ConversionError(
            f"{path}: not a state dict (names of parameters and buffers "
            f"mapped to tensors), got {type(loaded).__name__}{hint}"
        )
    if loaded and all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module.") :]: v for k, v in loaded.items()}
    return {k: v.detach().cpu().float().numpy() for k, v in loaded.items()}


def _torch_targets(layers) -> dict[str, tuple[str, ...]]:
    """torch key -> flat flax variable path ('params' | 'batch_stats', module..., leaf)."""
    targets = {}
    for prefix, path, kind in layers:
        names = tuple(path.split("/"))
        if kind == "batch_norm":
            for key, (collection, leaf) in {
                "weight": ("params", "scale"),
                "bias": ("params", "bias"),
                "running_mean": ("batch_stats", "mean"),
                "running_var": ("batch_stats", "var"),
            }.items():
                targets[f"{prefix}.{key}"] = (collection, *names, leaf)
        else:
            targets[f"{prefix}.weight"] = ("params", *names, "kernel")
            if kind == "conv":
                targets[f"{prefix}.bias"] = ("params", *names, "bias")
    return targets


def _relevant_keys(keys, norm: str) -> set[str]:
    """The keys that must match: `num_batches_tracked` never matters, and running statistics
    only with batch norm (old reference files have them for instance norm, which the reference
    itself deletes on load)."""
    ignored = (
        ("num_batches_tracked",)
        if norm == "batch"
        else ("num_batches_tracked", "running_mean", "running_var")
    )
    return {k for k in keys if k.rsplit(".", 1)[-1] not in ignored}


def _flags(options: Mapping) -> str:
    return " ".join(
        f"--{k}={v}" if not isinstance(v, bool) else f"--{'' if v else 'no'}{k}"
        for k, v in options.items()
    )


def _fitting_options(keys, role: str, options: Mapping) -> list[str]:
    """The options under which `keys` are exactly a `role`'s keys, as flags: those that differ
    from `options`, or all of them when `options` is None."""
    fits = []
    for candidate in _CANDIDATES[role]:
        if options and role == "discriminator" and candidate["netD"] != "n_layers":
            candidate = {**candidate, "n_layers_D": options["n_layers_D"]}  # Unused: no change.
        expected = set(_torch_targets(LAYERS[role](**candidate)))
        if expected == _relevant_keys(keys, candidate["norm"]):
            changed = _flags(
                {k: v for k, v in candidate.items() if options is None or v != options[k]}
            )
            if changed not in fits:
                fits.append(changed)
    return fits


def _few(keys, count: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:count]) + (f", ... ({len(keys)} in all)" if len(keys) > count else "")


def convert(
    state_dict: Mapping[str, np.ndarray], role: str, options: Mapping, template, source: str
) -> dict:
    """Flax variables {'params', 'batch_stats'} shaped like `template` from a reference state dict.

    `role` is `generator` or `discriminator`; `options` are the keyword arguments of its
    `*_layers` function. Conv2d weights (out, in, kh, kw) become flax kernels (kh, kw, in, out).
    ConvTranspose2d weights (in, out, kh, kw) take the same transposition: with
    `transpose_kernel=True` flax's kernel is (kh, kw, out, in), the kernel of the convolution the
    transposed one is the gradient of, and jax flips it spatially as torch does. Biases the
    reference does not have (inner convs with norm `none`) are zeros.
    """
    targets = _torch_targets(LAYERS[role](**options))
    keys = _relevant_keys(state_dict, options["norm"])
    missing, unexpected = set(targets) - keys, keys - set(targets)
    if missing or unexpected:
        lines = [f"{source} does not fit the {role} of {_flags(options)}:"]
        if missing:
            lines.append(f"  missing keys: {_few(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys: {_few(unexpected)}")
        other = "discriminator" if role == "generator" else "generator"
        if fits := _fitting_options(state_dict, role, options):
            lines.append(f"  Its keys fit {' or '.join(fits[:3])}.")
        elif fits := _fitting_options(state_dict, other, None):
            lines.append(f"  Its keys are those of a {other} ({fits[0]}): is it the right file?")
        else:
            lines.append(
                "  Set --netG/--netD, --norm and --no_dropout as the model was trained "
                "(the reference's checkpoints/<name>/train_opt.txt lists them)."
            )
        raise ConversionError("\n".join(lines))

    wanted = traverse_util.flatten_dict(dict(template))
    converted, wrong_shapes = {}, []
    for key, path in targets.items():
        value = state_dict[key]
        if path[-1] == "kernel":
            value = value.transpose(2, 3, 1, 0)
        if path not in wanted:  # The mapping and the flax module disagree: a bug here.
            raise ValueError(f"{key} maps to {'/'.join(path)}, which the flax module lacks")
        shape = tuple(wanted[path].shape)
        if value.shape != shape:
            torch_shape = (shape[3], shape[2], *shape[:2]) if path[-1] == "kernel" else shape
            wrong_shapes.append(f"{key} {tuple(state_dict[key].shape)} (expected {torch_shape})")
        converted[path] = value.astype(wanted[path].dtype)
    if wrong_shapes:
        raise ConversionError(
            f"{source} has the keys of the {role} of {_flags(options)} but other shapes: "
            f"{_few(wrong_shapes, 3)}. Widths follow --ngf/--ndf and channel counts --input_nc/"
            f"--output_nc; set them as the model was trained (see train_opt.txt)."
        )
    for path, leaf in wanted.items():
        if path not in converted:
            if path[-1] != "bias" or (*path[:-1], "kernel") not in converted:
                raise ValueError(f"no torch key maps to {'/'.join(path)}")  # A bug here.
            converted[path] = np.zeros(leaf.shape, leaf.dtype)
    variables = traverse_util.unflatten_dict(converted)
    return {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})}
