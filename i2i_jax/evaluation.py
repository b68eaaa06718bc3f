"""`Evaluator`: the generators over every example of the eval split(s), as training's periodic
evaluation and the evaluate command both run them, so that the two report the same numbers."""

import collections
import functools
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from i2i_jax import parallel
from i2i_jax.data import pipeline
from i2i_jax.reporting import image_grid


class EvalBatch(NamedTuple):
    """One global batch of one direction, gathered on every process: per-example metrics,
    which slots hold a real example (`mask`), each slot's example index, and the images (a
    global array, gathered only by whoever needs them)."""

    direction: str
    metrics: dict[str, np.ndarray]
    mask: np.ndarray
    index: np.ndarray
    images: jax.Array


class Evaluator:
    """Scores the generators on every example of the eval split(s) and builds the sample grid.

    One pass per translation direction of the task (Pix2Pix: AtoB; CycleGAN: AtoB and BtoA),
    each over the source of its inputs. Metrics are averaged over the examples that have them.
    """

    def __init__(self, task, eval_sources, config, mesh):
        self.sources, self.config, self.mesh = eval_sources, config, mesh
        self.step_fns = {
            d: jax.jit(functools.partial(task.eval_step, direction=d)) for d in task.generators()
        }

    def batches(self, state) -> Iterator[EvalBatch]:
        """Every global batch of every direction; each example is scored once, by one device."""
        for direction, step_fn in self.step_fns.items():
            for host_batch, host_mask in pipeline.eval_batches(
                self.sources[direction],
                self.config,
                self.config.eval_batch_size,
                jax.process_index(),
                jax.process_count(),
            ):
                outputs = step_fn(state, parallel.to_global(host_batch, self.mesh))
                images = outputs.pop("images")
                outputs, mask, index = multihost_utils.process_allgather(
                    (outputs, host_mask, host_batch["index"]), tiled=True
                )
                yield EvalBatch(direction, outputs, mask, index, images)

    def __call__(self, state) -> tuple[dict[str, float], np.ndarray | None]:
        """The mean metrics and the sample grid (None when `num_sample_images` is 0)."""
        sums, counts = collections.defaultdict(float), collections.defaultdict(float)
        samples = collections.defaultdict(list)
        for batch in self.batches(state):
            for key, values in batch.metrics.items():
                sums[key] += float(np.sum(values * batch.mask))
                counts[key] += float(batch.mask.sum())
            kept = samples[batch.direction]
            wanted = self.config.num_sample_images - sum(len(s) for s in kept)
            if wanted > 0:  # The same on every process, so the collectives match.
                images = multihost_utils.process_allgather(batch.images, tiled=True)
                kept.append(images[batch.mask > 0][:wanted])
        grids = [image_grid(np.concatenate(kept)) for kept in samples.values() if kept]
        grid = np.concatenate(grids, axis=0) if grids else None
        return {k: sums[k] / counts[k] for k in sums}, grid
