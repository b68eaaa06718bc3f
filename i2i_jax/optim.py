"""Adam with the reference's learning-rate policies, and the decay of the generators' moving
average."""

import jax.numpy as jnp
import optax


def total_steps(config, steps_per_epoch: int) -> int:
    """`num_train_steps` > 0 overrides the epoch counts `n_epochs + n_epochs_decay`."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return (config.n_epochs + config.n_epochs_decay) * steps_per_epoch


LR_POLICIES = ("linear", "step", "cosine")
STEP_FACTOR = 0.1  # The reference's `step` policy: StepLR's gamma.


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
    - `cosine`: the reference's CosineAnnealingLR with T_max = `n_epochs`, a cosine from `lr`
      to 0 over `n_epochs` which, as PyTorch's, rises again after them: with the default 100 +
      100 epochs it ends back at `lr`; `n_epochs_decay=0` gives one half-cosine to 0.
    """
    policy = config.get("lr_policy", "linear")  # Configs before it had none.
    epoch = schedule_epoch(config, steps_per_epoch)
    if policy == "step":
        every = config.lr_decay_iters * epoch
        return lambda step: config.lr * STEP_FACTOR ** jnp.floor(step / every)
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


def adam(config, steps_per_epoch: int) -> optax.GradientTransformation:
    return optax.adam(learning_rate_schedule(config, steps_per_epoch), b1=config.beta1, b2=0.999)


def average_decay(ema_decay: float, step):
    """How much of the moving average a step keeps: `ema_decay`, but less over the first steps,
    (1 + step) / (10 + step), so that the average forgets the random initial weights fast (as
    tf.train.ExponentialMovingAverage with `num_updates` does)."""
    return jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
