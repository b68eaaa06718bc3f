"""Pix2Pix on CMP facades (labels -> photo), the paper's setup: unet_256, 70x70 PatchGAN,
batch 1, 286 -> 256 jitter, 100 + 100 epochs. Needs the `facades` archive (see README)."""

from i2i_jax import config as config_lib


def get_config():
    return config_lib.pix2pix()
