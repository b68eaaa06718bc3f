"""`Evaluator`: the generators over every example of the eval split(s), as training's periodic
evaluation and the evaluate command both run them, so that the two report the same numbers."""

import collections
import functools
from collections.abc import Iterator
from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils

from i2i_jax import fid, fid_inception, parallel
from i2i_jax.data import pipeline
from i2i_jax.reporting import image_grid

# The panels of each direction's sample row, named as the reference's test.py names its images.
PANELS = {
    "pix2pix": {"AtoB": ("real_A", "fake_B", "real_B")},
    "cycle_gan": {"AtoB": ("real_A", "fake_B", "rec_A"), "BtoA": ("real_B", "fake_A", "rec_B")},
}


class EvalBatch(NamedTuple):
    """One global batch of one direction, gathered on every process: per-example metrics,
    which slots hold a real example (`mask`), each slot's example index, and the images (a
    global array, gathered only by whoever needs them)."""

    direction: str
    metrics: dict[str, np.ndarray]
    mask: np.ndarray
    index: np.ndarray
    images: jax.Array


_inception_features = jax.jit(fid_inception.features)


class DistributionScores:
    """FID and KID of each direction's translations (its `fake_X` panels) against the real
    images of their domain (the `real_X` panels, in whichever direction shows them), from
    pytorch-fid's Inception features, collected batch by batch. Named `fid`/`kid` for a task
    with one direction, `fid_AtoB`... for CycleGAN."""

    def __init__(self, weights: dict, panels: dict[str, tuple[str, ...]]):
        self.weights = weights  # On the device already: put there once per run.
        self.panels = panels
        self.features = collections.defaultdict(list)

    def add(self, direction: str, rows: np.ndarray) -> None:
        """`rows`: uint8 sample rows (the direction's panels side by side) of real examples."""
        names = self.panels[direction]
        for name, panel in zip(names, np.split(rows, len(names), axis=2), strict=True):
            if name.startswith(("fake_", "real_")):
                self.features[name].append(np.asarray(_inception_features(self.weights, panel)))

    def __call__(self) -> dict[str, float]:
        scores = {}
        for direction, names in self.panels.items():
            suffix = "" if len(self.panels) == 1 else f"_{direction}"
            fake = next(name for name in names if name.startswith("fake_"))
            fakes = np.concatenate(self.features[fake])
            reals = np.concatenate(self.features["real_" + fake.removeprefix("fake_")])
            scores[f"fid{suffix}"] = fid.frechet_distance(fakes, reals)
            scores[f"kid{suffix}"] = fid.kernel_inception_distance(fakes, reals)[0]
        return scores


class Evaluator:
    """Scores the generators on every example of the eval split(s) and builds the sample grid.

    One pass per translation direction of the task (Pix2Pix: AtoB; CycleGAN: AtoB and BtoA),
    each over the source of its inputs. Metrics are averaged over the examples that have them;
    with `config.fid_weights` (pytorch-fid's Inception weights) FID and KID are added.
    """

    def __init__(self, task, eval_sources, config, mesh):
        self.sources, self.config, self.mesh = eval_sources, config, mesh
        self.step_fns = {
            d: jax.jit(functools.partial(task.eval_step, direction=d)) for d in task.generators()
        }
        weights_file = config.get("fid_weights", "")  # Configs before it had none.
        self.inception = None
        if weights_file:
            self.inception = jax.device_put(fid_inception.load_weights(weights_file))

    def distribution_scores(self) -> DistributionScores | None:
        """A fresh FID/KID collector where Inception weights are configured, else None."""
        if self.inception is None:
            return None
        return DistributionScores(self.inception, PANELS[self.config.model])

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
        distributions = self.distribution_scores()
        for batch in self.batches(state):
            for key, values in batch.metrics.items():
                sums[key] += float(np.sum(values * batch.mask))
                counts[key] += float(batch.mask.sum())
            kept = samples[batch.direction]
            wanted = self.config.num_sample_images - sum(len(s) for s in kept)
            if wanted > 0 or distributions:  # The same on every process: collectives match.
                images = multihost_utils.process_allgather(batch.images, tiled=True)
                images = images[batch.mask > 0]
                if wanted > 0:
                    kept.append(images[:wanted])
                if distributions:
                    distributions.add(batch.direction, images)
        grids = [image_grid(np.concatenate(kept)) for kept in samples.values() if kept]
        grid = np.concatenate(grids, axis=0) if grids else None
        results = {k: sums[k] / counts[k] for k in sums}
        if distributions:
            results.update(distributions())
        return results, grid
