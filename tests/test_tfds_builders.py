"""The TFDS builders for the reference's datasets, prepared offline from a manual dir.

No test here touches the network: `offline` stands in for the probe of the dataset host, so
the offline paths run whether or not the machine has a connection.
"""

import io
import logging
import os
import subprocess
import sys
import tarfile
import time
import zipfile

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from i2i_jax.data import sources, tfds_builders
from i2i_jax.errors import NotFoundError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Runs a command as `python -m i2i_jax.main` would, with the dataset host unreachable.
_OFFLINE_MAIN = (
    "import runpy; from i2i_jax.data import tfds_builders; "
    "tfds_builders.reachable = lambda *args, **kwargs: False; "
    "runpy.run_module('i2i_jax.main', run_name='__main__', alter_sys=True)"
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The dataset host is unreachable, and any download would fail the test."""
    monkeypatch.setattr(tfds_builders, "reachable", lambda *args, **kwargs: False)

    def no_download(self, *args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", no_download)
    monkeypatch.setattr(tfds.download.DownloadManager, "download", no_download)


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
    originals = make_facades_archive(os.path.join(facades_config.data.manual_dir, "facades.tar.gz"))
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
    start = time.monotonic()
    with pytest.raises(tfds_builders.DatasetUnavailableError) as error:
        sources.paired_source(facades_config, "train")
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz" in message
    assert os.path.join(facades_config.data.manual_dir, "facades.tar.gz") in message


@pytest.mark.slow
@pytest.mark.parametrize(
    "config_file,archive",
    [("pix2pix_facades", "facades.tar.gz"), ("cyclegan_horse2zebra", "horse2zebra.zip")],
)
def test_the_paper_configs_without_data_exit_within_30_seconds(tmp_path, config_file, archive):
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            _OFFLINE_MAIN,
            f"--config=configs/{config_file}.py",
            f"--workdir={tmp_path / 'run'}",
            f"--config.data.data_dir={tmp_path / 'tfds'}",
            f"--config.data.manual_dir={tmp_path / 'manual'}",
        ],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
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
    for split, domain in (("train", "A"), ("train", "B"), ("test", "B")):
        source = sources.domain_source(config, split, domain)
        assert source.num_examples == counts[split + domain]
        example = source.read(1)
        assert set(example) == {domain}
        np.testing.assert_array_equal(example[domain], originals[split + domain, 1])


def write_unpaired_folder(root, name: str, counts: dict[str, int], seed: int = 2) -> None:
    """<root>/<name>/{trainA,...}/<i>.png, as the reference's zip extracts."""
    rng = np.random.default_rng(seed)
    for split, count in counts.items():
        os.makedirs(os.path.join(root, name, split))
        for i in range(count):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(
                os.path.join(root, name, split, f"{i}.png")
            )


@pytest.fixture
def project_builder(monkeypatch):
    """Stands in for this project's builder: records the call, prepares nothing."""
    calls = []

    def prepared_builder(family, name, data_dir, manual_dir):
        calls.append((family, name, data_dir, manual_dir))
        return "project builder"

    monkeypatch.setattr(tfds_builders, "prepared_builder", prepared_builder)
    return calls


@pytest.mark.parametrize(
    "name,level,reason",
    [
        ("horse2zebra", logging.INFO, "not prepared, no {data_dir}/cycle_gan/horse2zebra/"),
        (
            "ae_photos",
            logging.WARNING,
            'TFDS cannot build it: ValueError: Failed to construct dataset "cycle_gan"',
        ),
    ],
)
def test_unpaired_falls_back_to_this_projects_builder_and_says_why(
    tmp_path, caplog, project_builder, name, level, reason
):
    data_dir = str(tmp_path / "tfds")
    with caplog.at_level(logging.INFO, logger="i2i_jax"):
        builder = tfds_builders.prepared_unpaired_builder(name, data_dir, "manual")
    assert builder == "project builder"
    assert project_builder == [(tfds_builders.UNPAIRED, name, data_dir, "manual")]
    [record] = [r for r in caplog.records if r.name == "i2i_jax"]
    assert record.levelno == level
    message = record.getMessage()
    assert message.startswith(
        f"TFDS cycle_gan/{name} (data_dir {data_dir}) not used: " + reason.format(data_dir=data_dir)
    )
    assert message.endswith(f"falling back to this project's builder i2i_unpaired/{name}")
    assert "\n" not in message


def test_an_unexpected_failure_of_tfds_is_not_hidden(monkeypatch, project_builder):
    def broken_builder(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(tfds, "builder", broken_builder)
    with pytest.raises(RuntimeError, match="disk on fire"):
        tfds_builders.prepared_unpaired_builder("horse2zebra", "", "")
    assert not project_builder


@pytest.mark.parametrize("file_format", ["array_record", "tfrecord"])
def test_a_prepared_tfds_cycle_gan_is_used_if_it_allows_random_access(
    tiny_cycle_config, tmp_path, monkeypatch, caplog, project_builder, file_format
):
    """TFDS's own cycle_gan/horse2zebra, prepared offline from a folder standing in for its
    download: used as it is with array_record files; with tfrecord, not, and the log says so."""
    counts = {"trainA": 3, "trainB": 2, "testA": 1, "testB": 1}
    write_unpaired_folder(tmp_path / "extracted", "horse2zebra", counts)
    data_dir = str(tmp_path / "tfds")
    with monkeypatch.context() as patch:
        patch.setattr(
            tfds.download.DownloadManager,
            "download_and_extract",
            lambda self, url: str(tmp_path / "extracted"),
        )
        tfds.builder(
            "cycle_gan/horse2zebra", data_dir=data_dir, file_format=file_format
        ).download_and_prepare()
    with caplog.at_level(logging.INFO, logger="i2i_jax"):
        builder = tfds_builders.prepared_unpaired_builder("horse2zebra", data_dir, "")
    if file_format == "tfrecord":
        assert builder == "project builder"
        assert (
            f"TFDS cycle_gan/horse2zebra (data_dir {data_dir}) not used: prepared as "
            "tfrecord, but random access needs array_record"
        ) in caplog.text
        assert [r.levelno for r in caplog.records if r.name == "i2i_jax"] == [logging.WARNING]
        return
    assert builder.info.full_name == "cycle_gan/horse2zebra/3.0.0" and not project_builder
    config = tiny_cycle_config
    config.data.source, config.data.name, config.data.data_dir = "tfds", "horse2zebra", data_dir
    source = sources.domain_source(config, "train", "A")
    assert source.description.startswith("TFDS cycle_gan/horse2zebra/3.0.0 trainA")
    assert source.num_examples == 3 and source.read(0)["A"].shape == (16, 16, 3)
