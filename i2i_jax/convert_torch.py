"""Converts networks saved by the PyTorch reference into an i2i_jax workdir.

    python -m i2i_jax.convert_torch --checkpoint=latest_net_G.pth --netG=unet_256 --norm=batch \
        --output=WORKDIR

reads state dicts saved by junyanz/pytorch-CycleGAN-and-pix2pix (its `save_networks` writes
`<epoch>_net_<name>.pth`) and writes WORKDIR/config.json and a step-0 checkpoint of a full train
state, which `python -m i2i_jax.main --config=... --workdir=WORKDIR` fine-tunes from (add
--allow_config_change when that config differs from WORKDIR/config.json, e.g. in its data). One
generator gives a `pix2pix` workdir; `--checkpoint_BtoA` (CycleGAN's G_B) gives a `cycle_gan`
one. Networks without a file (e.g. the discriminators) keep their initialisation; optimizer
states are fresh.

--netG, --norm and --no_dropout default to the task's, which are the reference's per-model
defaults: pix2pix unet_256, batch norm, dropout; cycle_gan resnet_9blocks, instance norm, no
dropout. The published pretrained CycleGAN generators (one file each) therefore need
`--netG=resnet_9blocks --norm=instance --no_dropout`. The options a model was trained with are
in the reference's checkpoints/<name>/train_opt.txt. Needs PyTorch: pip install -e '.[torch]'.
"""

import itertools
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping

import jax
import numpy as np
from absl import app, flags
from absl import logging as absl_logging
from flax import traverse_util

from i2i_jax import config_defaults, parallel, tasks, workdir_config
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.models.layers import NORMS

log = logging.getLogger("i2i_jax")

def define_flags() -> None:
    """Only when run as a program, so importing this module defines no flags."""
    flags.DEFINE_string("checkpoint", None, "State dict of the generator (A to B), e.g. "
                        "latest_net_G.pth or CycleGAN's latest_net_G_A.pth.")
    flags.DEFINE_string("checkpoint_BtoA", None,
                        "CycleGAN's G_B (B to A); makes a cycle_gan workdir.")
    flags.DEFINE_string("discriminator", None,
                        "Optional state dict of D (Pix2Pix) or D_A (CycleGAN).")
    flags.DEFINE_string("discriminator_B", None, "Optional state dict of CycleGAN's D_B.")
    flags.DEFINE_string("netG", None, "unet_256 | unet_128 | unet_<2**k> | resnet_9blocks | "
                        "resnet_6blocks | resnet_<n>blocks (default: the task's).")
    flags.DEFINE_enum("netD", "basic", ["basic", "n_layers", "pixel"], "Discriminator.")
    flags.DEFINE_integer("n_layers_D", 3, "Conv layers of D with --netD=n_layers.")
    flags.DEFINE_enum("norm", None, list(NORMS), "Norm layers (default: the task's).")
    flags.DEFINE_integer("ngf", 64, "Filters of the generator's last conv layer.")
    flags.DEFINE_integer("ndf", 64, "Filters of the discriminator's first conv layer.")
    flags.DEFINE_integer("input_nc", 3, "Channels of domain A (the input).")
    flags.DEFINE_integer("output_nc", 3, "Channels of domain B (the output).")
    flags.DEFINE_boolean("no_dropout", None, "The generator has no dropout (default: the "
                         "task's). Changes the keys of resnet generators.")
    flags.DEFINE_string("output", None, "The workdir to create (must not exist or be empty).")
    flags.mark_flags_as_required(["checkpoint", "output"])


class ConversionError(Exception):
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


def generator_layers(netG: str, norm: str, no_dropout: bool) -> list[tuple[str, str, str]]:
    if match := re.fullmatch(r"unet_(\d+)", netG):
        size = int(match.group(1))
        if size >= 4 and not size & (size - 1):
            return list(unet_layers(size.bit_length() - 1, norm))
    if match := re.fullmatch(r"resnet_(\d+)blocks", netG):
        return list(resnet_layers(int(match.group(1)), norm, no_dropout))
    raise ConversionError(f"--netG={netG} is not unet_<2**k> or resnet_<n>blocks")


def discriminator_layers(netD: str, norm: str, n_layers_D: int) -> list[tuple[str, str, str]]:
    if netD == "pixel":
        return list(pixel_layers(norm))
    return list(nlayer_layers(3 if netD == "basic" else n_layers_D, norm))


LAYERS = {"generator": generator_layers, "discriminator": discriminator_layers}

# Options that change a network's keys, and other values to suggest when a file does not fit.
_CANDIDATES = {
    "generator": [dict(netG=g, norm=n, no_dropout=d)
                  for g in (*(f"unet_{2**k}" for k in range(5, 11)),
                            *(f"resnet_{n}blocks" for n in range(1, 13)))
                  for n in NORMS for d in (True, False)],
    "discriminator": [dict(netD=d, norm=n, n_layers_D=k) for d, k in (
        ("basic", 3), ("pixel", 3), *(("n_layers", k) for k in range(1, 7))) for n in NORMS],
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
        raise ConversionError(f"{path}: torch.load(weights_only=True) failed ({first_line}). The "
                              f"converter reads state dicts, as the reference's save_networks "
                              f"writes them (torch.save(net.state_dict(), path)).") from e
    if not isinstance(loaded, Mapping) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()):
        nested = [k for k, v in loaded.items() if isinstance(v, Mapping)] if isinstance(
            loaded, Mapping) else []
        hint = f"; it holds mappings under {nested[:3]}: save one of them" if nested else ""
        raise ConversionError(f"{path}: not a state dict (names of parameters and buffers "
                              f"mapped to tensors), got {type(loaded).__name__}{hint}")
    if loaded and all(k.startswith("module.") for k in loaded):
        loaded = {k[len("module."):]: v for k, v in loaded.items()}
    return {k: v.detach().cpu().float().numpy() for k, v in loaded.items()}


def _torch_targets(layers) -> dict[str, tuple[str, ...]]:
    """torch key -> flat flax variable path ('params' | 'batch_stats', module..., leaf)."""
    targets = {}
    for prefix, path, kind in layers:
        names = tuple(path.split("/"))
        if kind == "batch_norm":
            for key, (collection, leaf) in {
                    "weight": ("params", "scale"), "bias": ("params", "bias"),
                    "running_mean": ("batch_stats", "mean"),
                    "running_var": ("batch_stats", "var")}.items():
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
    ignored = ("num_batches_tracked",) if norm == "batch" else (
        "num_batches_tracked", "running_mean", "running_var")
    return {k for k in keys if k.rsplit(".", 1)[-1] not in ignored}


def _flags(options: Mapping) -> str:
    return " ".join(f"--{k}={v}" if not isinstance(v, bool) else f"--{'' if v else 'no'}{k}"
                    for k, v in options.items())


def _fitting_options(keys, role: str, options: Mapping) -> list[str]:
    """The options under which `keys` are exactly a `role`'s keys, as flags: those that differ
    from `options`, or all of them when `options` is None."""
    fits = []
    for candidate in _CANDIDATES[role]:
        if options and role == "discriminator" and candidate["netD"] != "n_layers":
            candidate = {**candidate, "n_layers_D": options["n_layers_D"]}  # Unused: no change.
        expected = set(_torch_targets(LAYERS[role](**candidate)))
        if expected == _relevant_keys(keys, candidate["norm"]):
            changed = _flags({k: v for k, v in candidate.items()
                              if options is None or v != options[k]})
            if changed not in fits:
                fits.append(changed)
    return fits


def _few(keys, count: int = 4) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:count]) + (f", ... ({len(keys)} in all)" if len(keys) > count else "")


def convert(state_dict: Mapping[str, np.ndarray], role: str, options: Mapping, template,
            source: str) -> dict:
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
            lines.append("  Set --netG/--netD, --norm and --no_dropout as the model was trained "
                         "(the reference's checkpoints/<name>/train_opt.txt lists them).")
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
            f"--output_nc; set them as the model was trained (see train_opt.txt).")
    for path, leaf in wanted.items():
        if path not in converted:
            if path[-1] != "bias" or path[:-1] + ("kernel",) not in converted:
                raise ValueError(f"no torch key maps to {'/'.join(path)}")  # A bug here.
            converted[path] = np.zeros(leaf.shape, leaf.dtype)
    variables = traverse_util.unflatten_dict(converted)
    return {"params": variables.get("params", {}), "batch_stats": variables.get("batch_stats", {})}


# --- The workdir ------------------------------------------------------------------------------


def make_config(cycle_gan: bool, **options):
    """The task's defaults with the given (not None) options; the crop size a U-Net implies.

    A U-Net's name is the size it was trained at (`unet_256`: 256 px); other nets keep the
    default crop size.
    """
    config = config_defaults.cyclegan() if cycle_gan else config_defaults.pix2pix()
    for key, value in options.items():
        if value is not None:
            config[key] = value
    if match := re.fullmatch(r"unet_(\d+)", config.netG):
        config.crop_size = int(match.group(1))
    if config.load_size < config.crop_size:
        config.load_size = config.crop_size
    return config


def net_roles(config) -> dict[str, str]:
    if config.model == "cycle_gan":
        return {"G_A": "generator", "G_B": "generator", "D_A": "discriminator",
                "D_B": "discriminator"}
    return {"G": "generator", "D": "discriminator"}


def check_output(output: str) -> None:
    """Refuses to write into an existing, non-empty directory (or over a file)."""
    if "://" in output:
        raise ConversionError(f"--output={output}: write to a local directory, then copy it")
    if os.path.isdir(output) and os.listdir(output):
        raise ConversionError(f"--output={output} exists and is not empty; choose a new "
                              f"directory (the converter never overwrites a workdir)")
    if os.path.exists(output) and not os.path.isdir(output):
        raise ConversionError(f"--output={output} exists and is not a directory")


def build_workdir(config, files: Mapping[str, str], output: str) -> None:
    """Converts `files` (net name -> state dict path) into a new workdir `output`.

    Everything is loaded and checked first, and written into a temporary directory beside
    `output` that is renamed into place at the end, so a failure leaves no half workdir.
    """
    check_output(output)
    roles = net_roles(config)
    unknown = set(files) - set(roles)
    if unknown:
        raise ConversionError(f"{config.model} has no nets {sorted(unknown)}; it has "
                              f"{sorted(roles)}")
    state_dicts = {name: load_state_dict(path) for name, path in files.items()}
    task = tasks.build_task(config, steps_per_epoch=1)
    try:
        state = parallel.init_replicated(task.init_state, config.seed, parallel.make_mesh())
    except ValueError as e:  # E.g. a U-Net deeper than the crop size allows.
        raise ConversionError(f"cannot build {config.model} with netG={config.netG}: {e}") from e
    nets = dict(state.nets)
    for name, path in files.items():
        net = nets[name]
        options = {"generator": dict(netG=config.netG, norm=config.norm,
                                     no_dropout=config.no_dropout),
                   "discriminator": dict(netD=config.netD, norm=config.norm,
                                         n_layers_D=config.n_layers_D)}[roles[name]]
        variables = convert(state_dicts[name], roles[name], options,
                            {"params": net.params, "batch_stats": net.batch_stats}, path)
        # Same shardings as the initialised state, so the checkpoint restores like a run's.
        variables = jax.tree.map(lambda new, old: jax.device_put(new, old.sharding), variables,
                                 {"params": net.params, "batch_stats": net.batch_stats})
        nets[name] = net.replace(**variables)
    state = state.replace(nets=nets)

    output = os.path.abspath(output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-",
                               dir=os.path.dirname(output))
    try:
        with open(os.path.join(partial, workdir_config.CONFIG_FILE), "w") as f:
            f.write(workdir_config.to_json(config))
        checkpointer = Checkpointer(partial, config.checkpoint_every_steps,
                                    config.keep_checkpoints)
        checkpointer.maybe_save(0, state, force=True)
        checkpointer.close()
        check_output(output)  # Still free: nothing else wrote there meanwhile.
        os.replace(partial, output)  # Also replaces an empty directory.
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    for name in roles:
        if name in files:
            log.info("%s: converted from %s", name, files[name])
        else:
            log.info("%s: initialised (seed %d), no PyTorch file given", name, config.seed)
    log.info("wrote %s (%s, netG=%s, norm=%s, crop_size=%d) with a checkpoint at step 0",
             output, config.model, config.netG, config.norm, config.crop_size)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    absl_logging.set_verbosity(absl_logging.WARNING)  # Libraries (orbax, TF) at WARNING.
    log.setLevel(logging.INFO)
    f = flags.FLAGS
    cycle_gan = f.checkpoint_BtoA is not None
    try:
        if f.discriminator_B and not cycle_gan:
            raise ConversionError("--discriminator_B is CycleGAN's D_B: it needs "
                                  "--checkpoint_BtoA as well")
        config = make_config(cycle_gan, netG=f.netG, norm=f.norm, no_dropout=f.no_dropout,
                             netD=f.netD, n_layers_D=f.n_layers_D, ngf=f.ngf, ndf=f.ndf,
                             input_nc=f.input_nc, output_nc=f.output_nc)
        names = ("G_A", "G_B", "D_A", "D_B") if cycle_gan else ("G", None, "D", None)
        given = (f.checkpoint, f.checkpoint_BtoA, f.discriminator, f.discriminator_B)
        files = {name: path for name, path in zip(names, given, strict=True) if path}
        build_workdir(config, files, f.output)
    except ConversionError as e:
        sys.exit(f"convert_torch: error: {e}")


if __name__ == "__main__":
    define_flags()
    app.run(main)
