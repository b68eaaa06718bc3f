"""Errors that are the user's to fix: the command line prints their message, not a traceback.

Each message names what is wrong (the config key and value, the file, the directory) and ends
with one line that says how to fix it.
"""


class UserError(Exception):
    """Bad input (a config value, a data file, a workdir) or a run that cannot go on."""


class ConfigError(UserError, ValueError):
    """A config value that breaks a rule, reported before anything is built."""

    def __init__(self, key: str, value, rule: str, fix: str):
        super().__init__(f"config.{key}={value!r}: {rule}.\nFix: {fix}")
        self.key, self.value = key, value


class DataError(UserError, ValueError):
    """A dataset that cannot be trained on as it is: empty, or with bad files."""


class NotFoundError(UserError, FileNotFoundError):
    """A dataset, split, domain, workdir or model that is not where the config or flags say."""


class OutputExistsError(UserError, FileExistsError):
    """An output that would overwrite something that is not ours to replace."""


class UsageError(UserError, ValueError):
    """A command-line flag whose value the tool cannot use."""


class WorkdirError(UserError, OSError):
    """A workdir that cannot take the run's checkpoints, logs and samples."""


class TrainingDivergedError(UserError, FloatingPointError):
    """A loss (or the parameters) became NaN or infinite."""


def first_line(error: Exception) -> str:
    """`Type: first line of the message`, for errors from libraries with long messages."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]
