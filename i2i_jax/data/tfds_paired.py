"""A TFDS builder for the reference's paired (`aligned`) datasets: A|B images side by side.

The archives are the ones the reference's `datasets/download_pix2pix_dataset.sh` fetches. When
the machine is offline, put the archive (or its extracted folder) in the manual directory; when
neither that nor the network is there, preparation fails at once with the exact file to fetch.
"""

import os
import socket
import urllib.parse

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

PAIRED_DATASETS = ("facades", "maps", "cityscapes", "edges2shoes", "edges2handbags", "night2day")
URL = "http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz"
SPLITS = ("train", "val", "test")
SKIP_DECODING = tfds.decode.SkipDecoding()
DEFAULT_MANUAL_DIR = os.path.join("~", "tensorflow_datasets", "downloads", "manual")
NETWORK_PROBE_TIMEOUT_S = 3.0


class DatasetUnavailableError(FileNotFoundError):
    """The dataset is neither prepared, nor on disk, nor downloadable right now."""


def manual_instructions(name: str, manual_dir: str) -> str:
    return (f"Fetch {URL.format(name=name)} on a machine with internet access and put it at "
            f"{os.path.join(manual_dir, name + '.tar.gz')} (or extract it there so that "
            f"{os.path.join(manual_dir, name, 'train')} exists), then run again. To skip TFDS, "
            f"extract it anywhere and use --config.data.source=folder "
            f"--config.data.dataroot=/path/to/{name}.")


def local_copy(manual_dir: str, name: str) -> str | None:
    """The extracted folder or the archive of `name` in `manual_dir`, if either is there."""
    folder = os.path.join(manual_dir, name)
    if os.path.isdir(os.path.join(folder, "train")):
        return folder
    archive = os.path.join(manual_dir, name + ".tar.gz")
    return archive if os.path.isfile(archive) else None


def reachable(url: str, timeout: float = NETWORK_PROBE_TIMEOUT_S) -> bool:
    """A quick TCP probe, so an offline machine fails in seconds instead of hanging in a retry."""
    parts = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 80), timeout=timeout):
            return True
    except OSError:
        return False


class I2iPairedConfig(tfds.core.BuilderConfig):
    pass


class I2iPaired(tfds.core.GeneratorBasedBuilder):
    """Paired translation datasets; `image_a` and `image_b` are the halves of each image."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [I2iPairedConfig(name=name, description=f"pix2pix {name}")
                       for name in PAIRED_DATASETS]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Put <name>.tar.gz from " + URL + " (or its extracted <name>/ folder) in the manual dir.")

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image_a": tfds.features.Image(shape=(None, None, 3)),
                "image_b": tfds.features.Image(shape=(None, None, 3)),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image_a", "image_b"),
            disable_shuffling=True,  # Index i is the i-th file by name, as in a folder source.
            homepage="https://phillipi.github.io/pix2pix/")

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        name = self.builder_config.name
        try:
            found = local_copy(os.fspath(dl_manager.manual_dir), name)
        except AssertionError:  # TFDS's way of saying the manual dir is missing or empty.
            found = None
        if found is None:
            root = os.path.join(dl_manager.download_and_extract(URL.format(name=name)), name)
        elif found.endswith(".tar.gz"):
            root = os.path.join(dl_manager.extract(found), name)
        else:
            root = found
        return {split: self._generate_examples(os.path.join(root, split))
                for split in SPLITS if os.path.isdir(os.path.join(root, split))}

    def _generate_examples(self, directory: str):
        for file_name in sorted(os.listdir(directory)):
            path = os.path.join(directory, file_name)
            with Image.open(path) as image:
                pixels = np.asarray(image.convert("RGB"))
            half = pixels.shape[1] // 2
            yield file_name, {"image_a": pixels[:, :half], "image_b": pixels[:, half:2 * half],
                              "file_name": file_name}


def prepared_builder(name: str, data_dir: str | None, manual_dir: str | None) -> I2iPaired:
    """The builder for `name`, prepared from the manual dir or the network if it is not yet."""
    if name not in PAIRED_DATASETS:
        raise ValueError(f"data.name={name!r} is not one of the paired datasets {PAIRED_DATASETS}")
    builder = I2iPaired(config=name, data_dir=data_dir, file_format="array_record")
    if builder.is_prepared():
        return builder
    manual_dir = os.path.expanduser(manual_dir or DEFAULT_MANUAL_DIR)
    if local_copy(manual_dir, name) is None and not reachable(URL.format(name=name)):
        raise DatasetUnavailableError(
            f"Dataset {name!r} is not prepared in {builder.data_dir}, not in the manual dir "
            f"{manual_dir}, and {URL.format(name=name)} cannot be reached (offline?). "
            + manual_instructions(name, manual_dir))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
