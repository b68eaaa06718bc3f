"""Orbax checkpoints of the whole train state in `<workdir>/checkpoints`, keeping the last N.

Every process writes its shards; in a multi-host job the workdir must be one directory that all
hosts reach (a bucket such as `gs://...`, or a shared file system).
"""

import logging
import os

import jax
import orbax.checkpoint as ocp
import tensorflow as tf
from jax.experimental import multihost_utils

from i2i_jax import distributed, restore_faults
from i2i_jax.errors import NotFoundError, UserError, first_line
from i2i_jax.restore_faults import CheckpointMismatchError, StorageUnavailableError

log = logging.getLogger("i2i_jax")


class CheckpointsUnreadableError(UserError, RuntimeError):
    """Checkpoints exist but none of them restores."""


class CheckpointWriteError(UserError, OSError):
    """A checkpoint could not be written; the earlier ones are intact."""


class Checkpointer:
    """Periodic saves and restore-latest; every process must call it (orbax coordinates them)."""

    def __init__(self, workdir: str, every_steps: int, keep: int):
        self.every_steps = every_steps
        self.workdir = workdir if "://" in workdir else os.path.abspath(workdir)
        self.keep = keep
        self.write_failed = False  # Set once a failed write has been reported.
        self.manager = self._open_manager()

    def _open_manager(self) -> ocp.CheckpointManager:
        return ocp.CheckpointManager(
            os.path.join(self.workdir, "checkpoints"),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=self.keep, create=True, enable_async_checkpointing=True
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
        checkpoint where it is.
        """
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        failures = []
        for step in reversed(self.manager.all_steps()):
            try:
                state = self._restore(step, abstract)
            except (CheckpointMismatchError, StorageUnavailableError):
                raise
            except Exception as error:  # Orbax and TensorStore raise many types.
                log.warning(
                    "checkpoint %d in %s cannot be restored, trying the one before: %s",
                    step,
                    self.manager.directory,
                    first_line(error),
                )
                failures.append((step, error))
                # A failed restore can leave the manager misjudging the layout of the next
                # one (after an empty step directory it expects several items): start afresh.
                self.manager.close()
                self.manager = self._open_manager()
                continue
            self._set_aside([failed for failed, _ in failures])
            return state
        if failures:
            raise CheckpointsUnreadableError(
                f"no checkpoint in {self.manager.directory} can be restored:\n"
                + "\n".join(f"  step {step}: {first_line(error)}" for step, error in failures)
                + "\nTheir files are missing or corrupt. Fix: restore them from a copy, or "
                "start over in a new --workdir."
            )
        return None

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
        return restore_faults.retried(
            lambda: self.manager.restore(step, args=ocp.args.StandardRestore(abstract)), where
        )

    def restore_step(self, step: int, template):
        """The checkpoint of `step`, laid out like `template`; NotFoundError naming the steps
        there are when it has none of that step."""
        steps = self.manager.all_steps()
        if step not in steps:
            raise NotFoundError(
                f"{self.manager.directory} has no checkpoint of step {step}; it has "
                + (", ".join(map(str, steps)) if steps else "none")
                + "\nFix: name one of those steps, or leave the step out for the latest"
            )
        return self._restore(step, jax.tree.map(ocp.utils.to_shape_dtype_struct, template))

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
