"""The tf.data input pipeline: per-process shards, reproducible jitter, uint8 batches.

Images stay uint8 all the way to the device (4x less to copy than float32); the jitted step maps
them to [-1, 1]. Every random choice is stateless, seeded by (config.seed, position in the
stream), so the stream is the same whatever the parallelism and a resumed run that skips to its
step sees the batches an uninterrupted run would have seen.
"""

import dataclasses
import math
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf

from i2i_jax.data import DIRECTIONS, PREPROCESS
from i2i_jax.data.sources import Source
from i2i_jax.errors import DataError


def hide_accelerators_from_tensorflow() -> None:
    """tf.data runs on the CPU; an accelerator belongs to JAX alone."""
    for kind in ("GPU", "TPU"):
        if tf.config.list_physical_devices(kind):
            tf.config.set_visible_devices([], kind)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Bicubic with antialiasing (as PIL's, which the reference uses), back to uint8."""
    resized = tf.image.resize(image, (size, size), method="bicubic", antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """How an image becomes a crop_size square: the reference's `preprocess` (`resize_and_crop`
    to load_size then a crop_size crop, `crop` without resizing, `none`: resize to crop_size),
    plus the training flip. One value for `jitter` (training) and `center_view` (evaluation),
    so that both see the same scale."""

    preprocess: str
    load_size: int
    crop_size: int
    flip: bool = True

    def __post_init__(self):
        if self.preprocess not in PREPROCESS:
            raise ValueError(f"preprocess={self.preprocess!r} is not one of {PREPROCESS}")

    @classmethod
    def from_config(cls, config) -> "Preprocessing":
        return cls(
            preprocess=config.preprocess,
            load_size=config.load_size,
            crop_size=config.crop_size,
            flip=not config.no_flip,
        )


def jitter(
    images: dict[str, tf.Tensor], seed: tf.Tensor, preprocessing: Preprocessing
) -> dict[str, tf.Tensor]:
    """The reference's `preprocess` and flip, with one crop window and one flip for all images
    of an example (A and B of a pair), drawn from the stateless `seed`."""
    p = preprocessing
    size = p.load_size if p.preprocess == "resize_and_crop" else p.crop_size
    if p.preprocess != "crop":
        images = {k: resize(v, size) for k, v in images.items()}
    keys = sorted(images)
    stacked = tf.concat([images[k] for k in keys], axis=-1)
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    stacked = tf.image.stateless_random_crop(
        stacked, tf.stack([p.crop_size, p.crop_size, tf.shape(stacked)[-1]]), crop_seed
    )
    if p.flip:
        stacked = tf.image.stateless_random_flip_left_right(stacked, flip_seed)
    sizes = [tf.shape(images[k])[-1] for k in keys]
    return dict(zip(keys, tf.split(stacked, sizes, axis=-1), strict=True))


def center_view(image: tf.Tensor, preprocessing: Preprocessing) -> tf.Tensor:
    """The deterministic counterpart of `jitter` for evaluation: the same scale as in training
    (resize to load_size, or none with `crop`), then the central crop_size window; no flip."""
    p = preprocessing
    if p.preprocess == "resize_and_crop":
        image = resize(image, p.load_size)
    elif p.preprocess == "none":
        return resize(image, p.crop_size)
    top = (tf.shape(image)[0] - p.crop_size) // 2
    left = (tf.shape(image)[1] - p.crop_size) // 2
    return image[top : top + p.crop_size, left : left + p.crop_size]


def orient(example: dict[str, tf.Tensor], direction: str) -> dict[str, tf.Tensor]:
    """`BtoA` swaps the domains, so that tasks always translate A into B."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction={direction!r} is not one of {DIRECTIONS}")
    swap = {"A": "B", "B": "A"} if direction == "BtoA" else {"A": "A", "B": "B"}
    return {swap.get(k, k): v for k, v in example.items()}


def to_channels(
    example: dict[str, tf.Tensor], *, input_nc: int, output_nc: int
) -> dict[str, tf.Tensor]:
    """A (after `orient`) to `input_nc` channels and B to `output_nc`: sources decode every
    image to RGB (grayscale, palette, 16-bit, CMYK and RGBA files included), and a 1-channel
    side is its luma."""
    wanted = {"A": input_nc, "B": output_nc}
    return {
        k: tf.image.rgb_to_grayscale(v) if wanted.get(k) == 1 else v for k, v in example.items()
    }


def _read_errors_named(batches: Iterator) -> Iterator:
    """`batches`, with a file that fails to read or decode (changed or damaged since the scan
    that started the run) reported as a `DataError` rather than a TensorFlow traceback."""
    try:
        yield from batches
    except tf.errors.OpError as error:
        raise DataError(
            f"reading the data failed during the run: {error.message.splitlines()[0][:300]}\n"
            "Fix: rerun the same command: it resumes from the last checkpoint, and the scan of "
            "a folder dataset names every file that changed since and cannot be read"
        ) from None


def _thread_options(config) -> tf.data.Options:
    """A bounded private thread pool, so input work does not starve XLA on small machines."""
    options = tf.data.Options()
    options.threading.private_threadpool_size = max(1, config.data.num_parallel_calls)
    options.threading.max_intra_op_parallelism = 1
    options.deterministic = True
    return options


def _local_positions(
    first_step: int, global_batch: int, process_index: int, process_count: int
) -> tf.data.Dataset:
    """Global stream positions this process reads: its contiguous slice of each global batch."""
    local_batch = global_batch // process_count

    def position(counter):
        step, offset = first_step + counter // local_batch, counter % local_batch
        return step * global_batch + process_index * local_batch + offset

    return tf.data.Dataset.range(tf.int64.max).map(position)


def example_index(position: tf.Tensor, num_examples: int, seed: tf.Tensor) -> tf.Tensor:
    """Epoch `position // n` visits every example once, in an order drawn from (seed, epoch)."""
    epoch, offset = position // num_examples, position % num_examples
    return tf.random.experimental.index_shuffle(
        offset, seed=tf.stack([seed, epoch]), max_index=num_examples - 1
    )


def _jittered_stream(source: Source, config, stream_id: int, positions: tf.data.Dataset):
    """One source's endless shuffled epochs; `stream_id` keeps sources independent."""
    seed = tf.constant(config.seed * 1009 + stream_id, tf.int64)
    preprocessing = Preprocessing.from_config(config)

    def prepare(position):
        images = source.read(example_index(position, source.num_examples, seed))
        return jitter(images, tf.stack([seed, position]), preprocessing)

    return positions.map(prepare, num_parallel_calls=config.data.num_parallel_calls)


def train_batches(
    sources: Sequence[Source],
    config,
    global_batch: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict]:
    """Numpy batches of this process's share of each global batch, from `start_step` on.

    Each source is an independently shuffled stream (one for Pix2Pix's pairs; one per domain
    for CycleGAN); their examples are merged step by step. The global batches do not depend on
    `process_count`.
    """
    positions = _local_positions(start_step, global_batch, process_index, process_count)
    streams = [_jittered_stream(s, config, k, positions) for k, s in enumerate(sources)]
    stream = tf.data.Dataset.zip(tuple(streams)).map(
        lambda *examples: to_channels(
            orient({k: v for e in examples for k, v in e.items()}, config.direction),
            input_nc=config.input_nc,
            output_nc=config.output_nc,
        )
    )
    stream = stream.batch(global_batch // process_count, drop_remainder=True).prefetch(2)
    return _read_errors_named(stream.with_options(_thread_options(config)).as_numpy_iterator())


def eval_batches(
    source: Source, config, global_batch: int, process_index: int = 0, process_count: int = 1
) -> Iterator[tuple[dict, np.ndarray]]:
    """Every example of a split exactly once, in its `center_view`, as (batch, mask).

    Global batch j holds examples [j * global_batch, (j + 1) * global_batch); past the end of the
    split, slots repeat the last example with mask 0. Every process yields the same number of
    batches, so all of them run the same jitted step the same number of times. Batches carry
    each example's `index`, so per-example randomness does not depend on the batching.
    """
    num_batches = math.ceil(source.num_examples / global_batch)
    preprocessing = Preprocessing.from_config(config)

    def prepare(position):
        index = tf.minimum(position, source.num_examples - 1)
        images = source.read(index)
        example = to_channels(
            orient({k: center_view(v, preprocessing) for k, v in images.items()}, config.direction),
            input_nc=config.input_nc,
            output_nc=config.output_nc,
        )
        example["index"] = tf.cast(index, tf.int32)
        return example, tf.cast(position < source.num_examples, tf.float32)

    stream = _local_positions(0, global_batch, process_index, process_count)
    stream = stream.take(num_batches * (global_batch // process_count))
    stream = stream.map(prepare, num_parallel_calls=config.data.num_parallel_calls)
    stream = stream.batch(global_batch // process_count).prefetch(2)
    return _read_errors_named(stream.with_options(_thread_options(config)).as_numpy_iterator())
