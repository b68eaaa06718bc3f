"""Why a checkpoint did not restore, told apart, since each calls for its own remedy:

- a passing storage fault (a bucket's 503, an NFS hiccup, a timeout) is retried with a back-off
  and never moves the checkpoint: it is intact, and setting it aside would lose its steps;
- a checkpoint whose arrays do not fit the config's shapes is reported naming the first one that
  differs: it is intact too, the config is what changed;
- only a checkpoint whose files are missing or corrupt is damaged (`Checkpointer` sets it aside).
"""

import errno
import logging
import time
from collections.abc import Callable

import jax

from i2i_jax.errors import UserError, first_line

log = logging.getLogger("i2i_jax")

# Seconds to wait before each retry of a read that failed for a passing reason.
RETRY_DELAYS_S = (1.0, 2.0, 4.0, 8.0)
_TRANSIENT_ERRNOS = {
    errno.EIO,
    errno.EAGAIN,
    errno.EBUSY,
    errno.EINTR,
    errno.ETIMEDOUT,
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ECONNABORTED,
    errno.ENETUNREACH,
    errno.EHOSTUNREACH,
    errno.ESTALE,
}
# Status codes (absl / gRPC, as TensorStore and cloud clients put them first in their
# messages) that say "try again", not "this data is bad".
_TRANSIENT_STATUSES = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED", "RESOURCE_EXHAUSTED")


class CheckpointMismatchError(UserError, ValueError):
    """A checkpoint is intact but its arrays do not fit the config's networks."""


class StorageUnavailableError(UserError, OSError):
    """Reading a checkpoint kept failing for a passing reason; nothing was moved."""


def is_transient(error: BaseException) -> bool:
    """Whether `error`, or an error it was raised from, is a storage fault that may pass."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, TimeoutError | ConnectionError):
            return True
        if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
            return True
        if str(error).lstrip().startswith(_TRANSIENT_STATUSES):
            return True
        error = error.__cause__ or error.__context__
    return False


def retried(read: Callable, what: str):
    """`read()`, retried after each of RETRY_DELAYS_S while it fails for a passing reason;
    any other failure is raised at once. StorageUnavailableError if it never succeeds."""
    for attempt, delay in enumerate((*RETRY_DELAYS_S, None), 1):
        try:
            return read()
        except Exception as error:  # Orbax, TensorStore and file systems raise many types.
            if not is_transient(error):
                raise
            if delay is None:
                raise StorageUnavailableError(
                    f"reading {what} failed {attempt} times for a passing reason (the storage "
                    f"is unreachable or overloaded): {first_line(error)}\nThe checkpoint was "
                    "not moved or changed.\nFix: rerun the same command once the storage "
                    "answers again"
                ) from error
            log.warning("reading %s failed (%s); retrying in %g s", what, first_line(error), delay)
            time.sleep(delay)


def _named_leaves(tree) -> dict[str, object]:
    """Leaves by "/"-joined path; a dataclass field, a dict key and a tuple index look alike,
    so a template (dataclasses, optax tuples) and orbax's metadata (nested dicts) compare."""

    def name(key) -> str:
        for attribute in ("name", "key", "idx"):
            if hasattr(key, attribute):
                return str(getattr(key, attribute))
        return str(key)

    return {
        "/".join(name(key) for key in path): leaf
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def _described(leaf) -> str:
    if leaf is None:
        return "absent"
    return f"{jax.numpy.dtype(leaf.dtype).name}{list(leaf.shape)}"


def first_mismatch(saved_metadata, template) -> str | None:
    """The first array (in the template's order, then the checkpoint's) that is absent from
    one side or has another shape or dtype, as "PATH is X there and Y here"; None if all fit."""
    saved, ours = _named_leaves(saved_metadata), _named_leaves(template)
    for path in [*ours, *(p for p in saved if p not in ours)]:
        there, here = saved.get(path), ours.get(path)
        if (
            there is not None
            and here is not None
            and tuple(there.shape) == tuple(here.shape)
            and jax.numpy.dtype(there.dtype) == jax.numpy.dtype(here.dtype)
        ):
            continue
        return f"{path} is {_described(there)} there and {_described(here)} in this config"
    return None
