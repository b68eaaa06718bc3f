"""The evaluate command: a checkpoint over every image of a split, the scores of training's own
evaluation, the images named after their sources (and equal to what the exported generator
makes of them), a results page worst first, and no earlier evaluation overwritten."""

import json
import os
import re

import numpy as np
import pytest
from PIL import Image

from i2i_jax import evaluate, export, exported_generator, train
from i2i_jax.data import synthetic
from i2i_jax.errors import NotFoundError, OutputExistsError

from tiny_configs import tiny_cyclegan_config, tiny_pix2pix_config


def read_jsonl(path):
    with open(path) as f:
        return {record["step"]: record for record in map(json.loads, f)}


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path))


@pytest.fixture(scope="module")
def pix2pix_run(tmp_path_factory):
    """An 8-step Pix2Pix run evaluated at steps 0, 4 and 8 in eval mode."""
    config = tiny_pix2pix_config()
    config.eval_mode = "eval"
    workdir = str(tmp_path_factory.mktemp("evaluate") / "pix2pix")
    train.train_and_evaluate(config, workdir)
    return workdir


def page_rows(page: str, direction: str) -> list[tuple[str, float]]:
    """(name, PSNR) of each row of a direction's table, in page order."""
    table = page.split(f'id="{direction}"')[1].split("</table>")[0]
    names = re.findall(r'<td class="name">([^<]+)</td>', table)
    # PSNR is the second metric column (l1, psnr, ssim in name order).
    values = re.findall(r'data-value="([^"]+)"', table)
    return list(zip(names, map(float, values[1::3]), strict=True))


def test_pix2pix_scores_images_and_page(pix2pix_run, tmp_path):
    output = str(tmp_path / "results")
    summary = evaluate.evaluate_workdir(pix2pix_run, output=output)
    trained = read_jsonl(os.path.join(pix2pix_run, "eval_metrics.jsonl"))[8]
    for key in ("l1", "psnr", "ssim"):
        assert summary["averages"][key] == pytest.approx(trained[key], rel=1e-5), key
    assert (summary["step"], summary["split"], summary["mode"]) == (8, "test", "eval")
    assert summary["num_images"] == {"AtoB": 6}

    with open(os.path.join(output, "metrics.json")) as f:
        saved = json.load(f)
    rows = saved["images"]["AtoB"]
    names = sorted(row["name"] for row in rows)
    assert names == [f"facade_{seed:05d}" for seed in synthetic.split_seeds("test", 6)]
    assert np.mean([row["metrics"]["psnr"] for row in rows]) == pytest.approx(
        trained["psnr"], rel=1e-5
    )
    files = sorted(os.listdir(os.path.join(output, "images")))
    assert files == sorted(f"{n}_{p}.png" for n in names for p in ("real_A", "fake_B", "real_B"))

    # Each translation is what the exported generator makes of the saved input.
    export.export_generators(pix2pix_run, str(tmp_path / "served"), mode="eval")
    served = exported_generator.ExportedGenerator(str(tmp_path / "served"))
    inputs = np.stack([read_png(os.path.join(output, "images", f"{n}_real_A.png")) for n in names])
    outputs = served(inputs.astype(np.float32) / 127.5 - 1.0, np.arange(len(names)))
    expected = np.clip(np.round((outputs + 1.0) * 127.5), 0, 255)
    saved_outputs = np.stack(
        [read_png(os.path.join(output, "images", f"{n}_fake_B.png")) for n in names]
    )
    assert np.abs(saved_outputs.astype(int) - expected).max() <= 1

    with open(os.path.join(output, "index.html")) as f:
        page = f.read()
    for name in files:
        assert f'src="images/{name}"' in page
    listed = page_rows(page, "AtoB")
    assert sorted(n for n, _ in listed) == names
    psnrs = [p for _, p in listed]
    assert psnrs == sorted(psnrs)  # Worst first.
    assert f"{trained['psnr']:.4f}"[:-1] in page  # The average on top (to rounding).


def test_a_step_a_refusal_and_an_overwrite(pix2pix_run, tmp_path):
    output = str(tmp_path / "step4")
    summary = evaluate.evaluate_workdir(pix2pix_run, step=4, output=output)
    trained = read_jsonl(os.path.join(pix2pix_run, "eval_metrics.jsonl"))[4]
    assert summary["averages"]["psnr"] == pytest.approx(trained["psnr"], rel=1e-5)
    before = os.path.getmtime(os.path.join(output, "metrics.json"))
    with pytest.raises(
        OutputExistsError, match=r"(?s)already holds an i2i_jax evaluation.*--overwrite"
    ):
        evaluate.evaluate_workdir(pix2pix_run, step=4, output=output)
    assert os.path.getmtime(os.path.join(output, "metrics.json")) == before
    evaluate.evaluate_workdir(pix2pix_run, output=output, overwrite=True)
    with open(os.path.join(output, "metrics.json")) as f:
        assert json.load(f)["step"] == 8
    assert not os.path.exists(output + ".partial")
    with pytest.raises(NotFoundError, match=r"no checkpoint of step 5; it has 4, 8"):
        evaluate.evaluate_workdir(pix2pix_run, step=5, output=str(tmp_path / "none"))


def test_the_default_output_is_named_after_split_mode_and_step(pix2pix_run):
    summary = evaluate.evaluate_workdir(pix2pix_run, mode="train_like")
    output = os.path.join(pix2pix_run, "results", "test_train_like_step8")
    with open(os.path.join(output, "metrics.json")) as f:
        assert json.load(f)["mode"] == summary["mode"] == "train_like"


@pytest.mark.slow
def test_cyclegan_both_directions(tmp_path):
    config = tiny_cyclegan_config()
    workdir = str(tmp_path / "cyclegan")
    train.train_and_evaluate(config, workdir)
    output = str(tmp_path / "results")
    summary = evaluate.evaluate_workdir(workdir, output=output)
    trained = read_jsonl(os.path.join(workdir, "eval_metrics.jsonl"))[6]
    assert summary["num_images"] == {"AtoB": 6, "BtoA": 6}
    assert set(summary["averages"]) == set(trained) - {"step"}
    for key, value in summary["averages"].items():
        assert value == pytest.approx(trained[key], rel=1e-5), key
    files = os.listdir(os.path.join(output, "images"))
    assert len(files) == 6 * 6
    assert {f.rsplit("_", 2)[-2] + "_" + f.rsplit("_", 2)[-1] for f in files} == {
        f"{p}.png" for p in ("real_A", "fake_B", "rec_A", "real_B", "fake_A", "rec_B")
    }


def test_images_are_named_after_their_files(tiny_config, tmp_path):
    rng = np.random.default_rng(0)
    names = ["north_gate", "old_mill", "tower"]
    for split, count in (("train", 4), ("test", 3)):
        os.makedirs(tmp_path / "data" / split)
        for i in range(count):
            name = names[i] if split == "test" else f"train_{i}"
            pair = rng.integers(0, 256, (36, 72, 3), dtype=np.uint8)
            Image.fromarray(pair).save(tmp_path / "data" / split / f"{name}.jpg")
    tiny_config.data.source, tiny_config.data.dataroot = "folder", str(tmp_path / "data")
    tiny_config.num_train_steps = 1
    tiny_config.eval_batch_size = 4
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config, workdir)
    evaluate.evaluate_workdir(workdir, output=str(tmp_path / "results"))
    assert sorted(os.listdir(tmp_path / "results" / "images")) == sorted(
        f"{n}_{p}.png" for n in names for p in ("real_A", "fake_B", "real_B")
    )
