"""Entry point: `python -m i2i_jax.main --config=configs/pix2pix_facades.py --workdir=DIR`.

Any config field can be overridden with `--config.<key>=<value>`. Rerunning the same command on
the same workdir resumes from its latest checkpoint.
"""

import logging

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from i2i_jax import train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    # Our progress at INFO; libraries (orbax, TF) stay at absl's default, WARNING.
    absl_logging.set_verbosity(absl_logging.WARNING)
    logging.getLogger("i2i_jax").setLevel(logging.INFO)
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    app.run(main)
