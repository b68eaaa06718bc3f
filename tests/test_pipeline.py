"""The tf.data pipeline: one crop and flip for A and B, value range, direction, determinism."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from i2i_jax.data import pipeline, sources


def write_side_by_side(directory, name, a, b):
    os.makedirs(directory, exist_ok=True)
    Image.fromarray(np.concatenate([a, b], axis=1)).save(os.path.join(directory, name))


@pytest.fixture
def identical_halves_root(tmp_path):
    """A folder dataset whose A and B halves are the same noise: equal after a shared crop."""
    rng = np.random.default_rng(0)
    for i in range(6):
        image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
        write_side_by_side(tmp_path / "train", f"{i}.png", image, image)
    return str(tmp_path)


def folder_config(config, root):
    config.data.source, config.data.dataroot = "folder", root
    config.load_size, config.crop_size = 48, 32
    return config


def test_crop_and_flip_are_shared_by_a_and_b_and_really_vary(tiny_config, identical_halves_root):
    config = folder_config(tiny_config, identical_halves_root)
    source = sources.paired_source(config, "train")
    batches = pipeline.train_batches([source], config, global_batch=6)
    seen = []
    for _ in range(4):
        batch = next(batches)
        assert batch["A"].dtype == np.uint8 and batch["A"].shape == (6, 32, 32, 3)
        np.testing.assert_array_equal(batch["A"], batch["B"])
        seen.append(batch["A"])
    # Each epoch shows every image once with a fresh crop: the same image never repeats exactly.
    flat = [image.tobytes() for batch in seen for image in batch]
    assert len(set(flat)) == len(flat)


def test_flip_mirrors_both_halves(tiny_config, tmp_path):
    """Without resize or crop the only change is the flip, which must hit A and B alike."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_side_by_side(tmp_path / "train", "0.png", a, 255 - a)
    config = folder_config(tiny_config, str(tmp_path))
    config.preprocess = "crop"
    config.direction = "AtoB"
    batch = next(pipeline.train_batches([sources.paired_source(config, "train")], config, 16))
    np.testing.assert_array_equal(batch["B"], 255 - batch["A"])
    flipped = [np.array_equal(x, a[:, ::-1]) for x in batch["A"]]
    unflipped = [np.array_equal(x, a) for x in batch["A"]]
    assert all(f or u for f, u in zip(flipped, unflipped, strict=True))
    assert any(flipped) and any(unflipped)


def test_direction_swaps_input_and_target(tiny_config, tmp_path):
    a = np.full((32, 32, 3), 10, np.uint8)
    write_side_by_side(tmp_path / "test", "0.png", a, a + 100)
    config = folder_config(tiny_config, str(tmp_path))
    source = sources.paired_source(config, "test")
    config.direction = "AtoB"
    batch, _ = next(pipeline.eval_batches(source, config, 4))
    assert batch["A"].max() == 10 and batch["B"].min() == 110
    config.direction = "BtoA"
    batch, _ = next(pipeline.eval_batches(source, config, 4))
    assert batch["A"].min() == 110 and batch["B"].max() == 10


def test_a_resumed_stream_and_a_two_process_stream_equal_the_original(tiny_config):
    source = sources.paired_source(tiny_config, "train")
    whole = pipeline.train_batches([source], tiny_config, global_batch=4)
    for _ in range(5):  # More than one epoch of 16 examples.
        next(whole)
    expected = next(whole)
    resumed = next(pipeline.train_batches([source], tiny_config, 4, start_step=5))
    halves = [
        next(pipeline.train_batches([source], tiny_config, 4, 5, process_index=p, process_count=2))
        for p in range(2)
    ]
    for key in expected:
        np.testing.assert_array_equal(resumed[key], expected[key])
        np.testing.assert_array_equal(np.concatenate([h[key] for h in halves]), expected[key])


def test_an_epoch_visits_every_example_once(tiny_config):
    tiny_config.preprocess, tiny_config.no_flip = "none", True
    source = sources.paired_source(tiny_config, "train")
    batches = pipeline.train_batches([source], tiny_config, global_batch=4)
    epoch = np.concatenate([next(batches)["B"] for _ in range(4)])
    assert len({image.tobytes() for image in epoch}) == 16


def test_eval_covers_each_example_exactly_once_across_processes(tiny_config):
    source = sources.paired_source(tiny_config, "test")  # 6 examples, global batch 4.
    per_process = [list(pipeline.eval_batches(source, tiny_config, 4, p, 2)) for p in range(2)]
    assert len(per_process[0]) == len(per_process[1]) == 2
    masks = np.concatenate([np.concatenate([m for _, m in per_process[p]]) for p in range(2)])
    assert masks.sum() == 6
    kept = [
        image.tobytes()
        for p in range(2)
        for batch, mask in per_process[p]
        for image, keep in zip(batch["B"], mask, strict=True)
        if keep
    ]
    assert len(set(kept)) == 6


def test_a_folder_without_the_split_names_what_it_has(tiny_config, tmp_path):
    (tmp_path / "train").mkdir()
    config = folder_config(tiny_config, str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"'test'.*\['train'\]"):
        sources.paired_source(config, "test")


def test_unpaired_domains_are_independent_streams_with_their_own_epochs(tiny_cycle_config):
    """CycleGAN batches zip one stream per domain; each covers its domain once per epoch."""
    tiny_cycle_config.preprocess, tiny_cycle_config.no_flip = "none", True
    tiny_cycle_config.data.synthetic_train_size = 8
    domain_sources = sources.train_sources(tiny_cycle_config)
    assert [set(s.read(0)) for s in domain_sources] == [{"A"}, {"B"}]
    batches = pipeline.train_batches(domain_sources, tiny_cycle_config, global_batch=4)
    epoch = [next(batches) for _ in range(2)]
    for key in ("A", "B"):
        images = np.concatenate([batch[key] for batch in epoch])
        assert len({image.tobytes() for image in images}) == 8
    # Night images are darker than day ones: A and B really come from different domains.
    assert epoch[0]["B"].mean() < epoch[0]["A"].mean() - 40


def test_cyclegan_eval_sources_follow_the_direction(tiny_cycle_config):
    """Synthetic test domains carry their true counterpart; BtoA swaps which domain is read
    as the input of each pass."""
    day_first = sources.eval_sources(tiny_cycle_config)
    batch, _ = next(pipeline.eval_batches(day_first["AtoB"], tiny_cycle_config, 4))
    tiny_cycle_config.direction = "BtoA"
    night_first = sources.eval_sources(tiny_cycle_config)
    swapped, _ = next(pipeline.eval_batches(night_first["AtoB"], tiny_cycle_config, 4))
    np.testing.assert_array_equal(swapped["A"], batch["B"])
    np.testing.assert_array_equal(swapped["B"], batch["A"])
    np.testing.assert_array_equal(batch["index"], [0, 1, 2, 3])


def test_unpaired_folder_layout(tiny_cycle_config, tmp_path):
    rng = np.random.default_rng(3)
    for folder, count in (("trainA", 3), ("trainB", 5)):
        os.makedirs(tmp_path / folder)
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(
                tmp_path / folder / f"{i}.jpg"
            )
    tiny_cycle_config.data.source, tiny_cycle_config.data.dataroot = "folder", str(tmp_path)
    counts = [s.num_examples for s in sources.train_sources(tiny_cycle_config)]
    assert counts == [3, 5]
    with pytest.raises(FileNotFoundError, match="testA"):
        sources.eval_sources(tiny_cycle_config)


def test_eval_uses_the_training_scale_and_a_central_crop(tiny_config, tmp_path):
    """resize_and_crop: resize to load_size, then the central crop_size window."""
    image = np.zeros((48, 48, 3), np.uint8)
    image[8:40, 8:40] = 200  # A bright square exactly in the centre 32x32 window.
    write_side_by_side(tmp_path / "test", "0.png", image, image)
    config = folder_config(tiny_config, str(tmp_path))  # load 48, crop 32.
    batch, _ = next(pipeline.eval_batches(sources.paired_source(config, "test"), config, 4))
    assert batch["A"].shape[1:] == (32, 32, 3)
    assert batch["A"][0].min() == 200  # Only the square, none of the black border.


def test_preprocess_none_still_flips(tiny_config, tmp_path):
    rng = np.random.default_rng(4)
    a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    write_side_by_side(tmp_path / "train", "0.png", a, a)
    config = folder_config(tiny_config, str(tmp_path))
    config.preprocess = "none"
    batch = next(pipeline.train_batches([sources.paired_source(config, "train")], config, 16))
    assert any(np.array_equal(x, a[:, ::-1]) for x in batch["A"])
    assert any(np.array_equal(x, a) for x in batch["A"])


def test_jitter_and_center_view_take_a_preprocessing_not_a_config(tiny_config):
    image = tf.constant(np.random.default_rng(5).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    crop = pipeline.Preprocessing("crop", load_size=48, crop_size=32, flip=False)
    np.testing.assert_array_equal(pipeline.center_view(image, crop), image[8:40, 8:40])
    none = pipeline.Preprocessing("none", load_size=48, crop_size=32)
    assert pipeline.center_view(image, none).shape == (32, 32, 3)
    views = pipeline.jitter({"A": image, "B": image}, tf.constant([1, 2], tf.int64), crop)
    assert views["A"].shape == (32, 32, 3)
    np.testing.assert_array_equal(views["A"], views["B"])
    tiny_config.no_flip = True
    assert pipeline.Preprocessing.from_config(tiny_config) == pipeline.Preprocessing(
        tiny_config.preprocess, tiny_config.load_size, tiny_config.crop_size, flip=False
    )
    with pytest.raises(ValueError, match=r"preprocess='scale_width' is not one of"):
        pipeline.Preprocessing("scale_width", load_size=48, crop_size=32)


# Counts the threads that reading 20 batches adds to a fresh process (TensorFlow's runtime
# included), for a given data.num_parallel_calls.
_THREADS_PROGRAM = """
import os, sys
sys.path.insert(0, {tests!r})
import tiny_configs
from i2i_jax.data import pipeline, sources
config = tiny_configs.tiny_pix2pix_config()
config.data.num_parallel_calls = {calls}
pipeline.hide_accelerators_from_tensorflow()
train_sources = sources.train_sources(config)
before = len(os.listdir("/proc/self/task"))
batches = pipeline.train_batches(train_sources, config, config.batch_size)
for _ in range(20):
    next(batches)
print(len(os.listdir("/proc/self/task")) - before)
"""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_input_pipeline_threads_are_bounded_by_num_parallel_calls():
    """The pipeline's own thread pool has data.num_parallel_calls threads, whatever the
    machine's core count (TensorFlow's default pool would have one per core and compete with
    XLA's): each extra parallel call adds exactly one thread."""
    tests = os.path.dirname(os.path.abspath(__file__))
    added = {}
    for calls in (1, 4):
        output = subprocess.run(
            [sys.executable, "-c", _THREADS_PROGRAM.format(tests=tests, calls=calls)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        added[calls] = int(output.split()[-1])
    assert added[4] - added[1] == 3, added
