"""Adam with the reference's `linear` policy (constant learning rate, then linear decay to 0),
and the decay of the generators' moving average."""

import jax.numpy as jnp
import optax


def total_steps(config, steps_per_epoch: int) -> int:
    """`num_train_steps` > 0 overrides the epoch counts `n_epochs + n_epochs_decay`."""
    if config.num_train_steps > 0:
        return config.num_train_steps
    return (config.n_epochs + config.n_epochs_decay) * steps_per_epoch


def learning_rate_schedule(config, steps_per_epoch: int) -> optax.Schedule:
    """Constant for the first `n_epochs` share of training, then linear to 0 at the last step.

    The reference decays once per epoch; we decay per step, which is the same line sampled
    more finely. With `num_train_steps` set, the constant part keeps the same share
    n_epochs / (n_epochs + n_epochs_decay).
    """
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
