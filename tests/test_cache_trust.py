"""Caches that cannot be planted: a compilation cache, traced step or FID weights file that
another user owns or can write is not used (a warning, and the work is done afresh) or, when the
user named it, is an error with a fix; what the caches create is private to the user."""

import logging
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_compilation_cache import cache_settings_restored  # noqa: F401  (a fixture)

from i2i_jax import compilation_cache, fid_inception, file_trust, parallel, traced_steps
from i2i_jax.errors import UserError

NOBODY = 65534


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def plant(path, how: str) -> None:
    """Makes `path` another user's file, or one that others can write."""
    if how == "owned by another user":
        os.chown(path, NOBODY, NOBODY)
    else:
        os.chmod(path, mode(path) | 0o022)


@pytest.mark.parametrize("how", ["owned by another user", "writable by others"])
def test_a_file_is_trusted_only_when_nobody_else_can_change_it(tmp_path, how):
    path = tmp_path / "weights.npz"
    path.write_bytes(b"")
    assert file_trust.trusted(str(path)) is None
    plant(path, how)
    assert str(path) in file_trust.trusted(str(path))


def test_a_directory_above_that_others_can_write_is_untrusted_unless_sticky(tmp_path):
    shared = tmp_path / "shared"
    (shared / "mine").mkdir(parents=True)
    path = shared / "mine" / "weights.npz"
    path.write_bytes(b"")
    link = tmp_path / "link.npz"
    link.symlink_to(path)
    os.chmod(shared, 0o777)
    assert f"{shared} is writable by other users (mode 777)" == file_trust.trusted(str(path))
    assert str(shared) in file_trust.trusted(str(link)), "checked where the link leads"
    os.chmod(shared, 0o1777)  # Like /tmp: others cannot replace what is ours.
    assert file_trust.trusted(str(path)) is None


def test_private_directories_ignore_the_umask_and_leave_existing_ones_alone(tmp_path):
    os.chmod(tmp_path, 0o755)
    previous = os.umask(0)
    try:
        file_trust.make_private_dir(str(tmp_path / "a" / "b"))
    finally:
        os.umask(previous)
    assert mode(tmp_path / "a") == mode(tmp_path / "a" / "b") == 0o700
    assert mode(tmp_path) == 0o755


@pytest.mark.usefixtures("cache_settings_restored")
def test_a_new_compilation_cache_is_private(tmp_path):
    assert compilation_cache.enable(str(tmp_path / "cache")) == str(tmp_path / "cache")
    assert mode(tmp_path / "cache") == 0o700


@pytest.mark.usefixtures("cache_settings_restored")
@pytest.mark.parametrize("how", ["owned by another user", "writable by others"])
def test_a_compilation_cache_others_could_write_is_not_used(tmp_path, caplog, how):
    directory = tmp_path / "cache"
    directory.mkdir(mode=0o755)
    plant(directory, how)
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        assert compilation_cache.enable(str(directory)) is None
    assert not jax.config.jax_enable_compilation_cache
    assert f"not using the compilation cache {directory}: {directory} is" in caplog.text
    assert "Fix: `chmod go-w`" in caplog.text


class TinyStep:
    """A one-device step small enough to trace in a moment, counting its traces."""

    def __init__(self):
        self.mesh = parallel.make_mesh(jax.devices()[:1])
        self.batch = parallel.to_global(np.ones((2, 3), np.float32), self.mesh)
        self.traced = 0

    def step(self, state, batch):
        self.traced += 1
        return {"w": state["w"] + batch.sum(0)}, {"loss": batch.sum()}

    def compile(self, directory):
        state = {"w": jax.device_put(jnp.zeros(3), parallel.replicated(self.mesh))}
        compiled = traced_steps.compile_train_step(
            self.step, self.mesh, state, self.batch, "tiny", str(directory)
        )
        return compiled(state, self.batch)[0]["w"]


@pytest.mark.parametrize("how", ["owned by another user", "writable by others"])
def test_a_traced_step_others_could_write_is_traced_afresh_and_left_alone(tmp_path, caplog, how):
    tiny = TinyStep()
    tiny.compile(tmp_path)
    (path,) = (tmp_path / traced_steps.SUBDIRECTORY).iterdir()
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    plant(path, how)
    planted = (path.read_bytes(), os.stat(path))
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        np.testing.assert_array_equal(tiny.compile(tmp_path), [2, 2, 2])
    assert tiny.traced == 2, "traced again instead of reading the planted program"
    assert f"not reading the traced train step in {path}: {path} is" in caplog.text
    assert (path.read_bytes(), os.stat(path)) == planted, "not ours to replace"


@pytest.mark.parametrize("how", ["owned by another user", "writable by others"])
def test_weights_the_user_names_that_others_could_write_are_an_error(tmp_path, how):
    path = tmp_path / "inception.npz"
    np.savez(path, kernel=np.zeros(1))
    plant(path, how)
    with pytest.raises(UserError) as error:
        fid_inception.load_weights(str(path))
    assert str(error.value).startswith(f"fid_weights={str(path)!r}: {path} is")
    assert "Fix: copy it into a directory only you can write" in str(error.value)


def test_a_conversion_others_could_write_is_converted_again_into_ones_own(
    tmp_path, monkeypatch, caplog
):
    torch = pytest.importorskip(
        "torch", reason="needs the optional extra: pip install -e '.[torch]'"
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    weights = tmp_path / "weights" / fid_inception.WEIGHTS_FILE
    weights.parent.mkdir()
    torch.save({"Conv2d_1a_3x3.conv.weight": torch.ones(2, 3, 1, 1)}, weights)
    fid_inception.load_weights(str(weights))
    (beside,) = weights.parent.glob("*.npz")
    assert mode(beside) == 0o644
    plant(beside, "owned by another user")
    with caplog.at_level(logging.WARNING, logger="i2i_jax"):
        converted = fid_inception.load_weights(str(weights))
    assert f"not reading the converted FID weights {beside}: {beside} is" in caplog.text
    assert f"they come from {weights} instead" in caplog.text
    assert converted["Conv2d_1a_3x3.conv.kernel"].shape == (1, 1, 3, 2)
    own = tmp_path / "home" / ".cache" / "i2i_jax" / beside.name
    assert mode(own) == 0o644 and mode(own.parent) == mode(own.parent.parent) == 0o700
    assert os.stat(beside).st_uid == NOBODY, "not ours to replace"
