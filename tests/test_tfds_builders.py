"""The TFDS builder for the reference's paired datasets, prepared offline from a manual dir."""

import io
import os
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from i2i_jax.data import sources, tfds_builders
from i2i_jax.errors import NotFoundError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def offline_path_unobservable() -> bool:
    return tfds_builders.reachable(tfds_builders.PAIRED.archive_url("facades"))


def add_image(archive: tarfile.TarFile, name: str, pixels: np.ndarray, fmt: str) -> None:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    info = tarfile.TarInfo(name)
    info.size = buffer.tell()
    buffer.seek(0)
    archive.addfile(info, buffer)


def make_facades_archive(path: str) -> dict[str, list[np.ndarray]]:
    """A miniature facades.tar.gz in the reference's layout: facades/<split>/<n>.jpg, A|B."""
    rng = np.random.default_rng(0)
    images = {"train": [], "test": []}
    with tarfile.open(path, "w:gz") as archive:
        for split, count in (("train", 3), ("test", 2)):
            for i in range(count):
                pixels = rng.integers(0, 256, (24, 48, 3), dtype=np.uint8)
                images[split].append(pixels)
                add_image(archive, f"facades/{split}/{i}.png", pixels, "PNG")
        add_image(archive, "facades/val/0.jpg", np.zeros((24, 48, 3), np.uint8), "JPEG")
    return images


@pytest.fixture
def facades_config(tiny_config, tmp_path):
    tiny_config.data.source = "tfds"
    tiny_config.data.name = "facades"
    tiny_config.data.data_dir = str(tmp_path / "tfds")
    tiny_config.data.manual_dir = str(tmp_path / "manual")
    os.makedirs(tiny_config.data.manual_dir)
    return tiny_config


def test_prepares_from_the_manual_archive_and_splits_a_from_b(facades_config):
    originals = make_facades_archive(
        os.path.join(facades_config.data.manual_dir, "facades.tar.gz"))
    train = sources.paired_source(facades_config, "train")
    assert train.num_examples == 3
    assert sources.paired_source(facades_config, "val").num_examples == 1
    for index, pixels in enumerate(originals["train"]):
        example = train.read(index)
        np.testing.assert_array_equal(example["A"], pixels[:, :24])
        np.testing.assert_array_equal(example["B"], pixels[:, 24:])
    with pytest.raises(NotFoundError, match="no split 'bogus'"):
        sources.paired_source(facades_config, "bogus")


def test_offline_without_data_fails_at_once_naming_the_archive(facades_config):
    if offline_path_unobservable():
        pytest.skip("the dataset host is reachable: the offline path cannot be observed")
    start = time.monotonic()
    with pytest.raises(tfds_builders.DatasetUnavailableError) as error:
        sources.paired_source(facades_config, "train")
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz" in message
    assert os.path.join(facades_config.data.manual_dir, "facades.tar.gz") in message


@pytest.mark.parametrize("config_file,archive", [("pix2pix_facades", "facades.tar.gz"),
                                                 ("cyclegan_horse2zebra", "horse2zebra.zip")])
def test_the_paper_configs_without_data_exit_within_30_seconds(tmp_path, config_file, archive):
    if offline_path_unobservable():
        pytest.skip("the dataset host is reachable: the offline path cannot be observed")
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "i2i_jax.main", f"--config=configs/{config_file}.py",
         f"--workdir={tmp_path / 'run'}", f"--config.data.data_dir={tmp_path / 'tfds'}",
         f"--config.data.manual_dir={tmp_path / 'manual'}"],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    assert time.monotonic() - start < 30
    assert result.returncode != 0
    assert os.path.join(str(tmp_path / "manual"), archive) in result.stderr
    assert "efrosgans.eecs.berkeley.edu" in result.stderr


def test_prepares_an_unpaired_dataset_from_the_manual_zip(facades_config):
    """horse2zebra.zip in the reference's layout: horse2zebra/{trainA,trainB,testA,testB}/."""
    config = facades_config
    config.data.name = "horse2zebra"
    rng = np.random.default_rng(1)
    counts = {"trainA": 3, "trainB": 2, "testA": 1, "testB": 2}
    originals = {}
    with zipfile.ZipFile(os.path.join(config.data.manual_dir, "horse2zebra.zip"), "w") as zf:
        for split, count in counts.items():
            for i in range(count):
                pixels = rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)
                originals[split, i] = pixels
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, format="PNG")
                zf.writestr(f"horse2zebra/{split}/{i}.png", buffer.getvalue())
    for (split, domain) in (("train", "A"), ("train", "B"), ("test", "B")):
        source = sources.domain_source(config, split, domain)
        assert source.num_examples == counts[split + domain]
        example = source.read(1)
        assert set(example) == {domain}
        np.testing.assert_array_equal(example[domain], originals[split + domain, 1])
