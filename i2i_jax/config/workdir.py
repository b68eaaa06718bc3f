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
from i2i_jax.errors import NotFoundError, UserError

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
    with tf.io.gfile.GFile(path) as f:
        return ml_collections.ConfigDict(json.load(f))


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


def check_and_record(
    config, workdir: str, resume_step: int | None, allow_change: bool, is_writer: bool
) -> None:
    """Refuses to resume `workdir` at `resume_step` with a config whose results-shaping keys
    differ from the saved one, unless `allow_change`; then (process 0) writes `config`. An
    allowed change keeps the old file as `config.before_step_<N>.json`."""
    path = os.path.join(workdir, CONFIG_FILE)
    if resume_step is not None and tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as f:
            saved = json.load(f)
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
                kept = os.path.join(workdir, f"config.before_step_{resume_step}.json")
                tf.io.gfile.copy(path, kept, overwrite=True)
    if is_writer:
        write_whole(path, to_json(config))


def write_whole(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside `path` and renames it over `path`, so that the
    other processes of a job, which read the file while process 0 rewrites it, see the old file
    or the new one, never a truncated one (a 2-process resume died of that)."""
    temporary = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "w") as f:
        f.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)
