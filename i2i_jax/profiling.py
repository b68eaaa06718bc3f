"""`--profile`: a jax.profiler trace of a few train steps, for TensorBoard's profile plugin.

The trace starts after the first step of the run, so that it shows steady-state steps rather
than compilation, and covers `num_steps` steps, each marked as a step of the trace viewer's
"Steps" row. View it with `tensorboard --logdir=<workdir>/profile` (pip install
tensorboard-plugin-profile) or Perfetto.
"""

import contextlib
import logging
import os

import jax

log = logging.getLogger("i2i_jax")


class StepTracer:
    """Traces the `num_steps` steps after step `first_step + 1` (the run's first, which
    compiles) into `<workdir>/profile`, on process 0 only: processes on one host would write
    the same file. `num_steps=0` traces nothing."""

    def __init__(self, workdir: str, first_step: int, num_steps: int, enabled: bool):
        self.directory = os.path.join(workdir, "profile")
        self.start, self.stop = first_step + 2, first_step + 1 + num_steps
        self.enabled = enabled and num_steps > 0
        self.tracing = False

    def step(self, step: int) -> contextlib.AbstractContextManager:
        """The context to run train step `step` in."""
        if not self.enabled or not self.start <= step <= self.stop:
            return contextlib.nullcontext()
        if step == self.start:
            jax.profiler.start_trace(self.directory)
            self.tracing = True
        return jax.profiler.StepTraceAnnotation("train", step_num=step)

    def finish(self, step: int, outputs) -> None:
        """Ends the trace after its last step, once that step's results exist."""
        if self.tracing and step == self.stop:
            self.close(outputs)

    def close(self, outputs=None) -> None:
        """Ends a trace still running (the run stopped before its last step)."""
        if self.tracing:
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self.tracing = False
            log.info("profile of steps from %d written to %s", self.start, self.directory)
