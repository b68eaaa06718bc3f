"""`export --format=onnx`: each generator also as an ONNX model, for onnxruntime, C++, mobile
and browsers. Eval mode only (running statistics, no dropout): train_like draws its dropout
masks with JAX's threefry generator, which no ONNX operator computes.

The model takes and gives float32 NHWC images in [-1, 1], as the JAX artifact does, with a
dynamic batch, height and width (the manifest's size rule applies); the weights are inside.
"""

import jax
import numpy as np
import tensorflow as tf
from jax import export as jax_export

from i2i_jax.errors import UsageError

INPUT, OUTPUT = "images", "outputs"
AXES = ["batch", "height", "width", "channels"]


def check_mode(mode: str) -> None:
    if mode != "eval":
        raise UsageError(
            f"--format=onnx with --mode={mode}: ONNX has no operator for the threefry random "
            "numbers that train_like's dropout masks come from\nFix: export with --mode=eval "
            "(running statistics, no dropout)"
        )


def write_onnx(generate, weights: dict, image_spec: tuple[str, tuple], path: str) -> None:
    """`generate(weights, images)` traced for every image shape of `image_spec` (symbolic
    shape, constraints), converted (`onnx_graph`) and written to `path`."""
    from i2i_jax import onnx_graph  # Needs the onnx package: only for this format.

    spec, constraints = image_spec
    images = jax.ShapeDtypeStruct(
        jax_export.symbolic_shape(spec, constraints=constraints), np.float32
    )
    traced = jax.make_jaxpr(lambda x: generate(weights, x))(images)
    model = onnx_graph.to_onnx(traced, INPUT, OUTPUT, AXES)
    with tf.io.gfile.GFile(path, "wb") as f:
        f.write(model.SerializeToString())
