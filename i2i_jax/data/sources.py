"""Paired datasets with random access: the embedded synthetic facades, local folders and TFDS.

A source has a size and a `read(index)` that returns the (A, B) pair of uint8 images at that
index, as tf ops. Random access lets the pipeline draw each epoch's order as a stateless
permutation, so any position of the stream can be computed directly (exact resume, and the same
global batches whatever the number of processes).
"""

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf

from i2i_jax.data import synthetic

SOURCES = ("synthetic", "folder", "tfds")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


@dataclasses.dataclass(frozen=True)
class PairedSource:
    num_examples: int
    read: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
    description: str


def split_side_by_side(image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The reference's `aligned` layout: A is the left half of the image, B the right half."""
    half = tf.shape(image)[1] // 2
    return image[:, :half], image[:, half:2 * half]


def decode_image(encoded: tf.Tensor) -> tf.Tensor:
    return tf.io.decode_image(encoded, channels=3, expand_animations=False)


def synthetic_source(config, split: str) -> PairedSource:
    size = config.data.synthetic_train_size if split == "train" else config.data.synthetic_test_size
    photos, labels = map(tf.constant, synthetic.render_split(split, size, config.load_size))
    return PairedSource(
        num_examples=size, read=lambda i: (tf.gather(photos, i), tf.gather(labels, i)),
        description=f"synthetic facades, {split}: {size} pairs at {config.load_size}px")


def list_images(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{directory} is not a directory")
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if name.lower().endswith(IMAGE_EXTENSIONS))


def folder_source(config, split: str) -> PairedSource:
    """A folder in the reference's layout: `<dataroot>/<split>/*.jpg`, each image A|B."""
    root = config.data.dataroot
    if not root:
        raise ValueError("data.source='folder' needs --config.data.dataroot=/path/to/dataset "
                         "(a directory holding train/, val/ and test/ folders of A|B images)")
    directory = os.path.join(root, split)
    if not os.path.isdir(directory):
        present = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) \
            if os.path.isdir(root) else []
        raise FileNotFoundError(
            f"split {split!r} not found: {directory} is not a directory (data.dataroot={root!r} "
            f"has {present or 'no split folders'}); set data.train_split/data.eval_split to one "
            f"of them or fix data.dataroot")
    files = list_images(directory)
    if not files:
        raise FileNotFoundError(f"{directory} holds no images with extensions {IMAGE_EXTENSIONS}")
    paths = tf.constant(files)
    return PairedSource(
        num_examples=len(files),
        read=lambda i: split_side_by_side(decode_image(tf.io.read_file(tf.gather(paths, i)))),
        description=f"folder {directory}: {len(files)} A|B images")


def tfds_source(config, split: str) -> PairedSource:
    from i2i_jax.data import tfds_paired  # Imports TFDS only when asked for.
    builder = tfds_paired.prepared_builder(config.data.name, config.data.data_dir or None,
                                           config.data.manual_dir or None)
    available = builder.info.splits
    if split not in available:
        raise ValueError(f"{config.data.name} has no split {split!r}; it has {sorted(available)}: "
                         f"set data.train_split/data.eval_split to one of them")
    examples = builder.as_data_source(split, decoders={
        "image_a": tfds_paired.SKIP_DECODING, "image_b": tfds_paired.SKIP_DECODING})

    def read_encoded(index):
        example = examples[int(index)]
        return example["image_a"], example["image_b"]

    def read(index):
        a, b = tf.numpy_function(read_encoded, [index], (tf.string, tf.string), stateful=False)
        return decode_image(a), decode_image(b)

    return PairedSource(
        num_examples=len(examples), read=read,
        description=f"TFDS {builder.info.full_name}, {split}: {len(examples)} pairs")


def paired_source(config, split: str) -> PairedSource:
    makers = {"synthetic": synthetic_source, "folder": folder_source, "tfds": tfds_source}
    if config.data.source not in makers:
        raise ValueError(f"data.source={config.data.source!r} is not one of {SOURCES}")
    return makers[config.data.source](config, split)
