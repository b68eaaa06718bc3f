"""Orbax checkpoints of the whole train state in `<workdir>/checkpoints`, keeping the last N.

Every process writes its shards; in a multi-host job the workdir must be one directory that all
hosts reach (a bucket such as `gs://...`, or a shared file system).
"""

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Periodic saves and restore-latest; every process must call it (orbax coordinates them)."""

    def __init__(self, workdir: str, every_steps: int, keep: int):
        self.every_steps = every_steps
        self.manager = ocp.CheckpointManager(
            os.path.join(workdir if "://" in workdir else os.path.abspath(workdir),
                         "checkpoints"),
            options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                                 enable_async_checkpointing=True))

    def restore_latest(self, template):
        """The latest checkpoint laid out like `template` (shapes, dtypes, shardings), or None."""
        step = self.manager.latest_step()
        if step is None:
            return None
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def maybe_save(self, step: int, state, force: bool = False) -> bool:
        """Saves asynchronously when `step` is a multiple of `every_steps` (or when forced)."""
        if not force and (self.every_steps <= 0 or step % self.every_steps):
            return False
        if step in self.manager.all_steps():
            return False
        return self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
