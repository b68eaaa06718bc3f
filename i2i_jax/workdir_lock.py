"""One training run per workdir: a lock file that names its holder, held for the run's life.

Two runs on one workdir (a double submission, a SLURM requeue while the old job still runs)
would write the same checkpoints and interleave their metrics. The second stops at once naming
the first. The lock is `<workdir>/.i2i_jax.lock`, created exclusively (O_EXCL), holding the
holder's host, PID and start time, refreshed every `REFRESH_S` seconds while the run lives and
removed when it ends, however it ends short of SIGKILL. A lock left by a killed run is taken
over, with a notice: at once when its process is gone from this host, and after `STALE_S`
without a refresh when it was another host's (whose processes cannot be seen from here).

In a multi-process job process 0 takes the lock for the whole job before the others go on; they
learn its verdict through a collective and stop with it. In a bucket (`gs://`) there is no
exclusive create: the check there is best effort, two starts in the same second can both pass.
"""

import datetime
import json
import logging
import os
import socket
import threading
import time
import uuid

import jax
import numpy as np
import tensorflow as tf
from jax.experimental import multihost_utils

from i2i_jax import distributed
from i2i_jax.errors import UserError

log = logging.getLogger("i2i_jax")

LOCK_FILE = ".i2i_jax.lock"
REFRESH_S = 30.0
STALE_S = 300.0


class WorkdirLockedError(UserError, RuntimeError):
    """Another live run holds the workdir."""


def alive_here(pid) -> bool:
    """Whether process `pid` of this host lives (False for what is no PID)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # Another user's live process.
        return True
    return True


class WorkdirLock:
    """The lock of one workdir, taken by `acquire` and given back by `release`."""

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self.holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "token": uuid.uuid4().hex,  # Tells our lock from a later holder's.
        }
        self._stop = threading.Event()
        self._refresher = None

    def acquire(self) -> None:
        """Takes the lock, taking over a stale one with a notice; WorkdirLockedError naming
        the holder when a live run has it."""
        if not self._create():
            held = self._read()
            why = self._stale(held)
            if why is None:
                raise self._locked(held)
            log.warning("taking over the lock %s of a run that ended: %s", self.path, why)
            self._remove_stale()
            if not self._create():  # Another run took it over first.
                raise self._locked(self._read())
        self._refresher = threading.Thread(target=self._refresh, daemon=True, name="lock")
        self._refresher.start()

    def release(self) -> None:
        """Removes the lock file if it is still ours."""
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
            self._refresher = None
        if (self._read() or {}).get("token") == self.holder["token"]:
            tf.io.gfile.remove(self.path)

    def _create(self) -> bool:
        """Writes the lock file unless one exists; whether it did."""
        text = json.dumps(self.holder)
        if "://" in self.path:
            if tf.io.gfile.exists(self.path):
                return False
            with tf.io.gfile.GFile(self.path, "w") as f:
                f.write(text)
            return True
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as f:
            f.write(text)
        return True

    def _read(self) -> dict | None:
        """The holder the lock file names; {} when it cannot be read (being written, or
        damaged); None when there is none."""
        try:
            with tf.io.gfile.GFile(self.path) as f:
                held = json.loads(f.read())
        except tf.errors.NotFoundError:
            return None
        except (ValueError, OSError, tf.errors.OpError):
            return {}
        return held if isinstance(held, dict) else {}

    def _age_s(self) -> float:
        return time.time() - tf.io.gfile.stat(self.path).mtime_nsec / 1e9

    def _stale(self, held: dict | None) -> str | None:
        """Why the lock `held` is left over from a run that ended; None if it may be live."""
        if held is None:
            return "it was removed meanwhile"
        if held.get("host") == self.holder["host"] and isinstance(held.get("pid"), int):
            if not alive_here(held["pid"]):
                return f"process {held['pid']} on this host is gone"
            return None
        try:
            age = self._age_s()
        except (OSError, tf.errors.OpError):
            return "it was removed meanwhile"
        if age > STALE_S:
            return f"not refreshed for {age:.0f} s (a live run refreshes it every {REFRESH_S:g} s)"
        return None

    def _remove_stale(self) -> None:
        """Renames the stale lock aside (only one of two runs taking it over succeeds in
        that), then deletes it."""
        aside = f"{self.path}.stale-{uuid.uuid4().hex}"
        try:
            tf.io.gfile.rename(self.path, aside)
        except (OSError, tf.errors.OpError):
            return  # Another run moved it first; `_create` decides.
        tf.io.gfile.remove(aside)

    def _locked(self, held: dict | None) -> WorkdirLockedError:
        held = held or {}
        who = f"process {held.get('pid', '?')} on host {held.get('host', '?')}"
        return WorkdirLockedError(
            f"{os.path.dirname(self.path)} is in use by another training run: {who}, "
            f"started {held.get('started', '?')} (its lock: {self.path}). Two runs on one "
            "workdir would overwrite each other's checkpoints.\nFix: wait for that run to end "
            "or stop it, or train in another --workdir; if that run is dead and its host "
            f"cannot be reached, delete {self.path}"
        )

    def _refresh(self) -> None:
        """Touches the lock file while the run lives, so other hosts can tell it is live."""
        while not self._stop.wait(REFRESH_S):
            try:
                if (self._read() or {}).get("token") == self.holder["token"]:
                    _touch(self.path)
            except (OSError, tf.errors.OpError) as error:
                log.warning("could not refresh the workdir lock %s: %s", self.path, error)


def _touch(path: str) -> None:
    if "://" in path:
        with tf.io.gfile.GFile(path) as f:
            text = f.read()
        with tf.io.gfile.GFile(path, "w") as f:
            f.write(text)
    else:
        os.utime(path)


def acquire_for_job(workdir: str) -> WorkdirLock | None:
    """Process 0 takes the workdir's lock for the whole job; every process stops with its
    error when it could not (the others learn of it through a collective). Returns the lock
    to release at the end (process 0), None elsewhere."""
    lock, error = None, None
    if distributed.is_first_process():
        lock = WorkdirLock(workdir)
        try:
            lock.acquire()
        except WorkdirLockedError as refused:
            error = refused
    if jax.process_count() > 1:
        taken = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
        if not taken and error is None:
            error = WorkdirLockedError(
                f"process 0 found {workdir} in use by another training run (its log names "
                "it); this process stops with it\nFix: wait for that run to end or stop it, "
                "or train in another --workdir"
            )
    if error is not None:
        raise error
    return lock
