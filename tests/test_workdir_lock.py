"""One run per workdir, and a fresh start never clobbers: a second run on a workdir stops at once
naming the live holder (also in a 2-process job, and when only the job's processes agree on a
damaged checkpoint); a dead holder's lock is taken over; a workdir of someone else's files or
another config is refused before anything is written; small files are replaced whole and an
unreadable one is no traceback."""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from i2i_jax import train, workdir_lock
from i2i_jax.config import workdir as workdir_config
from i2i_jax.errors import WorkdirError
from i2i_jax.reporting import BEST_FILE, Reporter
from i2i_jax.workdir_lock import LOCK_FILE, WorkdirLock, WorkdirLockedError

from helpers import (
    REPO,
    job_failure_report,
    one_multiprocess_job_at_a_time,
    saved_checkpoints,
    started,
)
from tiny_configs import tiny_pix2pix_config

TESTS = os.path.join(REPO, "tests")
LAUNCHER = os.path.join(REPO, "launch", "local.sh")


def quick_config():
    config = tiny_pix2pix_config()
    config.num_train_steps = 2
    config.eval_every_steps = 0
    config.checkpoint_every_steps = 2
    return config


HOLD = (
    "import sys, time\n"
    "from i2i_jax.workdir_lock import WorkdirLock\n"
    "WorkdirLock(sys.argv[1]).acquire()\n"
    "print('holding', flush=True)\n"
    "time.sleep(600)\n"
)


def test_a_second_run_stops_naming_the_holder_and_a_dead_ones_lock_is_taken_over(tmp_path, caplog):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with started([sys.executable, "-c", HOLD, str(workdir)]) as holder:
        assert holder.stdout.readline().strip() == "holding"
        start = time.monotonic()
        with pytest.raises(WorkdirLockedError) as refused:
            train.train_and_evaluate(quick_config(), str(workdir))
        assert time.monotonic() - start < 10
        message = str(refused.value)
        assert f"process {holder.pid} on host {socket.gethostname()}" in message
        assert message.splitlines()[-1].startswith("Fix: ")
        assert sorted(os.listdir(workdir)) == [LOCK_FILE]  # Nothing of the second run's.
        holder.kill()
        holder.wait()
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        train.train_and_evaluate(quick_config(), str(workdir))
    assert f"process {holder.pid} on this host is gone" in caplog.text
    assert os.listdir(workdir / "checkpoints") == ["2"]
    assert not (workdir / LOCK_FILE).exists()  # Released at the end.


def test_another_hosts_lock_is_live_until_it_is_not_refreshed(tmp_path, monkeypatch):
    lock_file = tmp_path / LOCK_FILE
    lock_file.write_text(json.dumps({"host": "elsewhere", "pid": 1, "started": "earlier"}))
    with pytest.raises(WorkdirLockedError, match="process 1 on host elsewhere"):
        WorkdirLock(str(tmp_path)).acquire()
    old = time.time() - workdir_lock.STALE_S - 60
    os.utime(lock_file, (old, old))
    lock = WorkdirLock(str(tmp_path))
    lock.acquire()
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()
    assert not lock_file.exists()


def test_the_lock_is_released_when_the_run_fails(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "thesis.tex").write_text("chapter 1")
    with pytest.raises(WorkdirError, match=r"(?s)not empty \(thesis\.tex\).*Fix: "):
        train.train_and_evaluate(quick_config(), str(workdir))
    assert sorted(os.listdir(workdir)) == ["thesis.tex"]


def earlier_start(tmp_path, config):
    """A workdir where a run of `config` started and died before its first checkpoint."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    workdir_config.write_whole(str(workdir / "config.json"), workdir_config.to_json(config))
    (workdir / "eval_metrics.jsonl").write_text('{"step": 0, "l1": 0.5}\n')
    return workdir


def test_a_fresh_start_on_an_earlier_start_of_another_config_is_refused(tmp_path):
    other = quick_config()
    other.lr = 1e-3
    workdir = earlier_start(tmp_path, other)
    before = {p.name: p.read_bytes() for p in workdir.iterdir()}
    with pytest.raises(WorkdirError, match=r"(?s)another config.*lr: 0.001 -> 0.0002.*Fix: "):
        train.train_and_evaluate(quick_config(), str(workdir))
    assert {p.name: p.read_bytes() for p in workdir.iterdir()} == before


@pytest.mark.slow
def test_a_fresh_start_on_an_earlier_start_of_the_same_config_goes_on(tmp_path):
    workdir = earlier_start(tmp_path, quick_config())
    train.train_and_evaluate(quick_config(), str(workdir))
    assert os.listdir(workdir / "checkpoints") == ["2"]


def test_kept_configs_are_never_replaced_and_an_unreadable_best_fid_is_absent(tmp_path, caplog):
    config = quick_config()
    workdir_config.write_whole(str(tmp_path / "config.json"), workdir_config.to_json(config))
    for lr in (1e-3, 2e-3):  # Two allowed changes on resuming step 4.
        config.lr = lr
        workdir_config.check_and_record(config, str(tmp_path), 4, True, True)
    kept = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("config.before"))
    assert kept == ["config.before_step_4.2.json", "config.before_step_4.json"]
    assert json.loads((tmp_path / kept[1]).read_text())["lr"] == 2e-4
    assert json.loads((tmp_path / kept[0]).read_text())["lr"] == 1e-3

    (tmp_path / BEST_FILE).write_text('{"step": 3, "fid_tot')  # Cut short by a crash.
    reporter = Reporter(str(tmp_path), 0, 10, is_writer=True)
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        reporter.evaluation(4, {"fid": 30.0}, None)
    reporter.close()
    assert f"{BEST_FILE} cannot be read" in caplog.text
    assert json.loads((tmp_path / BEST_FILE).read_text())["step"] == 4
    assert [p.name for p in tmp_path.iterdir() if ".tmp" in p.name] == []


def launch_job(command_tail: list[str], timeout: float = 240) -> tuple[int, str]:
    """A 2-process job under the local launcher: (its exit status, its output)."""
    with (
        one_multiprocess_job_at_a_time(),
        started([LAUNCHER, "-n", "2", "--", sys.executable, *command_tail]) as job,
    ):
        try:
            output, _ = job.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the job hung for {timeout} s")
    return job.returncode, output


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_two_process_job_on_a_locked_workdir_stops_in_every_process(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with started([sys.executable, "-c", HOLD, str(workdir)]) as holder:
        assert holder.stdout.readline().strip() == "holding"
        status, output = launch_job(
            [
                "-m",
                "i2i_jax.main",
                f"--config={os.path.join(TESTS, 'tiny_configs.py')}:pix2pix",
                f"--workdir={workdir}",
            ]
        )
    assert status != 0, job_failure_report(output)
    assert "is in use by another training run" in output, job_failure_report(output)
    assert f"process {holder.pid} on host {socket.gethostname()}" in output
    assert "process 0 found" in output, job_failure_report(output)
    assert sorted(os.listdir(workdir)) == [LOCK_FILE]


@pytest.mark.slow
@pytest.mark.multiprocess
def test_every_process_of_a_job_reaches_the_same_verdict_on_a_damaged_checkpoint(tmp_path):
    saved_checkpoints(tiny_pix2pix_config(), str(tmp_path))
    status, output = launch_job(
        [
            os.path.join(TESTS, "restore_verdict_worker.py"),
            f"--config={os.path.join(TESTS, 'tiny_configs.py')}:pix2pix",
            f"--workdir={tmp_path}",
        ]
    )
    assert status == 0, job_failure_report(output)
    assert "process 0 restored step 2" in output and "process 1 restored step 2" in output
    assert "process 1 found damaged checkpoint 4" in output
    assert os.listdir(tmp_path / "damaged_checkpoints") == ["4"]
