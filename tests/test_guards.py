"""Training guards, run for real: a diverging run stops and keeps its last good checkpoint; a
workdir that cannot be written is refused before anything is built."""

import os

import jax
import numpy as np
import pytest

from i2i_jax import parallel, tasks, train
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.errors import TrainingDivergedError, WorkdirError

from helpers import assert_same_parameters
from tiny_configs import get_config


@pytest.mark.slow
def test_a_nan_loss_stops_the_run_and_the_last_good_checkpoint_restores(tmp_path):
    config = get_config("pix2pix")
    config.update(
        {
            "num_train_steps": 2,
            "checkpoint_every_steps": 2,
            "log_every_steps": 1,
            "eval_every_steps": 0,
        }
    )
    workdir = str(tmp_path)
    good, _ = train.train_and_evaluate(config, workdir)

    # Resumed with a learning rate that blows the parameters up, saving after every step.
    config.update({"num_train_steps": 8, "lr": 1e30, "checkpoint_every_steps": 1})
    with pytest.raises(TrainingDivergedError) as stop:
        train.train_and_evaluate(config, workdir, allow_config_change=True)
    message = str(stop.value)
    # Step 3 updates D first, to parameters of ~1e30, and G's adversarial loss through that
    # D overflows in the same step: nothing after step 2 may be saved.
    assert message.startswith("training diverged at step 3: a loss is NaN or infinite (")
    assert "G_GAN=nan" in message and "G_L1=" in message and "lr=1e+30" in message
    assert "the last good checkpoint, step 2, is kept" in message
    assert message.splitlines()[-1].startswith("Fix: lower --config.lr (now 1e+30)")
    assert not os.path.exists(tmp_path / "damaged_checkpoints")

    mesh = parallel.make_mesh(jax.devices()[:1])
    template = parallel.init_replicated(tasks.build_task(config, 4).init_state, 0, mesh)
    checkpointer = Checkpointer(workdir, 1, 3)
    assert checkpointer.manager.all_steps() == [2]
    restored = jax.device_get(checkpointer.restore_latest(template))
    checkpointer.close()
    assert int(restored.step) == 2
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(restored.nets))
    assert_same_parameters(restored.nets, jax.device_get(good.nets), config.norm)


def test_an_unwritable_workdir_is_refused_before_anything_is_built(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(WorkdirError) as refusal:
        train.train_and_evaluate(get_config("pix2pix"), str(blocker / "run"))
    message = str(refusal.value)
    assert message.startswith(f"workdir {blocker / 'run'} is not writable: ")
    assert message.splitlines()[-1] == (
        "Fix: pass a --workdir you can write to (or fix its permissions)"
    )
