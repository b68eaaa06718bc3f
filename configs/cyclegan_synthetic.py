"""CycleGAN on the embedded synthetic facades, day <-> night, unpaired: 64 px, a narrow
resnet_6blocks, batch 1 as in the paper; runs offline on a laptop CPU in a few minutes. The test
split has true counterparts, so the PSNR of both translations is measured.

The identity loss is off: it asks G_A to leave night images unchanged, which works against a
global day -> night change of light (the reference uses it for painting <-> photo)."""

from i2i_jax import config_defaults


def get_config():
    config = config_defaults.cyclegan()
    config.data.source = "synthetic"
    config.load_size = 72
    config.crop_size = 64
    config.netG = "resnet_6blocks"
    config.ngf = 16
    config.ndf = 16
    config.lambda_identity = 0.0
    config.batch_size = 1
    config.eval_batch_size = 20
    config.num_train_steps = 1600
    config.log_every_steps = 100
    config.eval_every_steps = 400
    config.checkpoint_every_steps = 400
    return config
