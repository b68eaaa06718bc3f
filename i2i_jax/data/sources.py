"""Datasets with random access: the embedded synthetic facades, local folders and TFDS.

A source has a size and a `read(index)` that returns the example at that index as a dict of
uint8 images (tf ops): `{"A": a, "B": b}` for a pair, `{"A": a}` or `{"B": b}` for one domain of
an unpaired dataset (plus the true counterpart where the dataset has one). Random access lets the
pipeline draw each epoch's order as a stateless permutation, so any position of the stream can be
computed directly: exact resume, and the same global batches whatever the number of processes.
"""

import dataclasses
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from i2i_jax.data import SOURCES, synthetic, validation
from i2i_jax.data.files import IMAGE_EXTENSIONS, list_images
from i2i_jax.errors import ConfigError, DataError, NotFoundError

DOMAINS = ("A", "B")


@dataclasses.dataclass(frozen=True)
class Source:
    """`names` are the examples' names where they have them (file names without extension),
    which the evaluate command names its images after."""

    num_examples: int
    read: Callable[[tf.Tensor], dict[str, tf.Tensor]]
    description: str
    names: tuple[str, ...] = ()

    def name_of(self, index: int) -> str:
        return self.names[index] if self.names else f"{index:05d}"


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def split_side_by_side(image: tf.Tensor) -> dict[str, tf.Tensor]:
    """The reference's `aligned` layout: A is the left half of the image, B the right half."""
    half = tf.shape(image)[1] // 2
    return {"A": image[:, :half], "B": image[:, half : 2 * half]}


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def in_memory_source(
    images: dict[str, np.ndarray], description: str, names: tuple[str, ...] = ()
) -> Source:
    tensors = {k: tf.constant(v) for k, v in images.items()}
    count = len(next(iter(images.values())))
    return Source(
        num_examples=count,
        read=lambda i: {k: tf.gather(v, i) for k, v in tensors.items()},
        description=description,
        names=names,
    )


def _synthetic_names(split: str, size: int, style: str = "day") -> tuple[str, ...]:
    """A building's name is its seed, the same at either time of day in the test split."""
    return tuple(f"facade_{seed:05d}" for seed in synthetic.split_seeds(split, size, style))


def _synthetic_size(config, split: str) -> int:
    return config.data.synthetic_train_size if split == "train" else config.data.synthetic_test_size


def _min_side(config) -> int:
    """The smallest image side training can use: `crop` takes crop_size windows unresized."""
    return config.crop_size if config.preprocess == "crop" else 1


def _image_folder(config, folder: str, side_by_side: bool) -> list[str]:
    """The images in `dataroot/folder` that pass the scan (`validation.usable_files`), or an
    error naming what `dataroot` holds instead."""
    root = config.data.dataroot
    if not root:
        raise ConfigError(
            "data.dataroot",
            root,
            "data.source='folder' reads a directory",
            "--config.data.dataroot=/path/to/dataset",
        )
    directory = os.path.join(root, folder)
    if not os.path.isdir(directory):
        present = (
            sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
            if os.path.isdir(root)
            else []
        )
        raise NotFoundError(
            f"split {folder!r} not found: {directory} is not a directory (data.dataroot={root!r} "
            f"has {present or 'no split folders'}); set data.train_split/data.eval_split to one "
            f"of them or fix data.dataroot"
        )
    files = list_images(directory)
    if not files:
        raise NotFoundError(f"{directory} holds no images with extensions {IMAGE_EXTENSIONS}")
    return validation.usable_files(
        files,
        directory,
        side_by_side=side_by_side,
        min_side=_min_side(config),
        on_bad_image=config.data.on_bad_image,
    )


def _file_source(files: list[str], decode: Callable, description: str) -> Source:
    paths = tf.constant(files)
    return Source(
        num_examples=len(files),
        read=lambda i: decode(decode_image(tf.io.read_file(tf.gather(paths, i)))),
        description=description,
        names=tuple(_stem(f) for f in files),
    )


# --- Paired datasets (Pix2Pix) ---------------------------------------------------------------


def paired_source(config, split: str) -> Source:
    """A split of a paired dataset: `synthetic` facades, an A|B `folder`, or TFDS."""
    if config.data.source == "synthetic":
        size = _synthetic_size(config, split)
        photos, labels = synthetic.render_split(split, size, config.load_size)
        return in_memory_source(
            {"A": photos, "B": labels},
            f"synthetic facades {split}: {size} pairs at {config.load_size}px",
            _synthetic_names(split, size),
        )
    if config.data.source == "folder":
        root = config.data.dataroot
        if root and all(os.path.isdir(os.path.join(root, d, split)) for d in DOMAINS):
            return _separate_pairs(config, split)
        files = _image_folder(config, split, side_by_side=True)
        return _file_source(
            files, split_side_by_side, f"folder {root}/{split}: {len(files)} A|B images"
        )
    if config.data.source == "tfds":
        from i2i_jax.data import tfds_builders  # Imports TFDS only when asked for.

        builder = tfds_builders.prepared_builder(
            tfds_builders.PAIRED, config.data.name, config.data.data_dir, config.data.manual_dir
        )
        return _tfds_source(builder, split, {"A": "image_a", "B": "image_b"})
    raise ValueError(f"data.source={config.data.source!r} is not one of {SOURCES}")


def _separate_pairs(config, split: str) -> Source:
    """Pairs kept as two folders, `dataroot/A/<split>` and `dataroot/B/<split>`, matched by
    file name: the layout the reference's combine_A_and_B.py takes. A name in only one of them
    is a broken pair (`data.on_bad_image` decides), as is a pair with a bad image."""
    folders = {d: os.path.join(config.data.dataroot, d, split) for d in DOMAINS}
    named = {d: {os.path.basename(f): f for f in list_images(folders[d])} for d in DOMAINS}
    unmatched = {
        f"{folders[d]}/{name}": f"no {other}/{split}/{name} to pair it with"
        for d, other in zip(DOMAINS, DOMAINS[::-1], strict=True)
        for name in sorted(named[d].keys() - named[other].keys())
    }
    names = sorted(named["A"].keys() & named["B"].keys())
    bad = dict(unmatched)
    for d in DOMAINS:
        bad.update(
            validation.find_bad(
                [named[d][n] for n in names],
                folders[d],
                side_by_side=False,
                min_side=_min_side(config),
            )
        )
    where = f"{config.data.dataroot}/{{A,B}}/{split}"
    if bad:
        validation.report_bad(
            bad, len(named["A"]) + len(named["B"]), where, on_bad_image=config.data.on_bad_image
        )
    pairs = [n for n in names if not any(named[d][n] in bad for d in DOMAINS)]
    if not pairs:
        raise DataError(
            f"{where}: no usable pairs\nFix: put images of the same name in A/ "
            f"and B/, or fix the ones listed above"
        )
    paths = {d: tf.constant([named[d][n] for n in pairs]) for d in DOMAINS}
    return Source(
        num_examples=len(pairs),
        read=lambda i: {d: decode_image(tf.io.read_file(tf.gather(paths[d], i))) for d in DOMAINS},
        description=f"folder {config.data.dataroot}/{{A,B}}/{split}: {len(pairs)} pairs",
        names=tuple(_stem(n) for n in pairs),
    )


# --- Unpaired datasets (CycleGAN) ------------------------------------------------------------


def domain_source(config, split: str, domain: str) -> Source:
    """One domain of an unpaired dataset: split `train` or `test` of domain `A` or `B`.

    The reference's layout names the folders `trainA`, `trainB`, `testA`, `testB`. The synthetic
    test domains come with their true counterpart (the same building at the other time of day),
    so translations can be scored.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain {domain!r} is not one of {DOMAINS}")
    if config.data.source == "synthetic":
        size = _synthetic_size(config, split)
        styles = {"A": "day", "B": "night"}
        if split == "train":
            photos, _ = synthetic.render_split(split, size, config.load_size, styles[domain])
            images = {domain: photos}
        else:
            images = {
                d: synthetic.render_split(split, size, config.load_size, s)[0]
                for d, s in styles.items()
            }
        return in_memory_source(
            images,
            f"synthetic {styles[domain]} facades {split}{domain}: {size} at {config.load_size}px",
            _synthetic_names(split, size, styles[domain]),
        )
    if config.data.source == "folder":
        files = _image_folder(config, split + domain, side_by_side=False)
        return _file_source(
            files,
            lambda image: {domain: image},
            f"folder {config.data.dataroot}/{split}{domain}: {len(files)} images",
        )
    if config.data.source == "tfds":
        from i2i_jax.data import tfds_builders

        builder = tfds_builders.prepared_unpaired_builder(
            config.data.name, config.data.data_dir, config.data.manual_dir
        )
        return _tfds_source(builder, split + domain, {domain: "image"})
    raise ValueError(f"data.source={config.data.source!r} is not one of {SOURCES}")


def _tfds_source(builder, split: str, features: dict[str, str]) -> Source:
    """Random access to a prepared TFDS split; images are decoded by tf.data, not by TFDS."""
    import tensorflow_datasets as tfds

    available = builder.info.splits
    if split not in available:
        raise NotFoundError(
            f"{builder.info.full_name} has no split {split!r}; it has "
            f"{sorted(available)}: set data.train_split/data.eval_split accordingly"
        )
    examples = builder.as_data_source(
        split, decoders={name: tfds.decode.SkipDecoding() for name in features.values()}
    )
    keys, names = list(features), list(features.values())

    def read_encoded(index):
        example = examples[int(index)]
        return tuple(example[name] for name in names)

    def read(index):
        encoded = tf.nest.flatten(
            tf.numpy_function(read_encoded, [index], [tf.string] * len(names), stateful=False)
        )
        return {k: decode_image(e) for k, e in zip(keys, encoded, strict=True)}

    return Source(
        num_examples=len(examples),
        read=read,
        description=f"TFDS {builder.info.full_name} {split}: {len(examples)} examples",
    )


# --- What each task reads ----------------------------------------------------------------------


def train_sources(config) -> list[Source]:
    """Pix2Pix reads one stream of pairs; CycleGAN one independently shuffled stream per domain."""
    if config.model == "pix2pix":
        return [paired_source(config, config.data.train_split)]
    return [domain_source(config, config.data.train_split, domain) for domain in DOMAINS]


def eval_sources(config) -> dict[str, Source]:
    """For each translation direction (after `direction` is applied), the source of its inputs."""
    if config.model == "pix2pix":
        return {"AtoB": paired_source(config, config.data.eval_split)}
    first, second = DOMAINS if config.direction == "AtoB" else DOMAINS[::-1]
    return {
        "AtoB": domain_source(config, config.data.eval_split, first),
        "BtoA": domain_source(config, config.data.eval_split, second),
    }
