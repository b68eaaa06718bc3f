"""Orbax checkpoints of the whole train state in `<workdir>/checkpoints`, keeping the last N.

Every process writes its shards; in a multi-host job the workdir must be one directory that all
hosts reach (a bucket such as `gs://...`, or a shared file system).
"""

import logging
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from jax.experimental import multihost_utils

from i2i_jax import distributed, restore_faults
from i2i_jax.errors import NotFoundError, UserError, first_line
from i2i_jax.restore_faults import CheckpointMismatchError, StorageUnavailableError

log = logging.getLogger("i2i_jax")

# A checkpoint restore's outcome in one process, ordered from best to worst: every process of a
# job takes the worst of theirs (`Checkpointer._agreed`).
_RESTORED, _DAMAGED, _REFUSED = 0, 1, 2


class CheckpointsUnreadableError(UserError, RuntimeError):
    """Checkpoints exist but none of them restores."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written; the earlier ones are intact."""


def latest_saved_step(workdir: str) -> int | None:
    """The step of `workdir`'s newest checkpoint, None when it has none; creates nothing."""
    checkpointer = Checkpointer(workdir, every_steps=0, keep=1, read_only=True)
    try:
        return checkpointer.latest_step()
    finally:
        checkpointer.close()


class Checkpointer:
    """Periodic saves and restore-latest; every process must call it (orbax coordinates them).

    `read_only` is for the tools that only read a run (export, evaluate): they never create,
    save or move anything, and a checkpoint that does not restore is reported, not set aside
    (only training, which can save that step again, sets a damaged checkpoint aside).
    """

    def __init__(self, workdir: str, every_steps: int, keep: int, read_only: bool = False):
        self.every_steps = every_steps
        self.workdir = workdir if "://" in workdir else os.path.abspath(workdir)
        self.keep = keep
        self.read_only = read_only
        self.write_failed = False  # Set once a failed write has been reported.
        self.manager = self._open_manager()

    def _open_manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            os.path.join(self.workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self.keep,
                create=not self.read_only,
                enable_async_checkpointing=not self.read_only,
            ),
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_latest(self, template):
        """The newest checkpoint that restores, laid out like `template` (shapes, dtypes,
        shardings), or None when there is none.

        A damaged checkpoint (files lost or truncated by a full disk, a copy cut short, an empty
        step directory) is skipped with a warning in favour of the one before, and then moved
        to `<workdir>/damaged_checkpoints/` so that the run can save that step again. If none
        restores, nothing is moved and the error lists every failure. A passing storage fault
        is retried and a checkpoint of other shapes is refused (`_restore`): both leave every
        checkpoint where it is. Read-only, a damaged latest checkpoint is reported instead.
        Every process of a job reaches the same verdict on each checkpoint (`_agreed`).
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        failures = []
        steps = self.manager.all_steps()
        for step in reversed(steps):
            state, error = self._agreed(step, abstract)
            if error is None:
                self._set_aside([failed for failed, _ in failures])
                return state
            if self.read_only:
                raise self._unreadable(step, error, steps)
            log.warning(
                "checkpoint %d in %s cannot be restored, trying the one before: %s",
                step,
                self.manager.directory,
                first_line(error),
            )
            failures.append((step, error))
        if failures:
            raise CheckpointsUnreadableError(
                f"no checkpoint in {self.manager.directory} can be restored:\n"
                + "\n".join(f"  step {step}: {first_line(error)}" for step, error in failures)
                + "\nTheir files are missing or corrupt. Fix: restore them from a copy, or "
                "start over in a new --workdir."
            )
        return None

    def _agreed(self, step: int, abstract):
        """(state, None) when checkpoint `step` restored in every process, else (None, why it
        is damaged). Each process reads its own shards, so one can fail where the others
        succeed (a file cut short that only it reads, a fault of its own mount); deciding
        alone, one would fall back to an older checkpoint while the others resumed, and the
        job would diverge or hang. So the outcomes are gathered and the worst one holds."""
        outcome, state, error = _RESTORED, None, None
        try:
            state = self._restore(step, abstract)
        except (CheckpointMismatchError, StorageUnavailableError) as refused:
            outcome, error = _REFUSED, refused
        except Exception as damage:  # Orbax and TensorStore raise many types.
            outcome, error = _DAMAGED, damage
        if jax.process_count() > 1:
            outcomes = multihost_utils.process_allgather(np.int32(outcome))
            worst = int(np.max(outcomes))
            if worst > outcome:
                process = int(np.argmax(outcomes))
                what = "refused" if worst == _REFUSED else "found damaged"
                outcome, error = (
                    worst,
                    CheckpointsUnreadableError(
                        f"process {process} {what} checkpoint {step} in {self.manager.directory} "
                        f"(its log says why); process {jax.process_index()} follows its verdict"
                    ),
                )
        if outcome == _REFUSED:
            raise error
        return state, error

    def _unreadable(self, step: int, error: Exception, steps: list[int]):
        """What a read-only restore of a damaged latest checkpoint says: nothing moved."""
        earlier = [s for s in steps if s < step]
        return CheckpointsUnreadableError(
            f"checkpoint {step} in {self.manager.directory} cannot be restored: "
            f"{first_line(error)}\nIt was left where it is (only training sets a damaged "
            "checkpoint aside).\nFix: "
            + (f"pass --step={earlier[-1]} for the one before, or " if earlier else "")
            + "rerun training on this workdir, which sets it aside and resumes from the one "
            "before"
        )

    def _restore(self, step: int, abstract):
        """Checkpoint `step` laid out like `abstract`. A read that fails for a passing reason
        is retried (StorageUnavailableError if it never succeeds); arrays that do not fit
        `abstract` raise CheckpointMismatchError naming the first; what else fails (damage)
        raises as orbax raised it."""
        where = f"checkpoint {step} in {self.manager.directory}"
        item = self.manager.directory / str(step) / "default"  # A manager's single item.
        # FileNotFoundError where the metadata is missing (an empty step directory): damage.
        metadata = restore_faults.retried(
            lambda: ocp.StandardCheckpointHandler().metadata(item), where
        )
        mismatch = restore_faults.first_mismatch(getattr(metadata, "tree", metadata), abstract)
        if mismatch:
            raise CheckpointMismatchError(
                f"{where} does not fit this config: {mismatch}. The checkpoint is intact and "
                "stays where it is.\nFix: resume with the config it was trained with "
                f"({os.path.join(self.workdir, 'config.json')}), or start over in a new "
                "--workdir"
            )
        # Through the handler, not the manager: the manager's restore ends in a barrier of
        # all processes, which one whose read failed never reaches (see `_agreed`).
        handler = ocp.StandardCheckpointHandler()
        try:
            return restore_faults.retried(
                lambda: handler.restore(item, args=ocp.args.StandardRestore(abstract)), where
            )
        finally:
            handler.close()

    def restore_step(self, step: int, template):
        """The checkpoint of `step`, laid out like `template`; NotFoundError naming the steps
        there are when it has none of that step. A damaged one is reported, never moved."""
        steps = self.manager.all_steps()
        if step not in steps:
            raise NotFoundError(
                f"{self.manager.directory} has no checkpoint of step {step}; it has "
                + (", ".join(map(str, steps)) if steps else "none")
                + "\nFix: name one of those steps, or leave the step out for the latest"
            )
        state, error = self._agreed(step, jax.tree.map(ocp.utils.to_shape_dtype_struct, template))
        if error is not None:
            raise self._unreadable(step, error, steps)
        return state

    def _set_aside(self, steps: list[int]) -> None:
        if not steps:
            return
        damaged_dir = os.path.join(self.workdir, "damaged_checkpoints")
        if distributed.is_first_process():
            tf.io.gfile.makedirs(damaged_dir)
            for step in steps:
                target = os.path.join(damaged_dir, str(step))
                suffix = 1
                while tf.io.gfile.exists(target):
                    target, suffix = os.path.join(damaged_dir, f"{step}.{suffix}"), suffix + 1
                tf.io.gfile.rename(os.path.join(str(self.manager.directory), str(step)), target)
                log.warning("moved the damaged checkpoint %d to %s", step, target)
        multihost_utils.sync_global_devices("i2i_jax: damaged checkpoints set aside")
        self.manager.reload()

    def is_due(self, step: int, force: bool = False) -> bool:
        """Whether `maybe_save` would save at `step`: a multiple of `every_steps` (or forced)
        that is not saved yet."""
        periodic = self.every_steps > 0 and step % self.every_steps == 0
        return (force or periodic) and step not in self.manager.all_steps()

    def maybe_save(self, step: int, state, force: bool = False) -> bool:
        """Saves asynchronously when `is_due(step, force)`. A failed write (a full disk, a lost
        mount) stops the run; orbax writes each checkpoint to a temporary directory and renames
        it when complete, so the ones written before stay intact."""
        if not self.is_due(step, force):
            return False
        try:
            return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)
        except Exception as error:  # An earlier async write's failure also surfaces here.
            raise self._write_failed(step, error) from error

    def close(self) -> None:
        """Waits for the last asynchronous write, then releases the manager. A failed write is
        reported once: orbax raises it again from `close`, also after `maybe_save` reported it,
        and that second raise must not replace the first report."""
        report = None
        try:
            self.manager.wait_until_finished()
        except Exception as error:
            if not self.write_failed:
                report = self._write_failed(None, error)
                report.__cause__ = error
        failed = self.write_failed
        try:
            self.manager.close()
        except Exception:
            if not failed:
                raise
        if report is not None:
            raise report

    def _write_failed(self, step: int | None, error: Exception) -> CheckpointWriteError:
        self.write_failed = True
        self.manager.reload()
        kept = self.manager.all_steps()
        when = f" (noticed when saving step {step})" if step is not None else ""
        return CheckpointWriteError(
            f"writing a checkpoint to {self.manager.directory} failed{when}: "
            f"{first_line(error)}\n"
            + (
                f"The checkpoints written before ({', '.join(map(str, kept))}) are intact; "
                f"rerunning resumes from step {kept[-1]}."
                if kept
                else "No checkpoint was written."
            )
            + f"\nFix: free space on (or repair) the disk of {self.workdir}, then rerun the "
            "same command"
        )
