"""What several test files use: the tiny training runs, comparisons of parameter trees, shape
and parameter-count probes, and independent oracles of the convolutions."""

import contextlib
import fcntl
import importlib.util
import os
import re
import signal
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from i2i_jax import parallel, tasks
from i2i_jax.checkpointing import Checkpointer
from i2i_jax.config import workdir as workdir_config
from i2i_jax.data import pipeline, sources

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRANSLATE = os.path.join(REPO, "i2i_jax", "translate.py")

# Convs whose output no norm follows; every other conv bias feeds a norm.
_OUTER_LAYERS = {"down0", "up0", "out", "conv0", "logits"}


def inert_bias(path, innermost: str = "") -> bool:
    """A conv bias that instance norm subtracts right away. Its true gradient is 0, so Adam's
    update is the sign of float noise and differs between any two reduction orders; tests that
    compare two runs leave such biases out. `innermost` names the U-Net's innermost down-conv."""
    names = [key.key for key in path if hasattr(key, "key")]
    return names[-1] == "bias" and names[-2] not in _OUTER_LAYERS | {innermost}


def eps_scale_gradients(nets_after_one_step, b2: float = 0.999, scale: float = 1e-6) -> dict:
    """The parameter elements whose first gradient |g| = sqrt(nu / (1 - b2)) is non-zero but
    below `scale`, 100 times Adam's eps (1e-8), keyed like `assert_same_parameters`'s paths.
    There Adam's update lr * g / (|g| + eps) is anywhere in [-lr, lr] by the gradient's float
    noise, so two right reduction orders can move such an element by 2 lr a step. Exact zeros
    (dead ReLUs) are exact in every order and stay out."""
    masks = {}
    for name, net in nets_after_one_step.items():
        nu = net.opt_state[0].nu
        for path, leaf in jax.tree_util.tree_flatten_with_path(nu)[0]:
            gradient = np.sqrt(np.asarray(leaf) / (1 - b2))
            key = f"['{name}'].params{jax.tree_util.keystr(path)}"
            masks[key] = (gradient > 0) & (gradient < scale)
    return masks


def assert_same_parameters(
    one,
    other,
    norm: str,
    innermost: str = "",
    noisy: dict | None = None,
    noisy_atol=0.0,
    **tolerance,
):
    """Every leaf equal to float tolerance, but instance norm's inert biases, and the elements
    `noisy` marks (from `eps_scale_gradients`): those are held to `noisy_atol` instead, and
    must be at most 1 in 1000 of those compared, so that a real fault cannot hide there."""
    noisy = noisy or {}
    one_leaves = jax.tree_util.tree_flatten_with_path(one)[0]
    other_leaves = jax.tree_util.tree_flatten_with_path(other)[0]
    compared = loose = 0
    for (path, a), (_, b) in zip(one_leaves, other_leaves, strict=True):
        if norm == "instance" and inert_bias(path, innermost):
            continue
        key = jax.tree_util.keystr(path)
        a, b = np.asarray(a), np.asarray(b)
        mask = noisy.get(key, np.zeros(a.shape, bool))
        compared, loose = compared + a.size, loose + int(mask.sum())
        np.testing.assert_allclose(a[~mask], b[~mask], err_msg=key, **tolerance)
        np.testing.assert_array_less(np.abs(a[mask] - b[mask]), noisy_atol + 1e-12, err_msg=key)
    assert loose <= 1e-3 * compared, f"{loose} of {compared} elements had eps-scale gradients"


def assert_same_step(
    before, one, other, norm: str, innermost: str = "", kink_rtol=0.1, **tolerance
):
    """`one` and `other` are the networks after the same training from `before`, computed in
    two ways. What the forward pass computes (batch statistics) is continuous in its inputs and
    must agree elementwise. So must each network's parameters and Adam moments, unless a ReLU
    input of the step lay within float noise of 0: its gradient jumps by that element's whole
    cotangent, and two right reduction orders may fall on either side. Then the network's change
    over the step is held to `kink_rtol` of its size, in norm.

    Measured on the tiny CycleGAN, as |one - other| / |change| per network: 1e-6 on smooth
    steps, up to 1e-2 on a kinked one (about 1 step in 4 at 32 px); and at least 0.67 for a
    wrong batch, half a batch, or unsynchronised batch norm."""
    for name in one:
        key = f"['{name}']"
        jax.tree.map(
            lambda a, b, key=key: np.testing.assert_allclose(a, b, err_msg=key, **tolerance),
            one[name].batch_stats,
            other[name].batch_stats,
        )
        trained = {"params": one[name].params, "opt_state": one[name].opt_state}
        trained_other = {"params": other[name].params, "opt_state": other[name].opt_state}
        try:
            assert_same_parameters(
                {name: trained}, {name: trained_other}, norm, innermost, **tolerance
            )
        except AssertionError as smooth:
            start = {"params": before[name].params, "opt_state": before[name].opt_state}
            gap, change = (
                _norm(_float_leaves(x, norm, innermost), _float_leaves(y, norm, innermost))
                for x, y in ((trained, trained_other), (trained_other, start))
            )
            assert gap <= kink_rtol * change, f"{key}: {gap / change:.2e} of its change\n{smooth}"


def _float_leaves(tree, norm: str, innermost: str) -> np.ndarray:
    """The floating-point leaves of `tree`, as one vector, less instance norm's inert biases."""
    leaves = [
        np.ravel(leaf)
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
        if np.issubdtype(np.asarray(leaf).dtype, np.floating)
        and not (norm == "instance" and inert_bias(path, innermost))
    ]
    return np.concatenate(leaves)


def _norm(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a.astype(np.float64) - b))


# XLA's and absl's fatal log lines, Python's fatal errors, and the last line of a traceback.
_FATAL_LINE = re.compile(
    r"\bF\d{4} \d\d:\d\d|Check failed|Fatal Python error|Traceback"
    r"|^(\[\d+\] )?[\w.]+(Error|Exception):"
)


@contextlib.contextmanager
def started(command: list[str], env: dict | None = None):
    """`command` running in a process group of its own, stdout and stderr merged into its
    `stdout` pipe (text); killed whole on the way out if it is still running."""
    run = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield run
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()


def job_failure_report(output: str, tail: int = 5000) -> str:
    """The lines where a job's processes failed, then its last `tail` characters: the cause is
    logged long before the thread dumps of an abort fill the tail."""
    fatal = [line for line in output.splitlines() if _FATAL_LINE.search(line)]
    return "\n".join(["fatal lines:", *fatal[:20], "last lines:", output[-tail:]])


@contextlib.contextmanager
def one_multiprocess_job_at_a_time():
    """Multi-process jobs of the two xdist workers take turns: two at once put four busy JAX
    processes on CI's 2 cores, and each job's timeouts were sized for a job that runs alone."""
    with open(os.path.join(tempfile.gettempdir(), "i2i_jax_tests_multiprocess.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def saved_checkpoints(config, workdir: str, steps=(2, 4)):
    """Checkpoints in `workdir` of the config's initial state at `steps` (each with its step
    counter set), saved from one device; returns that state, a restore template."""
    task = tasks.build_task(config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, 0, parallel.make_mesh(jax.devices()[:1]))
    checkpointer = Checkpointer(workdir, every_steps=2, keep=5)
    for step in steps:
        checkpointer.maybe_save(step, state.replace(step=state.step + step))
    checkpointer.close()
    return state


def fixed_batches(config, count: int) -> list[dict]:
    """The first `count` training batches of a config, as numpy arrays."""
    stream = pipeline.train_batches(sources.train_sources(config), config, config.batch_size)
    return [next(stream) for _ in range(count)]


def run_steps(config, devices, batches):
    """Trains from the initial state on the given batches over a mesh of `devices`; returns
    the final state and each step's metrics, on the host."""
    mesh = parallel.make_mesh(devices)
    task = tasks.build_task(config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, config.seed, mesh)
    step = parallel.jit_train_step(task.train_step, mesh)
    history = []
    for batch in batches:
        state, step_metrics = step(state, parallel.to_global(batch, mesh))
        history.append(jax.device_get(step_metrics))
    return jax.device_get(state), history


def param_count(module, shape) -> int:
    """Parameters of `module` on inputs of `shape`, without computing anything."""
    variables = jax.eval_shape(
        lambda: module.init(jax.random.key(0), jnp.zeros(shape), train=False)
    )
    return sum(leaf.size for leaf in jax.tree.leaves(variables["params"]))


def output_shape(module, shape):
    """The output shape of `module` on inputs of `shape`, without computing anything."""

    def run():
        variables = module.init(jax.random.key(0), jnp.zeros(shape), train=False)
        return module.apply(variables, jnp.zeros(shape), train=False)

    return jax.eval_shape(run).shape


def conv_nhwc(x, kernel, stride, padding):
    """torch.nn.Conv2d's convolution as XLA's, written here apart from the package's."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (stride, stride),
        [(padding, padding)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def conv_transpose_by_definition(x, kernel, padding: int, output_padding: int, bias=0.0):
    """torch.nn.ConvTranspose2d(stride=2) by its definition, in numpy loops: input (i, j) adds
    x * w[:, :, a, b] to output (2i - padding + a, 2j - padding + b). `kernel` is
    [kh, kw, out, in] (flax's `transpose_kernel` layout)."""
    x, kernel = np.asarray(x, np.float64), np.asarray(kernel, np.float64)
    n, h, w, _ = x.shape
    k = kernel.shape[0]
    size_h, size_w = (
        2 * (h - 1) - 2 * padding + k + output_padding,
        2 * (w - 1) - 2 * padding + k + output_padding,
    )
    out = np.zeros((n, size_h, size_w, kernel.shape[2]))
    for i in range(h):
        for j in range(w):
            for a in range(k):
                for b in range(k):
                    oy, ox = 2 * i - padding + a, 2 * j - padding + b
                    if 0 <= oy < size_h and 0 <= ox < size_w:
                        out[:, oy, ox] += x[:, i, j] @ kernel[a, b].T
    return out + np.asarray(bias)


# translate must run on an artifact alone, as one file: in its process every module of the
# package and every other framework the package uses fails to import.
_NOT_NEEDED_TO_SERVE = ("i2i_jax", "flax", "optax", "orbax", "tensorflow", "ml_collections", "absl")


def run_translate(*flags: str, script: str = TRANSLATE) -> subprocess.CompletedProcess:
    """translate.py run as a script, by its path (its directory first on sys.path, as
    `python translate.py` has it), where nothing but it and its serving modules may be
    imported."""
    blocked = "".join(f"sys.modules[{name!r}] = None; " for name in _NOT_NEEDED_TO_SERVE)
    code = (
        f"import runpy, sys; {blocked}sys.argv = ['translate.py', *sys.argv[1:]]; "
        f"sys.path.insert(0, {os.path.dirname(script)!r}); "
        f"runpy.run_path({script!r}, run_name='__main__')"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *flags],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )


def load_config(name):
    """Loads a config file the way `--config=configs/<name>.py` does: as a file, not a module."""
    spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "configs", name + ".py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config()


def make_workdir(config, workdir: str):
    """A workdir whose checkpoint (step 5) has random weights and non-trivial running
    statistics, as training would leave it; returns the saved state."""
    task = tasks.build_task(config, steps_per_epoch=4)
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = parallel.init_replicated(task.init_state, config.seed, mesh)
    keys = iter(jax.random.split(jax.random.PRNGKey(7), 1000))

    def perturb(path, leaf):
        name = jax.tree_util.keystr(path)
        if "var" in name:
            return jax.random.uniform(next(keys), leaf.shape, minval=0.5, maxval=2.0)
        return leaf + 0.1 * jax.random.normal(next(keys), leaf.shape)

    nets = {
        name: net.replace(
            params=jax.tree_util.tree_map_with_path(perturb, net.params),
            batch_stats=jax.tree_util.tree_map_with_path(perturb, net.batch_stats),
        )
        for name, net in state.nets.items()
    }
    state = jax.device_put(state.replace(step=state.step + 5, nets=nets), parallel.replicated(mesh))
    os.makedirs(workdir)
    workdir_config.check_and_record(config, workdir, None, False, is_writer=True)
    checkpointer = Checkpointer(workdir, every_steps=5, keep=1)
    checkpointer.maybe_save(5, state)
    checkpointer.close()
    return task, jax.device_get(state)


def write_images(directory, count: int, height: int, width: int) -> np.ndarray:
    os.makedirs(directory, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (count, height, width, 3), np.uint8)
    for i, image in enumerate(images):
        Image.fromarray(image).save(os.path.join(directory, f"image{i}.png"))
    return images
