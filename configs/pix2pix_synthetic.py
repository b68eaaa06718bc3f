"""Pix2Pix on the embedded synthetic facades: 64 px, a narrow U-Net, runs offline on a laptop CPU
and shows learning in a few minutes (held-out PSNR rises by several dB)."""

from i2i_jax import config as config_lib


def get_config():
    config = config_lib.pix2pix()
    config.data.source = "synthetic"
    config.load_size = 72
    config.crop_size = 64
    config.netG = "unet_64"
    config.ngf = 32
    config.ndf = 32
    config.batch_size = 8
    config.eval_batch_size = 20
    config.num_train_steps = 600
    config.log_every_steps = 50
    config.eval_every_steps = 150
    config.checkpoint_every_steps = 150
    return config
