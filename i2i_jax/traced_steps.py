"""The train step's traced program, kept beside XLA's compilation cache, so that a resumed run
does not trace it again.

XLA's persistent cache saves the compile, not the tracing to StableHLO before it: 3 to 4 s of
Python for Pix2Pix at 256 px, repeated by every process on every start. Here the traced step is
saved once as a `jax.export` artifact (serialised StableHLO, about 0.3 MB), and every run, the
first included, compiles the program read back from those bytes: the resumed run's module is the
first run's, byte for byte, so the compilation cache finds it, and every process of a job
compiles the same program whether it traced the step or read it.

The file is named by a hash of everything the traced program depends on: the caller's
`identity` (the config and the dataset's size), the tree, shapes, dtypes and shardings of the
state and batch, the devices, JAX's configuration, the versions of the libraries the step is
traced through, and i2i_jax's own source. A change to any of them traces afresh under a new name.

A saved program that another user could have written is not read (`file_trust`); the directory
is made private to the user, and each file written readable and writable by the user only.
"""

import functools
import hashlib
import importlib.metadata
import logging
import os
import pathlib
import sys

import jax
import tensorflow as tf
from jax import export

from i2i_jax import compilation_cache, distributed, file_trust, parallel

log = logging.getLogger("i2i_jax")
SUBDIRECTORY = "traced_steps"
_LIBRARIES = ("jax", "jaxlib", "flax", "optax", "numpy", "ml_collections")


@functools.cache
def _source_digest() -> str:
    """A hash of every Python file of the i2i_jax package."""
    package = pathlib.Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(str(path.relative_to(package)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def program_key(identity: str, mesh, state, batch) -> str:
    """The file name's hash: equal keys trace to the same program."""
    arrays = [(x.shape, str(x.dtype), str(x.sharding)) for x in jax.tree.leaves((state, batch))]
    devices = [(d.id, d.platform, d.device_kind, d.process_index) for d in mesh.devices.flat]
    parts = [
        identity,
        _source_digest(),
        sys.version,
        *(f"{name} {importlib.metadata.version(name)}" for name in _LIBRARIES),
        repr(sorted(jax.config.values.items())),
        str(jax.tree.structure((state, batch))),
        repr(arrays),
        repr(devices),
    ]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:32]


class FlatStep:
    """A compiled `(state leaves, batch) -> (state leaves, metrics)` called as the train step,
    `(state, batch) -> (state, metrics)`: `jax.export` serialises trees of lists and dicts
    only, so the saved program takes the state's leaves."""

    def __init__(self, compiled, state_tree):
        self.compiled, self.state_tree = compiled, state_tree

    def __call__(self, state, batch):
        leaves, metrics = self.compiled(jax.tree.leaves(state), batch)
        return jax.tree.unflatten(self.state_tree, leaves), metrics


def _over_leaves(train_step, mesh, state_tree):
    """The step over `mesh`, taking and returning the state's leaves."""
    sharded = parallel.sharded_train_step(train_step, mesh)

    def over_leaves(state_leaves, batch):
        state, metrics = sharded(jax.tree.unflatten(state_tree, state_leaves), batch)
        return jax.tree.leaves(state), metrics

    return over_leaves


def _exported(train_step, mesh, state, batch) -> bytes:
    """The step traced and serialised (nothing compiled)."""
    traced = parallel.jit_step(_over_leaves(train_step, mesh, jax.tree.structure(state)), mesh)
    platform = mesh.devices.flat[0].platform
    return export.export(traced, platforms=[platform])(jax.tree.leaves(state), batch).serialize()


def _refused(path: str) -> bool:
    """Whether a saved program is there that another user could have written (see
    `file_trust`): it is then neither read nor replaced (it may not be ours), and the step is
    traced afresh."""
    try:
        why = file_trust.trusted(path)
    except OSError:  # Nothing there to read: `_read` says so where it matters.
        return False
    if why:
        log.warning(
            "not reading the traced train step in %s: %s, so it could be another user's "
            "program; tracing it afresh.\nFix: remove that file, or `chmod go-w` it if it is "
            "yours",
            path,
            why,
        )
    return why is not None


def _read(path: str) -> export.Exported | None:
    """The saved program, None if there is none or it cannot be read (then the step is traced
    again and the file rewritten)."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return export.deserialize(f.read())
    except tf.errors.NotFoundError:
        return None
    except Exception as error:  # A damaged file costs a trace, never the run.
        log.warning(
            "the traced train step in %s cannot be read (%s); tracing it again", path, error
        )
        return None


def _write(path: str, serialized: bytes) -> None:
    """Writes beside `path` and renames, so a reader sees the whole file or none; a failure
    (a full disk, a read-only cache) costs the next run a trace, never this run."""
    temporary, local = f"{path}.tmp-{os.getpid()}", "://" not in path
    try:
        if local:
            file_trust.make_private_dir(os.path.dirname(path))
        else:
            tf.io.gfile.makedirs(os.path.dirname(path))
        with tf.io.gfile.GFile(temporary, "wb") as f:
            f.write(serialized)
        if local:  # Whatever the umask: a group-writable file would be refused next time.
            os.chmod(temporary, 0o600)
        tf.io.gfile.rename(temporary, path, overwrite=True)
    except (OSError, tf.errors.OpError) as error:
        log.warning(
            "cannot save the traced train step to %s (%s); the next start will trace it again",
            path,
            error,
        )


def compile_train_step(train_step, mesh, state, batch, identity: str, directory: str | None):
    """`train_step` (a task's per-device step) compiled over `mesh` for `state` and `batch`,
    as `(state, batch) -> (state, metrics)` with the state donated. With `directory` (the
    compilation cache's), the traced program is read from there or traced and saved there;
    without, it is traced as `parallel.jit_train_step` does."""
    if directory is None:
        jitted = parallel.jit_train_step(train_step, mesh)
        return compilation_cache.compile_logged(
            "the train step", lambda: (jitted.lower(state, batch), "traced")
        )
    path = os.path.join(directory, SUBDIRECTORY, program_key(identity, mesh, state, batch) + ".bin")

    def lower():
        refused = _refused(path)
        exported = None if refused else _read(path)
        how = f"read its traced program from {path}"
        if exported is None:
            serialized, how = _exported(train_step, mesh, state, batch), "traced"
            if distributed.is_first_process() and not refused:
                _write(path, serialized)
            exported = export.deserialize(serialized)

        def program(state_leaves, batch):
            return exported.call(state_leaves, batch)

        program.__name__ = "train_step"  # What profiles show: "jit_train_step", as before.
        jitted = parallel.jit_step(program, mesh)
        return jitted.lower(jax.tree.leaves(state), batch), how

    compiled = compilation_cache.compile_logged("the train step", lower)
    return FlatStep(compiled, jax.tree.structure(state))
