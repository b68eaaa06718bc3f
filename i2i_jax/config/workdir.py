"""The config a workdir was trained with (`<workdir>/config.json`), checked on every resume.

A resumed run that silently trains on with other settings mixes two experiments in one set of
checkpoints, so a changed config is refused unless the user says it is meant. Not imported by
`i2i_jax.config` itself: it reads files with tf.io.gfile (any filesystem TF knows), and
checking a config must not load TensorFlow.
"""

import json
import logging
import os

import ml_collections
import tensorflow as tf

from i2i_jax.config.defaults import flatten
from i2i_jax.config.keys import KEYS
from i2i_jax.errors import NotFoundError, UserError, WorkdirError
from i2i_jax.guards import PROBE_PREFIX
from i2i_jax.workdir_lock import LOCK_FILE

log = logging.getLogger("i2i_jax")

CONFIG_FILE = "config.json"
# Keys that may change on resume without --allow_config_change (`Key.may_change_on_resume`).
BOOKKEEPING_KEYS = frozenset(key.name for key in KEYS if key.may_change_on_resume)


class ConfigChangedError(UserError, ValueError):
    """A workdir is being resumed with a config other than the one it was trained with."""


def to_json(config) -> str:
    return config.to_json_best_effort(indent=2, sort_keys=True) + "\n"


def load(workdir: str) -> ml_collections.ConfigDict:
    """The config a workdir's checkpoints were trained with."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        raise NotFoundError(
            f"{path} does not exist: {workdir} is not an i2i_jax workdir "
            f"(python -m i2i_jax.main writes one)"
        )
    saved = read_json(path, "the run's config")
    if saved is None:
        raise WorkdirError(
            f"{path} cannot be read as the run's config\nFix: restore it from a copy, or "
            "write it again from the config file the run was trained with"
        )
    return ml_collections.ConfigDict(saved)


def read_json(path: str, what: str) -> dict | None:
    """The JSON object in `path`; None when there is none, or (with a warning naming it and
    `what` it was to give) when it cannot be read: a damaged small file is no traceback."""
    try:
        with tf.io.gfile.GFile(path) as f:
            value = json.load(f)
    except tf.errors.NotFoundError:
        return None
    except (ValueError, OSError, tf.errors.OpError) as error:
        log.warning("%s cannot be read (%s); going on without %s", path, error, what)
        return None
    if not isinstance(value, dict):
        log.warning("%s holds no JSON object; going on without %s", path, what)
        return None
    return value


def changes(saved: dict, config) -> list[str]:
    """`key: old -> new` for every key whose value differs, bookkeeping keys aside."""
    old = flatten(saved)
    new = flatten(json.loads(to_json(config)))
    missing = "(absent)"
    return [
        f"{key}: {json.dumps(old.get(key, missing))} -> {json.dumps(new.get(key, missing))}"
        for key in sorted(old.keys() | new.keys())
        if key not in BOOKKEEPING_KEYS and old.get(key, missing) != new.get(key, missing)
    ]


def check_fresh_start(config, workdir: str, allow_change: bool) -> None:
    """Refuses to start a run (no checkpoint yet) in a workdir that holds anything but what an
    earlier start of the same config left there (its `config.json`, logs and samples), so that
    a mistyped --workdir never mixes a run into a user's files or another experiment."""
    entries = sorted(
        name
        for name in (e.rstrip("/") for e in tf.io.gfile.listdir(workdir))
        if name not in _OURS_ALWAYS and not name.startswith(PROBE_PREFIX)
    )
    if not entries:
        return
    saved = read_json(os.path.join(workdir, CONFIG_FILE), "the earlier start's config")
    shown = ", ".join(entries[:5]) + (", ..." if entries[5:] else "")
    if saved is None:
        raise WorkdirError(
            f"workdir {workdir} is not empty ({shown}), has no checkpoint and is not an "
            f"earlier i2i_jax run (it has no readable {CONFIG_FILE}); nothing was written "
            "there\nFix: pass a new or empty --workdir"
        )
    changed = changes(saved, config)
    if changed and not allow_change:
        raise WorkdirError(
            f"workdir {workdir} holds an earlier start of another config, without a "
            f"checkpoint ({shown}); these keys differ:\n  "
            + "\n  ".join(changed)
            + "\nFix: pass a new --workdir, start with that config, or pass "
            "--allow_config_change to start this one there"
        )


# What a fresh start may find in its workdir without it counting as someone's files: the
# checkpoint directory orbax creates before the first save, and this run's lock file (and the
# write probes of `guards.check_workdir`).
_OURS_ALWAYS = frozenset({"checkpoints", LOCK_FILE})


def check_and_record(
    config, workdir: str, resume_step: int | None, allow_change: bool, is_writer: bool
) -> None:
    """Refuses to resume `workdir` at `resume_step` with a config whose results-shaping keys
    differ from the saved one, unless `allow_change`; then (process 0) writes `config`. An
    allowed change keeps the old file as `config.before_step_<N>.json` (never replacing an
    earlier one). A config.json that cannot be read is skipped with a warning."""
    path = os.path.join(workdir, CONFIG_FILE)
    saved = read_json(path, "the check of the config") if resume_step is not None else None
    if saved is not None:
        changed = changes(saved, config)
        if changed and not allow_change:
            raise ConfigChangedError(
                f"{workdir} has checkpoints up to step {resume_step} trained with another "
                f"config ({path}); these keys differ:\n  "
                + "\n  ".join(changed)
                + "\nResume with the saved values, use a new --workdir, or pass "
                "--allow_config_change to resume with these."
            )
        if changed:
            log.warning(
                "resuming at step %d with a changed config:\n  %s",
                resume_step,
                "\n  ".join(changed),
            )
            if is_writer:
                _keep_old_config(path, workdir, resume_step)
    if is_writer:
        write_whole(path, to_json(config))


def _keep_old_config(path: str, workdir: str, resume_step: int) -> None:
    """Copies `path` to `config.before_step_<N>.json`, or `config.before_step_<N>.2.json`
    (and on) when an earlier change at the same step kept one already."""
    kept, count = os.path.join(workdir, f"config.before_step_{resume_step}.json"), 1
    while tf.io.gfile.exists(kept):
        count += 1
        kept = os.path.join(workdir, f"config.before_step_{resume_step}.{count}.json")
    with tf.io.gfile.GFile(path) as f:
        write_whole(kept, f.read())


def write_whole(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, flushed to the disk, and renames it
    over `path`: the other processes of a job, which read the file while process 0 rewrites
    it, see the old file or the new one, never a truncated one (a 2-process resume died of
    that), and neither does a rerun after a crash or a power cut."""
    temporary = f"{path}.tmp-{os.getpid()}"
    if "://" in path:
        with tf.io.gfile.GFile(temporary, "w") as f:
            f.write(text)
        tf.io.gfile.rename(temporary, path, overwrite=True)
        return
    with open(temporary, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(directory)  # The rename itself survives a crash.
    finally:
        os.close(directory)
