"""Orbax round trip of the whole train state, and keeping only the last N checkpoints."""

import jax
import numpy as np

from i2i_jax import parallel, tasks
from i2i_jax.checkpointing import Checkpointer


def test_round_trip_restores_every_leaf_exactly(tiny_config, tmp_path):
    mesh = parallel.make_mesh(jax.devices()[:2])
    task = tasks.build_task(tiny_config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, 0, mesh)
    state = state.replace(step=state.step + 7)
    checkpointer = Checkpointer(str(tmp_path), every_steps=7, keep=2)
    assert checkpointer.maybe_save(7, state)
    checkpointer.close()

    fresh = parallel.init_replicated(task.init_state, 1, mesh)  # Different values, same layout.
    restored = Checkpointer(str(tmp_path), every_steps=7, keep=2).restore_latest(fresh)
    assert int(restored.step) == 7
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored),
                 jax.device_get(state))
    leaf = jax.tree.leaves(restored.nets["G"].params)[0]
    assert leaf.sharding.is_equivalent_to(parallel.replicated(mesh), leaf.ndim)


def test_keeps_the_last_n_and_skips_off_interval_steps(tiny_config, tmp_path):
    task = tasks.build_task(tiny_config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, 0, parallel.make_mesh(jax.devices()[:1]))
    checkpointer = Checkpointer(str(tmp_path), every_steps=2, keep=2)
    saved = [step for step in range(1, 8) if checkpointer.maybe_save(step, state)]
    assert checkpointer.maybe_save(7, state, force=True)
    checkpointer.close()
    assert saved == [2, 4, 6]
    assert Checkpointer(str(tmp_path), 2, 2).manager.all_steps() == [6, 7]
    assert Checkpointer(str(tmp_path / "empty"), 2, 2).restore_latest(state) is None
