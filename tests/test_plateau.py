"""`lr_policy=plateau` in training: the evaluations drive the rate as PyTorch's
ReduceLROnPlateau would, a cut scales every update as a lower Adam rate does, its state is
checkpointed, and a metric the evaluation does not measure stops the run before its first step."""

import json
import os

import jax
import numpy as np
import pytest

from i2i_jax import optim, parallel, tasks, train
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.errors import ConfigError

from helpers import fixed_batches


def plateau_config(config, patience: int = 0):
    config.lr_policy = "plateau"
    config.plateau_patience = patience
    config.eval_every_steps = 1
    return config


def test_the_evaluations_drive_the_rate_as_pytorchs_scheduler(tiny_config, tmp_path):
    torch = pytest.importorskip("torch")
    config = plateau_config(tiny_config)
    workdir = str(tmp_path / "run")
    final, _ = train.train_and_evaluate(config, workdir)
    with open(os.path.join(workdir, "eval_metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == list(range(9))

    optimizer = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.2, threshold=0.01, patience=0
    )
    for record in records[1:]:  # The untrained model's evaluation is not an observation.
        optimizer.step()
        scheduler.step(record["l1"])
    expected = optimizer.param_groups[0]["lr"]
    assert expected < config.lr  # The run was cut at least once: the check means something.
    assert config.lr * float(final.plateau["scale"]) == pytest.approx(expected, rel=1e-6)

    task = tasks.build_task(config, steps_per_epoch=4)
    template = parallel.init_replicated(task.init_state, config.seed, parallel.make_mesh())
    saved = jax.device_get(Checkpointer(workdir, 4, 3).restore_latest(template))
    jax.tree.map(np.testing.assert_array_equal, saved.plateau, jax.device_get(final.plateau))


def test_a_cut_scales_each_update_as_a_lower_adam_rate_does(tiny_config):
    """One step under a plateau cut to 0.2 equals one step at 0.2 x lr with the linear policy."""
    batch = fixed_batches(tiny_config, 1)[0]
    mesh = parallel.make_mesh(jax.devices()[:1])

    def one_step(config, scale=None):
        task = tasks.build_task(config, steps_per_epoch=4)
        state = parallel.init_replicated(task.init_state, config.seed, mesh)
        if scale is not None:
            plateau = {**optim.initial_plateau(), "scale": np.float32(scale)}
            state = state.replace(plateau=parallel.like_replicated(plateau, state.plateau))
        step = parallel.jit_train_step(task.train_step, mesh)
        new_state, metrics = step(state, parallel.to_global(batch, mesh))
        return jax.device_get(new_state), float(metrics["lr"])

    cut, cut_lr = one_step(plateau_config(tiny_config.copy_and_resolve_references()), 0.2)
    lower = tiny_config.copy_and_resolve_references()
    lower.lr = tiny_config.lr * 0.2
    lower.n_epochs_decay = 0  # Constant, as the plateau policy's base rate.
    plain, plain_lr = one_step(lower)
    assert cut_lr == pytest.approx(plain_lr, rel=1e-6)
    for name in ("G", "D"):
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
            cut.nets[name].params,
            plain.nets[name].params,
        )


def test_a_metric_the_evaluation_lacks_stops_the_run_before_its_first_step(tiny_config, tmp_path):
    config = plateau_config(tiny_config)
    config.plateau_metric = "fid"
    workdir = str(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"plateau_metric='fid'.*it measures l1, psnr, ssim"):
        train.train_and_evaluate(config, workdir)
    assert not os.listdir(os.path.join(workdir, "checkpoints"))
