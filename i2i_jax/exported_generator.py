"""An artifact written by `i2i_jax.export`, loaded to run: its manifest (whose format this
file must know), the serialized function and its weights.

Part of the serving tool: `translate.py` imports it, and they travel together with an exported
artifact (jax and numpy only, none of this project's other code).
"""

import json
import os

import jax
import numpy as np
from jax import export as jax_export

try:  # python -m i2i_jax.translate
    from i2i_jax import tiling
except ImportError:  # python translate.py, with the modules it needs beside it
    import tiling

ARTIFACT_FORMAT, READS_UP_TO = "i2i_jax.export", 1  # Manifests say "i2i_jax.export/<N>".


class TranslateError(Exception):
    """Something the user fixes (a flag, the model directory, the inputs): the command prints
    its message, fix last, and exits with status 1, as the package's other tools do."""


class ExportedGenerator:
    """One direction of an exported artifact: float32 NHWC images in [-1, 1] in and out.

    `model` is the artifact's directory (the JAX function runs), or its `<direction>.onnx`
    (`export --format=onnx`), which onnxruntime then runs instead."""

    def __init__(self, model: str, direction: str | None = None, seed: int = 0):
        model_dir, onnx_file = model, None
        if model.endswith(".onnx"):
            model_dir, onnx_file = os.path.dirname(model) or ".", os.path.basename(model)
            direction = onnx_file.removesuffix(".onnx")
        manifest_path = os.path.join(model_dir, "manifest.json")
        if not os.path.exists(manifest_path):
            raise TranslateError(
                f"{manifest_path} does not exist: --model must be a directory written by "
                "python -m i2i_jax.export\nFix: pass such a directory (or its <direction>.onnx)"
            )
        with open(manifest_path) as f:
            self.manifest = json.load(f)
        check_format(self.manifest, model_dir)
        directions = self.manifest["directions"]
        direction = direction or ("AtoB" if "AtoB" in directions else next(iter(directions)))
        if direction not in directions:
            raise TranslateError(
                f"--direction={direction}: {model_dir} has {', '.join(directions)}\nFix: pass "
                f"--direction={next(iter(directions))}, or export {direction} too"
            )
        files = directions[direction]
        with open(os.path.join(model_dir, files["function"]), "rb") as f:
            self.exported = jax_export.deserialize(bytearray(f.read()))
        with np.load(os.path.join(model_dir, files["weights"])) as weights:
            self.weights = {name: jax.device_put(weights[name]) for name in weights.files}
        images = self.manifest["images"]
        self.multiple = images["height_width_multiple_of"]
        self.minimum = images["min_height_width"]
        self.trained_size = images["trained_size"]
        self.in_channels = files["input_channels"]
        self.train_like = self.manifest["test_time_mode"] == "train_like"
        self.seed = np.int32(seed)
        self._call = jax.jit(self.exported.call)
        self._onnx = _onnx_session(model, files) if onnx_file else None

    def bytes_per_pixel(self) -> float:
        """The network's memory per input pixel (`tiling.bytes_per_pixel`, at the trained size)."""
        size = self.accepted_size(self.trained_size)
        args = [jax.ShapeDtypeStruct((1, size, size, self.in_channels), np.float32)]
        if self.train_like:
            args += [jax.ShapeDtypeStruct((), np.int32), jax.ShapeDtypeStruct((1,), np.int32)]
        compiled = self._call.lower(self.weights, *args).compile()
        return tiling.bytes_per_pixel(compiled, size * size, self.in_channels)

    def accepted_size(self, size: int) -> int:
        """The least size >= `size` that the network takes."""
        return max(self.minimum, -(-size // self.multiple) * self.multiple)

    def __call__(self, images: np.ndarray, example_ids: np.ndarray) -> np.ndarray:
        """`example_ids` pick each image's dropout masks in train_like mode."""
        if self._onnx is not None:
            return self._onnx.run(None, {"images": images})[0]
        args = [self.weights, images]
        if self.train_like:
            args += [self.seed, example_ids.astype(np.int32)]
        return np.asarray(self._call(*args))


def _onnx_session(path: str, files: dict):
    """onnxruntime's session of the artifact's ONNX model, or an error saying what is missing."""
    if os.path.basename(path) != files.get("onnx"):
        raise TranslateError(
            f"--model={path}: the artifact has no such ONNX model\nFix: export it with "
            "python -m i2i_jax.export --format=onnx --mode=eval"
        )
    try:
        import onnxruntime
    except ImportError:
        raise TranslateError(
            f"--model={path} is run by onnxruntime, which is not installed\nFix: pip install "
            "onnxruntime"
        ) from None
    return onnxruntime.InferenceSession(path, providers=onnxruntime.get_available_providers())


def check_format(manifest: dict, model_dir: str) -> None:
    """Refuses an artifact of a format this file does not know (a newer export's)."""
    name, _, version = str(manifest.get("format", "")).partition("/")
    if name != ARTIFACT_FORMAT or not version.isdigit():
        raise TranslateError(
            f"{model_dir}: format {manifest.get('format')!r} is no i2i_jax export\nFix: pass a "
            "directory written by python -m i2i_jax.export"
        )
    if int(version) > READS_UP_TO:
        raise TranslateError(
            f"{model_dir} is artifact format {name}/{version}, written by i2i_jax "
            f"{manifest.get('i2i_jax_version', '?')}; this translate reads formats up to "
            f"{name}/{READS_UP_TO}.\nFix: use the translate of that i2i_jax version or newer "
            "(pip install -U i2i_jax)"
        )
