"""`train_and_evaluate`: the training loop, periodic evaluation, sample grids and checkpoints."""

import itertools
import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

from i2i_jax import (
    checkpointing,
    compilation_cache,
    distributed,
    guards,
    host_memory,
    init_from,
    optim,
    parallel,
    preemption,
    profiling,
    tasks,
    traced_steps,
    workdir_lock,
)
from i2i_jax import config as config_lib
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.config import workdir as workdir_config
from i2i_jax.data import pipeline, sources
from i2i_jax.errors import ConfigError, DataError, first_line
from i2i_jax.evaluation import Evaluator
from i2i_jax.models import conv_forms
from i2i_jax.reporting import Reporter

log = logging.getLogger("i2i_jax")


class Pending:
    """Step metrics not yet fetched from the devices; fetched (and checked for NaN and
    infinities) only at log steps and before a checkpoint, so the loop never waits otherwise."""

    def __init__(self):
        self.steps, self.metrics = [], []

    def add(self, step: int, metrics) -> None:
        self.steps.append(step)
        self.metrics.append(metrics)

    def check(self, checkpointer: Checkpointer, config, state=None) -> list[dict]:
        """The fetched metrics; a NaN or infinity among them (or in the parameters of
        `state`) stops the run."""
        fetched = jax.device_get(self.metrics)
        bad = guards.first_non_finite(self.steps, fetched)
        if bad is None and state is not None and not guards.parameters_are_finite(state):
            bad = (self.steps[-1], fetched[-1]) if fetched else (int(state.step), {})
            raise guards.diverged(
                *bad,
                config.lr,
                _last_good(checkpointer),
                what="the parameters became NaN or infinite",
            )
        if bad is not None:
            raise guards.diverged(*bad, config.lr, _last_good(checkpointer))
        return fetched

    def checked_mean(self, checkpointer: Checkpointer, config) -> dict[str, float]:
        """The mean of each metric over the pending steps, which are then done with."""
        fetched = self.check(checkpointer, config)
        self.steps, self.metrics = [], []
        return {k: float(np.mean([m[k] for m in fetched])) for k in fetched[0]}


def _last_good(checkpointer: Checkpointer) -> str:
    """Which checkpoint a rerun resumes from. Every saved one is good: metrics and parameters
    are checked before each save, so none holds a non-finite value."""
    checkpointer.manager.wait_until_finished()
    latest = checkpointer.latest_step()
    return (
        f"the last good checkpoint, step {latest}, is kept"
        if latest is not None
        else "no checkpoint had been saved"
    )


def _after_evaluation(state, results: dict[str, float], config):
    """`state` with `lr_policy=plateau`'s state moved by this evaluation (before the step's
    checkpoint, which therefore holds it). Every process computes the same from the same
    gathered results."""
    if state.plateau is None:
        return state
    plateau = optim.plateau_after(
        state.plateau, _watched(results, config), config.plateau_patience, config.lr
    )
    if plateau["scale"] < state.plateau["scale"]:
        log.info("%s has not improved: learning rate x%g", config.plateau_metric, plateau["scale"])
    return state.replace(plateau=parallel.like_replicated(plateau, state.plateau))


def _watched(results: dict[str, float], config) -> float:
    """The value of `plateau_metric` in `results`; checked on the untrained model's evaluation
    already, so that a wrong name stops the run before its first step."""
    if config.plateau_metric not in results:
        raise ConfigError(
            "plateau_metric",
            config.plateau_metric,
            f"the evaluation measures no such metric; it measures {', '.join(sorted(results))}",
            f"--config.plateau_metric={sorted(results)[0]} (or another of those)",
        )
    return results[config.plateau_metric]


def _after_a_data_break(error: DataError, step: int, state, config, checkpointer, pending):
    """(sources, batches from `step` on) after the batch of `step` failed to read: a file
    changed or broke since the scan that started the run.

    With `data.on_bad_image=skip`, a new scan leaves the broken files out (and names them) and
    training goes on. With `error`, a checkpoint of the last finished step is saved first, then
    the run stops naming the files, so that the rerun after the fix loses no step. (One process
    of several cannot save alone: it stops, and the job resumes from its last checkpoint.)
    """
    log.warning("reading the batch of step %d failed: %s", step, first_line(error))
    if config.data.on_bad_image == "skip":
        rebuilt = sources.train_sources(config)
        batches = pipeline.train_batches(
            rebuilt, config, config.batch_size, step - 1, jax.process_index(), jax.process_count()
        )
        return rebuilt, batches
    saved = ""
    if jax.process_count() == 1:
        pending.check(checkpointer, config, state)
        checkpointer.maybe_save(step - 1, state, force=True)
        checkpointer.manager.wait_until_finished()
        saved = (
            f"A checkpoint of step {step - 1}, the last finished step, is saved: the rerun "
            "resumes from it and loses no step.\n"
        )
    try:
        sources.train_sources(config)  # The scan names every file that cannot be read now.
    except DataError as named:
        error = named
    what, _, fix = str(error).rpartition("\nFix: ")
    raise DataError(f"during the run, at step {step}: {what}\n{saved}Fix: {fix}") from None


def _sources_in_turn(config):
    """Process 0 builds the sources first (preparing a TFDS dataset if needed) while the others
    wait, so that several processes never write the same dataset files at once."""
    if jax.process_index() == 0:
        built = sources.train_sources(config), sources.eval_sources(config)
    multihost_utils.sync_global_devices("i2i_jax: datasets prepared")
    if jax.process_index() != 0:
        built = sources.train_sources(config), sources.eval_sources(config)
    return built


def train_and_evaluate(
    config, workdir: str, allow_config_change: bool = False, profile_steps: int = 0
):
    """Trains `config.model` in `workdir`, resuming from its latest checkpoint if there is one
    (and refusing to if `config` differs from the workdir's, unless `allow_config_change`).
    `profile_steps` > 0 traces that many steps after the first into `<workdir>/profile`.

    Every process of a multi-process job runs this; process 0 alone writes logs, metrics and
    images, and holds the workdir's lock (`workdir_lock`) for the job's life. A workdir
    without checkpoints must be empty or an earlier start of the same config. Returns the
    final train state and the last evaluation's results (empty if no evaluation ran).
    """
    pipeline.hide_accelerators_from_tensorflow()
    mesh = parallel.make_mesh()
    config_lib.validate(config, mesh.size)
    guards.check_workdir(workdir)
    lock = workdir_lock.acquire_for_job(workdir)  # Before anything else is written there.
    try:
        return _train(config, workdir, mesh, allow_config_change, profile_steps)
    finally:
        if lock is not None:
            lock.release()


def _train(config, workdir: str, mesh, allow_config_change: bool, profile_steps: int):
    """`train_and_evaluate` once the workdir is this run's alone."""
    is_writer = distributed.is_first_process()
    resume_step = checkpointing.latest_saved_step(workdir)
    if resume_step is None:
        workdir_config.check_fresh_start(config, workdir, allow_config_change)
    checkpointer = Checkpointer(workdir, config.checkpoint_every_steps, config.keep_checkpoints)
    workdir_config.check_and_record(config, workdir, resume_step, allow_config_change, is_writer)

    train_sources, eval_sources = _sources_in_turn(config)
    for role, group in (("train", train_sources), ("eval", list(eval_sources.values()))):
        log.info("%s data: %s", role, "; ".join(s.description for s in group))
    examples_at_start = sum(s.num_examples for s in train_sources)
    # An epoch is a pass over the largest training stream (CycleGAN: the larger domain).
    steps_per_epoch = max(1, max(s.num_examples for s in train_sources) // config.batch_size)
    total_steps = optim.total_steps(config, steps_per_epoch)
    task_config = config.copy_and_resolve_references()
    task_config.conv_lowering = conv_forms.for_platform(
        config.conv_lowering, mesh.devices.flat[0].platform
    )
    task = tasks.build_task(task_config, steps_per_epoch)

    state = parallel.init_replicated(task.init_state, config.seed, mesh)
    guards.check_free_space(workdir, state)
    restored = checkpointer.restore_latest(state)
    if restored is not None:
        state = restored
        log.info("resumed from %s at step %d", checkpointer.manager.directory, int(state.step))
    elif config.get("init_from"):  # Configs before it had none.
        state = init_from.load_networks(config.init_from, state)
        log.info("started every network from %s (fine-tuning)", config.init_from)
    start_step = int(state.step)
    host_memory.release_freed_memory()  # What building (and restoring) the state freed.

    evaluate = Evaluator(task, eval_sources, config, mesh)
    batches = pipeline.train_batches(
        train_sources,
        config,
        config.batch_size,
        start_step,
        jax.process_index(),
        jax.process_count(),
    )
    first_batch = next(batches)
    train_step = traced_steps.compile_train_step(
        task.train_step,
        mesh,
        state,
        parallel.to_global(first_batch, mesh),
        identity=f"{workdir_config.to_json(task_config)}steps per epoch: {steps_per_epoch}",
        directory=compilation_cache.directory(),
    )
    batches = itertools.chain([first_batch], batches)
    host_memory.release_freed_memory()  # What compiling the step freed.
    reporter = Reporter(workdir, start_step, total_steps, is_writer)
    log.info(
        "training %s from step %d to %d (%d steps/epoch) on %d devices",
        config.model,
        start_step,
        total_steps,
        steps_per_epoch,
        mesh.size,
    )

    results = {}
    if start_step == 0 and config.eval_every_steps > 0:
        results, grid = evaluate(state)  # The untrained model: where learning starts from.
        reporter.evaluation(0, results, grid)
        if state.plateau is not None:
            _watched(results, config)
        reporter.restart_clock(start_step)
    pending = Pending()
    tracer = profiling.StepTracer(workdir, start_step, profile_steps, is_writer)
    try:
        with preemption.SigtermFlag() as sigterm:
            for step in range(start_step + 1, total_steps + 1):
                try:
                    batch = next(batches)
                except DataError as error:
                    train_sources, batches = _after_a_data_break(
                        error, step, state, config, checkpointer, pending
                    )
                    log.warning(
                        "training goes on without the files that broke (examples left out "
                        "since the start: %d)",
                        examples_at_start - sum(s.num_examples for s in train_sources),
                    )
                    batch = next(batches)
                with tracer.step(step):
                    state, step_metrics = train_step(state, parallel.to_global(batch, mesh))
                tracer.finish(step, step_metrics)
                pending.add(step, step_metrics)
                log_step = step % config.log_every_steps == 0 or step == total_steps
                if log_step:  # Host syncs only at log steps (and before saving).
                    reporter.progress(step, pending.checked_mean(checkpointer, config))
                paused = False
                if config.eval_every_steps > 0 and (
                    step % config.eval_every_steps == 0 or step == total_steps
                ):
                    results, grid = evaluate(state)
                    reporter.evaluation(step, results, grid)
                    state = _after_evaluation(state, results, config)
                    paused = True
                stop = sigterm.stop_now(jax.process_count(), at_sync_point=log_step)
                if checkpointer.is_due(step, force=stop or step == total_steps):
                    pending.check(checkpointer, config, state)
                    paused |= checkpointer.maybe_save(step, state, force=True)
                if stop:
                    log.warning(
                        "SIGTERM: saved a checkpoint at step %d of %d and stopped; "
                        "rerun the same command to resume",
                        step,
                        total_steps,
                    )
                    break
                if paused:
                    reporter.restart_clock(step)
    finally:  # Also when a guard stops the run: in-flight checkpoints complete.
        tracer.close(state)
        checkpointer.close()
        reporter.close()
    return state, results
