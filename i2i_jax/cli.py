"""What every command-line tool does with a `UserError`: its message, status 1, no traceback."""

import logging
import os
import sys

from absl import app

from i2i_jax.errors import UserError


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


def run(main, flags_parser=None) -> None:
    """`absl.app.run(main)`, with user errors reported by `exit_with`."""
    def reporting_main(argv):
        try:
            return main(argv)
        except UserError as error:
            exit_with(str(error))

    if flags_parser is None:
        app.run(reporting_main)
    else:
        app.run(reporting_main, flags_parser=flags_parser)
