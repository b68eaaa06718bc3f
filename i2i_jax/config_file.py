"""The config file a command line names (`--config=PATH[:ARG]`), loaded before absl parses the
flags: to name an override's unknown key clearly (`main`)."""

import runpy


def config_argument(argv: list[str]) -> str | None:
    """The value of `--config=...` or `--config ...` in `argv`, or None."""
    return next(
        (
            argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg[len("--config=") :]
            for i, arg in enumerate(argv)
            if arg == "--config" or arg.startswith("--config=")
        ),
        None,
    )


def load(argv: list[str]):
    """The ConfigDict of the file `argv` names, before overrides; None if it names none."""
    value = config_argument(argv)
    if not value:
        return None
    path, _, argument = value.partition(":")
    return runpy.run_path(path)["get_config"](*([argument] if argument else []))
