"""CycleGAN on horse2zebra, the paper's setup: resnet_9blocks, 70x70 PatchGAN, instance norm,
LSGAN, cycle 10, identity 0.5, pool 50, batch 1, 286 -> 256 jitter, 100 + 100 epochs.
Needs the `horse2zebra` archive (see README)."""

from i2i_jax import config as config_lib


def get_config():
    return config_lib.cyclegan()
