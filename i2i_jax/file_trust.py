"""Whether a cached file could have been planted by another user of the machine.

The compilation cache and `traced_steps/` hold programs that training executes, and the FID
weights decide the numbers a run reports; a file there that another user can write is theirs
to choose. A path is trusted when it and every directory above it (both as written and with
symlinks resolved) are owned by this user or root, and none is writable by group or others,
except a sticky directory above it (/tmp), where others cannot rename or replace what is ours.
Checking the directories above makes checking then reading sound: nobody else can swap the
file in between. Buckets (`gs://...`) have no owner or mode to check: one is shared with
whoever may write to it, and trusted as such.
"""

import os
import pwd
import stat


def trusted(path: str) -> str | None:
    """Why `path` (a file or directory that exists) could have been planted by another user,
    None when it could not."""
    if "://" in path:
        return None
    written = os.path.abspath(path)
    above = _above(written) | _above(os.path.realpath(path))
    for each in [written, *sorted(above, key=len, reverse=True)]:
        status = os.stat(each)
        if status.st_uid not in (0, os.geteuid()):
            return f"{each} is owned by {_user(status.st_uid)}, not by you ({_user(os.geteuid())})"
        sticky = each != written and status.st_mode & stat.S_ISVTX
        if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not sticky:
            return f"{each} is writable by other users (mode {stat.S_IMODE(status.st_mode):o})"
    return None


def make_private_dir(path: str) -> None:
    """Makes `path` and any missing directory above it, each readable only by this user (mode
    0700 whatever the umask); directories that exist are left as they are."""
    missing, path = [], os.path.abspath(path)
    while not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # Another process made it meanwhile, unless it is a file.
            if not os.path.isdir(directory):
                raise
            continue
        os.chmod(directory, 0o700)


def _above(path: str) -> set[str]:
    """The directories above an absolute path, up to the root."""
    parents = set()
    while (parent := os.path.dirname(path)) != path:
        parents.add(parent)
        path = parent
    return parents


def _user(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"
