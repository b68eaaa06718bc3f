"""`export --format=onnx`: the ONNX model that onnxruntime runs computes what the JAX artifact
computes, on images of two shapes (one model serves both), for the tiny test networks and for
the papers' full-size generators: unet_256 with batch norm and resnet_9blocks with instance
norm, at 256 px. (A model converted from the reference's .pth files: test_convert_torch.)"""

import numpy as np
import onnxruntime
import pytest

from i2i_jax import config as config_lib
from i2i_jax import export, exported_generator
from i2i_jax.errors import UsageError

from helpers import make_workdir, run_translate, write_images
from tiny_configs import tiny_cyclegan_config, tiny_pix2pix_config


def onnx_outputs(model_dir, direction: str, images: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        str(model_dir / f"{direction}.onnx"), providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"images": images})[0]


def assert_onnx_matches_the_jax_artifact(config, tmp_path, shapes, atol):
    make_workdir(config, str(tmp_path / "run"))
    manifest = export.export_generators(
        str(tmp_path / "run"), str(tmp_path / "model"), mode="eval", extra_format="onnx"
    )
    rng = np.random.default_rng(0)
    for direction, files in manifest["directions"].items():
        assert files["onnx"] == f"{direction}.onnx"
        served = exported_generator.ExportedGenerator(str(tmp_path / "model"), direction)
        for shape in shapes:
            images = rng.uniform(-1, 1, (*shape, files["input_channels"])).astype(np.float32)
            expected = served(images, np.arange(len(images)))
            np.testing.assert_allclose(
                onnx_outputs(tmp_path / "model", direction, images), expected, rtol=0, atol=atol
            )


def test_tiny_generators_of_both_tasks_in_onnx(tmp_path):
    tiny = tiny_pix2pix_config()  # unet_32, batch norm.
    assert_onnx_matches_the_jax_artifact(tiny, tmp_path / "unet", [(2, 32, 32), (1, 64, 96)], 1e-5)
    tiny = tiny_cyclegan_config()  # resnet_2blocks, instance norm, both directions.
    assert_onnx_matches_the_jax_artifact(
        tiny, tmp_path / "resnet", [(2, 32, 32), (1, 36, 52)], 1e-5
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "netG, norm", [("unet_256", "batch"), ("resnet_9blocks", "instance")], ids=["unet", "resnet"]
)
def test_full_size_generators_in_onnx_at_256_px(netG, norm, tmp_path):
    config = config_lib.pix2pix()
    config.data.source = "synthetic"
    config.netG, config.norm = netG, norm
    second = (1, 256, 512) if netG == "unet_256" else (1, 260, 200)  # Each one's size rule.
    shapes = [(2, 256, 256), second]
    assert_onnx_matches_the_jax_artifact(config, tmp_path, shapes, 1e-4)


def test_train_like_is_refused_naming_the_mode_to_use(tmp_path):
    make_workdir(tiny_pix2pix_config(), str(tmp_path / "run"))
    with pytest.raises(UsageError, match=r"(?s)--format=onnx with --mode=train_like.*--mode=eval"):
        export.export_generators(
            str(tmp_path / "run"), str(tmp_path / "model"), mode="train_like", extra_format="onnx"
        )
    assert not (tmp_path / "model").exists()


@pytest.mark.slow
def test_translate_serves_the_onnx_model_as_it_serves_the_jax_one(tmp_path):
    make_workdir(tiny_pix2pix_config(), str(tmp_path / "run"))
    export.export_generators(
        str(tmp_path / "run"), str(tmp_path / "model"), mode="eval", extra_format="onnx"
    )
    write_images(tmp_path / "inputs", 3, 40, 56)
    outputs = {}
    for name, model in (("jax", tmp_path / "model"), ("onnx", tmp_path / "model" / "AtoB.onnx")):
        done = run_translate(
            f"--model={model}",
            f"--input={tmp_path / 'inputs'}",
            f"--output={tmp_path / name}",
            "--output_format=npy",
            script=str(tmp_path / "model" / "translate.py"),
        )
        assert done.returncode == 0, done.stderr
        outputs[name] = [np.load(tmp_path / name / f"image{i}.npy") for i in range(3)]
    for jax_output, onnx_output in zip(outputs["jax"], outputs["onnx"], strict=True):
        assert onnx_output.shape == (40, 56, 3)
        np.testing.assert_allclose(onnx_output, jax_output, rtol=0, atol=1e-5)
