"""`python -m i2i_jax.translate --model=EXPORT --input=FILE_OR_DIR --output=DIR`.

Runs a generator written by `i2i_jax.export` on image files. It needs jax, numpy and Pillow
(and tqdm for a progress bar, if it is installed) but none of this project's code, so this one
file can travel with an artifact: `python translate.py --model=EXPORT ...` works as well.

Any image Pillow reads (JPEG, PNG, ...; RGB, grayscale, palette, with or without alpha) of any
size: it is converted to the channels the network takes, padded by reflection to a size the
network accepts (or, with `--fit=resize`, resized to the training size) and the output is
cropped (resized) back; an input's alpha channel is put back on its output. `--tile=T` runs
large images as overlapping T x T tiles blended with linear ramps. Images of one size are
batched. Outputs are PNGs (or float32 `.npy` arrays in [-1, 1]) named after their inputs, which
are never overwritten; a file that cannot be read is reported and the rest are translated.
"""

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Iterator

import jax
import numpy as np
from jax import export as jax_export
from PIL import Image, ImageOps

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FITS = ("pad", "resize")
OUTPUT_FORMATS = ("png", "npy")


class TranslateError(Exception):
    """Something the user fixes (a flag, the model directory, the inputs): the command prints
    its message, fix last, and exits with status 1, as the package's other tools do."""


class ExportedGenerator:
    """One direction of an exported artifact: float32 NHWC images in [-1, 1] in and out."""

    def __init__(self, model_dir: str, direction: str | None = None, seed: int = 0):
        manifest_path = os.path.join(model_dir, "manifest.json")
        if not os.path.exists(manifest_path):
            raise TranslateError(
                f"{manifest_path} does not exist: --model must be a "
                f"directory written by python -m i2i_jax.export"
            )
        with open(manifest_path) as f:
            self.manifest = json.load(f)
        directions = self.manifest["directions"]
        direction = direction or ("AtoB" if "AtoB" in directions else next(iter(directions)))
        if direction not in directions:
            raise TranslateError(
                f"--direction={direction}: {model_dir} has {', '.join(directions)}"
            )
        files = directions[direction]
        with open(os.path.join(model_dir, files["function"]), "rb") as f:
            self.exported = jax_export.deserialize(bytearray(f.read()))
        with np.load(os.path.join(model_dir, files["weights"])) as weights:
            self.weights = {name: jax.device_put(weights[name]) for name in weights.files}
        images = self.manifest["images"]
        self.multiple = images["height_width_multiple_of"]
        self.minimum = images["min_height_width"]
        self.trained_size = images["trained_size"]
        self.in_channels = files["input_channels"]
        self.train_like = self.manifest["test_time_mode"] == "train_like"
        self.seed = np.int32(seed)
        self._call = jax.jit(self.exported.call)

    def accepted_size(self, size: int) -> int:
        """The least size >= `size` that the network takes."""
        return max(self.minimum, -(-size // self.multiple) * self.multiple)

    def __call__(self, images: np.ndarray, example_ids: np.ndarray) -> np.ndarray:
        """`example_ids` pick each image's dropout masks in train_like mode."""
        args = [self.weights, images]
        if self.train_like:
            args += [self.seed, example_ids.astype(np.int32)]
        return np.asarray(self._call(*args))


@dataclasses.dataclass
class Job:
    """One input file on its way through the network."""

    index: int
    source: str
    target: str
    size: tuple[int, int] = (0, 0)  # Height, width as read.
    alpha: np.ndarray | None = None
    network_input: np.ndarray | None = None  # float32 [-1, 1], at an accepted size.


def find_inputs(input_path: str, output_dir: str) -> list[tuple[str, str]]:
    """(input file, output path without suffix) pairs: a file, or every image under a
    directory (recursively, skipping the output directory), mirrored under `output_dir`."""
    if os.path.isfile(input_path):
        stem = os.path.splitext(os.path.basename(input_path))[0]
        return [(input_path, os.path.join(output_dir, stem))]
    if not os.path.isdir(input_path):
        raise TranslateError(f"--input={input_path} is neither a file nor a directory")
    pairs = []
    output_real = os.path.realpath(output_dir)
    for root, dirs, files in os.walk(input_path):
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) != output_real)
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                relative = os.path.relpath(os.path.join(root, name), input_path)
                pairs.append(
                    (
                        os.path.join(root, name),
                        os.path.join(output_dir, os.path.splitext(relative)[0]),
                    )
                )
    if not pairs:
        raise TranslateError(
            f"--input={input_path} holds no image files ({', '.join(IMAGE_SUFFIXES)})"
        )
    return pairs


def plan_jobs(input_path: str, output_dir: str, suffix: str) -> list[Job]:
    """The jobs, refusing up front any output that would overwrite an input or another output."""
    pairs = find_inputs(input_path, output_dir)
    inputs = {os.path.realpath(source) for source, _ in pairs}
    jobs, targets = [], {}
    for index, (source, stem) in enumerate(pairs):
        target = stem + suffix
        if os.path.realpath(target) in inputs:
            raise TranslateError(
                f"the output {target} would overwrite an input; choose another --output"
            )
        if target in targets:
            raise TranslateError(
                f"{targets[target]} and {source} would both be written to "
                f"{target}; translate them into different --output dirs"
            )
        targets[target] = source
        jobs.append(Job(index, source, target))
    return jobs


def read_image(path: str, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 [H, W, channels] and the alpha channel, if the image has one."""
    with Image.open(path) as image:
        image.load()  # Decode now, so a truncated file fails here.
        image = ImageOps.exif_transpose(image)  # Camera JPEGs: the way they are shown.
        alpha = None
        if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
            alpha = np.asarray(image.convert("RGBA"))[..., 3]
        pixels = np.asarray(image.convert("L" if channels == 1 else "RGB"))
    pixels = pixels[..., None] if pixels.ndim == 2 else pixels
    if channels not in (1, 3):  # E.g. a 4-channel network: repeat what there is.
        pixels = np.resize(pixels, (*pixels.shape[:2], channels))
    return pixels, alpha


def to_network_input(pixels: np.ndarray, generator: ExportedGenerator, fit: str) -> np.ndarray:
    height, width = pixels.shape[:2]
    if fit == "resize":
        size = generator.accepted_size(generator.trained_size)
        pixels = resize(pixels, size, size)
    else:
        pad = (
            (0, generator.accepted_size(height) - height),
            (0, generator.accepted_size(width) - width),
            (0, 0),
        )
        pixels = np.pad(pixels, pad, mode="reflect" if min(height, width) > 1 else "edge")
    return pixels.astype(np.float32) / 127.5 - 1.0


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic, per channel through Pillow (uint8 or float32 arrays)."""
    channels = [
        np.asarray(
            Image.fromarray(pixels[..., c]).resize((width, height), Image.Resampling.BICUBIC)
        )
        for c in range(pixels.shape[-1])
    ]
    return np.stack(channels, axis=-1)


def ramp(length: int, overlap: int) -> np.ndarray:
    """Tile weights along one axis: rising over `overlap` pixels at both ends, never zero."""
    distance_to_edge = np.minimum(np.arange(length), np.arange(length)[::-1]) + 1
    return np.minimum(1.0, distance_to_edge / (overlap + 1)).astype(np.float32)


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, tile - overlap))
    return [*starts, size - tile]


def run_tiled(
    generator: ExportedGenerator,
    image: np.ndarray,
    example_id: int,
    tile: int,
    overlap: int,
    batch_size: int,
) -> np.ndarray:
    """The generator over overlapping tiles, blended: each output pixel is the ramp-weighted
    mean of the tiles that cover it, so seams fade over the overlap."""
    height, width = image.shape[:2]
    th, tw = min(tile, height), min(tile, width)
    corners = [
        (y, x) for y in tile_starts(height, th, overlap) for x in tile_starts(width, tw, overlap)
    ]
    weight = ramp(th, overlap)[:, None, None] * ramp(tw, overlap)[None, :, None]
    total, weights = None, np.zeros((height, width, 1), np.float32)
    for first in range(0, len(corners), batch_size):
        chunk = corners[first : first + batch_size]
        tiles = np.stack([image[y : y + th, x : x + tw] for y, x in chunk])
        outputs = generator(tiles, np.full(len(chunk), example_id))
        if total is None:
            total = np.zeros((height, width, outputs.shape[-1]), np.float32)
        for (y, x), output in zip(chunk, outputs, strict=True):
            total[y : y + th, x : x + tw] += weight * output
            weights[y : y + th, x : x + tw] += weight
    return total / weights


def save_output(job: Job, output: np.ndarray, fit: str) -> None:
    """Crops (or resizes) back to the input's size; PNG with the input's alpha, or npy."""
    height, width = job.size
    if fit == "resize":
        output = resize(output.astype(np.float32), height, width)
    output = output[:height, :width]
    os.makedirs(os.path.dirname(job.target) or ".", exist_ok=True)
    if job.target.endswith(".npy"):
        np.save(job.target, output.astype(np.float32))
        return
    pixels = np.clip(np.round((output + 1.0) * 127.5), 0, 255).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = pixels[..., 0]
    elif job.alpha is not None and pixels.shape[-1] == 3:
        pixels = np.concatenate([pixels, job.alpha[..., None]], axis=-1)
    Image.fromarray(pixels).save(job.target)


def batches_of_equal_size(jobs: Iterator[Job], batch_size: int) -> Iterator[list[Job]]:
    """Groups jobs whose network inputs have one shape, `batch_size` at most, keeping at most
    one partial batch per shape in memory."""
    pending: dict[tuple, list[Job]] = {}
    for job in jobs:
        group = pending.setdefault(job.network_input.shape, [])
        group.append(job)
        if len(group) == batch_size:
            yield pending.pop(job.network_input.shape)
    yield from pending.values()


class Translator:
    """Reads, runs and writes every job, counting failures instead of stopping at them."""

    def __init__(
        self, generator: ExportedGenerator, fit: str, tile: int, overlap: int, batch_size: int
    ):
        if tile and (tile % generator.multiple or tile < generator.minimum):
            raise TranslateError(
                f"--tile={tile}: tiles must be multiples of {generator.multiple} "
                f"and at least {generator.minimum} pixels for this network"
            )
        if tile and not 0 <= overlap < tile:
            raise TranslateError(f"--tile_overlap={overlap} must be in [0, --tile={tile})")
        self.generator, self.fit, self.tile, self.overlap = generator, fit, tile, overlap
        self.batch_size = batch_size
        self.failures: list[str] = []
        self.progress = lambda done: None

    def prepared(self, jobs: list[Job]) -> Iterator[Job]:
        for job in jobs:
            try:
                pixels, job.alpha = read_image(job.source, self.generator.in_channels)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                self.fail(job, f"cannot be read as an image ({type(error).__name__}: {error})")
                continue
            job.size = pixels.shape[:2]
            job.network_input = to_network_input(pixels, self.generator, self.fit)
            yield job

    def fail(self, job: Job, reason: str) -> None:
        self.failures.append(job.source)
        print(f"i2i_jax.translate: skipped {job.source}: {reason}", file=sys.stderr)
        self.progress(1)

    def run(self, jobs: list[Job], progress) -> int:
        """Translates every job, calling `progress(n)` as n more are done; returns how many
        were written."""
        self.progress = progress
        written = 0
        for batch in batches_of_equal_size(self.prepared(jobs), self.batch_size):
            if self.tile:
                tiled = (self.tile, self.overlap, self.batch_size)
                outputs = [
                    run_tiled(self.generator, job.network_input, job.index, *tiled) for job in batch
                ]
            else:
                outputs = self.generator(
                    np.stack([job.network_input for job in batch]),
                    np.array([job.index for job in batch]),
                )
            for job, output in zip(batch, outputs, strict=True):
                job.network_input = None  # Free it: directories can be large.
                try:
                    save_output(job, output, self.fit)
                except OSError as error:  # A full disk or a read-only directory.
                    self.fail(job, f"cannot write {job.target} ({error})")
                    continue
                written += 1
                progress(1)
        return written


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a `TranslateError` (status 1), not argparse's status 2."""

    def error(self, message):
        raise TranslateError(f"{message}\nFix: python -m i2i_jax.translate --help lists the flags")


# The command line: flag -> argparse options.
FLAGS = {
    "model": dict(required=True, help="Directory written by python -m i2i_jax.export."),
    "input": dict(required=True, help="An image file, or a directory of them."),
    "output": dict(required=True, help="Directory for the translated images."),
    "direction": dict(default=None, help="AtoB or BtoA (default: AtoB)."),
    "fit": dict(
        default="pad",
        choices=FITS,
        help="pad: reflect-pad to an accepted size and "
        "crop back (native resolution); resize: to the training size and back.",
    ),
    "tile": dict(type=int, default=0, help="Tiles of this size (0: whole images)."),
    "tile_overlap": dict(type=int, default=32, help="Pixels that neighbouring tiles share."),
    "batch_size": dict(type=int, default=8, help="Images (or tiles) per network call."),
    "seed": dict(type=int, default=0, help="Dropout seed, for train_like artifacts."),
    "output_format": dict(
        default="png",
        choices=OUTPUT_FORMATS,
        help="png, or npy: float32 [H, W, C] arrays in [-1, 1].",
    ),
}


def parse_flags(argv: list[str]) -> argparse.Namespace:
    parser = _ArgumentParser(
        prog="python -m i2i_jax.translate", description=__doc__.split("\n\n")[1]
    )
    for name, options in FLAGS.items():
        parser.add_argument(f"--{name}", **options)
    return parser.parse_args(argv)


def progress_bar(total: int):
    """tqdm on a terminal, if it is installed; nothing otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:
        return lambda done: None, lambda: None
    bar = tqdm(total=total, unit="image", disable=None, file=sys.stderr)
    return bar.update, bar.close


def translate_files(f: argparse.Namespace) -> int:
    """Translates what the flags say; returns the exit status (1 if any file failed)."""
    if f.batch_size < 1:
        raise TranslateError(f"--batch_size={f.batch_size} must be at least 1")
    generator = ExportedGenerator(f.model, f.direction, f.seed)
    translator = Translator(generator, f.fit, f.tile, f.tile_overlap, f.batch_size)
    jobs = plan_jobs(f.input, f.output, "." + f.output_format)
    update, close = progress_bar(len(jobs))
    written = translator.run(jobs, update)
    close()
    print(
        f"i2i_jax.translate: wrote {written} of {len(jobs)} images to {f.output}", file=sys.stderr
    )
    if translator.failures:
        print(
            f"i2i_jax.translate: {len(translator.failures)} failed: "
            f"{', '.join(translator.failures)}",
            file=sys.stderr,
        )
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return translate_files(parse_flags(sys.argv[1:] if argv is None else argv))
    except TranslateError as error:
        print(f"\ni2i_jax: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
