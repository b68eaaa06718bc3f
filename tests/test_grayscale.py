"""Grayscale to colour (`input_nc=1`), end to end on the embedded data: the pipeline feeds
1-channel inputs, training and evaluation run, and the exported generator translates a
colour photo (read as luma) into a colour image."""

import os

import numpy as np
import pytest
from PIL import Image

from i2i_jax import export, train
from i2i_jax.data import pipeline, sources

from helpers import run_translate
from tiny_configs import get_config

pytestmark = pytest.mark.slow


def test_a_grayscale_input_config_trains_exports_and_translates(tmp_path):
    config = get_config("pix2pix")
    config.input_nc = 1
    config.update({"num_train_steps": 2, "eval_every_steps": 2, "checkpoint_every_steps": 2})

    batch = next(pipeline.train_batches(sources.train_sources(config), config, 4))
    assert batch["A"].shape == (4, 32, 32, 1) and batch["B"].shape == (4, 32, 32, 3)
    colour = next(
        pipeline.train_batches(
            sources.train_sources(get_config("pix2pix")), get_config("pix2pix"), 4
        )
    )
    # The same crops, the input as its luma (ITU-R 601 weights, as PIL's "L").
    luma = np.round(colour["A"].astype(np.float64) @ [0.2989, 0.5870, 0.1140])
    np.testing.assert_allclose(batch["A"][..., 0], luma, atol=1)
    np.testing.assert_array_equal(batch["B"], colour["B"])

    workdir = str(tmp_path / "run")
    state, results = train.train_and_evaluate(config, workdir)
    assert int(state.step) == 2 and np.isfinite(results["psnr"])
    assert state.nets["G"].params["down0"]["kernel"].shape[2] == 1  # One input channel.
    grid = np.asarray(Image.open(os.path.join(workdir, "samples", "step_00000002.png")))
    assert grid.shape[2] == 3 and grid.shape[1] == 3 * 32  # input (as gray) | output | target

    described = export.export_generators(workdir, str(tmp_path / "model"), mode="eval")
    assert described["directions"]["AtoB"]["input_channels"] == 1
    os.makedirs(tmp_path / "photos")
    Image.fromarray(colour["A"][0]).save(tmp_path / "photos" / "photo.png")
    done = run_translate(
        f"--model={tmp_path / 'model'}",
        f"--input={tmp_path / 'photos'}",
        f"--output={tmp_path / 'out'}",
    )
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(tmp_path / "out" / "photo.png")).shape == (32, 32, 3)


def test_a_cyclegan_between_grayscale_and_colour_trains(tmp_path):
    """G_A takes 1 channel and makes 3, G_B the reverse (without the identity loss, which
    needs the same channels on both sides)."""
    config = get_config("cycle_gan")
    config.input_nc, config.lambda_identity = 1, 0.0
    config.update({"num_train_steps": 2, "eval_every_steps": 2, "checkpoint_every_steps": 2})
    state, results = train.train_and_evaluate(config, str(tmp_path))
    assert int(state.step) == 2 and np.isfinite(results["cycle_l1_A"])
    assert state.nets["G_A"].params["in"]["kernel"].shape[2] == 1
    assert state.nets["G_B"].params["out"]["kernel"].shape[3] == 1
