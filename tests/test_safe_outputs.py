"""export, evaluate and convert_torch write only where they may: never over a user's file or
directory, a symbolic link, the training checkpoints or another tool's `.partial`; an earlier
output of their own only with --overwrite, removed without following its symbolic links. The
tools that read a checkpoint (export, evaluate, init_from) never move it, even when damaged."""

import json
import os
import socket
import subprocess
import sys

import jax
import pytest

from i2i_jax import evaluate, export, init_from, outputs, parallel, results_page, tasks
from i2i_jax.checkpointing import CheckpointsUnreadableError
from i2i_jax.config import workdir as workdir_config
from i2i_jax.errors import OutputExistsError

from helpers import REPO, saved_checkpoints
from tiny_configs import tiny_pix2pix_config


def tree(path) -> dict[str, bytes]:
    """Every file under `path` (links as their targets' names) and its content."""
    found = {}
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            full = os.path.join(root, name)
            relative = os.path.relpath(full, path)
            if os.path.islink(full):
                found[relative] = f"-> {os.readlink(full)}".encode()
            elif os.path.isfile(full):
                with open(full, "rb") as f:
                    found[relative] = f.read()
    return found


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A workdir as training leaves it: config.json and checkpoints of steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("safe_outputs") / "run"
    config = tiny_pix2pix_config()
    config.eval_mode = "eval"
    saved_checkpoints(config, str(workdir))
    workdir_config.write_whole(str(workdir / "config.json"), workdir_config.to_json(config))
    (workdir / "tensorboard").mkdir()
    (workdir / "tensorboard" / "events.out").write_text("training's own log")
    return workdir


def test_export_onto_a_users_file_is_refused_and_the_file_kept(run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's notes")
    done = subprocess.run(
        [sys.executable, "-m", "i2i_jax.export", f"--workdir={run}", f"--output={notes}"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1, done.stderr[-2000:]
    assert "is a file, not a directory" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Fix: ")
    assert notes.read_text() == "a user's notes"


def test_evaluate_with_overwrite_onto_the_workdir_deletes_nothing(run):
    before = tree(run)
    with pytest.raises(OutputExistsError, match="training checkpoints") as refused:
        evaluate.evaluate_workdir(str(run), output=str(run), overwrite=True)
    assert str(refused.value).splitlines()[-1].startswith("Fix: ")
    assert tree(run) == before


@pytest.mark.parametrize("output", ["checkpoints", "checkpoints/4", "checkpoints/new", "."])
def test_no_output_is_holds_or_lies_inside_the_checkpoints(run, output):
    before = tree(run)
    with pytest.raises(OutputExistsError, match="training checkpoints"):
        export.export_generators(str(run), str(run / output), overwrite=True)
    assert tree(run) == before


def test_a_directory_of_someone_elses_or_a_link_is_refused(run, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("chapter 1")
    with pytest.raises(OutputExistsError, match=r"holds something other than.*thesis\.tex"):
        export.export_generators(str(run), str(mine), overwrite=True)
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(OutputExistsError, match="is a symbolic link"):
        export.export_generators(str(run), str(link), overwrite=True)
    assert tree(mine) == {"thesis.tex": b"chapter 1"}


def test_an_earlier_export_is_replaced_only_with_overwrite_and_its_links_not_followed(
    run, tmp_path
):
    model, outside = tmp_path / "model", tmp_path / "outside"
    outside.mkdir()
    (outside / "data.bin").write_text("not the export's")
    someone_elses = tmp_path / "model.partial"  # What the export used to remove blindly.
    someone_elses.mkdir()
    (someone_elses / "keep.txt").write_text("mine")

    export.export_generators(str(run), str(model))
    assert json.loads((model / "manifest.json").read_text())["step"] == 4
    (model / "link_to_outside").symlink_to(outside)  # A link put into the artifact.
    with pytest.raises(OutputExistsError, match=r"already holds an i2i_jax export"):
        export.export_generators(str(run), str(model))
    export.export_generators(str(run), str(model), overwrite=True)

    assert not (model / "link_to_outside").exists()
    assert tree(outside) == {"data.bin": b"not the export's"}
    assert tree(someone_elses) == {"keep.txt": b"mine"}
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.")]
    assert leftovers == []


def test_a_stale_staging_directory_is_removed_only_when_it_is_the_tools_own(tmp_path):
    output = tmp_path / "out"
    ours = tmp_path / ".out.partial-killed"
    ours.mkdir()
    (ours / ".i2i_jax-staging").write_text(
        json.dumps({"host": socket.gethostname(), "pid": 2**22 + 12345})  # No such process.
    )
    alive = tmp_path / ".out.partial-live"
    alive.mkdir()
    (alive / ".i2i_jax-staging").write_text(
        json.dumps({"host": socket.gethostname(), "pid": os.getpid()})
    )
    foreign = tmp_path / ".out.partial-foreign"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    rules = dict(what="test output", is_ours=lambda _: False, overwrite=False)
    with outputs.staged(str(output), **rules) as staging:
        (tmp_path / staging / "result.txt").write_text("done")
    assert tree(output) == {"result.txt": b"done"}
    assert not ours.exists() and alive.exists() and tree(foreign) == {"keep.txt": b"mine"}


def test_evaluate_names_colliding_and_overlong_images_apart_and_quotes_their_links():
    taken, panels = set(), ("real_A", "fake_B")
    assert evaluate._file_stem("a", taken, panels) == "a"
    assert evaluate._file_stem("a", taken, panels) == "a~2"  # a.jpg and a.png
    long = evaluate._file_stem("x" * 400, taken, panels)
    assert len(f"{long}_fake_B.png".encode()) <= 255
    assert evaluate._file_stem("x" * 400 + "y", taken, panels) != long
    page = results_page.render(
        "t",
        {"step": 1},
        {
            "AtoB": {
                "panels": panels,
                "rows": [
                    {"name": "a#1?%", "images": ["images/a#1?%.png"], "metrics": {"psnr": 1.0}}
                ],
            }
        },
    )
    assert 'src="images/a%231%3F%25.png"' in page


def damage_latest(run_copy) -> None:
    for path in (run_copy / "checkpoints" / "4" / "default" / "d").iterdir():
        path.unlink()  # The array data of step 4, lost.


@pytest.fixture
def damaged_run(run, tmp_path):
    copy = tmp_path / "run"
    subprocess.run(["cp", "-a", str(run), str(copy)], check=True)
    damage_latest(copy)
    return copy


def test_export_and_evaluate_report_a_damaged_checkpoint_and_move_nothing(damaged_run, tmp_path):
    before = tree(damaged_run)
    with pytest.raises(CheckpointsUnreadableError, match=r"(?s)left where it is.*--step=2"):
        export.export_generators(str(damaged_run), str(tmp_path / "model"))
    with pytest.raises(CheckpointsUnreadableError, match="left where it is"):
        evaluate.evaluate_workdir(str(damaged_run), step=4, output=str(tmp_path / "e"))
    assert tree(damaged_run) == before
    assert not (damaged_run / "damaged_checkpoints").exists()
    summary = evaluate.evaluate_workdir(str(damaged_run), step=2, output=str(tmp_path / "e"))
    assert summary["step"] == 2


def test_init_from_a_damaged_checkpoint_is_reported_and_moves_nothing(damaged_run, tiny_config):
    before = tree(damaged_run)
    task = tasks.build_task(tiny_config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, 0, parallel.make_mesh(jax.devices()[:1]))
    with pytest.raises(init_from.SourceUnreadableError, match="left where it is"):
        init_from.load_networks(str(damaged_run), state)
    assert tree(damaged_run) == before
