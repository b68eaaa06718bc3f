"""Adam with the reference's learning-rate policies, and the decay of the generators' moving
average."""

import jax.numpy as jnp
import numpy as np
import optax


def total_steps(config, steps_per_epoch: int) -> int:
    """`num_train_steps` > 0 overrides the epoch counts `n_epochs + n_epochs_decay`."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return (config.n_epochs + config.n_epochs_decay) * steps_per_epoch


LR_POLICIES = ("linear", "step", "plateau", "cosine")
STEP_FACTOR = 0.1  # The reference's `step` policy: StepLR's gamma.
# The reference's `plateau` policy: ReduceLROnPlateau(mode="min", factor=0.2, threshold=0.01)
# with its relative threshold; its patience (5) is the config's `plateau_patience`. As PyTorch's,
# it ignores a cut that would lower the rate by less than PLATEAU_EPS.
PLATEAU_FACTOR, PLATEAU_THRESHOLD, PLATEAU_EPS = 0.2, 0.01, 1e-8


def schedule_epoch(config, steps_per_epoch: int) -> float:
    """Steps per epoch as the schedule counts them: the data's, or with `num_train_steps` set,
    that many steps spread over n_epochs + n_epochs_decay epochs, so that every policy keeps
    the shape the reference gives it over the whole run."""
    epochs = config.n_epochs + config.n_epochs_decay
    if config.num_train_steps > 0 and epochs:
        return config.num_train_steps / epochs
    return float(steps_per_epoch)


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """The reference's `--lr_policy`, stepped per step where it steps per epoch:

    - `linear`: constant for `n_epochs`, then linear to 0 at the last step;
    - `step`: times 0.1 every `lr_decay_iters` epochs (the reference's StepLR, stepped per
      epoch as it steps it, despite the option's name);
    - `plateau`: constant; the train state's `plateau` scales it (`plateau_after`);
    - `cosine`: the reference's CosineAnnealingLR with T_max = `n_epochs`, a cosine from `lr`
      to 0 over `n_epochs` which, as PyTorch's, rises again after them: with the default 100 +
      100 epochs it ends back at `lr`; `n_epochs_decay=0` gives one half-cosine to 0.
    """
    policy = config.get("lr_policy", "linear")  # Configs before it had none.
    epoch = schedule_epoch(config, steps_per_epoch)
    if policy == "step":
        every = config.lr_decay_iters * epoch
        return lambda step: config.lr * STEP_FACTOR ** jnp.floor(step / every)
    if policy == "plateau":
        return optax.constant_schedule(config.lr)
    if policy == "cosine":
        period = config.n_epochs * epoch
        if period <= 0:
            return optax.constant_schedule(config.lr)
        return lambda step: config.lr * (1.0 + jnp.cos(jnp.pi * step / period)) / 2.0
    total = total_steps(config, steps_per_epoch)
    epochs = config.n_epochs + config.n_epochs_decay
    constant = round(total * config.n_epochs / epochs) if epochs else total
    decay = total - constant
    if decay <= 0:
        return optax.constant_schedule(config.lr)
    return optax.join_schedules(
        [optax.constant_schedule(config.lr), optax.linear_schedule(config.lr, 0.0, decay)],
        boundaries=[constant],
    )


def initial_plateau() -> dict:
    """`lr_policy=plateau`'s state before any evaluation: the rate's scale, the best value of
    the metric so far and how many evaluations since have not improved on it by 1 %."""
    return {
        "scale": jnp.ones((), jnp.float32),
        "best": jnp.full((), jnp.inf, jnp.float32),
        "bad_evaluations": jnp.zeros((), jnp.int32),
    }


def plateau_after(plateau: dict, value: float, patience: int, lr: float) -> dict:
    """`plateau` after an evaluation that measured `value` (lower is better), for the base rate
    `lr`: PyTorch's ReduceLROnPlateau.step in mode min with a relative threshold and no
    cooldown. The scale drops by PLATEAU_FACTOR once more than `patience` evaluations in a row
    fail to beat the best by PLATEAU_THRESHOLD (relative), and the count starts again. On host
    numbers."""
    scale, best = np.float32(plateau["scale"]), np.float32(plateau["best"])
    bad = int(plateau["bad_evaluations"])
    if value < best * (1.0 - PLATEAU_THRESHOLD):
        best, bad = np.float32(value), 0
    else:
        bad += 1
    if bad > patience:
        if lr * scale * (1.0 - PLATEAU_FACTOR) > PLATEAU_EPS:
            scale = np.float32(scale * PLATEAU_FACTOR)
        bad = 0
    return {"scale": scale, "best": best, "bad_evaluations": np.int32(bad)}


def adam(config, steps_per_epoch: int) -> optax.GradientTransformation:
    return optax.adam(learning_rate_schedule(config, steps_per_epoch), b1=config.beta1, b2=0.999)


def average_decay(ema_decay: float, step):
    """How much of the moving average a step keeps: `ema_decay`, but less over the first steps,
    (1 + step) / (10 + step), so that the average forgets the random initial weights fast (as
    tf.train.ExponentialMovingAverage with `num_updates` does)."""
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
