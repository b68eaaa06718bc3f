"""Untrusted image files: a disguised PostScript file, a decompression bomb, dangling links and
link loops are bad images named in the dataset scan, the TFDS builders and translate; a corrupt
scan cache is rebuilt; translate holds a bounded number of images while it batches them."""

import logging
import os
import struct
import types
import zlib

import numpy as np
import pytest
from PIL import Image

from i2i_jax import tiling, translate
from i2i_jax.data import tfds_builders, validation
from i2i_jax.errors import DataError

# A real Encapsulated PostScript file: Pillow would hand it to Ghostscript to decode.
EPS = (
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n%%EndComments\n0 0 moveto showpage\n%%EOF\n"
)


def write_bomb(path) -> None:
    """A 100000 x 100000 PNG in a few dozen bytes: its header alone makes Pillow refuse it."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 1, 0, 0, 0, 0)  # 1-bit grayscale.
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def write_untrusted(directory) -> dict[str, str]:
    """One good image and four untrusted files; returns each of those with its expected why."""
    directory.mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(directory / "good.png")
    (directory / "eps.png").write_bytes(EPS)
    write_bomb(directory / "bomb.png")
    os.symlink(directory / "missing.png", directory / "dangling.png")
    os.symlink(directory / "loop_b.png", directory / "loop_a.png")
    os.symlink(directory / "loop_a.png", directory / "loop_b.png")
    return {
        "eps.png": "not an image (no image format recognised); accepted formats: PNG, JPEG, "
        "BMP, WEBP",
        "bomb.png": "too many pixels to decode safely (Image size (10000000000 pixels) exceeds",
        "dangling.png": "broken symbolic link (No such file or directory)",
        "loop_a.png": "broken symbolic link (Too many levels of symbolic links)",
        "loop_b.png": "broken symbolic link (Too many levels of symbolic links)",
    }


def test_the_scan_names_each_untrusted_file_and_why(tmp_path, monkeypatch):
    monkeypatch.setenv("I2I_JAX_CACHE", str(tmp_path / "cache"))
    expected = write_untrusted(tmp_path / "data")
    with Image.open(tmp_path / "data" / "eps.png") as unrestricted:  # What Pillow alone sees.
        assert unrestricted.format == "EPS"
    directory = str(tmp_path / "data")
    files = sorted(os.path.join(directory, name) for name in os.listdir(directory))
    with pytest.raises(DataError) as stop:
        validation.usable_files(
            files, directory, side_by_side=False, min_side=1, on_bad_image="error"
        )
    lines = str(stop.value).splitlines()
    for (name, why), line in zip(sorted(expected.items()), lines[1:-1], strict=True):
        assert line.startswith(f"  {directory}/{name}: {why}"), line
    assert lines[-1].startswith("Fix: ")
    assert validation.usable_files(
        files, directory, side_by_side=False, min_side=1, on_bad_image="skip"
    ) == [os.path.join(directory, "good.png")]


def test_a_corrupt_scan_cache_is_scanned_again(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("I2I_JAX_CACHE", str(tmp_path / "cache"))
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    files = [str(tmp_path / "a.png")]
    expected = validation.scan(files, side_by_side=False, min_side=1)
    (cached,) = (tmp_path / "cache" / "scans").iterdir()
    for garbage in (b"\x00{not json", b"[1, 2]"):
        cached.write_bytes(garbage)
        with caplog.at_level(logging.WARNING, logger="i2i_jax"):
            assert validation.scan(files, side_by_side=False, min_side=1) == expected
        assert f"ignoring the unreadable data scan cache {cached}" in caplog.text
        assert validation.scan(files, side_by_side=False, min_side=1) == expected  # Rewritten.


def test_the_tfds_builder_names_a_bad_image_in_the_manual_dir(tmp_path):
    """Preparing from an extracted folder in the manual dir stops on the bomb, naming it."""
    split = tmp_path / "manual" / "ae_photos" / "trainA"
    split.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(split / "a.png")
    write_bomb(split / "b.png")
    with pytest.raises(DataError) as stop:
        tfds_builders.prepared_builder(
            tfds_builders.UNPAIRED, "ae_photos", str(tmp_path / "tfds"), str(tmp_path / "manual")
        )
    message = str(stop.value)
    assert message.startswith(f"{split / 'b.png'}: too many pixels to decode safely")
    assert message.splitlines()[-1].startswith("Fix: repair or remove it")


def test_translate_opens_only_the_formats_it_names(tmp_path):
    (tmp_path / "eps.png").write_bytes(EPS)
    with pytest.raises(Image.UnidentifiedImageError):
        translate.read_image(str(tmp_path / "eps.png"), channels=3)
    Image.new("RGB", (8, 8)).save(tmp_path / "real.tif")
    assert translate.read_image(str(tmp_path / "real.tif"), channels=3)[0].shape == (8, 8, 3)


def test_batching_holds_a_bounded_number_of_images():
    """Every job a different size: none may wait for the end of the directory."""
    produced, batch_size = 0, 3

    def jobs():
        nonlocal produced
        for size in range(1, 60):
            produced += 1
            yield types.SimpleNamespace(network_input=np.zeros((size, 1, 1)), index=size)

    out = []
    for batch in tiling.batches_of_equal_size(jobs(), batch_size):
        assert produced - len(out) <= 2 * batch_size + 1
        out.extend(job.index for job in batch)
    assert sorted(out) == list(range(1, 60))

    same = [types.SimpleNamespace(network_input=np.zeros((2, 2, 1)))] * 7
    assert [len(b) for b in tiling.batches_of_equal_size(iter(same), batch_size)] == [3, 3, 1]
