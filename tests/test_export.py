"""Export a trained generator, then run it with `translate` in a fresh process that cannot import
the project's model code; compare with the generator applied in-process."""

import json
import re
import shutil

import jax
import numpy as np
import pytest
import tensorflow as tf
from flax import traverse_util
from PIL import Image

from i2i_jax import export, exported_generator, tiling
from i2i_jax.config import workdir as workdir_config

from helpers import make_workdir, run_translate, write_images


def in_process(task, state, direction: str, images_uint8: np.ndarray) -> np.ndarray:
    """The generator applied directly (eval mode), on the same images."""
    name, module, _ = task.generators()[direction]
    net = state.nets[name]
    variables = {
        "params": net.params,
        **({"batch_stats": net.batch_stats} if net.batch_stats else {}),
    }
    return np.asarray(
        module.apply(variables, images_uint8.astype(np.float32) / 127.5 - 1.0, train=False)
    )


@pytest.mark.parametrize("model, size", [("pix2pix", (32, 64)), ("cycle_gan", (36, 44))])
def test_translate_in_a_fresh_process_reproduces_the_generator(
    model, size, tmp_path, tiny_config, tiny_cycle_config
):
    config = tiny_config if model == "pix2pix" else tiny_cycle_config
    task, state = make_workdir(config, str(tmp_path / "run"))
    described = export.export_generators(
        str(tmp_path / "run"), str(tmp_path / "model"), mode="eval"
    )
    assert described["test_time_mode"] == "eval" and described["step"] == 5
    images = write_images(tmp_path / "inputs", 3, *size)

    for direction in task.generators():
        expected = in_process(task, state, direction, images)
        for batch_size in (1, 3):
            out = tmp_path / f"out_{direction}_{batch_size}"
            done = run_translate(
                f"--model={tmp_path / 'model'}",
                f"--input={tmp_path / 'inputs'}",
                f"--output={out}",
                f"--direction={direction}",
                f"--batch_size={batch_size}",
                "--output_format=npy",
            )
            assert done.returncode == 0, done.stderr
            got = np.stack([np.load(out / f"image{i}.npy") for i in range(3)])
            np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


@pytest.fixture(scope="module")
def pix2pix_artifact(tmp_path_factory):
    """A train_like Pix2Pix export (the paper's test-time mode), its workdir and task."""
    from tiny_configs import tiny_pix2pix_config

    root = tmp_path_factory.mktemp("artifact")
    task, state = make_workdir(tiny_pix2pix_config(), str(root / "run"))
    export.export_generators(str(root / "run"), str(root / "model"), extra_format="savedmodel")
    return root, task, state


@pytest.mark.slow
def test_train_like_outputs_do_not_depend_on_the_batch(pix2pix_artifact, tmp_path):
    root, _, _ = pix2pix_artifact
    write_images(tmp_path / "inputs", 3, 32, 32)
    outputs = []
    for batch_size in (1, 3):
        done = run_translate(
            f"--model={root / 'model'}",
            f"--input={tmp_path / 'inputs'}",
            f"--output={tmp_path / str(batch_size)}",
            "--output_format=npy",
            f"--batch_size={batch_size}",
            "--seed=3",
        )
        assert done.returncode == 0, done.stderr
        outputs.append(
            np.stack([np.load(tmp_path / str(batch_size) / f"image{i}.npy") for i in range(3)])
        )
    # Per-image batch statistics, and dropout masks keyed by (seed, image): batch-independent.
    np.testing.assert_allclose(outputs[0], outputs[1], atol=1e-5)
    assert np.abs(outputs[0][0] - outputs[0][1]).max() > 0.01  # Different images differ.


def test_the_savedmodel_computes_what_the_jax_artifact_does(pix2pix_artifact):
    root, _, _ = pix2pix_artifact
    images = np.random.default_rng(1).uniform(-1, 1, (2, 32, 64, 3)).astype(np.float32)
    ids = np.array([4, 9], np.int32)
    expected = exported_generator.ExportedGenerator(str(root / "model"), seed=3)(images, ids)
    serve = tf.saved_model.load(str(root / "model" / "savedmodel" / "AtoB")).signatures[
        "serving_default"
    ]
    got = serve(images=tf.constant(images), seed=tf.constant(3), example_ids=tf.constant(ids))
    np.testing.assert_allclose(got["images"].numpy(), expected, atol=1e-5)


@pytest.mark.slow
def test_translate_handles_every_kind_of_image_and_reports_a_corrupt_one(
    pix2pix_artifact, tmp_path
):
    root, _, _ = pix2pix_artifact
    inputs = tmp_path / "inputs"
    (inputs / "nested").mkdir(parents=True)
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 256, (40, 40), np.uint8)).save(inputs / "gray.png")
    rgba = rng.integers(0, 256, (50, 45, 4), np.uint8)
    Image.fromarray(rgba).save(inputs / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (40, 70, 3), np.uint8)).save(
        inputs / "nested" / "wide.jpg", quality=90
    )
    (inputs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 8)
    before = {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()}

    done = run_translate(
        f"--model={root / 'model'}", f"--input={inputs}", f"--output={tmp_path / 'out'}"
    )
    assert done.returncode == 1
    assert "corrupt.png" in done.stderr and "wrote 3 of 4 images" in done.stderr
    results = {
        name: Image.open(tmp_path / "out" / name)
        for name in ("gray.png", "rgba.png", "nested/wide.png")
    }
    assert {name: (image.mode, image.size) for name, image in results.items()} == {
        "gray.png": ("RGB", (40, 40)),
        "rgba.png": ("RGBA", (45, 50)),
        "nested/wide.png": ("RGB", (70, 40)),
    }
    np.testing.assert_array_equal(np.asarray(results["rgba.png"])[..., 3], rgba[..., 3])
    assert not (tmp_path / "out" / "corrupt.png").exists()

    # Resizing to the training size and back also gives the input's size.
    done = run_translate(
        f"--model={root / 'model'}",
        f"--input={inputs / 'nested' / 'wide.jpg'}",
        f"--output={tmp_path / 'resized'}",
        "--fit=resize",
    )
    assert done.returncode == 0, done.stderr
    assert Image.open(tmp_path / "resized" / "wide.png").size == (70, 40)

    # Writing next to the inputs would overwrite them: refused, nothing touched.
    done = run_translate(f"--model={root / 'model'}", f"--input={inputs}", f"--output={inputs}")
    assert done.returncode != 0 and "would overwrite an input" in done.stderr
    assert {p: p.read_bytes() for p in inputs.rglob("*") if p.is_file()} == before


class PixelwiseGenerator:
    """A stand-in network with no spatial context, for which tiling must change nothing."""

    multiple, minimum = 8, 8

    def __call__(self, images, example_ids):
        return np.tanh(images * 2.0 + example_ids[:, None, None, None])


def test_tiles_blend_back_into_the_whole_image():
    image = np.random.default_rng(3).uniform(-1, 1, (72, 120, 3)).astype(np.float32)
    whole = PixelwiseGenerator()(image[None], np.array([5]))[0]
    tiled = tiling.run_tiled(PixelwiseGenerator(), image, 5, tile=32, overlap=8, batch_size=3)
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    assert tiling.tile_starts(72, 32, 8) == [0, 24, 40]
    assert tiling.ramp(32, 8).min() > 0


def test_one_tile_covering_the_image_is_the_untiled_output(pix2pix_artifact):
    root, _, _ = pix2pix_artifact
    generator = exported_generator.ExportedGenerator(str(root / "model"))
    image = np.random.default_rng(4).uniform(-1, 1, (64, 64, 3)).astype(np.float32)
    whole = generator(image[None], np.array([0]))[0]
    np.testing.assert_allclose(
        tiling.run_tiled(generator, image, 0, tile=64, overlap=16, batch_size=2),
        whole,
        atol=1e-6,
    )
    tiled = tiling.run_tiled(generator, image, 0, tile=32, overlap=16, batch_size=2)
    assert tiled.shape == whole.shape and np.isfinite(tiled).all()


def test_export_takes_the_generators_moving_average(tiny_config, tmp_path):
    """With `ema_decay` the exported weights are the average (here still the initial weights,
    which the workdir's perturbed weights are not), running statistics included."""
    tiny_config.ema_decay = 0.999
    _, state = make_workdir(tiny_config, str(tmp_path / "run"))
    export.export_generators(str(tmp_path / "run"), str(tmp_path / "model"), mode="eval")
    exported = np.load(tmp_path / "model" / "AtoB.weights.npz")
    average = state.nets["G"].average
    expected = traverse_util.flatten_dict(jax.device_get(average), sep="/")
    last = traverse_util.flatten_dict(
        {"params": state.nets["G"].params, "batch_stats": state.nets["G"].batch_stats}, sep="/"
    )
    assert sorted(exported.files) == sorted(expected) and any("batch_stats" in k for k in expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(exported[key], value)
        assert not np.array_equal(exported[key], last[key]), key


def test_export_refuses_what_it_cannot_do(pix2pix_artifact, tmp_path):
    root, _, _ = pix2pix_artifact
    with pytest.raises(ValueError, match="has only AtoB"):
        export.export_generators(str(root / "run"), str(tmp_path / "m"), directions=["BtoA"])
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(
        FileExistsError, match=r"holds something other than an i2i_jax export \(notes\.txt\)"
    ):
        export.export_generators(str(root / "run"), str(tmp_path / "taken"))
    config = workdir_config.load(str(root / "run"))
    with open(root / "model" / "manifest.json") as f:
        assert json.load(f)["config"]["netG"] == config.netG == "unet_32"
    (tmp_path / "untrained").mkdir()
    workdir_config.check_and_record(config, str(tmp_path / "untrained"), None, False, True)
    with pytest.raises(FileNotFoundError, match="has no checkpoint to export"):
        export.export_generators(str(tmp_path / "untrained"), str(tmp_path / "m"))


@pytest.mark.slow
def test_bad_input_to_translate_is_named_and_the_rest_is_translated(pix2pix_artifact, tmp_path):
    root, _, _ = pix2pix_artifact
    write_images(tmp_path / "inputs", 2, 32, 32)
    (tmp_path / "inputs" / "empty.png").write_bytes(b"")
    done = run_translate(
        f"--model={root / 'model'}", f"--input={tmp_path / 'inputs'}", f"--output={tmp_path / 'o'}"
    )
    assert done.returncode == 1
    assert f"skipped {tmp_path / 'inputs' / 'empty.png'}: empty file (0 bytes)" in done.stderr
    assert "wrote 2 of 3 images" in done.stderr

    (tmp_path / "no_images").mkdir()
    (tmp_path / "no_images" / "notes.txt").write_text("not an image")
    done = run_translate(
        f"--model={root / 'model'}", f"--input={tmp_path / 'no_images'}", f"--output={tmp_path}"
    )
    assert done.returncode == 1 and "holds no image files" in done.stderr


@pytest.mark.slow
def test_an_artifact_of_a_newer_format_is_refused_naming_both_versions(pix2pix_artifact, tmp_path):
    root, _, _ = pix2pix_artifact
    newer = tmp_path / "newer"
    shutil.copytree(root / "model", newer)
    manifest = json.loads((newer / "manifest.json").read_text())
    manifest.update(format="i2i_jax.export/2", i2i_jax_version="9.0.0")
    (newer / "manifest.json").write_text(json.dumps(manifest))
    write_images(tmp_path / "inputs", 1, 32, 32)
    done = run_translate(
        f"--model={newer}", f"--input={tmp_path / 'inputs'}", f"--output={tmp_path / 'out'}"
    )
    assert done.returncode == 1 and not (tmp_path / "out").exists()
    assert (
        "is artifact format i2i_jax.export/2, written by i2i_jax 9.0.0; this translate reads "
        "formats up to i2i_jax.export/1" in done.stderr
    )
    assert done.stderr.rstrip().splitlines()[-1].startswith("Fix: use the translate of that")


@pytest.mark.slow
def test_an_image_over_the_memory_budget_is_tiled_by_itself(pix2pix_artifact, tmp_path):
    """With a budget below what a 96-px image needs whole, translate (the artifact's own copy)
    picks a tile size that fits, says so, and writes what the tiled generator gives."""
    root, _, _ = pix2pix_artifact
    pixels = write_images(tmp_path / "inputs", 1, 96, 96)[0]
    generator = exported_generator.ExportedGenerator(str(root / "model"))
    per_pixel = generator.bytes_per_pixel()
    budget_gb = per_pixel * 96 * 96 / 2 / 2**30  # Half of what the whole image needs.
    done = run_translate(
        f"--model={root / 'model'}",
        f"--input={tmp_path / 'inputs'}",
        f"--output={tmp_path / 'out'}",
        "--output_format=npy",
        "--batch_size=1",
        f"--memory_limit_gb={budget_gb}",
        script=str(root / "model" / "translate.py"),
    )
    assert done.returncode == 0, done.stderr
    notice = re.search(
        r"\(96x96\) needs .* GiB whole, .* in (\d+)-px tiles \(--tile\)", done.stderr
    )
    assert notice, done.stderr
    tile = int(notice.group(1))
    assert tile < 96 and per_pixel * tile * tile <= budget_gb * 2**30
    expected = tiling.run_tiled(
        generator, pixels.astype(np.float32) / 127.5 - 1, 0, tile, min(32, tile // 2), 1
    )
    np.testing.assert_allclose(np.load(tmp_path / "out" / "image0.npy"), expected, atol=1e-5)
