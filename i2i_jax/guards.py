"""Training guards: a workdir that cannot take the run is refused before training, and a run
whose losses or parameters stop being finite stops instead of saving garbage."""

import math
import os
import shutil
import uuid

import jax
import jax.numpy as jnp
import tensorflow as tf

from i2i_jax.errors import TrainingDivergedError, WorkdirError, first_line

# The file `check_workdir` writes and removes; a fresh start ignores those of the job's other
# processes, which may be there for a moment.
PROBE_PREFIX = ".write_test_"
# Besides one checkpoint of the state: logs, samples, TensorBoard files and orbax's temporaries.
_HEADROOM_BYTES = 256 * 2**20


def check_workdir(workdir: str) -> None:
    """Creates `workdir` and writes (then removes) a file in it, so that a read-only or missing
    mount fails now, with its path, rather than at the first checkpoint."""
    probe = os.path.join(workdir, f"{PROBE_PREFIX}{uuid.uuid4().hex}")
    try:
        tf.io.gfile.makedirs(workdir)
        with tf.io.gfile.GFile(probe, "w") as f:
            f.write("i2i_jax")
        tf.io.gfile.remove(probe)
    except (OSError, tf.errors.OpError) as error:
        raise WorkdirError(
            f"workdir {workdir} is not writable: {first_line(error)}\n"
            "Fix: pass a --workdir you can write to (or fix its permissions)"
        ) from None


def check_free_space(workdir: str, state) -> None:
    """Refuses to start when the workdir's disk cannot hold one more checkpoint of `state`."""
    if "://" in workdir:  # A bucket: no fixed size to check.
        return
    needed = sum(leaf.nbytes for leaf in jax.tree.leaves(state)) + _HEADROOM_BYTES
    free = shutil.disk_usage(workdir).free
    if free < needed:
        raise WorkdirError(
            f"workdir {workdir} has {free / 2**20:.0f} MiB free, but a checkpoint "
            f"of this run needs about {needed / 2**20:.0f} MiB\n"
            "Fix: free disk space, or pass a --workdir on a larger disk"
        )


def first_non_finite(steps: list[int], metrics: list[dict]) -> tuple[int, dict] | None:
    """The first (step, metrics) among fetched step metrics with a NaN or infinite value."""
    for step, values in zip(steps, metrics, strict=True):
        if not all(math.isfinite(float(v)) for v in values.values()):
            return step, values
    return None


@jax.jit
def _all_finite(tree) -> jax.Array:
    return jnp.all(
        jnp.stack(
            [
                jnp.all(jnp.isfinite(leaf))
                for leaf in jax.tree.leaves(tree)
                if jnp.issubdtype(leaf.dtype, jnp.floating)
            ]
        )
    )


def parameters_are_finite(state) -> bool:
    return bool(_all_finite(state.nets))


def diverged(
    step: int, metrics: dict, lr: float, kept: str, what: str = "a loss is NaN or infinite"
) -> TrainingDivergedError:
    """The error a run stops with: the step, its losses, what became of the checkpoints."""
    losses = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(metrics.items()))
    return TrainingDivergedError(
        f"training diverged at step {step}: {what} ({losses})\n{kept}\n"
        f"Fix: lower --config.lr (now {lr:g}) or check the data, then rerun to resume from the "
        "last good checkpoint"
    )
