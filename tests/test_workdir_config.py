"""The saved config of a workdir: what counts as a change on resume, and what is kept."""

import json
import os
import threading

import pytest

from i2i_jax import config as config_lib
from i2i_jax.config import workdir as workdir_config


def saved(config) -> dict:
    return json.loads(workdir_config.to_json(config))


def test_changes_name_nested_added_and_removed_keys_but_not_bookkeeping():
    before = config_lib.pix2pix()
    after = config_lib.pix2pix()
    after.data.name = "maps"
    after.lr = 1e-3
    after.eval_every_steps = 5  # Bookkeeping: how often, never what.
    old = saved(before)
    del old["seed"]  # A key the saved config did not have.
    old["retired_option"] = 1
    assert workdir_config.changes(old, after) == [
        'data.name: "facades" -> "maps"',
        "lr: 0.0002 -> 0.001",
        'retired_option: 1 -> "(absent)"',
        'seed: "(absent)" -> 0',
    ]


def test_only_a_resume_checks_and_an_allowed_change_keeps_the_old_file(tmp_path):
    workdir = str(tmp_path)
    config = config_lib.pix2pix()
    workdir_config.check_and_record(config, workdir, None, False, is_writer=True)
    config.ngf = 32
    # No checkpoint yet (a run that died before its first save): the new config is written.
    workdir_config.check_and_record(config, workdir, None, False, is_writer=True)
    assert workdir_config.load(workdir).ngf == 32

    config.ngf = 16
    with pytest.raises(workdir_config.ConfigChangedError, match="ngf: 32 -> 16"):
        workdir_config.check_and_record(config, workdir, 10, False, is_writer=True)
    assert workdir_config.load(workdir).ngf == 32  # Refused: nothing rewritten.
    workdir_config.check_and_record(config, workdir, 10, True, is_writer=True)
    assert workdir_config.load(workdir).ngf == 16
    with open(tmp_path / "config.before_step_10.json") as f:
        assert json.load(f)["ngf"] == 32


def test_loading_a_directory_without_a_config_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an i2i_jax workdir"):
        workdir_config.load(str(tmp_path))


def test_a_process_reading_while_process_0_rewrites_sees_a_whole_file(tmp_path):
    """On resume every process checks config.json while process 0 writes it again; a reader
    must never find it truncated (one of a 2-process resume's processes died of that)."""
    workdir, config = str(tmp_path), config_lib.pix2pix()
    workdir_config.check_and_record(config, workdir, None, False, is_writer=True)
    reads, failures, done = [], [], threading.Event()

    def other_process():
        while not done.is_set():
            try:
                workdir_config.check_and_record(config, workdir, 1, False, is_writer=False)
                reads.append(1)
            except Exception as error:  # Any failure is the finding.
                failures.append(repr(error))

    reader = threading.Thread(target=other_process)
    reader.start()
    try:
        for _ in range(200):
            workdir_config.check_and_record(config, workdir, 1, False, is_writer=True)
    finally:
        done.set()
        reader.join()
    assert not failures, failures[:3]
    assert len(reads) >= 20  # The reader really ran alongside the writes.
    assert os.listdir(workdir) == ["config.json"]  # No temporary file is left.
