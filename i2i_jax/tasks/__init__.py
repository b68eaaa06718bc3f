"""Tasks: per-task `init_state`, `train_step` and `eval_step`, pure functions of state and batch."""

from i2i_jax.tasks.pix2pix import Pix2Pix

TASKS = {"pix2pix": Pix2Pix}


def build_task(config, steps_per_epoch: int, stats_groups: int = 1):
    """`config.model` names the task, as the reference's `--model` does."""
    if config.model not in TASKS:
        raise ValueError(f"model={config.model!r} is not one of {sorted(TASKS)}")
    return TASKS[config.model](config, steps_per_epoch, stats_groups)
