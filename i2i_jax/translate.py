"""`python -m i2i_jax.translate --model=EXPORT --input=FILE_OR_DIR --output=DIR`.

Runs a generator written by `i2i_jax.export` on image files. It needs jax, numpy and Pillow
(and tqdm for a progress bar, if it is installed) but none of this project's other code: it and
the two modules it imports (exported_generator.py, tiling.py) travel with every artifact, which
the export copies them into: `python EXPORT/translate.py --model=EXPORT ...` works anywhere.

An image in PNG, JPEG, BMP, GIF, TIFF or WEBP (and in no other format, whatever its name; RGB,
grayscale or palette, with or without alpha) of any size is converted to the channels the network
takes, padded by reflection to a size the network accepts (or, with `--fit=resize`, resized to the
training size) and the output is cropped (resized) back; an input's alpha channel is put back on
its output. `--tile=T` runs large images as overlapping T x T tiles blended with linear ramps; an
image that would not fit the memory budget whole (`--memory_limit_gb`, default half of what is
free) is tiled by itself, with a notice. A file of a newer artifact format is refused naming both.
`--model=EXPORT/AtoB.onnx` runs the artifact's ONNX model (`export --format=onnx`) with onnxruntime
instead. Images of one size are batched. Outputs are PNGs (or float32 `.npy` arrays in [-1, 1])
named after their inputs (`output_paths`); an input is never overwritten, nor an existing file
without `--overwrite`: both are refused before any work. A file that cannot be read is reported and
the rest are translated.
"""

import argparse
import collections
import dataclasses
import hashlib
import os
import sys
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps

try:  # python -m i2i_jax.translate
    from i2i_jax import tiling
    from i2i_jax.exported_generator import ExportedGenerator, TranslateError
except ImportError:  # python translate.py, with the modules it needs beside it
    import tiling
    from exported_generator import ExportedGenerator, TranslateError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
# The only formats Pillow may open an input as, whatever its name says: a `.png` that is really
# EPS must never reach Pillow's EPS plugin, which runs Ghostscript on it.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
READABLE = f"a {', '.join(IMAGE_FORMATS[:-1])} or {IMAGE_FORMATS[-1]} image"
FITS = ("pad", "resize")
OUTPUT_FORMATS = ("png", "npy")


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
        raise TranslateError(
            f"--input={input_path} is neither a file nor a directory\nFix: pass an image file "
            "or a directory of them"
        )
    pairs = []
    output_real = os.path.realpath(output_dir)
    for root, dirs, files in os.walk(input_path):
        dirs[:] = sorted(d for d in dirs if os.path.realpath(os.path.join(root, d)) != output_real)
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                source = os.path.join(root, name)
                stem = os.path.splitext(os.path.relpath(source, input_path))[0]
                pairs.append((source, os.path.join(output_dir, stem)))
    if not pairs:
        raise TranslateError(
            f"--input={input_path} holds no image files ({', '.join(IMAGE_SUFFIXES)})\nFix: "
            "pass a directory that holds images, or an image file"
        )
    return pairs


def plan_jobs(input_path: str, output_dir: str, suffix: str, overwrite: bool = False) -> list[Job]:
    """The jobs, refusing up front any output that would overwrite an input, or an existing
    file unless `overwrite`."""
    pairs = find_inputs(input_path, output_dir)
    sources, targets = [s for s, _ in pairs], output_paths(pairs, suffix, longest_name(output_dir))
    inputs = {os.path.realpath(source) for source in sources}
    for target in targets:
        if os.path.realpath(target) in inputs or os.path.islink(target):  # Not even with
            raise TranslateError(  # --overwrite: a link's target is not our output.
                f"the output {target} would overwrite an input (or a link's target)\nFix: "
                "choose another --output"
            )
    existing = [target for target in targets if os.path.lexists(target)]
    if existing and not overwrite:
        shown = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if existing[5:] else "")
        raise TranslateError(
            f"{len(existing)} of the {len(targets)} outputs exist already: {shown}\nFix: pass "
            "--overwrite to replace them, or choose another --output"
        )
    return list(map(Job, range(len(pairs)), sources, targets))


def output_paths(pairs: list[tuple[str, str]], suffix: str, name_max: int) -> list[str]:
    """Each input's output path: its stem + `suffix`. Inputs that would share one (`a.jpg` and
    `a.png`; case aside, for file systems that ignore it) each add their extension
    (`a_jpg.png`, `a_png.png`); a name that still collides, or that is longer than `name_max`
    bytes, is cut to fit a hash of the input's file name (`a_jpg-0123456789ab.png`)."""
    paths = [stem + suffix for _, stem in pairs]
    for i in _shared(paths):
        paths[i] = f"{pairs[i][1]}_{os.path.splitext(pairs[i][0])[1][1:]}{suffix}"
    shared = _shared(paths)
    for i, ((source, _), path) in enumerate(zip(pairs, paths, strict=True)):
        if i not in shared and len(os.fsencode(os.path.basename(path))) <= name_max:
            continue
        tag = f"-{hashlib.sha256(os.fsencode(os.path.basename(source))).hexdigest()[:12]}{suffix}"
        head, stem = os.path.split(path.removesuffix(suffix))
        while stem and len(os.fsencode(stem + tag)) > name_max:
            stem = stem[:-1]
        paths[i] = os.path.join(head, stem + tag)
    return paths


def _shared(paths: list[str]) -> set[int]:
    """The indices of the paths that another of `paths` equals, case aside."""
    counts = collections.Counter(path.casefold() for path in paths)
    return {i for i, path in enumerate(paths) if counts[path.casefold()] > 1}


def longest_name(directory: str) -> int:
    """The longest file name, in bytes, that the file system of `directory` (or of its nearest
    existing parent) takes; 255 where it does not say."""
    directory = os.path.abspath(directory)
    while not os.path.isdir(directory):
        directory = os.path.dirname(directory)
    try:
        return os.pathconf(directory, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # No pathconf (Windows), or no answer.
        return 255


def read_image(path: str, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 [H, W, channels] and the alpha channel, if the image has one."""
    with Image.open(path, formats=IMAGE_FORMATS) as image:
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
        pad = [(0, generator.accepted_size(side) - side) for side in (height, width)] + [(0, 0)]
        pixels = np.pad(pixels, pad, mode="reflect" if min(height, width) > 1 else "edge")
    return pixels.astype(np.float32) / 127.5 - 1.0


def resize(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bicubic, per channel through Pillow (uint8 or float32 arrays)."""
    planes = np.moveaxis(pixels, -1, 0)
    resized = [Image.fromarray(p).resize((width, height), Image.Resampling.BICUBIC) for p in planes]
    return np.stack([np.asarray(plane) for plane in resized], axis=-1)


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


class Translator:
    """Reads, runs and writes every job, counting failures instead of stopping at them."""

    def __init__(
        self,
        generator: ExportedGenerator,
        fit: str,
        tile: int,
        overlap: int,
        batch_size: int,
        memory_budget: float | None = None,
    ):
        if tile and (tile % generator.multiple or tile < generator.minimum):
            raise TranslateError(
                f"--tile={tile}: tiles must be multiples of {generator.multiple} and at least "
                f"{generator.minimum} pixels for this network\nFix: pass such a --tile, or 0"
            )
        if tile and not 0 <= overlap < tile:
            raise TranslateError(
                f"--tile_overlap={overlap} must be in [0, --tile={tile})\nFix: pass a smaller one"
            )
        self.generator, self.fit, self.tile, self.overlap = generator, fit, tile, overlap
        self.batch_size, self.budget, self.per_pixel = batch_size, memory_budget, None
        self.failures: list[str] = []
        self.progress = lambda done: None

    def prepared(self, jobs: list[Job]) -> Iterator[Job]:
        for job in jobs:
            if os.path.exists(job.source) and os.path.getsize(job.source) == 0:
                self.fail(job, "empty file (0 bytes)")
                continue
            try:
                pixels, job.alpha = read_image(job.source, self.generator.in_channels)
            except (OSError, ValueError, Image.DecompressionBombError) as error:
                self.fail(job, f"cannot be read as {READABLE} ({type(error).__name__}: {error})")
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
        for batch in tiling.batches_of_equal_size(self.prepared(jobs), self.batch_size):
            tile = self.tile or self.tile_to_fit(batch)
            if tile < 0:
                continue
            if tile:
                tiled = (tile, min(self.overlap, tile // 2), self.batch_size)
                outputs = [
                    tiling.run_tiled(self.generator, job.network_input, job.index, *tiled)
                    for job in batch
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

    def tile_to_fit(self, batch: list[Job]) -> int:
        """0 when the batch fits the memory budget whole; else a tile size that fits, said
        on stderr; -1 (the jobs failed) when not even the smallest tile does."""
        if self.budget is None:
            return 0
        if self.per_pixel is None:
            self.per_pixel = self.generator.bytes_per_pixel()
        height, width = batch[0].network_input.shape[:2]
        need = self.per_pixel * height * width * len(batch)
        if need <= self.budget:
            return 0
        g = self.generator
        tile = tiling.largest_tile(
            self.budget, self.per_pixel, self.batch_size, g.multiple, g.minimum
        )
        for job in batch:
            if tile is None:
                self.fail(
                    job,
                    f"needs {need / tiling.GIB:.2f} GiB, more than the budget of "
                    f"{self.budget / tiling.GIB:.2f} GiB even in the smallest tiles",
                )
            else:
                print(
                    f"i2i_jax.translate: {job.source} ({width}x{height}) needs "
                    f"{need / tiling.GIB:.2f} GiB whole, more than the budget of "
                    f"{self.budget / tiling.GIB:.2f} GiB (--memory_limit_gb): translating it "
                    f"in {tile}-px tiles (--tile)",
                    file=sys.stderr,
                )
        return -1 if tile is None else tile


class _ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is a `TranslateError` (status 1), not argparse's status 2."""

    def error(self, message):
        raise TranslateError(f"{message}\nFix: python -m i2i_jax.translate --help lists the flags")


# The command line: flag -> argparse options.
FLAGS = {
    "model": dict(
        required=True,
        help="Directory written by python -m i2i_jax.export, or its <direction>.onnx "
        "(run by onnxruntime).",
    ),
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
    "memory_limit_gb": dict(
        type=float,
        default=0,
        help="Memory the network may use; larger images go in tiles (0: half of what is free).",
    ),
    "seed": dict(type=int, default=0, help="Dropout seed, for train_like artifacts."),
    "overwrite": dict(action="store_true", help="Replace existing outputs (never inputs)."),
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
        raise TranslateError(f"--batch_size={f.batch_size} must be at least 1\nFix: pass 1 or more")
    jobs = plan_jobs(f.input, f.output, "." + f.output_format, f.overwrite)
    generator = ExportedGenerator(f.model, f.direction, f.seed)
    free = tiling.free_memory()
    budget = f.memory_limit_gb * tiling.GIB if f.memory_limit_gb > 0 else free and free / 2
    translator = Translator(generator, f.fit, f.tile, f.tile_overlap, f.batch_size, budget)
    update, close = progress_bar(len(jobs))
    written = translator.run(jobs, update)
    close()
    print(
        f"i2i_jax.translate: wrote {written} of {len(jobs)} images to {f.output}", file=sys.stderr
    )
    if translator.failures:
        failed = ", ".join(translator.failures)
        print(f"i2i_jax.translate: {len(translator.failures)} failed: {failed}", file=sys.stderr)
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
