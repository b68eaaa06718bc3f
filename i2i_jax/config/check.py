"""Checks a config before anything is built, so a wrong value fails in a second, not at hour ten.

Every violation is a `ConfigError` naming the key, the value, the rule and a fix. The one-key
rules (choices, minimums) come from the declarations in `keys.py`; the rules that relate keys
to each other, or that the models decide (which generators exist), are here.
"""

import difflib
import math

from i2i_jax import models
from i2i_jax.config.keys import KEYS
from i2i_jax.errors import ConfigError
from i2i_jax.generator_names import GENERATORS, parse_generator_name


def validate(config, num_devices: int) -> None:
    """Raises a `ConfigError` for the first rule `config` breaks; `num_devices` is the size of
    the mesh the batches are split over."""
    for key in KEYS:
        if (
            key.choices is not None
            and _has(config, key.name)
            and (value := _get(config, key.name)) not in key.choices
        ):
            raise ConfigError(
                key.name,
                value,
                f"must be one of {list(key.choices)}",
                f"--config.{key.name}={_nearest(value, key.choices)}",
            )
    _check_generator_name(config)
    for key in KEYS:
        if (
            key.minimum is not None
            and _has(config, key.name)
            and (value := _get(config, key.name)) < key.minimum
        ):
            raise ConfigError(
                key.name,
                value,
                f"{key.minimum_means} must be at least {key.minimum}",
                f"--config.{key.name}={key.minimum} or more",
            )
    _check_schedule(config)
    _check_sizes(config)
    if (
        config.model == "cycle_gan"
        and config.lambda_identity > 0
        and (config.input_nc != config.output_nc)
    ):
        raise ConfigError(
            "lambda_identity",
            config.lambda_identity,
            "the identity loss feeds "
            f"B images to G_A, which takes A's input_nc={config.input_nc} "
            f"channels, not output_nc={config.output_nc}",
            "--config.lambda_identity=0, or the same input_nc and output_nc",
        )
    for key in ("batch_size", "eval_batch_size"):
        check_batch_size(config[key], num_devices, key)


def check_batch_size(global_batch: int, num_devices: int, key: str) -> None:
    """Each device takes an equal share of a global batch."""
    if global_batch <= 0 or global_batch % num_devices:
        fix = num_devices * max(1, global_batch // num_devices)
        raise ConfigError(
            key,
            global_batch,
            f"must be a positive multiple of the {num_devices} devices the batch is split over",
            f"--config.{key}={fix}",
        )


def _get(config, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def _has(config, key: str) -> bool:
    head, _, rest = key.partition(".")
    return head in config and (not rest or _has(config[head], rest))


def _nearest(value, choices) -> str:
    """The choice most like `value`: a plausible typo fix, else the first choice."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
    return close[0] if close else str(choices[0])


def _check_generator_name(config) -> None:
    """The models' grammar decides which names are generators; a `unet_<digits>` it refuses has
    a size that is not a power of two >= 4."""
    try:
        parse_generator_name(config.netG)
    except ValueError:
        name, _, size = config.netG.partition("_")
        if name == "unet" and size.isdecimal():
            raise ConfigError(
                "netG",
                config.netG,
                "a U-Net's size must be a power of two >= 4",
                "--config.netG=unet_256 or unet_128",
            ) from None
        raise ConfigError(
            "netG",
            config.netG,
            f"must be one of {list(GENERATORS)}",
            "--config.netG=unet_256 (Pix2Pix) or --config.netG=resnet_9blocks",
        ) from None


def _check_schedule(config) -> None:
    steps = config.num_train_steps
    if steps == 0 or steps < -1:
        raise ConfigError(
            "num_train_steps",
            steps,
            "must be a positive number of steps, or -1 "
            "to train for n_epochs + n_epochs_decay epochs",
            "--config.num_train_steps=-1 or a positive count",
        )
    if steps == -1 and config.n_epochs + config.n_epochs_decay <= 0:
        raise ConfigError(
            "n_epochs",
            config.n_epochs,
            "with n_epochs_decay="
            f"{config.n_epochs_decay} and num_train_steps=-1 there is nothing to "
            "train",
            "--config.n_epochs=100 (or --config.num_train_steps=N)",
        )
    if config.get("lr_policy") == "plateau" and config.eval_every_steps <= 0:
        raise ConfigError(
            "eval_every_steps",
            config.eval_every_steps,
            "lr_policy=plateau watches the evaluations, and with 0 there are none",
            "--config.eval_every_steps=N (N > 0), or another --config.lr_policy",
        )
    if not (config.lr > 0 and math.isfinite(config.lr)):
        raise ConfigError(
            "lr",
            config.lr,
            "the learning rate must be positive and finite",
            "--config.lr=2e-4 (the reference's)",
        )
    for key, what, fix in (
        ("beta1", "Adam's beta1", "--config.beta1=0.5 (the reference's)"),
        (
            "ema_decay",
            "the moving average's decay per step",
            "--config.ema_decay=0.999 (or 0: no moving average)",
        ),
    ):
        if not 0 <= config[key] < 1:
            raise ConfigError(key, config[key], f"{what} must be in [0, 1)", fix)


def _check_sizes(config) -> None:
    crop = config.crop_size
    if config.preprocess == "resize_and_crop" and crop > config.load_size:
        raise ConfigError(
            "crop_size",
            crop,
            f"a crop cannot be larger than the image it is cut from (load_size={config.load_size})",
            f"--config.load_size={crop} or more, or --config.crop_size={config.load_size} or less",
        )
    multiple, minimum = models.input_size_rule(config)
    if crop % multiple or crop < minimum:
        works = [
            multiple * k for k in range(max(1, minimum // multiple), 100) if multiple * k >= minimum
        ][:3]
        power = crop & -crop  # The largest power of two dividing crop_size.
        other = (
            f", or a U-Net that takes it: --config.netG=unet_{power}"
            if config.netG.startswith("unet_") and power >= 4
            else ""
        )
        raise ConfigError(
            "crop_size",
            crop,
            f"netG={config.netG} takes square images whose "
            f"side is a multiple of {multiple} and at least {minimum} "
            f"({', '.join(map(str, works))}, ...)",
            f"--config.crop_size={works[0]}{other}",
        )
