"""A full disk, for real: the workdir is on a small tmpfs (mounting one needs root, which the
test machines give; elsewhere these tests skip and say why)."""

import os
import subprocess
import threading

import jax
import pytest

from i2i_jax import parallel, tasks, train
from i2i_jax.checkpointing import Checkpointer, CheckpointWriteError
from i2i_jax.errors import WorkdirError

from tiny_configs import get_config

pytestmark = pytest.mark.slow


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=300m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory) -> None:
    """Writes one file until the disk holding `directory` is full."""
    chunk = b"\0" * 2**20
    with open(os.path.join(directory, "filler"), "wb") as f:
        try:
            while True:
                f.write(chunk)
                f.flush()
        except OSError:
            pass


def test_a_disk_without_room_for_a_checkpoint_is_refused_before_training(small_disk):
    with open(small_disk / "other_data", "wb") as f:
        f.write(b"\0" * 100 * 2**20)
    with pytest.raises(WorkdirError) as refusal:
        train.train_and_evaluate(get_config("pix2pix"), str(small_disk / "run"))
    message = str(refusal.value)
    assert message.startswith(
        f"workdir {small_disk / 'run'} has 200 MiB free, but a checkpoint of this run needs about "
    )
    assert message.splitlines()[-1] == (
        "Fix: free disk space, or pass a --workdir on a larger disk"
    )
    assert not os.listdir(small_disk / "run" / "checkpoints")


def test_a_checkpoint_write_that_fails_mid_run_keeps_the_earlier_ones(small_disk):
    config = get_config("pix2pix")
    config.update(
        {
            "num_train_steps": 40,
            "checkpoint_every_steps": 1,
            "keep_checkpoints": 40,
            "log_every_steps": 100,
            "eval_every_steps": 0,
        }
    )
    workdir = small_disk / "run"

    def fill_after_step_2():
        while not (workdir / "checkpoints" / "2").exists():
            threading.Event().wait(0.01)
        fill(small_disk)

    filler = threading.Thread(target=fill_after_step_2, daemon=True)
    filler.start()
    with pytest.raises(CheckpointWriteError) as stop:
        train.train_and_evaluate(config, str(workdir))
    filler.join()
    message = str(stop.value)
    assert message.startswith(f"writing a checkpoint to {workdir / 'checkpoints'} failed")
    # The first writer to hit the full disk reports it: Python's OSError or TensorStore's.
    assert "No space left on device" in message or "RESOURCE_EXHAUSTED" in message
    kept_line = message.splitlines()[1]
    assert kept_line.startswith("The checkpoints written before (1, 2")
    assert message.splitlines()[-1] == (
        f"Fix: free space on (or repair) the disk of {workdir}, then rerun the same command"
    )

    os.remove(small_disk / "filler")
    latest = int(kept_line.split("rerunning resumes from step ")[1].rstrip("."))
    mesh = parallel.make_mesh(jax.devices()[:1])
    template = parallel.init_replicated(tasks.build_task(config, 4).init_state, 0, mesh)
    checkpointer = Checkpointer(str(workdir), 1, 40)
    assert int(checkpointer.restore_latest(template).step) == latest >= 2
    checkpointer.close()


def test_closing_after_a_reported_write_failure_keeps_that_report(small_disk):
    """orbax raises a failed asynchronous write again when the manager closes; `train` closes
    the checkpointer in a `finally`, so that second raise would replace the clear error."""
    config = get_config("pix2pix")
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = parallel.init_replicated(tasks.build_task(config, 4).init_state, 0, mesh)
    checkpointer = Checkpointer(str(small_disk / "run"), 1, 40)
    checkpointer.maybe_save(1, state)
    checkpointer.manager.wait_until_finished()
    fill(small_disk)
    with pytest.raises(CheckpointWriteError):  # The failed write surfaces in a later save.
        for step in range(2, 40):
            checkpointer.maybe_save(step, state)
            threading.Event().wait(0.2)
    checkpointer.close()  # Raises nothing more: the failure was reported above.
    assert checkpointer.write_failed
