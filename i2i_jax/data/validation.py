"""A scan of a folder dataset before training: every image is opened and decoded once, so a
broken file stops the run (or is left out) now, with its name and what is wrong with it, rather
than killing the run when the pipeline reaches it hours later.

Results are cached per folder in `$I2I_JAX_CACHE` (default `~/.cache/i2i_jax`), keyed by the
files' names, sizes and modification times and by the rules applied, so an unchanged dataset
is scanned once.
"""

import collections
import hashlib
import json
import logging
import os

import tensorflow as tf

from i2i_jax.data.files import BadImageError, load_image
from i2i_jax.errors import DataError

log = logging.getLogger("i2i_jax")

# PIL modes that are converted on reading (decoded to 8-bit RGB, then to the configured
# channel count), with the words a notice uses for them.
_CONVERTED_MODES = {
    "1": "1-bit",
    "L": "grayscale",
    "LA": "grayscale with alpha",
    "I;16": "16-bit",
    "I;16B": "16-bit",
    "I": "32-bit",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGBA (alpha dropped)",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
}
_SCAN_VERSION = 2  # Bump when the rules change, so that old cached verdicts are not reused.


def cache_dir() -> str:
    return os.environ.get("I2I_JAX_CACHE", os.path.expanduser("~/.cache/i2i_jax"))


def check_image(path: str, side_by_side: bool, min_side: int) -> tuple[str | None, str]:
    """(why the file cannot be trained on, or None; its PIL mode).

    `side_by_side`: the file holds A | B halves, so its width must be even. `min_side`: each
    image (each half) must be at least this wide and high (a crop taken without resizing).
    """
    try:
        image = load_image(path)
    except BadImageError as error:
        return str(error), ""
    mode, (width, height) = image.mode, image.size
    try:  # The decoder training uses must agree.
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as error:
        return f"TensorFlow cannot decode it ({error.message.splitlines()[0][:120]})", mode
    if side_by_side and width % 2:
        return (f"odd width {width}: an A|B image is two halves of equal width", mode)
    image_width = width // 2 if side_by_side else width
    if min(image_width, height) < min_side:
        what = "each half is" if side_by_side else "it is"
        return (
            f"{what} {image_width}x{height}, smaller than the {min_side}x{min_side} crop "
            "(preprocess=crop does not resize)",
            mode,
        )
    return None, mode


def _cache_key(files: list[str], side_by_side: bool, min_side: int) -> str:
    digest = hashlib.sha256(json.dumps([_SCAN_VERSION, side_by_side, min_side]).encode())
    for path in files:
        try:
            stat = os.stat(path)
            state = f"{stat.st_size}\0{stat.st_mtime_ns}"
        except OSError as error:  # A dangling link or a loop: a bad file, scanned as one.
            state = f"unreadable {error.errno}"
        digest.update(f"{path}\0{state}\n".encode())
    return digest.hexdigest()[:32]


def _cached_scan(path: str) -> dict:
    """A scan's result as `scan` cached it; ValueError if the file holds anything else."""
    with open(path) as f:
        result = json.load(f)
    if not (
        isinstance(result, dict)
        and isinstance(result.get("bad"), dict)
        and isinstance(result.get("modes"), dict)
    ):
        raise ValueError("not a scan result")
    return result


def scan(files: list[str], side_by_side: bool, min_side: int) -> dict:
    """`{"bad": {path: why}, "modes": {mode: count}}` for these files, from the cache when
    none of them changed since the last scan."""
    path = os.path.join(cache_dir(), "scans", _cache_key(files, side_by_side, min_side) + ".json")
    if os.path.exists(path):
        try:
            return _cached_scan(path)
        except (OSError, ValueError) as error:  # The scan is redone and the cache rewritten.
            log.warning(
                "ignoring the unreadable data scan cache %s (%s); scanning again", path, error
            )
    bad, modes = {}, collections.Counter()
    for file in files:
        why, mode = check_image(file, side_by_side, min_side)
        if why:
            bad[file] = why
        else:
            modes[mode] += 1
    result = {"bad": bad, "modes": dict(modes)}
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.tmp"  # Processes of one job may scan at once.
        with open(partial, "w") as f:
            json.dump(result, f)
        os.replace(partial, path)
    except OSError as error:  # The scan stands; only the next run's shortcut is lost.
        log.warning("could not cache the data scan in %s: %s", path, error)
    return result


def usable_files(
    files: list[str], directory: str, *, side_by_side: bool, min_side: int, on_bad_image: str
) -> list[str]:
    """The files of `directory` to train on, per the `on_bad_image` policy
    (`config.data.on_bad_image`): `error` stops with every bad file and why; `skip` leaves them
    out and says which. `side_by_side` and `min_side` are as for `check_image`."""
    bad = find_bad(files, directory, side_by_side=side_by_side, min_side=min_side)
    if bad:
        report_bad(bad, len(files), directory, on_bad_image=on_bad_image)
    return [f for f in files if f not in bad]


def find_bad(
    files: list[str], directory: str, *, side_by_side: bool, min_side: int
) -> dict[str, str]:
    """{file: why} for the files of `directory` that cannot be trained on (see `check_image`;
    `min_side` is the crop size with `preprocess=crop`, else 1); logs a notice of the ones that
    will be converted."""
    result = scan(files, side_by_side, min_side)
    converted = {mode: n for mode, n in result["modes"].items() if mode in _CONVERTED_MODES}
    if converted:
        kinds = sorted(f"{n} {_CONVERTED_MODES[m]}" for m, n in converted.items())
        log.info(
            "%s: converting %s image(s) to RGB, then to the configured channels",
            directory,
            ", ".join(kinds),
        )
    return result["bad"]


def report_bad(bad: dict[str, str], total: int, directory: str, *, on_bad_image: str) -> None:
    """Stops on files that cannot be trained on (`on_bad_image="error"`), listing each and
    why, or logs them (`"skip"`); stops either way when none of the `total` is usable."""
    listing = "\n".join(f"  {path}: {why}" for path, why in sorted(bad.items()))
    if on_bad_image != "skip":
        raise DataError(
            f"{directory}: {len(bad)} of {total} images cannot be trained on:\n"
            f"{listing}\nFix: repair or remove these files, or pass "
            "--config.data.on_bad_image=skip to train without them"
        )
    if len(bad) == total:
        raise DataError(
            f"{directory}: none of its {total} images can be trained on:\n"
            f"{listing}\nFix: repair or replace these files"
        )
    log.warning(
        "%s: skipping %d of %d images that cannot be trained on:\n%s",
        directory,
        len(bad),
        total,
        listing,
    )
