"""Maps config names (the reference's `netG`, `netD`, `norm`, ...) to linen modules."""

import jax.numpy as jnp

from i2i_jax.generator_names import GENERATORS, parse_generator_name
from i2i_jax.models.patchgan import NLayerDiscriminator, PixelDiscriminator
from i2i_jax.models.resnet import ResnetGenerator
from i2i_jax.models.unet import UNetGenerator

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "build_discriminator",
    "build_generator",
    "compute_dtype",
    "input_size_rule",
]

DISCRIMINATORS = ("basic", "n_layers", "pixel")


def compute_dtype(config):
    return jnp.dtype(config.get("dtype", "float32"))


def _common(config, batch_axis: str | None) -> dict:
    """`batch_axis`: the mesh axis the train step splits the global batch along, which batch norm
    and dropout need to act on the global batch (None: a module for single-array use)."""
    return dict(
        norm=config.norm,
        init_type=config.init_type,
        init_gain=config.init_gain,
        sync_batch_stats=config.sync_batch_stats,
        batch_axis=batch_axis,
        dtype=compute_dtype(config),
        conv_lowering=config.get("conv_lowering", "auto"),
    )


def build_generator(config, batch_axis: str | None = None):
    """`unet_<size>`: a U-Net with log2(size) downsamplings (unet_256 has 8, unet_128 has 7);
    `resnet_<n>blocks`: the ResNet generator with n residual blocks."""
    common = _common(config, batch_axis)
    name = parse_generator_name(config.netG)
    if name.kind == "unet":
        return UNetGenerator(
            output_nc=config.output_nc,
            num_downs=name.num_downs,
            ngf=config.ngf,
            use_dropout=not config.no_dropout,
            **common,
        )
    return ResnetGenerator(
        output_nc=config.output_nc,
        ngf=config.ngf,
        n_blocks=name.n_blocks,
        use_dropout=not config.no_dropout,
        **common,
    )


def input_size_rule(config) -> tuple[int, int]:
    """(multiple, minimum) of the heights and widths the generator accepts: a U-Net halves them
    once per level; the ResNet generator halves them twice and reflection-pads its innermost
    features by 1, which needs at least 2 pixels there."""
    name = parse_generator_name(config.netG)
    return (name.size, name.size) if name.kind == "unet" else (4, 8)


def build_discriminator(config, batch_axis: str | None = None):
    """A PatchGAN; its input channels are whatever the task feeds it (Pix2Pix: A and B stacked)."""
    common = dict(ndf=config.ndf, **_common(config, batch_axis))
    if config.netD == "basic":
        return NLayerDiscriminator(n_layers=3, **common)
    if config.netD == "n_layers":
        return NLayerDiscriminator(n_layers=config.n_layers_D, **common)
    if config.netD == "pixel":
        return PixelDiscriminator(**common)
    raise ValueError(f"netD={config.netD!r} is not one of {DISCRIMINATORS}")
