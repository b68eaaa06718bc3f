"""`python -m i2i_jax.export --workdir=DIR --output=OUT`: a trained generator, ready to serve.

The artifact is a directory that runs without this project's code:

- `<direction>.jax`: a serialized `jax.export` function `(weights, images) -> images`, lowered
  for cpu, cuda and tpu, with a symbolic batch and symbolic height and width (any multiple of
  what the architecture needs), so one file serves every batch and image size;
- `<direction>.weights.npz`: its weights, a flat dict `"params/down0/kernel" -> array`, kept
  out of the function so that the program stays small and the weights stay inspectable;
- `manifest.json`: how to call it (inputs, value range, size rule, test-time mode) and the
  training config;
- `translate.py` (with the two modules it imports): the serving tool, so that
  `python OUT/translate.py --model=OUT --input=... --output=...` needs only jax, numpy, Pillow;
- with `--format=savedmodel`, also `savedmodel/<direction>/`, a TF SavedModel for TF Serving;
  with `--format=onnx`, also `<direction>.onnx` (eval mode; `onnx_export.py`).

Test-time mode is explicit: `eval` (running statistics, no dropout: deterministic) or
`train_like` (the paper's: dropout on and per-image batch statistics; the function then also
takes an int32 `seed` and int32 `example_ids`, one per image, that pick the dropout masks).
"""

import io
import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf
from absl import flags
from flax import traverse_util
from jax import export as jax_export

import i2i_jax
from i2i_jax import cli, models, onnx_export, outputs, parallel, tasks
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.config import workdir as workdir_config
from i2i_jax.data import pipeline
from i2i_jax.errors import NotFoundError, UsageError
from i2i_jax.state import NetState
from i2i_jax.tasks.common import TEST_MODES, translate

log = logging.getLogger("i2i_jax")

PLATFORMS = ("cpu", "cuda", "tpu")
FORMATS = ("jax", "savedmodel", "onnx")
MANIFEST = "manifest.json"
# The serving tool, copied into every artifact: `python ARTIFACT/translate.py --model=ARTIFACT`.
SERVING_FILES = ("translate.py", "exported_generator.py", "tiling.py")


def restore_state(
    workdir: str, config, mesh=None, step: int | None = None, purpose: str = "export"
):
    """The task and the workdir's train state of `step` (by default its latest restorable
    one), replicated over `mesh` (by default this process's first device), read without
    creating or moving anything. `purpose` names what the missing checkpoint was wanted for."""
    task = tasks.build_task(config, steps_per_epoch=1)  # The schedule plays no part here.
    mesh = mesh or parallel.make_mesh(jax.local_devices()[:1])
    sharding = parallel.replicated(mesh)
    template = jax.tree.map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
        jax.eval_shape(task.init_state, config.seed),
    )
    checkpointer = Checkpointer(
        workdir, every_steps=0, keep=config.keep_checkpoints, read_only=True
    )
    try:
        if step is not None:
            return task, checkpointer.restore_step(step, template)
        state = checkpointer.restore_latest(template)
    finally:
        checkpointer.close()
    if state is None:
        raise NotFoundError(
            f"{workdir} has no checkpoint to {purpose}: train it first "
            f"(python -m i2i_jax.main --workdir={workdir} ...)"
        )
    return task, state


def flat_weights(net: NetState) -> dict[str, np.ndarray]:
    variables = {"params": net.params, "batch_stats": net.batch_stats}
    return {
        key: np.asarray(value)
        for key, value in traverse_util.flatten_dict(jax.device_get(variables), sep="/").items()
    }


def generator_function(module, mode: str):
    """The generator at test time as a function of flat weights (and, train_like, randomness)."""

    def generate(weights, images, *randomness):
        variables = traverse_util.unflatten_dict(weights, sep="/")
        net = NetState(variables["params"], variables.get("batch_stats", {}), None)
        key, example_ids = None, None
        if mode == "train_like":
            seed, example_ids = randomness
            key = jax.random.PRNGKey(seed)
        return translate(module, net, images, mode, key, example_ids)

    return generate


def image_shape_spec(config, channels: int) -> tuple[str, tuple[str, ...]]:
    """The symbolic shape of the images the generator takes, [batch, height, width, channels]
    with every height and width it accepts, and the constraints on its symbols."""
    multiple, minimum = models.input_size_rule(config)
    least = -(-minimum // multiple)
    constraints = (f"h >= {least}", f"w >= {least}") if least > 1 else ()
    return f"b, {multiple}*h, {multiple}*w, {channels}", constraints


def export_function(module, weights: dict, config, mode: str, channels: int):
    spec, constraints = image_shape_spec(config, channels)
    images = jax.ShapeDtypeStruct(
        jax_export.symbolic_shape(spec, constraints=constraints), jnp.float32
    )
    args = [{k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in weights.items()}, images]
    if mode == "train_like":
        args += [
            jax.ShapeDtypeStruct((), jnp.int32),
            jax.ShapeDtypeStruct(images.shape[:1], jnp.int32),
        ]
    return jax_export.export(jax.jit(generator_function(module, mode)), platforms=PLATFORMS)(*args)


def write_savedmodel(
    exported, weights: dict, mode: str, image_spec: tuple, channels: int, path: str
) -> None:
    """The exported function inside a TF SavedModel whose weights are TF variables; its
    `serving_default` signature takes float32 images in [-1, 1] (train_like: and the seed and
    example ids)."""
    from jax.experimental import jax2tf  # TF interop only for this format.

    module = tf.Module()
    module.weights = {
        k: tf.Variable(v, trainable=False, name=k.replace("/", ".")) for k, v in weights.items()
    }
    signature = [tf.TensorSpec([None, None, None, channels], tf.float32, name="images")]
    spec, constraints = image_spec
    shapes = [None, f"({spec})"]
    if mode == "train_like":
        signature += [
            tf.TensorSpec([], tf.int32, name="seed"),
            tf.TensorSpec([None], tf.int32, name="example_ids"),
        ]
        shapes += [None, "(b,)"]
    converted = jax2tf.convert(
        exported.call,
        polymorphic_shapes=shapes,
        polymorphic_constraints=constraints,
        with_gradient=False,
    )

    @tf.function(input_signature=signature, autograph=False)
    def serve(images, *randomness):
        weights = dict(module.weights.items())  # A plain dict, as the function was exported.
        return {"images": converted(weights, images, *randomness)}

    module.serve = serve
    tf.saved_model.save(module, path, signatures={"serving_default": serve})


def manifest(config, step: int, mode: str, directions: dict) -> dict:
    multiple, minimum = models.input_size_rule(config)
    inputs = ["weights", "images"] + (["seed", "example_ids"] if mode == "train_like" else [])
    return {
        "format": "i2i_jax.export/1",
        "i2i_jax_version": i2i_jax.__version__,
        "jax_version": jax.__version__,
        "model": config.model,
        "netG": config.netG,
        "step": step,
        "test_time_mode": mode,
        "platforms": list(PLATFORMS),
        "inputs": inputs,
        "images": {
            "layout": "NHWC",
            "dtype": "float32",
            "value_range": [-1.0, 1.0],
            "height_width_multiple_of": multiple,
            "min_height_width": minimum,
            "trained_size": config.crop_size,
        },
        "directions": directions,
        "config": json.loads(workdir_config.to_json(config)),
    }


def is_export(path: str) -> bool:
    """Whether `path` holds an artifact this tool wrote: a manifest of an i2i_jax format."""
    written = (
        workdir_config.read_json(os.path.join(path, MANIFEST), "the export it describes") or {}
    )
    return str(written.get("format", "")).startswith("i2i_jax.export/")


def _with_xla_convolutions(config, direction: str):
    """The generator of `direction` with XLA's own convolutions throughout: the JAX artifact
    picks a form per platform at run time, which ONNX cannot express."""
    native = config.copy_and_resolve_references()
    native.conv_lowering = "native"
    return tasks.build_task(native, steps_per_epoch=1).generators()[direction][1]


def export_generators(
    workdir: str,
    output: str,
    directions: list[str] | None = None,
    mode: str | None = None,
    extra_format: str = "jax",
    overwrite: bool = False,
) -> dict:
    """Exports the generators of `directions` (default: every one the task has) from the
    workdir's latest checkpoint; returns the manifest. `mode` defaults to the config's
    `eval_mode`, the one its evaluation metrics were measured in. `extra_format` adds a TF
    SavedModel (`savedmodel`) or an ONNX model (`onnx`) of each direction. An earlier export
    in `output` is replaced only with `overwrite`; anything else there is refused."""
    pipeline.hide_accelerators_from_tensorflow()  # TF only writes files (and SavedModels).
    config = workdir_config.load(workdir)
    mode = mode or config.eval_mode
    if mode not in TEST_MODES:
        raise UsageError(f"--mode={mode!r} is not one of {TEST_MODES}")
    if extra_format == "onnx":
        onnx_export.check_mode(mode)
    rules = dict(what="an i2i_jax export", is_ours=is_export, overwrite=overwrite, workdir=workdir)
    outputs.check_output(output, **rules)
    task, state = restore_state(workdir, config)
    generators = task.generators()
    directions = directions or list(generators)
    unknown = [d for d in directions if d not in generators]
    if unknown:
        raise UsageError(
            f"--direction={','.join(unknown)}: a {config.model} workdir has only "
            f"{', '.join(generators)}"
        )

    with outputs.staged(output, **rules) as staging:
        return _write_artifact(staging, config, task, state, directions, mode, extra_format)


def _write_artifact(staging: str, config, task, state, directions, mode, extra_format) -> dict:
    """Every file of the artifact, written into `staging`; returns the manifest."""
    generators = task.generators()
    files = {}
    for direction in directions:
        name, module, channels = generators[direction]
        weights = flat_weights(state.nets[name].for_testing())  # Its moving average, if kept.
        exported = export_function(module, weights, config, mode, channels)
        with tf.io.gfile.GFile(os.path.join(staging, f"{direction}.jax"), "wb") as f:
            f.write(exported.serialize())
        buffer = io.BytesIO()  # np.savez seeks, which a GFile opened for writing cannot.
        np.savez(buffer, **weights)
        with tf.io.gfile.GFile(os.path.join(staging, f"{direction}.weights.npz"), "wb") as f:
            f.write(buffer.getvalue())
        files[direction] = {
            "network": name,
            "function": f"{direction}.jax",
            "weights": f"{direction}.weights.npz",
            "input_channels": channels,
            "output_channels": exported.out_avals[0].shape[-1],
        }
        if extra_format == "onnx":
            files[direction]["onnx"] = f"{direction}.onnx"
            onnx_export.write_onnx(
                generator_function(_with_xla_convolutions(config, direction), mode),
                weights,
                image_shape_spec(config, channels),
                os.path.join(staging, f"{direction}.onnx"),
            )
        if extra_format == "savedmodel":
            files[direction]["savedmodel"] = f"savedmodel/{direction}"
            write_savedmodel(
                exported,
                weights,
                mode,
                image_shape_spec(config, channels),
                channels,
                os.path.join(staging, "savedmodel", direction),
            )
        log.info("exported %s (%s, step %d, %s mode)", direction, name, int(state.step), mode)
    description = manifest(config, int(state.step), mode, files)
    with tf.io.gfile.GFile(os.path.join(staging, MANIFEST), "w") as f:
        json.dump(description, f, indent=2)
    for name in SERVING_FILES:
        tf.io.gfile.copy(os.path.join(os.path.dirname(__file__), name), os.path.join(staging, name))
    return description


def define_flags() -> None:
    """Only when run as a program, so importing this module defines no flags."""
    flags.DEFINE_string("workdir", None, "A training workdir (python -m i2i_jax.main).")
    flags.DEFINE_string("output", None, "Directory to write the artifact to.")
    flags.DEFINE_list("direction", None, "AtoB, BtoA or both (CycleGAN); default: every generator.")
    flags.DEFINE_enum("mode", None, TEST_MODES, "Test-time mode; default: the config's eval_mode.")
    flags.DEFINE_enum(
        "format",
        "jax",
        FORMATS,
        "savedmodel: also write a TF SavedModel for TF Serving; onnx: also an ONNX model "
        "(eval mode) for onnxruntime.",
    )
    flags.DEFINE_bool("overwrite", False, "Replace an earlier export in --output.")
    flags.mark_flags_as_required(["workdir", "output"])


def main():
    f = flags.FLAGS
    description = export_generators(f.workdir, f.output, f.direction, f.mode, f.format, f.overwrite)
    log.info(
        "wrote %s: %s, step %d", f.output, ", ".join(description["directions"]), description["step"]
    )


if __name__ == "__main__":
    define_flags()
    cli.run(main)
