"""Training processes replace themselves by the same command under tcmalloc where their model
runs faster under it without more memory (Pix2Pix): same PID (what a scheduler signals), same
arguments, and only once; CycleGAN, `$I2I_JAX_MALLOC=system` or a machine without tcmalloc keep
the C library's malloc."""

import json
import os
import subprocess
import sys

import pytest

from i2i_jax import allocator, config_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Prints a line on every start, then what the process runs under after asking for tcmalloc for
# the model its command line names, as `main` does.
_PROGRAM = """
import json, os, sys
from i2i_jax import allocator, config_file
print("start", os.getpid(), flush=True)
model = config_file.model(sys.argv)
allocator.run_under_tcmalloc(model)
print(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:], "model": model,
                  "tcmalloc": allocator.tcmalloc_loaded(), "describe": allocator.describe(model)}))
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
def test_pix2pix_replaces_itself_once_under_tcmalloc_keeping_pid_and_arguments():
    args = ["--config=configs/pix2pix_synthetic.py", "--workdir", "two words"]
    starts, result = _run(*args)
    assert len(starts) == 2, starts  # The original start and its replacement, no more.
    assert starts[0] == starts[1] == f"start {result['pid']}"
    assert result["argv"] == args
    assert result["model"] == "pix2pix"
    assert result["tcmalloc"] and result["describe"] == "host allocator: tcmalloc"


def test_cyclegan_keeps_the_c_librarys_malloc_without_restarting():
    starts, result = _run("--config=configs/cyclegan_synthetic.py")
    assert len(starts) == 1
    assert result["model"] == "cycle_gan" and not result["tcmalloc"]
    assert "I2I_JAX_MALLOC=auto, model cycle_gan" in result["describe"]


@needs_tcmalloc
def test_the_environment_variable_decides_for_every_model():
    starts, result = _run(
        "--config=configs/pix2pix_synthetic.py",
        "--config.model=cycle_gan",
        **{allocator.ENVIRONMENT_VARIABLE: "tcmalloc"},
    )
    assert len(starts) == 2 and result["tcmalloc"]
    starts, result = _run(
        "--config=configs/pix2pix_synthetic.py", **{allocator.ENVIRONMENT_VARIABLE: "system"}
    )
    assert len(starts) == 1 and not result["tcmalloc"]


def test_the_model_comes_from_the_last_override_or_the_file():
    file = ["--config", os.path.join(ROOT, "configs/cyclegan_horse2zebra.py")]
    assert config_file.model(file) == "cycle_gan"
    assert config_file.model([*file, "--config.model=pix2pix"]) == "pix2pix"
    assert config_file.model(["--config=/no/such/config.py"]) is None
    assert config_file.model(["--workdir=x"]) is None


def test_a_machine_without_tcmalloc_runs_on_and_says_how_to_get_it(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: None)
    monkeypatch.delenv(allocator.ENVIRONMENT_VARIABLE, raising=False)
    env = allocator.environment("pix2pix", {"PATH": "/bin"})
    assert env == {"PATH": "/bin"}
    assert allocator.INSTALL_HINT in allocator.describe("pix2pix")  # This process: glibc.


def test_the_environment_keeps_a_users_preloads_and_release_rate(monkeypatch):
    monkeypatch.setattr(allocator, "tcmalloc_library", lambda: "libtcmalloc_minimal.so.4")
    env = allocator.environment(
        "pix2pix", {"LD_PRELOAD": "libmine.so", "TCMALLOC_RELEASE_RATE": "3"}
    )
    assert env["LD_PRELOAD"] == "libtcmalloc_minimal.so.4 libmine.so"
    assert env["TCMALLOC_RELEASE_RATE"] == "3"
    preloaded = {"LD_PRELOAD": "/opt/libtcmalloc.so"}
    assert allocator.environment("pix2pix", preloaded)["LD_PRELOAD"] == "/opt/libtcmalloc.so"


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
