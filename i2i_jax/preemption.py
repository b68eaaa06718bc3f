"""Preemption: SIGTERM makes the loop save a checkpoint at a step boundary and stop cleanly.

Cloud TPU VMs and SLURM (`--signal=TERM@120`) send SIGTERM before they take the machine away.
Saving at a step boundary keeps the checkpoint exact; rerunning the same command resumes it.
The run then exits with EXIT_STATUS, not 0, so that a launcher can tell "stopped early, rerun
me" from "finished" and requeue it (launch/slurm.sbatch does).
"""

import signal
import threading

import numpy as np
from jax.experimental import multihost_utils

# sysexits.h's EX_TEMPFAIL, "try again later": no signal's status (128 + N), and not 1, which
# a failure that a rerun would repeat exits with.
EXIT_STATUS = 75
_stopped = False


def stopped() -> bool:
    """Whether a SIGTERM stopped the training loop in this process (every process of a job
    stops at the same step, also those that did not receive it)."""
    return _stopped


class SigtermFlag:
    """Records SIGTERM while installed (a context manager; main thread only, as Python's signal
    handlers are), and restores the previous handler afterwards."""

    def __init__(self):
        self.received = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._record)
        return self

    def _record(self, signum, frame):
        del signum, frame
        self.received = True

    def __exit__(self, *exc_info):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def stop_now(self, process_count: int, at_sync_point: bool) -> bool:
        """Whether to stop after this step (recorded for `stopped`). Several processes must
        stop at the same step, so they agree (any of them received SIGTERM) at sync points
        only; one process stops at once."""
        global _stopped
        if process_count == 1:
            stop = self.received
        elif not at_sync_point:
            return False
        else:
            flags = multihost_utils.process_allgather(np.asarray(self.received))
            stop = bool(np.any(flags))
        _stopped = _stopped or stop
        return stop
