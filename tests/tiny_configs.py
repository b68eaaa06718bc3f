"""Tiny Pix2Pix and CycleGAN configs: seconds per step on one core.

Also a config file for the command line, as the multi-process tests run it:
`--config=tests/tiny_configs.py:pix2pix` (or `:cycle_gan`).
"""

import ml_collections

from i2i_jax import config as config_lib


def tiny_pix2pix_config() -> ml_collections.ConfigDict:
    """Pix2Pix at 32 px with a narrow 5-level U-Net: seconds per step on one core."""
    c = config_lib.pix2pix()
    c.data.source = "synthetic"
    c.data.synthetic_train_size = 16
    c.data.synthetic_test_size = 6
    c.load_size = 36
    c.crop_size = 32
    c.netG = "unet_32"
    c.ngf = 8
    c.ndf = 8
    c.batch_size = 4
    c.eval_batch_size = 4
    c.num_train_steps = 8
    c.log_every_steps = 2
    c.eval_every_steps = 4
    c.checkpoint_every_steps = 4
    c.num_sample_images = 3
    return c


def tiny_cyclegan_config() -> ml_collections.ConfigDict:
    """CycleGAN at 32 px with a 2-block, 8-filter ResNet: about a second per step."""
    c = config_lib.cyclegan()
    c.data.source = "synthetic"
    c.data.synthetic_train_size = 12
    c.data.synthetic_test_size = 6
    c.load_size = 36
    c.crop_size = 32
    c.netG = "resnet_2blocks"
    c.ngf = 8
    c.ndf = 8
    c.pool_size = 3
    c.batch_size = 4
    c.eval_batch_size = 4
    c.num_train_steps = 6
    c.log_every_steps = 2
    c.eval_every_steps = 3
    c.checkpoint_every_steps = 3
    c.num_sample_images = 2
    return c


def get_config(model: str = "pix2pix") -> ml_collections.ConfigDict:
    return {"pix2pix": tiny_pix2pix_config, "cycle_gan": tiny_cyclegan_config}[model]()
