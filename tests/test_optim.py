"""The learning-rate policies: linear (constant for n_epochs, then linear to zero), step,
plateau and cosine, as PyTorch's schedulers compute them for the reference."""

import numpy as np
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


def _torch_learning_rates(policy: str, lr: float, epochs: int, t_max: int, every: int):
    """The reference's scheduler, stepped once per epoch as its train.py steps it: the learning
    rate of each epoch."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = (
        torch.optim.lr_scheduler.StepLR(optimizer, step_size=every, gamma=0.1)
        if policy == "step"
        else torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=0)
    )
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


@pytest.mark.parametrize("policy", ["step", "cosine"])
def test_the_step_and_cosine_policies_are_pytorchs_at_every_epoch(policy):
    """11 epochs of 10 steps; cosine's T_max of 6 epochs lets it fall to 0 and rise again."""
    lr, config = schedule(lr_policy=policy, n_epochs=6, n_epochs_decay=5, lr_decay_iters=3)
    expected = _torch_learning_rates(policy, config.lr, 11, t_max=6, every=3)
    for epoch, rate in enumerate(expected):
        assert float(lr(epoch * 10)) == pytest.approx(rate, rel=1e-5, abs=1e-10), epoch
        if policy == "step":  # Constant through the epoch.
            assert float(lr(epoch * 10 + 9)) == pytest.approx(rate, rel=1e-5), epoch
    assert min(expected) < 1e-6 if policy == "cosine" else expected[-1] < 2e-6


@pytest.mark.parametrize("policy", ["linear", "step", "cosine"])
def test_num_train_steps_spreads_each_policy_over_the_same_epochs(policy):
    """220 steps over 6 + 5 epochs: the schedule of 11 epochs of 20 steps."""
    by_epochs, _ = schedule(lr_policy=policy, n_epochs=6, n_epochs_decay=5, lr_decay_iters=3)
    by_steps, _ = schedule(
        lr_policy=policy, n_epochs=6, n_epochs_decay=5, lr_decay_iters=3, num_train_steps=220
    )
    steps = np.arange(220)
    np.testing.assert_allclose(
        [float(by_steps(t)) for t in steps], [float(by_epochs(t / 2)) for t in steps], rtol=1e-5
    )


@pytest.mark.parametrize("patience", [5, 1, 0])
def test_the_plateau_policy_is_pytorchs_reduce_on_plateau(patience):
    """The reference's ReduceLROnPlateau(mode="min", factor=0.2, threshold=0.01) fed the same
    metric: improvements, slips within the 1 % threshold, plateaus, new bests after a cut."""
    torch = pytest.importorskip("torch")
    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.2, threshold=0.01, patience=patience
    )
    values = [1.0, 0.8, 0.795, 0.79, 0.81, 0.85, 0.792, 0.7, 0.699, 0.7, 0.75, 0.72, 0.71]
    values += [0.705, 0.7, 0.69, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.496, 0.494]
    lr, _ = schedule(lr_policy="plateau")
    plateau = optim.initial_plateau()
    cuts = 0
    for evaluation, value in enumerate(values):
        optimizer.step()
        scheduler.step(value)
        before = float(plateau["scale"])
        plateau = optim.plateau_after(plateau, value, patience, lr=2e-4)
        cuts += float(plateau["scale"]) < before
        expected = optimizer.param_groups[0]["lr"]
        assert float(lr(evaluation)) * float(plateau["scale"]) == pytest.approx(
            expected, rel=1e-6
        ), evaluation
    assert cuts >= (2 if patience < 5 else 1)
