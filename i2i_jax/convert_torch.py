"""Converts networks saved by the PyTorch reference into an i2i_jax workdir.

    python -m i2i_jax.convert_torch --checkpoint=latest_net_G.pth --netG=unet_256 --norm=batch \
        --output=WORKDIR

reads state dicts saved by junyanz/pytorch-CycleGAN-and-pix2pix (its `save_networks` writes
`<epoch>_net_<name>.pth`) and writes WORKDIR/config.json and a step-0 checkpoint of a full train
state, which `export` serves and a new run fine-tunes from (`--config.init_from=WORKDIR`). One
generator gives a `pix2pix` workdir; `--checkpoint_BtoA` (CycleGAN's G_B) gives a `cycle_gan`
one. Networks without a file (e.g. the discriminators) keep their initialisation; optimizer
states are fresh.

--netG, --norm and --no_dropout default to the task's, which are the reference's per-model
defaults: pix2pix unet_256, batch norm, dropout; cycle_gan resnet_9blocks, instance norm, no
dropout. The published pretrained CycleGAN generators (one file each) therefore need
`--netG=resnet_9blocks --norm=instance --no_dropout`. The options a model was trained with are
in the reference's checkpoints/<name>/train_opt.txt. Needs PyTorch: pip install -e '.[torch]'.

This module is the command line and the workdir; which torch key goes where, and the checks
that a file fits the options, are `torch_layers`.
"""

import logging
import os
from collections.abc import Mapping

import jax
from absl import flags

from i2i_jax import cli, outputs, parallel, tasks
from i2i_jax import config as config_lib
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.config import workdir as workdir_config
from i2i_jax.models.layers import NORMS
from i2i_jax.torch_layers import ConversionError, convert, generator_name, load_state_dict

log = logging.getLogger("i2i_jax")


def define_flags() -> None:
    """Only when run as a program, so importing this module defines no flags."""
    flags.DEFINE_string(
        "checkpoint",
        None,
        "State dict of the generator (A to B), e.g. "
        "latest_net_G.pth or CycleGAN's latest_net_G_A.pth.",
    )
    flags.DEFINE_string(
        "checkpoint_BtoA", None, "CycleGAN's G_B (B to A); makes a cycle_gan workdir."
    )
    flags.DEFINE_string(
        "discriminator", None, "Optional state dict of D (Pix2Pix) or D_A (CycleGAN)."
    )
    flags.DEFINE_string("discriminator_B", None, "Optional state dict of CycleGAN's D_B.")
    flags.DEFINE_string(
        "netG",
        None,
        "unet_256 | unet_128 | unet_<2**k> | resnet_9blocks | "
        "resnet_6blocks | resnet_<n>blocks (default: the task's).",
    )
    flags.DEFINE_enum("netD", "basic", ["basic", "n_layers", "pixel"], "Discriminator.")
    flags.DEFINE_integer("n_layers_D", 3, "Conv layers of D with --netD=n_layers.")
    flags.DEFINE_enum("norm", None, list(NORMS), "Norm layers (default: the task's).")
    flags.DEFINE_integer("ngf", 64, "Filters of the generator's last conv layer.")
    flags.DEFINE_integer("ndf", 64, "Filters of the discriminator's first conv layer.")
    flags.DEFINE_integer("input_nc", 3, "Channels of domain A (the input).")
    flags.DEFINE_integer("output_nc", 3, "Channels of domain B (the output).")
    flags.DEFINE_boolean(
        "no_dropout",
        None,
        "The generator has no dropout (default: the "
        "task's). Changes the keys of resnet generators.",
    )
    flags.DEFINE_string("output", None, "The workdir to create (must not exist or be empty).")
    flags.mark_flags_as_required(["checkpoint", "output"])


# --- The workdir ------------------------------------------------------------------------------


def make_config(cycle_gan: bool, **options):
    """The task's defaults with the given (not None) options; the crop size a U-Net implies.

    A U-Net's name is the size it was trained at (`unet_256`: 256 px); other nets keep the
    default crop size.
    """
    config = config_lib.cyclegan() if cycle_gan else config_lib.pix2pix()
    for key, value in options.items():
        if value is not None:
            config[key] = value
    if (name := generator_name(config.netG)).kind == "unet":
        config.crop_size = name.size
    if config.load_size < config.crop_size:
        config.load_size = config.crop_size
    return config


def net_roles(config) -> dict[str, str]:
    if config.model == "cycle_gan":
        return {
            "G_A": "generator",
            "G_B": "generator",
            "D_A": "discriminator",
            "D_B": "discriminator",
        }
    return {"G": "generator", "D": "discriminator"}


def check_output(output: str) -> None:
    """Refuses a bucket, and any existing output but an empty directory: a workdir holds
    checkpoints, which the converter never replaces."""
    if "://" in output:
        raise ConversionError(f"--output={output}: write to a local directory, then copy it")
    outputs.check_output(output, **_OUTPUT_RULES)


# Nothing but an empty directory is ever ours to replace.
_OUTPUT_RULES = dict(what="a converted workdir", is_ours=lambda _: False, overwrite=False)


def build_workdir(config, files: Mapping[str, str], output: str) -> None:
    """Converts `files` (net name -> state dict path) into a new workdir `output`.

    Everything is loaded and checked first, and written into a temporary directory beside
    `output` that is renamed into place at the end, so a failure leaves no half workdir.
    """
    check_output(output)
    roles = net_roles(config)
    unknown = set(files) - set(roles)
    if unknown:
        raise ConversionError(
            f"{config.model} has no nets {sorted(unknown)}; it has {sorted(roles)}"
        )
    state_dicts = {name: load_state_dict(path) for name, path in files.items()}
    task = tasks.build_task(config, steps_per_epoch=1)
    try:
        state = parallel.init_replicated(task.init_state, config.seed, parallel.make_mesh())
    except ValueError as e:  # E.g. a U-Net deeper than the crop size allows.
        raise ConversionError(f"cannot build {config.model} with netG={config.netG}: {e}") from e
    nets = dict(state.nets)
    for name, path in files.items():
        net = nets[name]
        options = {
            "generator": dict(netG=config.netG, norm=config.norm, no_dropout=config.no_dropout),
            "discriminator": dict(netD=config.netD, norm=config.norm, n_layers_D=config.n_layers_D),
        }[roles[name]]
        variables = convert(
            state_dicts[name],
            roles[name],
            options,
            {"params": net.params, "batch_stats": net.batch_stats},
            path,
        )
        # Same shardings as the initialised state, so the checkpoint restores like a run's.
        variables = jax.tree.map(
            lambda new, old: jax.device_put(new, old.sharding),
            variables,
            {"params": net.params, "batch_stats": net.batch_stats},
        )
        nets[name] = net.replace(**variables)
    state = state.replace(nets=nets)

    output = os.path.abspath(output)
    with outputs.staged(output, **_OUTPUT_RULES) as partial:
        workdir_config.write_whole(
            os.path.join(partial, workdir_config.CONFIG_FILE), workdir_config.to_json(config)
        )
        checkpointer = Checkpointer(partial, config.checkpoint_every_steps, config.keep_checkpoints)
        checkpointer.maybe_save(0, state, force=True)
        checkpointer.close()
    for name in roles:
        if name in files:
            log.info("%s: converted from %s", name, files[name])
        else:
            log.info("%s: initialised (seed %d), no PyTorch file given", name, config.seed)
    log.info(
        "wrote %s (%s, netG=%s, norm=%s, crop_size=%d) with a checkpoint at step 0",
        output,
        config.model,
        config.netG,
        config.norm,
        config.crop_size,
    )


def main():
    """Runs in `cli.run`: a ConversionError ends it with its message and status 1."""
    f = flags.FLAGS
    cycle_gan = f.checkpoint_BtoA is not None
    if f.discriminator_B and not cycle_gan:
        raise ConversionError(
            "--discriminator_B is CycleGAN's D_B: it needs --checkpoint_BtoA as well"
        )
    config = make_config(
        cycle_gan,
        netG=f.netG,
        norm=f.norm,
        no_dropout=f.no_dropout,
        netD=f.netD,
        n_layers_D=f.n_layers_D,
        ngf=f.ngf,
        ndf=f.ndf,
        input_nc=f.input_nc,
        output_nc=f.output_nc,
    )
    names = ("G_A", "G_B", "D_A", "D_B") if cycle_gan else ("G", None, "D", None)
    given = (f.checkpoint, f.checkpoint_BtoA, f.discriminator, f.discriminator_B)
    files = {name: path for name, path in zip(names, given, strict=True) if path}
    build_workdir(config, files, f.output)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
