"""Bad data, for real: a folder dataset holding every kind of broken and unusual image file, and
what each `data.on_bad_image` policy does with it before and during training."""

import io
import logging
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from i2i_jax import train
from i2i_jax.data import pipeline, sources, validation
from i2i_jax.errors import DataError, NotFoundError

from tiny_configs import get_config

SIDE = 36  # Each half of an A|B image; the tiny configs crop 32.


def pair_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (SIDE, 2 * SIDE, 3), dtype=np.uint8))


def write_dataset(root) -> dict[str, str]:
    """`root/train` with 4 plain pairs, 5 convertible ones and 5 broken files, and `root/test`
    with 2 plain pairs. Returns each broken file's name and the reason expected for it."""
    train_dir, test_dir = root / "train", root / "test"
    train_dir.mkdir(parents=True)
    test_dir.mkdir()
    for i in range(4):
        pair_image(i).save(train_dir / f"plain_{i}.png")
    for i in range(2):
        pair_image(10 + i).save(test_dir / f"plain_{i}.png")
    pair_image(4).convert("L").save(train_dir / "gray.png")
    pair_image(5).convert("RGBA").save(train_dir / "rgba.png")
    pair_image(6).convert("P").save(train_dir / "palette.png")
    Image.fromarray(np.asarray(pair_image(7).convert("L"), np.uint16) * 257).save(
        train_dir / "deep.png"
    )
    pair_image(8).convert("CMYK").save(train_dir / "cmyk.jpg")

    (train_dir / "empty.png").write_bytes(b"")
    (train_dir / "notes.jpg").write_text("these are not pixels")
    encoded = io.BytesIO()
    pair_image(9).save(encoded, format="JPEG")
    (train_dir / "truncated.jpg").write_bytes(encoded.getvalue()[: len(encoded.getvalue()) // 2])
    Image.new("RGB", (2 * SIDE + 1, SIDE)).save(train_dir / "odd.png")
    Image.new("RGB", (2 * SIDE, 20)).save(train_dir / "small.png")
    return {
        "empty.png": "empty file (0 bytes)",
        "notes.jpg": "not an image (no image format recognised)",
        "truncated.jpg": "truncated or corrupt (",
        "odd.png": "odd width 73: an A|B image is two halves of equal width",
        "small.png": "each half is 36x20, smaller than the 32x32 crop (preprocess=crop "
        "does not resize)",
    }


@pytest.fixture
def folder_config(tmp_path, monkeypatch):
    monkeypatch.setenv("I2I_JAX_CACHE", str(tmp_path / "cache"))
    broken = write_dataset(tmp_path / "data")
    config = get_config("pix2pix")
    config.data.source = "folder"
    config.data.dataroot = str(tmp_path / "data")
    config.preprocess = "crop"
    config.update(
        {
            "num_train_steps": 2,
            "eval_every_steps": 2,
            "checkpoint_every_steps": 0,
            "eval_batch_size": 4,
            "num_sample_images": 2,
        }
    )
    return config, broken


def test_find_bad_takes_its_rules_as_arguments(tmp_path, monkeypatch):
    """The smallest usable side is the crop only with preprocess=crop (min_side=1 otherwise)."""
    monkeypatch.setenv("I2I_JAX_CACHE", str(tmp_path / "cache"))
    broken = write_dataset(tmp_path / "data")
    directory = str(tmp_path / "data" / "train")
    files = sorted(os.path.join(directory, name) for name in os.listdir(directory))
    for min_side, expected in ((32, set(broken)), (1, set(broken) - {"small.png"})):
        bad = validation.find_bad(files, directory, side_by_side=True, min_side=min_side)
        assert {os.path.basename(path) for path in bad} == expected
    with pytest.raises(DataError, match=r"5 of 14 images cannot be trained on"):
        validation.usable_files(
            files, directory, side_by_side=True, min_side=32, on_bad_image="error"
        )
    usable = validation.usable_files(
        files, directory, side_by_side=True, min_side=32, on_bad_image="skip"
    )
    assert len(usable) == 9


def test_error_stops_before_training_and_lists_every_bad_file_and_why(folder_config, tmp_path):
    config, broken = folder_config
    with pytest.raises(DataError) as stop:
        train.train_and_evaluate(config, str(tmp_path / "run"))
    lines = str(stop.value).splitlines()
    assert lines[0] == f"{config.data.dataroot}/train: 5 of 14 images cannot be trained on:"
    for (name, why), line in zip(sorted(broken.items()), lines[1:6], strict=True):
        assert line.startswith(f"  {config.data.dataroot}/train/{name}: {why}")
    assert lines[-1] == (
        "Fix: repair or remove these files, or pass "
        "--config.data.on_bad_image=skip to train without them"
    )
    assert not (tmp_path / "run" / "checkpoints").exists() or not os.listdir(
        tmp_path / "run" / "checkpoints"
    )


@pytest.mark.slow
def test_skip_trains_on_the_rest_and_says_which_were_left_out(folder_config, tmp_path, caplog):
    config, broken = folder_config
    config.data.on_bad_image = "skip"
    with caplog.at_level(logging.INFO, logger="i2i_jax"):
        state, results = train.train_and_evaluate(config, str(tmp_path / "run"))
    assert int(state.step) == 2 and np.isfinite(results["l1"])
    text = caplog.text
    assert f"{config.data.dataroot}/train: skipping 5 of 14 images" in text
    for name, why in broken.items():
        assert f"{config.data.dataroot}/train/{name}: {why}" in text
    assert (
        f"{config.data.dataroot}/train: converting 1 16-bit, 1 CMYK, 1 RGBA (alpha "
        "dropped), 1 grayscale, 1 palette image(s) to RGB"
    ) in text
    assert sources.paired_source(config, "train").num_examples == 9


def test_converted_files_decode_to_the_pixels_pil_gives(folder_config):
    config, _ = folder_config
    config.data.on_bad_image = "skip"
    train_dir = os.path.join(config.data.dataroot, "train")
    source = sources.paired_source(config, "train")
    names = sorted(
        n
        for n in os.listdir(train_dir)
        if n not in ("empty.png", "notes.jpg", "truncated.jpg", "odd.png", "small.png")
    )
    for index, name in enumerate(names):
        expected = np.asarray(Image.open(os.path.join(train_dir, name)).convert("RGB"))
        if name == "deep.png":  # PIL clips 16 bits to 8 on conversion; the decoder scales.
            expected = np.repeat(
                (np.asarray(Image.open(os.path.join(train_dir, name)), np.float64) / 257).round()[
                    ..., None
                ],
                3,
                axis=-1,
            )
        pair = source.read(index)
        got = np.concatenate([pair["A"].numpy(), pair["B"].numpy()], axis=1)
        tolerance = 3 if name.endswith(".jpg") else 0  # Decoders' colour conversions differ.
        np.testing.assert_allclose(got, expected, atol=tolerance, err_msg=name)


def test_the_scan_is_cached_until_a_file_changes(folder_config, tmp_path):
    config, _ = folder_config
    config.data.on_bad_image = "skip"
    sources.paired_source(config, "train")
    cached = os.listdir(tmp_path / "cache" / "scans")
    assert len(cached) == 1
    sources.paired_source(config, "train")
    assert os.listdir(tmp_path / "cache" / "scans") == cached
    pair_image(99).save(os.path.join(config.data.dataroot, "train", "plain_0.png"))
    os.utime(os.path.join(config.data.dataroot, "train", "plain_0.png"), ns=(1, 1))
    sources.paired_source(config, "train")
    assert len(os.listdir(tmp_path / "cache" / "scans")) == 2


def test_a_split_of_only_bad_files_stops_even_with_skip(folder_config):
    config, _ = folder_config
    config.data.on_bad_image = "skip"
    test_dir = os.path.join(config.data.dataroot, "test")
    for name in os.listdir(test_dir):
        open(os.path.join(test_dir, name), "wb").close()
    with pytest.raises(DataError, match=r"test: none of its 2 images can be trained on"):
        sources.paired_source(config, "test")


def test_an_empty_domain_is_named(tmp_path):
    config = get_config("cycle_gan")
    config.data.source = "folder"
    config.data.dataroot = str(tmp_path)
    (tmp_path / "trainA").mkdir()
    (tmp_path / "trainB").mkdir()
    pair_image(0).save(tmp_path / "trainA" / "a.png")
    with pytest.raises(NotFoundError, match=r"trainB holds no images"):
        sources.train_sources(config)


def test_a_file_damaged_after_the_scan_is_a_data_error_when_read(folder_config):
    config, _ = folder_config
    config.data.on_bad_image = "skip"
    train_sources = sources.train_sources(config)  # Scanned: 9 usable files.
    (pathlib.Path(config.data.dataroot) / "train" / "plain_0.png").write_bytes(b"\x89PNG junk")
    batches = pipeline.train_batches(train_sources, config, config.batch_size)
    with pytest.raises(DataError, match=r"^reading the data failed during the run: ") as stop:
        for _ in range(3):  # Three batches of 4 visit every one of the 9 files.
            next(batches)
    assert str(stop.value).splitlines()[-1].startswith("Fix: rerun the same command")


def test_pairs_in_separate_a_and_b_folders_are_matched_by_name(tmp_path, monkeypatch):
    """The reference's pre-combine layout, A/train and B/train: a name in only one folder is
    a broken pair, reported like a broken image."""
    monkeypatch.setenv("I2I_JAX_CACHE", str(tmp_path / "cache"))
    images = {}
    for domain, names in (("A", ["x", "y", "only_a"]), ("B", ["x", "y", "only_b"])):
        os.makedirs(tmp_path / "data" / domain / "train")
        for i, name in enumerate(names):
            images[domain, name] = np.asarray(pair_image(i + (10 if domain == "B" else 0)))
            Image.fromarray(images[domain, name]).save(
                tmp_path / "data" / domain / "train" / f"{name}.png"
            )
    config = get_config("pix2pix")
    config.data.source = "folder"
    config.data.dataroot = str(tmp_path / "data")
    where = f"{tmp_path}/data"
    with pytest.raises(DataError) as stop:
        sources.paired_source(config, "train")
    assert str(stop.value).splitlines()[:3] == [
        f"{where}/{{A,B}}/train: 2 of 6 images cannot be trained on:",
        f"  {where}/A/train/only_a.png: no B/train/only_a.png to pair it with",
        f"  {where}/B/train/only_b.png: no A/train/only_b.png to pair it with",
    ]

    config.data.on_bad_image = "skip"
    source = sources.paired_source(config, "train")
    assert source.num_examples == 2
    for index, name in enumerate(["x", "y"]):
        pair = source.read(index)
        for domain in ("A", "B"):
            np.testing.assert_array_equal(pair[domain].numpy(), images[domain, name])
