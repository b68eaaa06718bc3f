"""The learning-rate schedule: constant for n_epochs, then linear to zero."""

import pytest

from i2i_jax import config as config_lib
from i2i_jax import optim


def schedule(**overrides):
    config = config_lib.pix2pix()
    for key, value in overrides.items():
        config[key] = value
    return optim.learning_rate_schedule(config, steps_per_epoch=10), config


def test_epoch_counts_give_a_plateau_then_a_line_to_zero():
    lr, config = schedule(n_epochs=3, n_epochs_decay=2)  # 30 constant steps, 20 decaying.
    assert optim.total_steps(config, 10) == 50
    for step, expected in [(0, 2e-4), (29, 2e-4), (30, 2e-4), (40, 1e-4), (45, 0.5e-4), (50, 0.0)]:
        assert float(lr(step)) == pytest.approx(expected, abs=1e-9), step


def test_num_train_steps_keeps_the_same_split():
    lr, config = schedule(n_epochs=1, n_epochs_decay=3, num_train_steps=100)
    assert optim.total_steps(config, 10) == 100
    assert float(lr(24)) == pytest.approx(2e-4)
    assert float(lr(25 + 75 // 3)) == pytest.approx(2e-4 * 2 / 3, rel=1e-5)
    assert float(lr(100)) == pytest.approx(0.0, abs=1e-12)


def test_no_decay_epochs_keep_the_rate_constant():
    lr, _ = schedule(n_epochs=2, n_epochs_decay=0)
    assert float(lr(0)) == float(lr(19)) == pytest.approx(2e-4)
