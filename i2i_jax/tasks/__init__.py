"""Tasks: per-task `init_state`, `train_step` and `eval_step`, pure functions of state and batch."""

from i2i_jax.tasks.common import TEST_MODES
from i2i_jax.tasks.cyclegan import CycleGAN
from i2i_jax.tasks.pix2pix import Pix2Pix

TASKS = {"pix2pix": Pix2Pix, "cycle_gan": CycleGAN}


def build_task(config, steps_per_epoch: int):
    """`config.model` names the task, as the reference's `--model` does."""
    if config.model not in TASKS:
        raise ValueError(f"model={config.model!r} is not one of {sorted(TASKS)}")
    if config.eval_mode not in TEST_MODES:
        raise ValueError(f"eval_mode={config.eval_mode!r} is not one of {TEST_MODES}")
    return TASKS[config.model](config, steps_per_epoch)
