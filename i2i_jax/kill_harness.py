"""Runs the main command once and SIGKILLs it at a chosen moment: the attempts of `soak`.

A moment is a phase of the run (start-up, compilation, the first step after a resume, an
asynchronous checkpoint write, an evaluation, or anywhere) and a random delay into it. Phases are
found from the run's own log lines and, for checkpoint writes, from orbax's temporary directory
appearing in `<workdir>/checkpoints`, so a kill lands inside the work it names.
"""

import dataclasses
import glob
import os
import queue
import re
import signal
import subprocess
import threading
import time

PHASES = (
    "start-up",
    "compilation",
    "first step after a resume",
    "checkpoint write",
    "evaluation",
    "anywhere",
)
STEP_LINE = re.compile(r"step (\d+)/(\d+) ")
TRAINING_LINE = re.compile(r"training \S+ from step (\d+) to")
# How long a survivor of a 2-process job may take to stop after its peer is killed.
SURVIVOR_LIMIT_S = 90


@dataclasses.dataclass(frozen=True)
class Kill:
    """Where to kill: `delay_s` after `phase` begins (after the attempt starts, for `start-up` and
    `anywhere`); in a multi-process job, only process `victim`."""

    phase: str
    delay_s: float
    victim: int = 0


@dataclasses.dataclass
class Attempt:
    """What one run of the command did: its log, whether it was killed, and when."""

    timed: list[tuple[float, str]]  # (seconds after the start, a line of output).
    returncode: int | None
    killed_at_s: float | None = None  # Seconds after the start; None if it ran to its end.
    survivor_stop_s: float | None = None  # Multi-process: peers' exit after the kill.

    @property
    def lines(self) -> list[str]:
        return [line for _, line in self.timed]

    def time_of(self, text: str) -> float | None:
        """When the first line containing `text` came, None if none did."""
        return next((t for t, line in self.timed if text in line), None)

    @property
    def start_step(self) -> int | None:
        """The step it resumed at (0 when it started afresh); None if killed before it said."""
        found = [int(m.group(1)) for line in self.lines if (m := TRAINING_LINE.search(line))]
        return found[0] if found else None

    @property
    def last_logged_step(self) -> int | None:
        found = [int(m.group(1)) for line in self.lines if (m := STEP_LINE.search(line))]
        return max(found, default=None)


def committed_steps(workdir: str) -> list[int]:
    """The checkpoint steps whose write completed (orbax renames a temporary directory into the
    step's name when it has all files)."""
    directory = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(directory):
        return []
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def _checkpoint_writes(workdir: str) -> set[str]:
    """Orbax's temporary directories: checkpoints being written, or left by a killed write."""
    return set(glob.glob(os.path.join(workdir, "checkpoints", "*.orbax-checkpoint-tmp*")))


class _Trigger:
    """When, in seconds after the start, the kill is due; None until its phase has begun."""

    def __init__(self, kill: Kill, eval_every: int, workdir: str):
        self.kill, self.eval_every, self.workdir = kill, eval_every, workdir
        self.left_behind = _checkpoint_writes(workdir)  # By an earlier attempt's kill.
        self.due = kill.delay_s if kill.phase in ("start-up", "anywhere") else None

    def see(self, now: float, line: str | None) -> None:
        if self.due is not None:
            return
        phase = self.kill.phase
        begun = (
            (phase == "checkpoint write" and _checkpoint_writes(self.workdir) - self.left_behind)
            or (phase == "compilation" and line is not None and "eval data:" in line)
            or (phase == "first step after a resume" and line is not None and "training " in line)
        )
        if phase == "evaluation" and line is not None and (step := STEP_LINE.search(line)):
            begun = int(step.group(1)) % self.eval_every == 0
        if begun:
            self.due = now + self.kill.delay_s


def process_ids(workdir: str, process: int, group: int) -> list[int]:
    """The Python process of `process` in the job started by launch/local.sh on `workdir` whose
    process group is `group` (the launcher's, which its processes share): never a process of
    another job, even one on the same workdir."""
    pids = []
    for cmdline_file in glob.glob("/proc/[0-9]*/cmdline"):
        pid = int(cmdline_file.split("/")[2])
        try:
            with open(cmdline_file, "rb") as f:
                argv = f.read().split(b"\0")
            in_the_job = os.getpgid(pid) == group
        except OSError:  # Ended meanwhile.
            continue
        if (
            in_the_job
            and b"i2i_jax.main" in argv
            and f"--workdir={workdir}".encode() in argv
            and f"--process_id={process}".encode() in argv
            and b"bash" not in os.path.basename(argv[0])
        ):
            pids.append(pid)
    return pids


def _read_lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def run(command: list[str], workdir: str, kill: Kill | None, processes: int, eval_every: int):
    """One attempt of `command` (a process group of its own), killed as `kill` says, or run to
    its end when `kill` is None. A job left running is killed whole, never left behind."""
    start = time.monotonic()
    job = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_read_lines, args=(job.stdout, lines), daemon=True).start()
    attempt = Attempt(timed=[], returncode=None)
    trigger = _Trigger(kill, eval_every, workdir) if kill else None
    try:
        while True:
            try:
                line = lines.get(timeout=0.005)
            except queue.Empty:
                line = None
            now = time.monotonic() - start
            if line is not None:
                attempt.timed.append((now, line))
            if trigger:
                trigger.see(now, line)
                if trigger.due is not None and now >= trigger.due and job.poll() is None:
                    attempt.killed_at_s = now
                    _kill(job, workdir, kill.victim, processes, attempt)
                    trigger = None
            if line is None and job.poll() is not None and lines.empty():
                break
        attempt.returncode = job.wait()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
    return attempt


def _kill(job, workdir: str, victim: int, processes: int, attempt: Attempt) -> None:
    """SIGKILLs the whole run (one process), or one process of a job and waits for the
    launcher, which must see the others stop by themselves within SURVIVOR_LIMIT_S."""
    if processes <= 1:
        os.killpg(job.pid, signal.SIGKILL)
        return
    pids = process_ids(workdir, victim, group=job.pid)  # The job leads its own group.
    if not pids:  # Not started yet, or already gone: the whole job then.
        os.killpg(job.pid, signal.SIGKILL)
        return
    killed = time.monotonic()
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    try:
        job.wait(timeout=SURVIVOR_LIMIT_S)
        attempt.survivor_stop_s = time.monotonic() - killed
    except subprocess.TimeoutExpired:
        attempt.timed.append(
            (
                time.monotonic() - killed,
                f"kill harness: the job had not stopped {SURVIVOR_LIMIT_S} s after process "
                f"{victim} was killed; killing it\n",
            )
        )
        os.killpg(job.pid, signal.SIGKILL)
