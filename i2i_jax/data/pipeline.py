"""The tf.data input pipeline: per-process shards, reproducible jitter, uint8 batches.

Images stay uint8 all the way to the device (4x less to copy than float32); the jitted step maps
them to [-1, 1]. Every random choice is stateless, seeded by (config.seed, position in the
stream), so the stream is the same whatever the parallelism and a resumed run that skips to its
step sees the batches an uninterrupted run would have seen.
"""

import math
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from i2i_jax.data.sources import PairedSource

DIRECTIONS = ("AtoB", "BtoA")
PREPROCESS = ("resize_and_crop", "crop", "none")


def hide_accelerators_from_tensorflow() -> None:
    """tf.data runs on the CPU; an accelerator belongs to JAX alone."""
    for kind in ("GPU", "TPU"):
        if tf.config.list_physical_devices(kind):
            tf.config.set_visible_devices([], kind)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bicubic with antialiasing (as PIL's, which the reference uses), back to uint8."""
    resized = tf.image.resize(image, (size, size), method="bicubic", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


def jitter(a: tf.Tensor, b: tf.Tensor, config, seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """The reference's `preprocess` and flip, with one crop window and one flip for A and B."""
    if config.preprocess == "resize_and_crop":
        a, b = resize(a, config.load_size), resize(b, config.load_size)
    elif config.preprocess == "none":
        return resize(a, config.crop_size), resize(b, config.crop_size)
    channels_a = tf.shape(a)[-1]
    pair = tf.concat([a, b], axis=-1)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    pair = tf.image.stateless_random_crop(
        pair, tf.stack([config.crop_size, config.crop_size, tf.shape(pair)[-1]]), crop_seed)
    if not config.no_flip:
        pair = tf.image.stateless_random_flip_left_right(pair, flip_seed)
    return pair[..., :channels_a], pair[..., channels_a:]


def as_example(a: tf.Tensor, b: tf.Tensor, direction: str) -> dict[str, tf.Tensor]:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not one of {DIRECTIONS}")
    source, target = (a, b) if direction == "AtoB" else (b, a)
    return {"input": source, "target": target}


def _thread_options(config) -> tf.data.Options:
    """A bounded private thread pool, so input work does not starve XLA on small machines."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, config.data.num_parallel_calls)
    options.threading.max_intra_op_parallelism = 1
    options.deterministic = True
    return options


def _local_positions(first_step: int, global_batch: int, process_index: int,
                     process_count: int) -> tf.data.Dataset:
    """Global stream positions this process reads: its contiguous slice of each global batch."""
    local_batch = global_batch // process_count

    def position(counter):
        step, offset = first_step + counter // local_batch, counter % local_batch
        return step * global_batch + process_index * local_batch + offset

    return tf.data.Dataset.range(tf.int64.max).map(position)


def example_index(position: tf.Tensor, num_examples: int, seed: int) -> tf.Tensor:
    """Epoch `position // n` visits every example once, in an order drawn from (seed, epoch)."""
    epoch, offset = position // num_examples, position % num_examples
    return tf.random.experimental.index_shuffle(
        offset, seed=tf.stack([tf.cast(seed, tf.int64), epoch]),
        max_index=num_examples - 1)


def train_batches(source: PairedSource, config, global_batch: int, start_step: int = 0,
                  process_index: int = 0, process_count: int = 1) -> Iterator[dict]:
    """Endless shuffled epochs of jittered pairs as numpy batches, this process's share of each
    global batch from `start_step` on. The global batches do not depend on `process_count`."""
    if config.preprocess not in PREPROCESS:
        raise ValueError(f"preprocess={config.preprocess!r} is not one of {PREPROCESS}")

    def prepare(position):
        a, b = source.read(example_index(position, source.num_examples, config.seed))
        seed = tf.stack([tf.cast(config.seed, tf.int64), position])
        return as_example(*jitter(a, b, config, seed), config.direction)

    stream = _local_positions(start_step, global_batch, process_index, process_count)
    stream = stream.map(prepare, num_parallel_calls=config.data.num_parallel_calls)
    stream = stream.batch(global_batch // process_count, drop_remainder=True).prefetch(2)
    return stream.with_options(_thread_options(config)).as_numpy_iterator()


def eval_batches(source: PairedSource, config, global_batch: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[tuple[dict, np.ndarray]]:
    """Every example of a split exactly once, resized to crop_size, as (batch, mask).

    Global batch j holds examples [j * global_batch, (j + 1) * global_batch); past the end of the
    split, slots repeat the last example with mask 0. Every process yields the same number of
    batches, so all of them run the same jitted step the same number of times.
    """
    num_batches = math.ceil(source.num_examples / global_batch)

    def prepare(position):
        a, b = source.read(tf.minimum(position, source.num_examples - 1))
        example = as_example(resize(a, config.crop_size), resize(b, config.crop_size),
                             config.direction)
        return example, tf.cast(position < source.num_examples, tf.float32)

    stream = _local_positions(0, global_batch, process_index, process_count)
    stream = stream.take(num_batches * (global_batch // process_count))
    stream = stream.map(prepare, num_parallel_calls=config.data.num_parallel_calls)
    stream = stream.batch(global_batch // process_count).prefetch(2)
    return stream.with_options(_thread_options(config)).as_numpy_iterator()
