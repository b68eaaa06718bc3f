"""Four virtual CPU devices for every test, so multi-device code runs on any machine.

This must happen before any JAX computation; single-device checks build a mesh of one device.
"""

import jax
import ml_collections
import pytest

NUM_DEVICES = 4
jax.config.update("jax_num_cpu_devices", NUM_DEVICES)

from i2i_jax import config_defaults  # noqa: E402  (after the device count is set)


def tiny_pix2pix_config() -> ml_collections.ConfigDict:
    """Pix2Pix at 32 px with a narrow 5-level U-Net: seconds per step on one core."""
    c = config_defaults.pix2pix()
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


@pytest.fixture
def tiny_config():
    return tiny_pix2pix_config()
