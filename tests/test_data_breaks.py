"""A training file that breaks while the run reads it (overwritten with garbage on disk after
the start-up scan passed it): `error` saves a checkpoint of the last finished step and stops
naming the file, so the rerun after the fix loses no step; `skip` leaves the file out, says
so, and trains on to the end."""

import os
import re
import sys

import numpy as np
import pytest
from PIL import Image

from i2i_jax import kill_harness

from helpers import started

pytestmark = pytest.mark.slow

TESTS = os.path.dirname(os.path.abspath(__file__))
STEPS = 40
BROKEN = "pair_07.png"


def write_pairs(root) -> None:
    """16 A|B pairs of 36 px halves in root/train, 4 in root/test."""
    for split, count in (("train", 16), ("test", 4)):
        (root / split).mkdir(parents=True)
        for i in range(count):
            pixels = np.random.default_rng(i).integers(0, 256, (36, 72, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / split / f"pair_{i:02d}.png")


def command(workdir, dataroot, policy: str) -> list[str]:
    return [
        sys.executable,
        "-u",
        "-m",
        "i2i_jax.main",
        f"--config={os.path.join(TESTS, 'tiny_configs.py')}:pix2pix",
        f"--workdir={workdir}",
        "--config.data.source=folder",
        f"--config.data.dataroot={dataroot}",
        f"--config.data.on_bad_image={policy}",
        f"--config.num_train_steps={STEPS}",
        "--config.log_every_steps=1",
        "--config.checkpoint_every_steps=20",
        "--config.eval_every_steps=0",
    ]


def run_breaking_a_file(workdir, dataroot, policy: str) -> tuple[int, str]:
    """Runs training and overwrites a training file with garbage once step 3 is logged (the
    file has been read once by then; every epoch of 4 steps reads it again)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    with started(command(workdir, dataroot, policy), env) as run:
        output = []
        for line in run.stdout:
            output.append(line)
            if f"step 3/{STEPS} " in line:
                (dataroot / "train" / BROKEN).write_bytes(b"\x89PNG\r\n\x1a\n garbage now")
        run.wait(timeout=600)
    return run.returncode, "".join(output)


def test_with_error_the_run_saves_the_last_finished_step_then_stops_naming_the_file(tmp_path):
    write_pairs(tmp_path / "data")
    original = (tmp_path / "data" / "train" / BROKEN).read_bytes()
    status, output = run_breaking_a_file(tmp_path / "run", tmp_path / "data", "error")
    assert status == 1, output[-4000:]
    stop = re.search(r"i2i_jax: error: during the run, at step (\d+): ", output)
    assert stop, output[-4000:]
    broke_at = int(stop.group(1))
    message = output[stop.start() :]
    assert f"{tmp_path / 'data' / 'train' / BROKEN}: " in message
    assert f"A checkpoint of step {broke_at - 1}, the last finished step, is saved" in message
    assert message.rstrip().splitlines()[-1].startswith("Fix: repair or remove these files")
    last_logged = max(int(s) for s in re.findall(rf"step (\d+)/{STEPS} ", output))
    assert last_logged == broke_at - 1 > 3
    assert kill_harness.committed_steps(str(tmp_path / "run"))[-1] == broke_at - 1

    (tmp_path / "data" / "train" / BROKEN).write_bytes(original)  # The fix.
    status, rerun = run_breaking_a_file(tmp_path / "run", tmp_path / "data", "error")
    assert status == 0, rerun[-4000:]
    assert re.search(rf"resumed from .* at step {broke_at - 1}\n", rerun), rerun[-4000:]
    assert f"step {STEPS}/{STEPS} " in rerun


def test_with_skip_the_file_is_left_out_counted_and_training_goes_on(tmp_path):
    write_pairs(tmp_path / "data")
    status, output = run_breaking_a_file(tmp_path / "run", tmp_path / "data", "skip")
    assert status == 0, output[-4000:]
    assert re.search(r"reading the batch of step \d+ failed: ", output)
    assert "skipping 1 of 16 images that cannot be trained on:\n  " in output
    assert f"{BROKEN}: " in output.split("skipping 1 of 16")[1]
    assert (
        "training goes on without the files that broke (examples left out since the start: 1)"
        in output
    )
    assert f"step {STEPS}/{STEPS} " in output
