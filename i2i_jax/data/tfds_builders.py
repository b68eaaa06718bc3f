"""TFDS builders for the reference's datasets: paired (A|B side by side) and unpaired (trainA/B).

The archives are the ones the reference's `datasets/download_*_dataset.sh` scripts fetch. When
the machine is offline, put the archive (or its extracted folder) in the manual directory; when
neither that nor the network is there, preparation fails at once, naming the file to fetch.
"""

import dataclasses
import logging
import os
import socket
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds

from i2i_jax.data.files import BadImageError, list_images, load_image
from i2i_jax.errors import DataError, NotFoundError, first_line

log = logging.getLogger("i2i_jax")

DEFAULT_MANUAL_DIR = os.path.join("~", "tensorflow_datasets", "downloads", "manual")
NETWORK_PROBE_TIMEOUT_S = 3.0


@dataclasses.dataclass(frozen=True)
class ArchiveFamily:
    """Where a family of the reference's datasets comes from and how its archive is laid out."""

    names: tuple[str, ...]
    url: str  # With a {name} field.
    suffix: str
    splits: tuple[str, ...]  # Folders inside the extracted <name>/ directory.

    def archive_url(self, name: str) -> str:
        return self.url.format(name=name)


PAIRED = ArchiveFamily(
    names=("facades", "maps", "cityscapes", "edges2shoes", "edges2handbags", "night2day"),
    url="http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz",
    suffix=".tar.gz",
    splits=("train", "val", "test"),
)
UNPAIRED = ArchiveFamily(
    names=(
        "horse2zebra",
        "apple2orange",
        "summer2winter_yosemite",
        "monet2photo",
        "cezanne2photo",
        "ukiyoe2photo",
        "vangogh2photo",
        "maps",
        "cityscapes",
        "facades",
        "iphone2dslr_flower",
        "ae_photos",
    ),
    url="http://efrosgans.eecs.berkeley.edu/cyclegan/datasets/{name}.zip",
    suffix=".zip",
    splits=("trainA", "trainB", "testA", "testB"),
)


class DatasetUnavailableError(NotFoundError):
    """The dataset is neither prepared, nor on disk, nor downloadable right now."""


def manual_instructions(family: ArchiveFamily, name: str, manual_dir: str) -> str:
    return (
        f"Fetch {family.archive_url(name)} on a machine with internet access and put it at "
        f"{os.path.join(manual_dir, name + family.suffix)} (or extract it there so that "
        f"{os.path.join(manual_dir, name, family.splits[0])} exists), then run again. To "
        f"skip TFDS, extract it anywhere and use --config.data.source=folder "
        f"--config.data.dataroot=/path/to/{name}."
    )


def local_copy(family: ArchiveFamily, manual_dir: str, name: str) -> str | None:
    """The extracted folder or the archive of `name` in `manual_dir`, if either is there."""
    folder = os.path.join(manual_dir, name)
    if os.path.isdir(os.path.join(folder, family.splits[0])):
        return folder
    archive = os.path.join(manual_dir, name + family.suffix)
    return archive if os.path.isfile(archive) else None


def reachable(url: str, timeout: float = NETWORK_PROBE_TIMEOUT_S) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of hanging in a retry."""
    parts = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


class _ArchiveSplits:
    """`_split_generators` shared by the builders: the manual dir first, then the network."""

    FAMILY: ArchiveFamily

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        name = self.builder_config.name
        try:
            found = local_copy(self.FAMILY, os.fspath(dl_manager.manual_dir), name)
        except AssertionError:  # TFDS's way of saying the manual dir is missing or empty.
            found = None
        if found is None:
            root = os.path.join(
                dl_manager.download_and_extract(self.FAMILY.archive_url(name)), name
            )
        elif found.endswith(self.FAMILY.suffix):
            root = os.path.join(dl_manager.extract(found), name)
        else:
            root = found
        return {
            split: self._generate_examples(os.path.join(root, split))
            for split in self.FAMILY.splits
            if os.path.isdir(os.path.join(root, split))
        }

    def _generate_examples(self, directory: str):
        """The images of a split folder in name order (the same files a folder source reads)."""
        for path in list_images(directory):
            try:
                pixels = np.asarray(load_image(path).convert("RGB"))
            except BadImageError as error:
                raise DataError(
                    f"{path}: {error}\nFix: repair or remove it (in the archive, or in its "
                    "extracted folder in the manual dir), then prepare the dataset again"
                ) from None
            file_name = os.path.basename(path)
            yield file_name, {**self._features_of(pixels), "file_name": file_name}


class I2iPaired(_ArchiveSplits, tfds.core.GeneratorBasedBuilder):
    """Paired translation datasets; `image_a` and `image_b` are the halves of each image."""

    FAMILY = PAIRED
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in PAIRED.names]
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"Put <name>{PAIRED.suffix} from {PAIRED.url} in the manual dir."

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image_a": tfds.features.Image(shape=(None, None, 3)),
                    "image_b": tfds.features.Image(shape=(None, None, 3)),
                    "file_name": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,  # Index i is the i-th file by name, as in a folder source.
            homepage="https://phillipi.github.io/pix2pix/",
        )

    @staticmethod
    def _features_of(pixels: np.ndarray) -> dict[str, np.ndarray]:
        half = pixels.shape[1] // 2
        return {"image_a": pixels[:, :half], "image_b": pixels[:, half : 2 * half]}


class I2iUnpaired(_ArchiveSplits, tfds.core.GeneratorBasedBuilder):
    """Unpaired translation datasets with splits trainA, trainB, testA, testB, like TFDS's
    `cycle_gan`, but preparable offline from the manual dir."""

    FAMILY = UNPAIRED
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name) for name in UNPAIRED.names]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        f"Put <name>{UNPAIRED.suffix} from {UNPAIRED.url} in the manual dir."
    )

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "file_name": tfds.features.Text(),
                }
            ),
            disable_shuffling=True,
            homepage="https://junyanz.github.io/CycleGAN/",
        )

    @staticmethod
    def _features_of(pixels: np.ndarray) -> dict[str, np.ndarray]:
        return {"image": pixels}


BUILDERS = {PAIRED: I2iPaired, UNPAIRED: I2iUnpaired}


def prepared_builder(
    family: ArchiveFamily, name: str, data_dir: str, manual_dir: str
) -> tfds.core.DatasetBuilder:
    """The builder for `name`, prepared from the manual dir or the network if it is not yet."""
    if name not in family.names:
        raise ValueError(f"data.name={name!r} is not one of {family.names}")
    builder = BUILDERS[family](config=name, data_dir=data_dir or None, file_format="array_record")
    if builder.is_prepared():
        return builder
    manual_dir = os.path.expanduser(manual_dir or DEFAULT_MANUAL_DIR)
    if local_copy(family, manual_dir, name) is None and not reachable(family.archive_url(name)):
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {builder.data_dir}, not in the manual dir "
            f"{manual_dir}, and {family.archive_url(name)} cannot be reached (offline?). "
            + manual_instructions(family, name, manual_dir)
        )
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
    )
    return builder


def official_unpaired_builder(name: str, data_dir: str) -> tfds.core.DatasetBuilder | None:
    """TFDS's own `cycle_gan/<name>` if it is prepared in `data_dir` as array_record (random
    access needs it), else None, having logged why it is not used.

    A dataset that is simply not prepared there is the usual case (info); one TFDS cannot
    build (a name `cycle_gan` lacks, such as ae_photos, or no `cycle_gan` in this TFDS) or one
    prepared in another file format is a warning. Any other error propagates.
    """
    official_name = f"cycle_gan/{name}"
    where = data_dir or "TFDS's default"
    try:
        official = tfds.builder(official_name, data_dir=data_dir or None)
    except ValueError as error:  # tfds.core.DatasetNotFoundError, or a config it lacks.
        level, reason = logging.WARNING, f"TFDS cannot build it: {first_line(error)}"
    else:
        file_format = official.info.file_format  # A FileFormat enum, or None.
        file_format = getattr(file_format, "value", file_format)
        if not official.is_prepared():
            level, reason = logging.INFO, f"not prepared, no {official.data_dir}"
        elif file_format != "array_record":
            level, reason = (
                logging.WARNING,
                (f"prepared as {file_format}, but random access needs array_record"),
            )
        else:
            return official
    log.log(
        level,
        "TFDS %s (data_dir %s) not used: %s; falling back to this project's builder %s/%s",
        official_name,
        where,
        reason,
        I2iUnpaired.name,
        name,
    )
    return None


def prepared_unpaired_builder(
    name: str, data_dir: str, manual_dir: str
) -> tfds.core.DatasetBuilder:
    """TFDS's own `cycle_gan/<name>` if it is already prepared (`official_unpaired_builder`),
    else this project's builder of the same data."""
    official = official_unpaired_builder(name, data_dir)
    if official is not None:
        return official
    return prepared_builder(UNPAIRED, name, data_dir, manual_dir)
