"""Training processes replace themselves by the same command under tcmalloc, where their steps
run faster without more memory: same PID (what a scheduler signals), same arguments, and only
once; `$I2I_JAX_MALLOC=system` or a machine without tcmalloc keep the C library's malloc."""

import json
import os
import subprocess
import sys

import pytest

from i2i_jax import allocator, compare_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prints a line on every start, then what the process runs under after asking for tcmalloc, as
# `main` does.
_PROGRAM = """
import json, os, sys
from i2i_jax import allocator
print("start", os.getpid(), flush=True)
allocator.run_under_tcmalloc()
print(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:],
                  "tcmalloc": allocator.tcmalloc_loaded(), "describe": allocator.describe()}))
"""

needs_tcmalloc = pytest.mark.skipif(
    allocator.tcmalloc_library() is None, reason=f"no tcmalloc ({allocator.INSTALL_HINT})"
)


def _run(*args, **env):
    environ = {k: v for k, v in os.environ.items() if k != allocator.ENVIRONMENT_VARIABLE}
    completed = subprocess.run(
        [sys.executable, "-c", _PROGRAM, *args],
        capture_output=True,
        text=True,
        env={**environ, **env},
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.splitlines()
    return [line for line in lines if line.startswith("start")], json.loads(lines[-1])


@needs_tcmalloc
@pytest.mark.parametrize("config", ["pix2pix_synthetic", "cyclegan_synthetic"])
def test_a_run_replaces_itself_once_under_tcmalloc_keeping_pid_and_arguments(config):
    args = [f"--config=configs/{config}.py", "--workdir", "two words"]
    starts, result = _run(*args)
    assert len(starts) == 2, starts  # The original start and its replacement, no more.
    assert starts[0] == starts[1] == f"start {result['pid']}"
    assert result["argv"] == args
    assert result["tcmalloc"] and result["describe"] == "host allocator: tcmalloc"


def test_the_environment_variable_keeps_the_c_librarys_malloc_without_restarting():
    starts, result = _run(
        "--config=configs/pix2pix_synthetic.py", **{allocator.ENVIRONMENT_VARIABLE: "system"}
    )
    assert len(starts) == 1 and not result["tcmalloc"]
    assert result["describe"] == "host allocator: the C library's malloc ($I2I_JAX_MALLOC=system)"


def test_a_machine_without_tcmalloc_runs_on_and_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: None)
    monkeypatch.delenv(allocator.ENVIRONMENT_VARIABLE, raising=False)
    env = allocator.environment({"PATH": "/bin"})
    assert env == {"PATH": "/bin"}
    assert allocator.INSTALL_HINT in allocator.describe()  # This process: glibc.


def test_the_comparison_says_when_its_jax_worker_lacks_tcmalloc(monkeypatch, capsys):
    monkeypatch.delenv(allocator.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    assert compare_torch._jax_worker_allocator() == "tcmalloc"
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: None)
    assert compare_torch._jax_worker_allocator() == "system malloc"
    warning = capsys.readouterr().err
    assert "WARNING: tcmalloc is not installed" in warning and allocator.INSTALL_HINT in warning
    monkeypatch.setenv(allocator.ENVIRONMENT_VARIABLE, "system")  # Asked for: no warning.
    assert compare_torch._jax_worker_allocator() == "system malloc"
    assert capsys.readouterr().err == ""


def test_the_environment_keeps_a_users_preloads_and_release_rate(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    env = allocator.environment({"LD_PRELOAD": "libmine.so", "TCMALLOC_RELEASE_RATE": "3"})
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libmine.so"
    assert env["TCMALLOC_RELEASE_RATE"] == "3"
    preloaded = {"LD_PRELOAD": "/opt/libtcmalloc.so"}
    assert allocator.environment(preloaded)["LD_PRELOAD"] == "/opt/libtcmalloc.so"


def test_a_bad_choice_names_the_variable_and_the_fix():
    completed = subprocess.run(
        [sys.executable, "-m", "i2i_jax.main", "--config=configs/pix2pix_synthetic.py"],
        capture_output=True,
        text=True,
        env={**os.environ, allocator.ENVIRONMENT_VARIABLE: "jemalloc"},
        cwd=ROOT,
    )
    assert completed.returncode == 1
    assert "$I2I_JAX_MALLOC='jemalloc' is not one of ('auto', 'tcmalloc', 'system')" in (
        completed.stderr
    )
    assert "Fix: export I2I_JAX_MALLOC=" in completed.stderr
    assert "Traceback" not in completed.stderr
