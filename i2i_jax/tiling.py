"""Large images in overlapping tiles, and how large an image the network can take whole.

Part of the serving tool: `translate.py` imports it, and it travels with translate.py and
exported_generator.py in every exported artifact (numpy and jax only, none of this project's
other code).
"""

from collections.abc import Callable, Iterator

import jax
import numpy as np

GIB = 2**30


def batches_of_equal_size(jobs: Iterator, batch_size: int) -> Iterator[list]:
    """Groups jobs whose `network_input`s have one shape, `batch_size` at most. At most
    2 x `batch_size` jobs wait for others of their shape: one more sends the partial batch that
    has waited longest on its way, so many distinct sizes cannot fill the host's memory."""
    pending: dict[tuple, list] = {}
    waiting = 0
    for job in jobs:
        shape = job.network_input.shape
        pending.setdefault(shape, []).append(job)
        waiting += 1
        if len(pending[shape]) == batch_size:
            batch = pending.pop(shape)
        elif waiting > 2 * batch_size:
            batch = pending.pop(next(iter(pending)))  # Insertion order: the oldest first.
        else:
            continue
        waiting -= len(batch)
        yield batch
    yield from pending.values()


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
    generator: Callable[[np.ndarray, np.ndarray], np.ndarray],
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


def bytes_per_pixel(compiled: jax.stages.Compiled, pixels: int, channels: int) -> float:
    """What one input pixel costs the network in memory, from XLA's own figures for a program
    `compiled` for `pixels` pixels (activations and output, plus the float32 input); it grows
    linearly with the pixel count, so it prices any other size. 0 where XLA has no figures."""
    analysis = compiled.memory_analysis()
    if analysis is None:
        return 0.0
    return (analysis.temp_size_in_bytes + analysis.output_size_in_bytes) / pixels + 4 * channels


def free_memory() -> int | None:
    """Bytes free where the network runs: the accelerator's, or the host's available memory
    (Linux); None where neither is known."""
    stats = jax.devices()[0].memory_stats() or {}
    if "bytes_limit" in stats:
        return stats["bytes_limit"] - stats.get("bytes_in_use", 0)
    try:
        with open("/proc/meminfo") as f:
            fields = dict(line.split(":", 1) for line in f)
        return int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return None


def largest_tile(budget: float, per_pixel: float, batch: int, multiple: int, minimum: int):
    """The largest square tile, a multiple of `multiple` and at least `minimum`, of which
    `batch` fit in `budget` bytes; None if not even the smallest does."""
    side = int((budget / (per_pixel * batch)) ** 0.5) // multiple * multiple
    return side if side >= minimum else None
