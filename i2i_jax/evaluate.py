"""`python -m i2i_jax.evaluate --workdir=DIR`: a checkpoint over every image of a split, as the
reference's test.py, with a results page.

Writes to `--output` (default `DIR/results/<split>_<mode>_step<N>/`):
- `images/<name>_<panel>.png`: per test image, named after its source file, the panels of the
  reference's test.py: Pix2Pix `real_A`, `fake_B`, `real_B`; CycleGAN `real_A`, `fake_B`,
  `rec_A` and `real_B`, `fake_A`, `rec_B`;
- `index.html`: a row per image with its metrics, worst first, the averages on top;
- `metrics.json`: the averages, every image's metrics, the checkpoint step, split and mode;
  with `--fid_weights` (pytorch-fid's Inception weights), also each translation's FID and KID
  against the real images of its target domain, as pytorch-fid computes them.

The scores are those of training's evaluation (the same `Evaluator`): on the split and mode a
run evaluated in, they equal its `eval_metrics.jsonl` at that step. Every device of every
process takes part and each image is scored once; process 0 writes. An earlier evaluation is
replaced only with `--overwrite`, and nothing else ever is (`outputs.check_output`); the output
appears whole or not at all.
"""

import contextlib
import hashlib
import io
import json
import logging
import os

import numpy as np
import tensorflow as tf
from absl import flags
from jax.experimental import multihost_utils
from PIL import Image

from i2i_jax import cli, distributed, export, fid_inception, outputs, parallel, results_page
from i2i_jax import config as config_lib
from i2i_jax.config import workdir as workdir_config
from i2i_jax.data import pipeline, sources
from i2i_jax.errors import UsageError
from i2i_jax.evaluation import PANELS, Evaluator
from i2i_jax.tasks.common import TEST_MODES

log = logging.getLogger("i2i_jax")
NAME_MAX = 255  # Bytes in a file name, on every common file system.


def evaluate_workdir(
    workdir: str,
    step: int | None = None,
    split: str | None = None,
    mode: str | None = None,
    output: str | None = None,
    overwrite: bool = False,
    fid_weights: str | None = None,
) -> dict:
    """Evaluates `workdir`'s checkpoint of `step` (latest by default) on `split` (the config's
    eval split) in `mode` (its eval_mode); returns what metrics.json holds."""
    pipeline.hide_accelerators_from_tensorflow()
    config = workdir_config.load(workdir)
    config.data.eval_split = split or config.data.eval_split
    config.eval_mode = mode or config.eval_mode
    config.fid_weights = fid_weights or config.get("fid_weights", "")
    if config.eval_mode not in TEST_MODES:
        raise UsageError(f"--mode={config.eval_mode!r} is not one of {TEST_MODES}")
    mesh = parallel.make_mesh()
    config_lib.validate(config, mesh.size)
    task, state = export.restore_state(workdir, config, mesh, step, purpose="evaluate")
    step = int(state.step)
    output = output or os.path.join(
        workdir, "results", f"{config.data.eval_split}_{config.eval_mode}_step{step}"
    )
    rules = dict(
        what="an i2i_jax evaluation", is_ours=is_evaluation, overwrite=overwrite, workdir=workdir
    )
    outputs.check_output(output, **rules)
    eval_sources = sources.eval_sources(config)
    evaluator = Evaluator(task, eval_sources, config, mesh)
    writer = distributed.is_first_process()
    with outputs.staged(output, **rules) if writer else contextlib.nullcontext() as staging:
        if writer:
            tf.io.gfile.makedirs(os.path.join(staging, "images"))
        tables, averages = _score(evaluator, eval_sources, state, config.model, staging, writer)
        summary = _summary(workdir, step, config, tables, averages)
        if writer:
            _write_results(staging, summary, tables)
    multihost_utils.sync_global_devices("i2i_jax: evaluation written")
    log.info(
        "evaluated step %d on %s (%s mode): %s -> %s",
        step,
        config.data.eval_split,
        config.eval_mode,
        " ".join(f"{k}={v:.4f}" for k, v in sorted(averages.items())),
        os.path.join(output, "index.html"),
    )
    return summary


def is_evaluation(path: str) -> bool:
    """Whether `path` holds an evaluation this tool wrote: its metrics.json."""
    written = (
        workdir_config.read_json(os.path.join(path, "metrics.json"), "the evaluation it describes")
        or {}
    )
    return {"workdir", "step", "split", "mode", "averages"} <= written.keys()


def _summary(workdir: str, step: int, config, tables: dict, averages: dict) -> dict:
    return {
        "workdir": os.path.abspath(workdir),
        "step": step,
        "split": config.data.eval_split,
        "mode": config.eval_mode,
        "model": config.model,
        "num_images": {d: len(t["rows"]) for d, t in tables.items()},
        "averages": dict(sorted(averages.items())),
    }


def _score(evaluator, eval_sources, state, model: str, staging: str, writer: bool):
    """Every image's metrics (rows of a table per direction, their PNGs written into
    `staging` by the writer) and the averages, FID and KID included where configured."""
    tables = {d: {"panels": p, "rows": []} for d, p in PANELS[model].items()}
    file_stems = {d: set() for d in tables}
    distributions = evaluator.distribution_scores()
    for batch in evaluator.batches(state):
        images = multihost_utils.process_allgather(batch.images, tiled=True)
        if distributions:
            distributions.add(batch.direction, images[batch.mask > 0])
        panels = tables[batch.direction]["panels"]
        for slot in np.flatnonzero(batch.mask > 0):
            name = eval_sources[batch.direction].name_of(int(batch.index[slot]))
            stem = _file_stem(name, file_stems[batch.direction], panels)
            files = [f"images/{stem}_{panel}.png" for panel in panels]
            if writer:
                for path, panel in zip(
                    files, np.split(images[slot], len(panels), axis=1), strict=True
                ):
                    _write_png(os.path.join(staging, path), panel)
            tables[batch.direction]["rows"].append(
                {
                    "name": name,
                    "images": files,
                    "metrics": {k: float(v[slot]) for k, v in batch.metrics.items()},
                }
            )
    averages = {}
    for table in tables.values():
        for key in {k for row in table["rows"] for k in row["metrics"]}:
            averages[key] = float(np.mean([row["metrics"][key] for row in table["rows"]]))
    if distributions:
        averages.update(distributions())
    else:
        log.info(
            "FID and KID not computed: set --fid_weights to pytorch-fid's %s (%s)",
            fid_inception.WEIGHTS_FILE,
            fid_inception.WEIGHTS_URL,
        )
    return tables, averages


def _write_results(staging: str, summary: dict, tables: dict) -> None:
    """metrics.json and index.html beside the PNGs."""
    with tf.io.gfile.GFile(os.path.join(staging, "metrics.json"), "w") as f:
        json.dump({**summary, "images": {d: t["rows"] for d, t in tables.items()}}, f, indent=1)
    title = f"{os.path.basename(summary['workdir'])}: {summary['split']}, step {summary['step']}"
    page_summary = {k: v for k, v in summary.items() if k not in ("averages", "num_images")}
    page_summary["images"] = ", ".join(f"{d}: {n}" for d, n in summary["num_images"].items())
    page_summary.update(summary["averages"])
    with tf.io.gfile.GFile(os.path.join(staging, "index.html"), "w") as f:
        f.write(results_page.render(title, page_summary, tables))


def _file_stem(name: str, taken: set[str], panels: tuple[str, ...]) -> str:
    """A stem for `name`'s image files, not yet in `taken` (which it joins): `a.jpg` and
    `a.png` are both `a`, so the second becomes `a~2`; and short enough that the longest
    `<stem>_<panel>.png` fits the file system's 255-byte limit (cut, with a hash kept)."""
    room = NAME_MAX - max(len(f"_{panel}.png".encode()) for panel in panels) - 12
    stem = name
    if len(stem.encode()) > room:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        stem = stem.encode()[: room - 9].decode(errors="ignore") + "-" + digest
    unique, count = stem, 1
    while unique in taken:
        count += 1
        unique = f"{stem}~{count}"
    taken.add(unique)
    return unique


def _write_png(path: str, image: np.ndarray) -> None:
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG")
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(buffer.getvalue())


def define_flags() -> None:
    """Only when run as a program, so importing this module defines no flags."""
    flags.DEFINE_string("workdir", None, "A training workdir (python -m i2i_jax.main).")
    flags.DEFINE_integer("step", None, "The checkpoint's step; default: the latest.")
    flags.DEFINE_string("split", None, "The split to evaluate; default: the config's eval_split.")
    flags.DEFINE_enum("mode", None, TEST_MODES, "Test-time mode; default: the config's eval_mode.")
    flags.DEFINE_string(
        "output", None, "Directory to write to; default: WORKDIR/results/<split>_<mode>_step<N>."
    )
    flags.DEFINE_bool("overwrite", False, "Replace an earlier evaluation in --output.")
    flags.DEFINE_string(
        "fid_weights",
        None,
        f"pytorch-fid's {fid_inception.WEIGHTS_FILE} (or its converted .npz): adds FID and KID; "
        "default: the config's fid_weights.",
    )
    flags.mark_flags_as_required(["workdir"])


def main():
    f = flags.FLAGS
    distributed.initialize("auto")  # Joins when a cluster manager started several tasks.
    evaluate_workdir(f.workdir, f.step, f.split, f.mode, f.output, f.overwrite, f.fid_weights)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
