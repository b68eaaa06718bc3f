"""What a user sees: progress lines, TensorBoard scalars and images, PNG grids, a metrics file.

Only process 0 writes; the others construct a `Reporter` that does nothing but keep time. Files
go through `tf.io.gfile`, so a workdir may be a local path or a bucket (`gs://...`) that every
host of a pod can reach.
"""

import json
import logging
import os
import time

import numpy as np
import tensorflow as tf
from PIL import Image

from i2i_jax.config.workdir import read_json, write_whole

log = logging.getLogger("i2i_jax")

BEST_FILE = "best_fid.json"
METRICS_FILE = "eval_metrics.jsonl"


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}"


def image_grid(rows: np.ndarray) -> np.ndarray:
    """Stacks a batch of [H, W, 3] uint8 rows (each e.g. input | output | target) vertically."""
    return np.concatenate(list(rows), axis=0)


def keep_evaluations_up_to(path: str, start_step: int) -> None:
    """Drops from the metrics file the evaluations that a run resuming at `start_step` makes
    again: those after the checkpoint it resumes from (a killed run wrote them, then lost their
    steps), and step 0's when it starts afresh. A line cut short by a kill goes too. What stays
    is each evaluated step once, as an uninterrupted run would have left it. The file is
    replaced whole, so a kill during this rewrite loses nothing either."""
    if not tf.io.gfile.exists(path):
        return
    with tf.io.gfile.GFile(path) as f:
        lines = f.read().splitlines()
    kept = []
    for line in lines:
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            continue
        if step < start_step or (step == start_step > 0):
            kept.append(line)
    if kept != lines:
        write_whole(path, "".join(f"{line}\n" for line in kept))


class Reporter:
    def __init__(self, workdir: str, start_step: int, total_steps: int, is_writer: bool):
        """Create it once the step is compiled: the first steps/s figure counts from here."""
        self.workdir = workdir
        self.total_steps = total_steps
        self.is_writer = is_writer
        self._writer = (
            tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
            if is_writer
            else None
        )
        self._last_time, self._last_step = time.monotonic(), start_step
        if is_writer:
            keep_evaluations_up_to(os.path.join(workdir, METRICS_FILE), start_step)

    def progress(self, step: int, scalars: dict[str, float]) -> None:
        """One line: step, losses, steps/s since the last line, and the time left at that rate."""
        now = time.monotonic()
        rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
        speed = f"{rate:.2f} steps/s, ETA {format_duration((self.total_steps - step) / rate)}"
        self._last_time, self._last_step = now, step
        losses = " ".join(f"{k}={v:.4f}" for k, v in sorted(scalars.items()) if k != "lr")
        if self.is_writer:
            log.info(
                "step %d/%d  %s  lr=%.2e  %s",
                step,
                self.total_steps,
                losses,
                scalars.get("lr", float("nan")),
                speed,
            )
        self.scalars(step, scalars, prefix="train/")

    def restart_clock(self, step: int) -> None:
        """Excludes pauses (evaluation, checkpoints) from the next steps/s figure."""
        self._last_time, self._last_step = time.monotonic(), step

    def scalars(self, step: int, values: dict[str, float], prefix: str) -> None:
        if self._writer:
            with self._writer.as_default():
                for key, value in values.items():
                    tf.summary.scalar(prefix + key, value, step=step)
            self._writer.flush()

    def evaluation(self, step: int, results: dict[str, float], grid: np.ndarray | None) -> None:
        """Appends the results to eval_metrics.jsonl, logs them, writes the sample grid (if
        there is one)."""
        if not self.is_writer:
            return
        record = {"step": step, **{k: float(v) for k, v in results.items()}}
        with tf.io.gfile.GFile(os.path.join(self.workdir, METRICS_FILE), "a") as f:
            f.write(json.dumps(record) + "\n")
        self._record_best(record)
        log.info("eval at step %d: %s", step, " ".join(f"{k}={v:.4f}" for k, v in results.items()))
        self.scalars(step, results, prefix="eval/")
        if grid is None:
            return
        samples_dir = os.path.join(self.workdir, "samples")
        tf.io.gfile.makedirs(samples_dir)
        with tf.io.gfile.GFile(os.path.join(samples_dir, f"step_{step:08d}.png"), "wb") as f:
            Image.fromarray(grid).save(f, format="PNG")
        with self._writer.as_default():
            tf.summary.image("samples/input_output_target", grid[None], step=step)
        self._writer.flush()

    def _record_best(self, record: dict) -> None:
        """`best_fid.json`: the evaluation with the lowest FID (summed over directions) so
        far, the step to export or fine-tune from; untrained (step 0) models do not count."""
        fids = [v for k, v in record.items() if k == "fid" or k.startswith("fid_")]
        if not fids or record["step"] == 0:
            return
        path = os.path.join(self.workdir, BEST_FILE)
        best = read_json(path, "the best FID so far") or {}
        if isinstance(best.get("fid_total"), int | float) and best["fid_total"] <= sum(fids):
            return
        write_whole(path, json.dumps({**record, "fid_total": sum(fids)}, indent=1))
        log.info("best FID so far: %.3f at step %d (%s)", sum(fids), record["step"], BEST_FILE)

    def close(self) -> None:
        if self._writer:
            self._writer.close()
