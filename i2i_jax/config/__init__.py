"""Configs: every key declared once (`keys.py`) with its default, meaning and rule; the task
defaults and --help text built from them (`defaults.py`); the checks (`check.py`).

Importing this package does not load TensorFlow, so checking a config stays cheap (the
benchmark's workers rely on it). The workdir's saved config is `i2i_jax.config.workdir`,
imported explicitly: it reads files with tf.io.gfile.
"""

from i2i_jax.config.check import check_batch_size, validate
from i2i_jax.config.defaults import cyclegan, describe_keys, flatten, for_task, pix2pix
from i2i_jax.config.keys import KEYS, Key

__all__ = [
    "KEYS",
    "Key",
    "check_batch_size",
    "cyclegan",
    "describe_keys",
    "flatten",
    "for_task",
    "pix2pix",
    "validate",
]
