"""Where `export`, `evaluate` and `convert_torch` write a directory, and what they may replace.

A tool deletes only what it can prove it wrote. An output path that exists must be an empty
directory, or this tool's earlier output (`is_ours`) when the user passed `--overwrite`; a
plain file, a symbolic link or anyone else's directory is refused, naming what is there. No
output may be, contain or lie inside a training workdir's `checkpoints/`. The new output is
written into a fresh staging directory beside it (its name unique, so no one else's
`.partial` is ever reused or removed) and renamed into place; what it replaces is renamed
aside first and then removed without following symbolic links.
"""

import contextlib
import json
import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator

import tensorflow as tf

from i2i_jax.config.workdir import read_json
from i2i_jax.errors import OutputExistsError
from i2i_jax.workdir_lock import alive_here

log = logging.getLogger("i2i_jax")

# A staging directory holds this file (host and PID of its writer), so that a stale one, left
# by a killed run, can be told from anything else and removed.
_STAGING_MARKER = ".i2i_jax-staging"


def is_remote(path: str) -> bool:
    return "://" in path


def remove_tree(path: str) -> None:
    """Deletes a directory tree we wrote. Locally `shutil.rmtree`, which removes a symbolic
    link inside the tree rather than what it points to (and refuses a link as the top); in a
    bucket there are no links."""
    if is_remote(path):
        tf.io.gfile.rmtree(path)
    else:
        shutil.rmtree(path)


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _real(path: str) -> str:
    return path.rstrip("/") if is_remote(path) else os.path.realpath(path)


def check_output(
    output: str,
    *,
    what: str,
    is_ours: Callable[[str], bool],
    overwrite: bool,
    workdir: str | None = None,
) -> None:
    """Refuses an `output` that this tool may not write (see the module's docstring). `what`
    names this tool's output ("an i2i_jax export"); `workdir`, the training workdir read."""
    flag = f"--output={output}"
    if workdir is not None:
        checkpoints = _real(os.path.join(workdir, "checkpoints"))
        target = _real(output)
        if _inside(target, checkpoints) or _inside(checkpoints, target):
            raise OutputExistsError(
                f"{flag} is, holds or lies inside the training checkpoints {checkpoints}\n"
                "Fix: choose an --output outside the workdir's checkpoints/"
            )
    if is_remote(output):
        exists, is_dir, is_link = (
            tf.io.gfile.exists(output),
            tf.io.gfile.isdir(output),
            False,
        )
    else:
        exists, is_dir, is_link = (
            os.path.lexists(output),
            os.path.isdir(output),
            os.path.islink(output),
        )
    if not exists:
        return
    if is_link:
        raise OutputExistsError(
            f"{flag} is a symbolic link (to {os.readlink(output)}); it is not replaced\n"
            "Fix: pass the directory itself, or a new path"
        )
    if not is_dir:
        raise OutputExistsError(
            f"{flag} exists and is a file, not a directory; it is not replaced\n"
            "Fix: choose a new path for --output"
        )
    contents = sorted(tf.io.gfile.listdir(output))
    if not contents:
        return
    if not is_ours(output):
        shown = ", ".join(c.rstrip("/") for c in contents[:5]) + (", ..." if contents[5:] else "")
        raise OutputExistsError(
            f"{flag} is a directory that holds something other than {what} ({shown}); "
            "nothing in it is replaced\nFix: choose a new or empty directory for --output"
        )
    if not overwrite:
        raise OutputExistsError(
            f"{flag} already holds {what}\nFix: pass --overwrite to replace it, or choose a "
            "new --output"
        )


def _stale_staging(output: str) -> Iterator[str]:
    """Staging directories of this output that a run killed on this host left behind."""
    parent, prefix = os.path.dirname(output) or ".", f".{os.path.basename(output)}.partial-"
    host = socket.gethostname()
    for name in os.listdir(parent):
        path = os.path.join(parent, name)
        if not name.startswith(prefix) or os.path.islink(path) or not os.path.isdir(path):
            continue
        writer = read_json(os.path.join(path, _STAGING_MARKER), "its writer's name")
        if writer and writer.get("host") == host and not alive_here(writer.get("pid")):
            yield path


def _new_staging(output: str) -> str:
    if is_remote(output):
        staging = f"{output.rstrip('/')}.partial-{uuid.uuid4().hex}"
        tf.io.gfile.makedirs(staging)
        return staging
    parent = os.path.dirname(output) or "."
    os.makedirs(parent, exist_ok=True)
    for stale in _stale_staging(output):
        log.info("removing %s, left by a run of this tool that was killed", stale)
        remove_tree(stale)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(output)}.partial-", dir=parent)
    os.chmod(staging, 0o755)  # mkdtemp's 0700 would stay on the renamed output.
    with open(os.path.join(staging, _STAGING_MARKER), "w") as f:
        json.dump({"host": socket.gethostname(), "pid": os.getpid()}, f)
    return staging


@contextlib.contextmanager
def staged(output: str, **rules) -> Iterator[str]:
    """A fresh directory to write `output` into; when the block ends without an error it is
    renamed into place, after `check_output(output, **rules)` once more (something may have
    appeared there meanwhile). Removed when the block fails."""
    output = output.rstrip("/")
    staging = _new_staging(output)
    try:
        yield staging
        marker = os.path.join(staging, _STAGING_MARKER)
        if tf.io.gfile.exists(marker):
            tf.io.gfile.remove(marker)
        check_output(output, **rules)
        _replace(staging, output)
    except BaseException:
        if tf.io.gfile.exists(staging):
            remove_tree(staging)
        raise


def _replace(staging: str, output: str) -> None:
    """Moves `staging` to `output`. An existing output (checked by `check_output`) is first
    renamed aside, so that at every moment one of the two whole versions is in place."""
    if not tf.io.gfile.exists(output):
        tf.io.gfile.rename(staging, output)
        return
    if not is_remote(output) and not os.listdir(output):
        os.replace(staging, output)  # An empty directory is replaced in one step.
        return
    old = f"{output}.replaced-{uuid.uuid4().hex}"
    tf.io.gfile.rename(output, old)
    tf.io.gfile.rename(staging, output)
    remove_tree(old)
