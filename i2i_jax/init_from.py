"""`init_from`: a new run that starts from another run's networks, i.e. fine-tuning.

`init_from=WORKDIR[:STEP]` takes every network's weights and batch statistics from WORKDIR's
checkpoint at STEP (its latest by default): an i2i_jax run, or a workdir that `convert_torch`
wrote from the reference's .pth files. A generator that kept a moving average (`ema_decay`)
gives its average, the network that run's evaluations scored and its exports hold. Everything
else is this run's own: a fresh optimizer, step 0, its seed's RNG, empty image pools. It applies
only while this run's workdir has no checkpoint, so a preempted fine-tuning run resumes from its
own checkpoints, never from WORKDIR again.
"""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorflow as tf
from flax import traverse_util

from i2i_jax import parallel
from i2i_jax.config import workdir as workdir_config
from i2i_jax.errors import NotFoundError, UserError, first_line

# The config keys that decide the networks' shapes: what a mismatch message quotes.
SHAPE_KEYS = ("model", "netG", "ngf", "netD", "ndf", "n_layers_D", "norm", "input_nc", "output_nc")


class NetworkMismatchError(UserError, ValueError):
    """The source run's networks do not have this config's shapes."""


class SourceUnreadableError(UserError, RuntimeError):
    """The source run's checkpoint does not restore (its files are missing or corrupt)."""


def parse(spec: str) -> tuple[str, int | None]:
    """`WORKDIR[:STEP]` -> (WORKDIR, STEP or None). A colon followed by anything but digits
    belongs to the path (gs://bucket/run)."""
    path, colon, step = spec.rpartition(":")
    if colon and step.isdigit() and path:
        return path, int(step)
    return spec, None


def load_networks(spec: str, state):
    """`state` (a freshly initialised train state) with every network's weights and batch
    statistics replaced by those of `spec`'s checkpoint, placed as `state`'s are. Raises
    NotFoundError for a missing workdir or step, NetworkMismatchError for shapes that differ."""
    workdir, step = parse(spec)
    saved_nets = _restore_nets(workdir, step)
    nets = {}
    for name, net in state.nets.items():
        if name not in saved_nets:
            raise NetworkMismatchError(
                f"init_from={spec}: that run has no network {name} (it has "
                f"{', '.join(sorted(saved_nets))}); {_shape_options(workdir)}\n"
                "Fix: start from a run of the same model"
            )
        saved = saved_nets[name]
        if "average" in saved:
            saved = saved["average"]
        ours = {"params": net.params, "batch_stats": net.batch_stats}
        saved = {key: saved.get(key, {}) for key in ours}  # Empty batch_stats are not stored.
        _check_shapes(spec, workdir, name, ours, saved)
        loaded = parallel.like_replicated(saved, ours)
        average = None
        if net.average is not None:  # Starts at the weights, as a fresh run's does, in
            average = parallel.like_replicated(saved, ours)  # buffers of its own (donation).
        nets[name] = net.replace(**loaded, average=average)
    return state.replace(nets=nets)


def _restore_nets(workdir: str, step: int | None) -> dict:
    """The `nets` of `workdir`'s checkpoint at `step` (latest if None), as host arrays."""
    directory = os.path.join(workdir, "checkpoints")
    if not tf.io.gfile.isdir(directory):
        raise NotFoundError(
            f"init_from={workdir}: {directory} does not exist, so there is no run to start from\n"
            "Fix: name the workdir of a finished or running i2i_jax run, or one that "
            "`python -m i2i_jax.convert_torch` wrote"
        )
    manager = ocp.CheckpointManager(
        directory,
        options=ocp.CheckpointManagerOptions(create=False),
        item_handlers=ocp.PyTreeCheckpointHandler(),
    )
    try:
        steps = manager.all_steps()
        if step is None and steps:
            step = max(steps)
        if step not in steps:
            raise NotFoundError(
                f"init_from={workdir}"
                + (f":{step}" if step is not None else "")
                + f": {directory} has no checkpoint"
                + (f" at step {step}; it has steps {', '.join(map(str, steps))}" if steps else "")
                + "\nFix: name one of its steps (init_from=WORKDIR:STEP), or leave the step "
                "out for its latest"
            )
        try:
            return _read_nets(manager, step)
        except Exception as error:  # Orbax and TensorStore raise many types.
            earlier = [s for s in steps if s < step]
            raise SourceUnreadableError(
                f"init_from={workdir}: its checkpoint {step} in {directory} cannot be restored: "
                f"{first_line(error)}\nIt was left where it is (this run only reads it).\nFix: "
                + (f"init_from={workdir}:{earlier[-1]} for the one before, or " if earlier else "")
                + "restore its files from a copy"
            ) from error
    finally:
        manager.close()


def _read_nets(manager, step: int) -> dict:
    """The `nets` of checkpoint `step`, as host arrays whatever devices the source ran on."""
    metadata = manager.item_metadata(step)
    metadata = getattr(metadata, "tree", metadata)["nets"]
    template = jax.tree.map(lambda m: np.zeros(m.shape, m.dtype), metadata)
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), template)
    return manager.restore(
        step,
        args=ocp.args.PyTreeRestore(
            item={"nets": template}, restore_args={"nets": restore_args}, partial_restore=True
        ),
    )["nets"]


def _check_shapes(spec: str, workdir: str, name: str, ours: dict, saved: dict) -> None:
    """Raises NetworkMismatchError naming the first parameter (then batch statistic) that is
    missing from either side or has another shape."""
    for part in ("params", "batch_stats"):
        mine, theirs = _by_path(ours[part]), _by_path(saved[part])
        for path in [*mine, *(p for p in theirs if p not in mine)]:
            here, there = mine.get(path), theirs.get(path)
            if here is not None and there is not None and here.shape == tuple(there.shape):
                continue
            raise NetworkMismatchError(
                f"init_from={spec}: {name}'s {part}/{path} is {_described(there)} there but "
                f"{_described(here)} in this config; {_shape_options(workdir)}\n"
                "Fix: set this config's network options to that run's"
            )


def _described(array) -> str:
    return "absent" if array is None else f"shape {tuple(array.shape)}"


def _by_path(tree) -> dict:
    """Leaves by "/"-joined path, in the tree's (sorted-key) order."""
    flat = traverse_util.flatten_dict(tree)
    return {"/".join(path): flat[path] for path in sorted(flat)}


def _shape_options(workdir: str) -> str:
    """That run's network options, from its config.json, for the message."""
    try:
        recorded = workdir_config.load(workdir)
    except (UserError, OSError, ValueError) as error:
        return f"that run's options are unknown ({error})"
    options = ", ".join(f"{k}={recorded[k]!r}" for k in SHAPE_KEYS if k in recorded)
    return f"that run has {options}"
