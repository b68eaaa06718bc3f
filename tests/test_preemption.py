"""A run stopped at any moment resumes exactly: SIGKILL loses only the steps since the last
checkpoint, SIGTERM (preemption) saves one and exits with status 75 ("rerun me"), and the rerun
of the same command ends with the parameters of a run that was never stopped, bit for bit on one
CPU device and on a 2-process job started by `launch/local.sh`."""

import contextlib
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from i2i_jax import kill_harness, optim, parallel, preemption, tasks
from i2i_jax.checkpointing import Checkpointer

from helpers import job_failure_report, one_multiprocess_job_at_a_time, started
from tiny_configs import get_config

pytestmark = pytest.mark.slow

TESTS = os.path.dirname(os.path.abspath(__file__))
STEPS = 60
OVERRIDES = [
    f"--config.num_train_steps={STEPS}",
    "--config.checkpoint_every_steps=7",
    "--config.keep_checkpoints=10",
    "--config.log_every_steps=1",
    "--config.eval_every_steps=0",
]
ONE_DEVICE = {**os.environ, "JAX_NUM_CPU_DEVICES": "1", "JAX_PLATFORMS": "cpu"}
LAUNCHER = os.path.join(os.path.dirname(TESTS), "launch", "local.sh")


# Config changes of the runs that test each learning-rate policy: 3 epochs of 20 steps, so that
# the rate changes at epoch boundaries after the resume; cosine also keeps a moving average;
# plateau evaluates every 3 steps and cuts the rate after each one that does not improve.
POLICIES = {
    "step": {"lr_policy": "step", "lr_decay_iters": 1, "n_epochs": 2, "n_epochs_decay": 1},
    "plateau": {"lr_policy": "plateau", "eval_every_steps": 3, "plateau_patience": 0},
    "cosine": {"lr_policy": "cosine", "n_epochs": 2, "n_epochs_decay": 1, "ema_decay": 0.9},
}


def command(workdir, processes: int = 0, settings: dict | None = None) -> list[str]:
    """The main command with `settings` (config key -> value); with `processes`, a job of that
    many 1-device processes."""
    launcher = [LAUNCHER, "-n", str(processes), "-d", "1", "--"] if processes else []
    return [
        *launcher,
        sys.executable,
        "-m",
        "i2i_jax.main",
        f"--config={os.path.join(TESTS, 'tiny_configs.py')}:pix2pix",
        f"--workdir={workdir}",
        *OVERRIDES,
        *(f"--config.{key}={value}" for key, value in (settings or {}).items()),
    ]


def run_to_the_end(workdir, processes: int = 0, settings: dict | None = None) -> str:
    with taking_turns(processes):
        result = subprocess.run(
            command(workdir, processes, settings),
            env=ONE_DEVICE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=600,  # Guards against a hang; two jobs share the 2 cores under xdist.
        )
    assert result.returncode == 0, job_failure_report(result.stdout)
    return result.stdout


def signal_after_a_checkpoint(
    workdir, signum: int, processes: int = 0, settings: dict | None = None
) -> tuple[int, str]:
    """Starts a run and sends `signum` once the step-7 checkpoint is complete on disk, right
    after a step that is not a checkpoint step; returns the run's exit status and output. The
    run is killed whatever happens, never left behind."""
    with taking_turns(processes):
        return _signal_after_a_checkpoint(workdir, signum, processes, settings)


def taking_turns(processes: int):
    """A multi-process job waits for any other one (helpers.one_multiprocess_job_at_a_time)."""
    return one_multiprocess_job_at_a_time() if processes else contextlib.nullcontext()


def _signal_after_a_checkpoint(workdir, signum: int, processes: int, settings) -> tuple[int, str]:
    with started(command(workdir, processes, settings), ONE_DEVICE) as run:
        output = []
        for line in run.stdout:
            output.append(line)
            logged = re.search(rf"step (\d+)/{STEPS}", line)
            if (
                logged
                and int(logged.group(1)) % 7
                and os.path.isdir(os.path.join(workdir, "checkpoints", "7"))
            ):
                run.send_signal(signum)
                break
        rest, _ = run.communicate(timeout=600)
        output.append(rest)
    return run.returncode, "".join(output)


def final_state(workdir, settings: dict | None = None):
    config = get_config("pix2pix")
    config.update(settings or {})
    task = tasks.build_task(config, 4)
    template = parallel.init_replicated(
        task.init_state, config.seed, parallel.make_mesh(jax.devices()[:1])
    )
    state = Checkpointer(str(workdir), 7, 10).restore_latest(template)
    assert int(state.step) == STEPS
    return jax.device_get(state)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    run_to_the_end(workdir)
    return final_state(workdir)


def assert_bitwise_equal(one, other):
    jax.tree.map(np.testing.assert_array_equal, one, other)


def test_a_killed_run_resumes_to_the_parameters_of_an_uninterrupted_one(uninterrupted, tmp_path):
    status, output = signal_after_a_checkpoint(tmp_path, signal.SIGKILL)
    assert status == -signal.SIGKILL, output[-3000:]
    assert f"step {STEPS}/{STEPS}" not in output
    resumed = run_to_the_end(tmp_path)
    start = re.search(r"resumed from .* at step (\d+)", resumed)
    assert start and int(start.group(1)) % 7 == 0, resumed[-3000:]  # A checkpoint step.
    assert_bitwise_equal(final_state(tmp_path), uninterrupted)


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_each_lr_policy_resumes_exactly_after_sigkill(policy, tmp_path):
    settings = POLICIES[policy]
    uninterrupted = run_to_the_end(tmp_path / "uninterrupted", settings=settings)
    config = get_config("pix2pix")
    config.update({**settings, "num_train_steps": STEPS})
    last_rate = optim.learning_rate_schedule(config, steps_per_epoch=4)(STEPS - 1)
    assert f"step {STEPS}/{STEPS} " in uninterrupted
    if policy == "plateau":  # Its rate depends on the evaluations; it must have been cut.
        assert "has not improved: learning rate x" in uninterrupted
    else:
        assert f"lr={float(last_rate):.2e}" in uninterrupted.split(f"step {STEPS}/{STEPS} ")[1]
    status, output = signal_after_a_checkpoint(
        tmp_path / "killed", signal.SIGKILL, settings=settings
    )
    assert status == -signal.SIGKILL, output[-3000:]
    run_to_the_end(tmp_path / "killed", settings=settings)
    assert_bitwise_equal(
        final_state(tmp_path / "killed", settings),
        final_state(tmp_path / "uninterrupted", settings),
    )


def test_sigterm_saves_a_checkpoint_exits_75_and_resumes_exactly(uninterrupted, tmp_path):
    status, output = signal_after_a_checkpoint(tmp_path, signal.SIGTERM)
    assert status == preemption.EXIT_STATUS == 75, output[-3000:]
    stopped = re.search(
        rf"SIGTERM: saved a checkpoint at step (\d+) of {STEPS} and stopped", output
    )
    assert stopped, output[-3000:]
    stop_step = int(stopped.group(1))
    assert 7 < stop_step < STEPS
    assert stop_step in Checkpointer(str(tmp_path), 7, 10).manager.all_steps()
    resumed = run_to_the_end(tmp_path)
    assert f"at step {stop_step}" in resumed, resumed[-3000:]
    assert_bitwise_equal(final_state(tmp_path), uninterrupted)


@pytest.mark.multiprocess
def test_sigterm_to_a_two_process_job_stops_both_at_one_step_and_resumes_exactly(tmp_path):
    """The launcher passes the TERM on; the processes agree on the step at their next log line,
    save one checkpoint together and exit 75, which the launcher passes through."""
    run_to_the_end(tmp_path / "uninterrupted", processes=2)
    status, output = signal_after_a_checkpoint(tmp_path / "stopped", signal.SIGTERM, processes=2)
    assert status == preemption.EXIT_STATUS, job_failure_report(output)
    stops = re.findall(rf"\[(\d)\] .*SIGTERM: saved a checkpoint at step (\d+) of {STEPS}", output)
    assert sorted(process for process, _ in stops) == ["0", "1"], output[-3000:]
    assert len({step for _, step in stops}) == 1
    run_to_the_end(tmp_path / "stopped", processes=2)
    assert_bitwise_equal(final_state(tmp_path / "stopped"), final_state(tmp_path / "uninterrupted"))


@pytest.mark.multiprocess
@pytest.mark.parametrize("victim", [1, 0])
def test_a_process_killed_in_a_two_process_job_stops_the_other_which_names_it(victim, tmp_path):
    """SIGKILL to one process after the step-7 checkpoint: the other stops within 60 s rather
    than wait in its next collective, saying which process vanished (JAX's runtime says it
    when the coordinator, process 0, is the one gone), and the rerun resumes from the last
    checkpoint written before the kill."""
    with taking_turns(2), started(command(tmp_path, 2), ONE_DEVICE) as run:
        output = []
        for line in run.stdout:
            output.append(line)
            if re.search(rf"step (\d*[1-689])/{STEPS}", line) and os.path.isdir(
                tmp_path / "checkpoints" / "7"
            ):
                break
        last_checkpoint = max(kill_harness.committed_steps(str(tmp_path)))
        for pid in kill_harness.process_ids(str(tmp_path), victim, group=run.pid):
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        output.append(run.communicate(timeout=120)[0])
        stopped_after = time.monotonic() - killed
    output = "".join(output)
    assert stopped_after < 60, output[-3000:]
    assert f"launch/local.sh: process {victim} ended by signal 9 (KILL)" in output
    if victim == 1:
        assert "[0] i2i_jax: error: process 1 of 2 vanished: it stopped answering" in output
    else:
        assert "[1] F" in output and "the leader task was preempted/died" in output
    resumed = run_to_the_end(tmp_path, processes=2)
    assert f"resumed from {tmp_path / 'checkpoints'} at step {last_checkpoint}" in resumed
    assert f"step {STEPS}/{STEPS}" in resumed
