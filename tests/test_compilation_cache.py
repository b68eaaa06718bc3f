"""XLA's persistent compilation cache in training runs: a resume loads its train step from the
cache, '' turns the cache off, and a directory that cannot be made is a config error."""

import os
import shutil
import subprocess
import sys

import jax
import pytest

from i2i_jax import compilation_cache
from i2i_jax.errors import ConfigError

TESTS = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def cache_settings_restored(monkeypatch):
    """The suite's own cache settings come back after the test, and the environment's cache
    directory (which `enable` prefers) is out of the way during it."""
    monkeypatch.delenv(compilation_cache.ENVIRONMENT_VARIABLE, raising=False)
    saved = {
        name: getattr(jax.config, name)
        for name in ("jax_enable_compilation_cache", "jax_compilation_cache_dir")
    }
    yield
    for name, value in saved.items():
        jax.config.update(name, value)


def test_the_directory_is_made_with_home_expanded(cache_settings_restored, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    directory = compilation_cache.enable("~/caches/xla")
    assert directory == str(tmp_path / "caches" / "xla")
    assert os.path.isdir(directory)
    assert jax.config.jax_compilation_cache_dir == directory
    assert jax.config.jax_enable_compilation_cache


def test_an_empty_directory_turns_the_cache_off(cache_settings_restored):
    assert compilation_cache.enable("") is None
    assert not jax.config.jax_enable_compilation_cache


def test_the_environments_directory_wins(cache_settings_restored, tmp_path, monkeypatch):
    monkeypatch.setenv(compilation_cache.ENVIRONMENT_VARIABLE, str(tmp_path / "from_env"))
    assert compilation_cache.enable(str(tmp_path / "configured")) == str(tmp_path / "from_env")


def test_a_directory_that_cannot_be_made_is_a_config_error(cache_settings_restored, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as error:
        compilation_cache.enable(str(blocker / "cache"))
    message = str(error.value)
    assert "config.compilation_cache_dir" in message and str(blocker / "cache") in message
    assert "Fix: --config.compilation_cache_dir=" in message


@pytest.mark.slow
def test_a_resumed_run_loads_its_train_step_from_the_cache(tmp_path):
    """The first run traces and compiles into an empty cache; the same command, resumed after
    its last checkpoint is lost, reads the traced step and loads the compiled one from there."""
    workdir, cache = tmp_path / "run", tmp_path / "cache"
    command = [
        sys.executable,
        "-m",
        "i2i_jax.main",
        f"--config={os.path.join(TESTS, 'tiny_configs.py')}:pix2pix",
        f"--workdir={workdir}",
        f"--config.compilation_cache_dir={cache}",
        "--config.num_train_steps=4",
        "--config.checkpoint_every_steps=2",
        "--config.eval_every_steps=0",
    ]
    environment = {
        k: v for k, v in os.environ.items() if k != compilation_cache.ENVIRONMENT_VARIABLE
    }

    def run() -> str:
        result = subprocess.run(
            command,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:]
        return result.stdout

    first = run()
    assert f"compilation cache: {cache}" in first
    assert "the train step: traced in" in first and " s, compiled in " in first, first[-3000:]
    assert os.listdir(cache)
    shutil.rmtree(workdir / "checkpoints" / "4")
    resumed = run()
    assert "at step 2" in resumed, resumed[-3000:]
    assert "the train step: read its traced program from " in resumed, resumed[-3000:]
    assert ", loaded from the compilation cache in " in resumed, resumed[-3000:]
