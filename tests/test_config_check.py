"""The key declarations agree with themselves, and every config rule fails with a message
naming the key, the value and a fix."""

import pytest

from i2i_jax import config as config_lib
from i2i_jax.config.keys import KEYS, SAME, TASK_NAMES
from i2i_jax.errors import ConfigError

from helpers import load_config
from tiny_configs import get_config


@pytest.mark.parametrize("key", KEYS, ids=lambda key: key.name)
def test_every_key_has_a_meaning_and_defaults_that_meet_its_rule(key):
    assert key.meaning.strip(), key.name
    defaults = [d for task in TASK_NAMES if (d := key.default_for(task)) is not SAME]
    assert defaults, f"{key.name} is in no task's config"
    for default in defaults:
        assert key.choices is None or default in key.choices, key.name
        assert key.minimum is None or default >= key.minimum, key.name


def test_each_task_has_exactly_its_keys_and_help_lists_them_all():
    help_text = config_lib.describe_keys()
    configs = {"pix2pix": config_lib.pix2pix(), "cycle_gan": config_lib.cyclegan()}
    for task, config in configs.items():
        flat = config_lib.flatten(config.to_dict())
        assert set(flat) == {k.name for k in KEYS if k.only in (None, task)}, task
        for name, value in flat.items():
            assert f"  {name} = " in help_text and repr(value) in help_text, name
    assert "lambda_L1" not in configs["cycle_gan"] and "pool_size" not in configs["pix2pix"]
    assert "  lambda_L1 = 100.0 / -: " in help_text
    assert "  netG = 'unet_256' / 'resnet_9blocks': " in help_text


def rejected(overrides: dict, model: str = "pix2pix", devices: int = 1) -> str:
    config = get_config(model)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    with pytest.raises(ConfigError) as error:
        config_lib.validate(config, devices)
    return str(error.value)


@pytest.mark.parametrize("model", ["pix2pix", "cycle_gan"])
def test_the_tiny_configs_pass(model):
    config_lib.validate(get_config(model), 4)


@pytest.mark.parametrize(
    "name", ["pix2pix_facades", "pix2pix_synthetic", "cyclegan_horse2zebra", "cyclegan_synthetic"]
)
def test_the_shipped_configs_pass(name):
    config_lib.validate(load_config(name), 1)


@pytest.mark.parametrize(
    "key,value,fix",
    [
        ("netD", "basik", "--config.netD=basic"),
        ("norm", "batchnorm", "--config.norm=batch"),
        ("gan_mode", "lsgam", "--config.gan_mode=lsgan"),
        ("model", "cyclegan", "--config.model=cycle_gan"),
        ("data.source", "folders", "--config.data.source=folder"),
        ("data.on_bad_image", "ignore", "--config.data.on_bad_image=error"),
        ("input_nc", 4, "--config.input_nc="),
    ],
)
def test_an_unknown_choice_names_the_key_the_choices_and_the_nearest(key, value, fix):
    message = rejected({key: value})
    assert message.startswith(f"config.{key}={value!r}: must be one of [")
    assert fix in message.splitlines()[-1]


@pytest.mark.parametrize("netG", ["unet_100", "resnet", "vgg16"])
def test_an_unknown_generator_is_named_with_the_valid_forms(netG):
    message = rejected({"netG": netG})
    assert f"config.netG={netG!r}" in message and "--config.netG=" in message
    rule = (
        "a U-Net's size must be a power of two >= 4"
        if netG == "unet_100"
        else "must be one of ['unet_256', 'unet_128', 'unet_<2**k>', "
    )
    assert message.startswith(f"config.netG={netG!r}: {rule}")


def test_a_crop_larger_than_the_loaded_image_says_which_sizes_to_change():
    message = rejected({"load_size": 32, "crop_size": 64, "netG": "unet_64"})
    assert message.startswith(
        "config.crop_size=64: a crop cannot be larger than the image it is cut from (load_size=32)"
    )
    assert message.splitlines()[-1] == (
        "Fix: --config.load_size=64 or more, or --config.crop_size=32 or less"
    )


def test_a_size_the_unet_cannot_take_lists_the_sizes_that_work():
    message = rejected({"netG": "unet_256", "load_size": 300, "crop_size": 96})
    assert "netG=unet_256 takes square images whose side is a multiple of 256" in message
    assert "(256, 512, 768, ...)" in message
    assert message.splitlines()[-1] == (
        "Fix: --config.crop_size=256, or a U-Net that takes it: --config.netG=unet_32"
    )


def test_a_size_the_resnet_cannot_take_names_the_nearest_that_works():
    message = rejected({"crop_size": 30}, model="cycle_gan")
    assert "multiple of 4 and at least 8" in message and "config.crop_size=30" in message


def test_a_batch_that_does_not_split_over_the_devices_gives_one_that_does():
    message = rejected({"batch_size": 6}, devices=4)
    assert message.startswith("config.batch_size=6: must be a positive multiple of the 4 devices")
    assert message.splitlines()[-1] == "Fix: --config.batch_size=4"
    assert "config.eval_batch_size=2" in rejected({"eval_batch_size": 2}, devices=4)


@pytest.mark.parametrize("key,value", [("num_train_steps", 0), ("num_train_steps", -5)])
def test_zero_or_negative_steps_are_refused(key, value):
    message = rejected({key: value})
    assert message.startswith(f"config.{key}={value}:") and "-1" in message


@pytest.mark.parametrize("key", ["n_epochs", "n_epochs_decay"])
def test_negative_epochs_are_refused(key):
    message = rejected({key: -1, "num_train_steps": -1})
    assert message.startswith(f"config.{key}=-1: an epoch count must be at least 0")
    assert message.splitlines()[-1] == f"Fix: --config.{key}=0 or more"


def test_no_epochs_at_all_are_refused():
    message = rejected({"n_epochs": 0, "n_epochs_decay": 0, "num_train_steps": -1})
    assert "config.n_epochs=0" in message and "nothing to train" in message


@pytest.mark.parametrize(
    "key,value",
    [
        ("lr", 0.0),
        ("lr", float("inf")),
        ("beta1", 1.0),
        ("ema_decay", 1.0),
        ("ema_decay", -0.5),
        ("ngf", 0),
        ("keep_checkpoints", 0),
    ],
)
def test_out_of_range_numbers_are_refused(key, value):
    assert rejected({key: value}).startswith(f"config.{key}={value!r}:")


def test_cyclegans_identity_loss_needs_the_same_channels_on_both_sides():
    message = rejected({"input_nc": 1}, model="cycle_gan")
    assert message.startswith("config.lambda_identity=0.5: the identity loss feeds B images")
    assert message.splitlines()[-1] == (
        "Fix: --config.lambda_identity=0, or the same input_nc and output_nc"
    )
