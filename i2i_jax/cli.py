"""The skeleton every command-line tool of the package runs in (`main`, `export`,
`convert_torch`, `benchmark`): no stray arguments, our progress at INFO and libraries at WARNING,
and a `UserError` ends the run with its message, fix last, status 1 and no traceback.

`translate` does the same by itself, since it must run without the package.
"""

import logging
import os
import sys
from collections.abc import Callable

from absl import app
from absl import logging as absl_logging

from i2i_jax.errors import UserError

log = logging.getLogger("i2i_jax")


def exit_with(message: str) -> None:
    """Ends the process with status 1 and `message`, whose last line says what to do.

    It exits at once: library threads still holding failed work (orbax's writers after a full
    disk) would print tracebacks at interpreter shutdown, after the message. Checkpoints are
    closed and logs written by then.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.write(f"\ni2i_jax: error: {message}\n")
    sys.stderr.flush()
    os._exit(1)


def run(main: Callable[[], None], flags_parser: Callable | None = None) -> None:
    """`absl.app.run` of `main()` (which reads its flags from `absl.flags.FLAGS`): positional
    arguments are a usage error, logging is set up, and user errors go to `exit_with`."""

    def checked_main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {argv[1:]}")
        absl_logging.set_verbosity(absl_logging.WARNING)  # Libraries (orbax, TF) at WARNING.
        log.setLevel(logging.INFO)
        try:
            main()
        except UserError as error:
            exit_with(str(error))

    app.run(checked_main, flags_parser=flags_parser or app.parse_flags_with_usage)
