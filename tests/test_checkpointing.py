"""Orbax round trip of the whole train state, keeping only the last N checkpoints, and
falling back past damaged ones."""

import gc

import flax.struct
import jax
import numpy as np
import pytest

from i2i_jax import parallel, tasks
from i2i_jax.checkpointing import Checkpointer, CheckpointsUnreadableError
from i2i_jax.restore_faults import CheckpointMismatchError


def test_round_trip_restores_every_leaf_exactly(tiny_config, tmp_path):
    tiny_config.ema_decay = 0.9  # The generator's moving average is part of the state.
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
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
    assert restored.nets["G"].average is not None and restored.nets["D"].average is None
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


def _saved_steps(tiny_config, directory, steps):
    """States whose step counter is the step they are saved at, so a restore tells which."""
    task = tasks.build_task(tiny_config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, 0, parallel.make_mesh(jax.devices()[:1]))
    checkpointer = Checkpointer(str(directory), every_steps=2, keep=5)
    for step in steps:
        checkpointer.maybe_save(step, state.replace(step=state.step + step))
    checkpointer.close()
    return state


# When one array read fails, orbax abandons the others' coroutines, which Python reports.
abandoned_reads = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _truncate_largest_array_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and "ocdbt" in str(p.parent)]
    largest = max(files, key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(64)


@abandoned_reads
def test_a_damaged_latest_checkpoint_falls_back_to_the_one_before(tiny_config, tmp_path):
    template = _saved_steps(tiny_config, tmp_path, [2, 4, 6])
    _truncate_largest_array_file(tmp_path / "checkpoints" / "6")  # A write cut short.
    (tmp_path / "checkpoints" / "8").mkdir()  # A step directory with nothing in it.

    checkpointer = Checkpointer(str(tmp_path), every_steps=2, keep=5)
    assert int(checkpointer.restore_latest(template).step) == 4
    # Set aside, not deleted; the run can save those steps again.
    assert sorted(p.name for p in (tmp_path / "damaged_checkpoints").iterdir()) == ["6", "8"]
    assert checkpointer.manager.all_steps() == [2, 4]
    assert checkpointer.maybe_save(6, template)
    checkpointer.close()
    gc.collect()  # Orbax's abandoned reads go now, under this test's warning filter.


@abandoned_reads
def test_no_restorable_checkpoint_is_an_error_that_moves_nothing(tiny_config, tmp_path):
    template = _saved_steps(tiny_config, tmp_path, [2, 4])
    for step in (2, 4):
        _truncate_largest_array_file(tmp_path / "checkpoints" / str(step))
    with pytest.raises(CheckpointsUnreadableError, match=r"(?s)step 4: .*step 2: "):
        Checkpointer(str(tmp_path), every_steps=2, keep=5).restore_latest(template)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["2", "4"]
    gc.collect()  # Orbax's abandoned reads go now, under this test's warning filter.


@flax.struct.dataclass
class NetStateBeforeAverages:
    """`NetState` as checkpoints before `ema_decay` stored it: three fields."""

    params: object
    batch_stats: object
    opt_state: object


@flax.struct.dataclass
class TrainStateBeforePlateau:
    """`TrainState` as checkpoints before `lr_policy=plateau` stored it: a flax dataclass of
    four fields."""

    step: object
    rng: object
    nets: object
    pools: object


def test_a_checkpoint_from_before_moving_averages_restores(tiny_config, tmp_path):
    """Without `ema_decay` (and the plateau policy) it restores exactly; a run that keeps
    averages cannot take it."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = parallel.init_replicated(tasks.build_task(tiny_config, 4).init_state, 0, mesh)
    old = TrainStateBeforePlateau(
        step=state.step,
        rng=state.rng,
        nets={
            name: NetStateBeforeAverages(net.params, net.batch_stats, net.opt_state)
            for name, net in state.nets.items()
        },
        pools=state.pools,
    )
    checkpointer = Checkpointer(str(tmp_path), every_steps=1, keep=1)
    assert checkpointer.maybe_save(1, old)
    checkpointer.close()
    template = parallel.init_replicated(tasks.build_task(tiny_config, 4).init_state, 1, mesh)
    restored = Checkpointer(str(tmp_path), every_steps=1, keep=1).restore_latest(template)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(restored), jax.device_get(state))
    tiny_config.ema_decay = 0.9  # A config with averages does not fit it: refused, not moved.
    averaging = parallel.init_replicated(tasks.build_task(tiny_config, 4).init_state, 1, mesh)
    with pytest.raises(CheckpointMismatchError, match=r"G/average/.* is absent there"):
        Checkpointer(str(tmp_path), every_steps=1, keep=1).restore_latest(averaging)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoints"]
