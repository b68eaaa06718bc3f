"""Restore failures told apart: a passing storage fault is retried with a back-off and moves
nothing; a checkpoint of other shapes is refused naming the first array that differs and moves
nothing; only missing or corrupt files get a checkpoint set aside."""

import errno
import logging
import os

import jax
import orbax.checkpoint as ocp
import pytest

from i2i_jax import parallel, restore_faults, tasks
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.restore_faults import CheckpointMismatchError, StorageUnavailableError

from helpers import saved_checkpoints

DELAYS = (0.01, 0.02, 0.04)


@pytest.fixture
def saved(tiny_config, tmp_path, monkeypatch):
    """Checkpoints of steps 2 and 4 (states whose step counter says which), the template."""
    monkeypatch.setattr(restore_faults, "RETRY_DELAYS_S", DELAYS)
    return saved_checkpoints(tiny_config, str(tmp_path))


def entries(tmp_path):
    return {
        "checkpoints": sorted(os.listdir(tmp_path / "checkpoints")),
        "set aside": sorted(os.listdir(tmp_path / "damaged_checkpoints"))
        if (tmp_path / "damaged_checkpoints").exists()
        else [],
    }


def flaky_reads(monkeypatch, failures: int, error: Exception) -> list:
    """orbax's restore fails with `error` the first `failures` times; returns the call log
    (the step of each call)."""
    calls, real = [], ocp.StandardCheckpointHandler.restore

    def restore(handler, directory, *args, **kwargs):
        calls.append(int(os.path.basename(os.path.dirname(directory))))
        if len(calls) <= failures:
            raise error
        return real(handler, directory, *args, **kwargs)

    monkeypatch.setattr(ocp.StandardCheckpointHandler, "restore", restore)
    return calls


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.EIO, "Input/output error", "checkpoints/4/default/d/3f2a"),
        ValueError("UNAVAILABLE: GCS responded with 503 Service Unavailable"),
        TimeoutError("read timed out"),
    ],
    ids=["EIO", "unavailable", "timeout"],
)
def test_a_passing_fault_is_retried_with_a_back_off_and_moves_nothing(
    saved, tmp_path, monkeypatch, caplog, error
):
    calls = flaky_reads(monkeypatch, 2, error)
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        restored = Checkpointer(str(tmp_path), 2, 5).restore_latest(saved)
    assert int(restored.step) == 4 and calls == [4, 4, 4]
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.getMessage()]
    assert [m.split("retrying in ")[1] for m in retries] == ["0.01 s", "0.02 s"]
    assert entries(tmp_path) == {"checkpoints": ["2", "4"], "set aside": []}


def test_a_fault_that_does_not_pass_stops_the_run_and_moves_nothing(saved, tmp_path, monkeypatch):
    calls = flaky_reads(monkeypatch, 100, OSError(errno.ETIMEDOUT, "Connection timed out"))
    with pytest.raises(StorageUnavailableError, match=r"(?s)failed 4 times .* not moved") as caught:
        Checkpointer(str(tmp_path), 2, 5).restore_latest(saved)
    assert calls == [4] * 4  # Never on to the older checkpoint: step 4 is not known bad.
    assert str(caught.value).splitlines()[-1].startswith("Fix: rerun the same command once")
    assert entries(tmp_path) == {"checkpoints": ["2", "4"], "set aside": []}


def test_other_shapes_are_a_mismatch_naming_the_first_array_and_move_nothing(
    saved, tiny_config, tmp_path
):
    tiny_config.ngf = 16  # The saved run had 8 generator filters.
    task = tasks.build_task(tiny_config, steps_per_epoch=4)
    wider = parallel.init_replicated(task.init_state, 0, parallel.make_mesh(jax.devices()[:1]))
    with pytest.raises(CheckpointMismatchError) as caught:
        Checkpointer(str(tmp_path), 2, 5).restore_latest(wider)
    message = str(caught.value)
    assert "checkpoint 4 in " in message and "does not fit this config: nets/G/" in message
    assert "is float32[" in message and "] there and float32[" in message
    assert "config.json" in message.splitlines()[-1]
    assert entries(tmp_path) == {"checkpoints": ["2", "4"], "set aside": []}


def test_a_checkpoint_with_a_file_missing_is_set_aside_and_the_one_before_restores(saved, tmp_path):
    arrays = tmp_path / "checkpoints" / "4" / "default" / "d"
    for path in arrays.iterdir():  # The array data of step 4: lost with a disk.
        path.unlink()
    restored = Checkpointer(str(tmp_path), 2, 5).restore_latest(saved)
    assert int(restored.step) == 2
    assert entries(tmp_path) == {"checkpoints": ["2"], "set aside": ["4"]}


def test_a_checkpoint_without_its_metadata_file_is_damage(saved, tmp_path):
    (tmp_path / "checkpoints" / "4" / "default" / "_METADATA").unlink()
    restored = Checkpointer(str(tmp_path), 2, 5).restore_latest(saved)
    assert int(restored.step) == 2
    assert entries(tmp_path) == {"checkpoints": ["2"], "set aside": ["4"]}


def test_what_counts_as_passing():
    wrapped = ValueError("reading the checkpoint failed")
    wrapped.__cause__ = OSError(errno.ECONNRESET, "Connection reset by peer")
    assert restore_faults.is_transient(wrapped)
    assert restore_faults.is_transient(ConnectionRefusedError())
    assert restore_faults.is_transient(ValueError("DEADLINE_EXCEEDED: read of d/12 timed out"))
    assert not restore_faults.is_transient(FileNotFoundError(errno.ENOENT, "No such file"))
    assert not restore_faults.is_transient(ValueError("DATA_LOSS: Error reading d/12"))
    assert not restore_faults.is_transient(ValueError("Topology mismatch detected"))
