"""What translate writes: distinct names for inputs that would share one, names the file system
takes, and no existing file replaced without --overwrite (refused before the model loads)."""

import os

import pytest
from PIL import Image

from i2i_jax import translate
from i2i_jax.exported_generator import TranslateError


def write_inputs(directory, *names: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8)).save(directory / name, format="PNG")


def output_names(jobs) -> dict[str, str]:
    """{input file name: output file name}."""
    return {os.path.basename(job.source): os.path.basename(job.target) for job in jobs}


def test_inputs_that_would_share_an_output_get_distinct_names(tmp_path):
    write_inputs(tmp_path / "in", "a.jpg", "a.png", "a_jpg.png", "B.png", "b.png", "c.png")
    names = output_names(translate.plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"), ".png"))
    assert names["a.png"] == "a_png.png" and names["c.png"] == "c.png"
    # Still shared after adding the extension (a_jpg twice; B_png, b_png): a hash is added.
    hashed = {"a.jpg": "a_jpg-", "a_jpg.png": "a_jpg-", "B.png": "B_png-", "b.png": "b_png-"}
    for name, start in hashed.items():
        assert names[name].startswith(start) and names[name].endswith(".png")
    assert len({name.casefold() for name in names.values()}) == 6  # Even where case is ignored.
    again = translate.plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"), ".png")
    assert output_names(again) == names


def test_names_too_long_for_the_file_system_are_shortened(tmp_path):
    stems = ("x" * 251, "é" * 125)  # 251 and 250 bytes: the inputs' names fit, `_jpg` won't.
    write_inputs(tmp_path / "in", *(stem + ext for stem in stems for ext in (".jpg", ".png")))
    jobs = translate.plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"), ".png")
    longest = translate.longest_name(str(tmp_path))
    assert len({job.target for job in jobs}) == 4
    os.makedirs(tmp_path / "out")
    for job in jobs:
        assert len(os.fsencode(os.path.basename(job.target))) <= longest
        open(job.target, "w").close()  # The file system takes it.


def test_existing_outputs_are_refused_before_any_work_unless_overwrite(tmp_path, capsys):
    write_inputs(tmp_path / "in", "a.png", "b.png")
    write_inputs(tmp_path / "out", "b.png")
    with pytest.raises(TranslateError) as refusal:
        translate.plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"), ".png")
    assert str(refusal.value).splitlines() == [
        f"1 of the 2 outputs exist already: {tmp_path / 'out' / 'b.png'}",
        "Fix: pass --overwrite to replace them, or choose another --output",
    ]
    jobs = translate.plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"), ".png", overwrite=True)
    assert output_names(jobs) == {"a.png": "a.png", "b.png": "b.png"}
    (tmp_path / "out" / "b.png").unlink()  # A link there: its target is not ours to replace.
    (tmp_path / "out" / "b.png").symlink_to(tmp_path / "in" / "a.png")
    with pytest.raises(TranslateError, match="or a link's target"):
        translate.plan_jobs(str(tmp_path / "in"), str(tmp_path / "out"), ".png", overwrite=True)
    (tmp_path / "out" / "b.png").unlink()
    write_inputs(tmp_path / "out", "b.png")

    # The command refuses before it loads the model (here none is there to load).
    flags = [f"--model={tmp_path / 'no_model'}", f"--input={tmp_path / 'in'}"]
    assert translate.main([*flags, f"--output={tmp_path / 'out'}"]) == 1
    assert "outputs exist already" in capsys.readouterr().err
    assert translate.main([*flags, f"--output={tmp_path / 'out'}", "--overwrite"]) == 1
    assert "manifest.json does not exist" in capsys.readouterr().err
