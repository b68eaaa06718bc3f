"""End to end: a tiny Pix2Pix run writes what it promises and resumes where it stopped."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from PIL import Image

from i2i_jax import parallel, tasks, train
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.config import workdir as workdir_config


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def latest_state(config, workdir):
    task = tasks.build_task(config, steps_per_epoch=4)
    template = parallel.init_replicated(task.init_state, config.seed, parallel.make_mesh())
    return jax.device_get(Checkpointer(workdir, 4, 3).restore_latest(template))


def test_a_run_writes_its_outputs_and_a_rerun_resumes(tiny_config, tmp_path):
    workdir = str(tmp_path / "run")
    _, results = train.train_and_evaluate(tiny_config, workdir)

    assert set(results) >= {"l1", "psnr", "ssim"}
    records = read_jsonl(os.path.join(workdir, "eval_metrics.jsonl"))
    assert [r["step"] for r in records] == [0, 4, 8]
    assert all({"step", "l1", "psnr", "ssim"} <= set(r) for r in records)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["netG"] == "unet_32"
    grid = np.asarray(Image.open(os.path.join(workdir, "samples", "step_00000008.png")))
    assert grid.shape == (3 * 32, 3 * 32, 3)  # 3 samples of input | output | target.
    assert os.listdir(os.path.join(workdir, "tensorboard"))
    assert Checkpointer(workdir, 4, 3).manager.all_steps() == [4, 8]
    finished = latest_state(tiny_config, workdir)

    # Lose the last checkpoint: the same command resumes at step 4 and reaches the same state,
    # and evaluates step 8 again, recorded once. (Leaving config.json as it was: an unchanged
    # config resumes without a word.)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "8"))
    train.train_and_evaluate(tiny_config, workdir)
    again = read_jsonl(os.path.join(workdir, "eval_metrics.jsonl"))
    assert [r["step"] for r in again] == [0, 4, 8]
    assert again[:2] == records[:2]
    assert again[2] == pytest.approx(records[2], rel=1e-5)
    resumed = latest_state(tiny_config, workdir)
    assert int(resumed.step) == int(finished.step) == 8
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), resumed, finished
    )

    # More steps change the schedule: refused, naming the key, unless the change is allowed;
    # a bookkeeping key (how often to log) is no change.
    tiny_config.num_train_steps = 12
    tiny_config.log_every_steps = 3
    with pytest.raises(workdir_config.ConfigChangedError) as refusal:
        train.train_and_evaluate(tiny_config, workdir)
    assert "\n  num_train_steps: 8 -> 12\n" in str(refusal.value)
    assert "log_every_steps" not in str(refusal.value)
    train.train_and_evaluate(tiny_config, workdir, allow_config_change=True)
    with open(os.path.join(workdir, "config.before_step_8.json")) as f:
        assert json.load(f)["num_train_steps"] == 8
    assert read_jsonl(os.path.join(workdir, "eval_metrics.jsonl"))[-1]["step"] == 12
    assert int(latest_state(tiny_config, workdir).step) == 12


@pytest.mark.slow
def test_a_cyclegan_run_scores_both_directions(tiny_cycle_config, tmp_path):
    workdir = str(tmp_path / "cycle")
    _, results = train.train_and_evaluate(tiny_cycle_config, workdir)
    expected = {"cycle_l1_A", "cycle_l1_B"} | {
        f"{metric}_{direction}"
        for metric in ("l1", "psnr", "ssim")
        for direction in ("AtoB", "BtoA")
    }
    assert set(results) == expected
    records = read_jsonl(os.path.join(workdir, "eval_metrics.jsonl"))
    assert [r["step"] for r in records] == [0, 3, 6]
    grid = np.asarray(Image.open(os.path.join(workdir, "samples", "step_00000006.png")))
    assert grid.shape == (2 * 2 * 32, 3 * 32, 3)  # 2 samples per direction: real|fake|rec.
    restored = latest_state(tiny_cycle_config, workdir)
    assert int(restored.step) == 6 and int(restored.pools["fake_A"].count) == 3


@pytest.mark.slow
def test_profile_traces_steps_after_the_first(tiny_config, tmp_path):
    """`--profile`: an XPlane trace (what TensorBoard's profile plugin reads) of steady-state
    steps, each marked as a train step, without the compilation of the first."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    tiny_config.num_train_steps, tiny_config.eval_every_steps = 5, 0
    workdir = tmp_path / "run"
    train.train_and_evaluate(tiny_config, str(workdir), profile_steps=2)
    traces = list((workdir / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert len(traces) == 1, traces
    space = xplane_pb2.XSpace.FromString(traces[0].read_bytes())
    steps, events = [], set()
    for plane in space.planes:
        names = {k: v.name for k, v in plane.event_metadata.items()}
        stats = {k: v.name for k, v in plane.stat_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                events.add(names[event.metadata_id])
                if names[event.metadata_id] == "train":
                    steps += [
                        s.int64_value or s.uint64_value
                        for s in event.stats
                        if stats[s.metadata_id] == "step_num"
                    ]
    assert sorted(steps) == [2, 3]
    assert any("Execute (jit_train_step)" in name for name in events)
    assert not any("HLO passes" in name for name in events)  # No compilation.


@pytest.mark.slow
def test_no_sample_images_evaluates_without_grids(tiny_config, tmp_path):
    tiny_config.num_sample_images = 0
    tiny_config.num_train_steps = tiny_config.eval_every_steps = 1
    workdir = tmp_path / "run"
    _, results = train.train_and_evaluate(tiny_config, str(workdir))
    assert set(results) >= {"l1", "psnr", "ssim"}
    assert [r["step"] for r in read_jsonl(workdir / "eval_metrics.jsonl")] == [0, 1]
    assert not (workdir / "samples").exists()
