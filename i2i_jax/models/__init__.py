"""Maps config names (the reference's `netG`, `netD`, `norm`, ...) to linen modules."""

import re

import jax.numpy as jnp

from i2i_jax.models.patchgan import NLayerDiscriminator, PixelDiscriminator
from i2i_jax.models.unet import UNetGenerator

GENERATORS = ("unet_256", "unet_128", "unet_<2**k>")
DISCRIMINATORS = ("basic", "n_layers", "pixel")


def compute_dtype(config):
    return jnp.dtype(config.get("dtype", "float32"))


def build_generator(config, stats_groups: int = 1):
    """`unet_<size>` is a U-Net with log2(size) downsamplings: unet_256 has 8, unet_128 has 7."""
    match = re.fullmatch(r"unet_(\d+)", config.netG)
    if not match or int(match.group(1)) < 4 or int(match.group(1)) & (int(match.group(1)) - 1):
        raise ValueError(f"netG={config.netG!r} is not one of {GENERATORS} (a power of two >= 4)")
    return UNetGenerator(
        output_nc=config.output_nc, num_downs=int(match.group(1)).bit_length() - 1,
        ngf=config.ngf, norm=config.norm, use_dropout=not config.no_dropout,
        init_type=config.init_type, init_gain=config.init_gain, stats_groups=stats_groups,
        dtype=compute_dtype(config))


def build_discriminator(config, stats_groups: int = 1):
    """A PatchGAN; its input channels are whatever the task feeds it (Pix2Pix: A and B stacked)."""
    common = dict(ndf=config.ndf, norm=config.norm, init_type=config.init_type,
                  init_gain=config.init_gain, stats_groups=stats_groups,
                  dtype=compute_dtype(config))
    if config.netD == "basic":
        return NLayerDiscriminator(n_layers=3, **common)
    if config.netD == "n_layers":
        return NLayerDiscriminator(n_layers=config.n_layers_D, **common)
    if config.netD == "pixel":
        return PixelDiscriminator(**common)
    raise ValueError(f"netD={config.netD!r} is not one of {DISCRIMINATORS}")
