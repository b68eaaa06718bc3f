"""Multi-process data parallelism, run for real: 2 processes x 2 CPU devices on 127.0.0.1,
started by `launch/local.sh` and connected by `jax.distributed` (Gloo collectives).

Each job trains a tiny config for 4 steps; the test compares what every device of every
process holds with a 1-process run on 4 devices and a 1-device run on the same global batches,
and resumes the job's step-2 checkpoint on 1 process x 1 device.

Runs are compared over few steps, and CycleGAN with batch norm, because GAN training amplifies
float differences of reduction order. Measured with CycleGAN: with instance norm, the conv
biases the norm cancels get gradients of pure float noise, which Adam turns into full-size
steps of either sign, and by step 4 they change G_B's gradient by 0.4 %; with batch norm, steps
1-5 agree to 1e-6 and step 6 moves G_B's gradient by 0.6 % (while the 2 x 2 state of step 5,
stepped on one device, gives the 2 x 2 step 6 to 2e-6: the step computes the same function).
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from i2i_jax import parallel, tasks, train
from i2i_jax.data import sources

from helpers import assert_same_parameters, fixed_batches, run_steps
from tiny_configs import get_config

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
LAUNCHER = os.path.join(REPO, "launch", "local.sh")
WORKER = os.path.join(TESTS, "multihost_worker.py")
STEPS = 4
SCHEDULE = {
    "num_train_steps": STEPS,
    "checkpoint_every_steps": 2,
    "keep_checkpoints": 3,
    "eval_every_steps": 2,
}
OVERRIDES = {"pix2pix": SCHEDULE, "cycle_gan": {**SCHEDULE, "norm": "batch"}}


def launch(
    processes: int, devices: int, model: str, workdir: str, dump_dir: str, timeout: float = 400
) -> str:
    """Runs the worker job under the local launcher and returns its output. Whatever happens
    (failure, hang, test error), every process of the job is killed before this returns."""
    command = [
        LAUNCHER,
        "-n",
        str(processes),
        "-d",
        str(devices),
        "--",
        sys.executable,
        WORKER,
        f"--config={os.path.join(TESTS, 'tiny_configs.py')}:{model}",
        f"--workdir={workdir}",
        f"--dump_dir={dump_dir}",
        *(f"--config.{key}={value}" for key, value in OVERRIDES[model].items()),
    ]
    job = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        cwd=REPO,
    )
    try:
        output, _ = job.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(job.pid, signal.SIGKILL)
        output, _ = job.communicate()
        pytest.fail(f"the job hung for {timeout} s and was killed:\n{output[-5000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, output[-5000:]
    return output


def final_state_tree(state) -> dict:
    return {"nets": state.nets, "pools": state.pools}


def dumped_copies(path: str, template) -> list:
    """Each device's copy of the dumped state, as trees shaped like `template`."""
    with np.load(path) as dump:
        arrays = dict(dump)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    devices = sorted({key.rsplit("@", 1)[1] for key in arrays})
    return [
        treedef.unflatten([arrays[f"{jax.tree_util.keystr(p)}@{device}"] for p, _ in leaves])
        for device in devices
    ]


def innermost(config) -> str:
    generator = tasks.build_task(config, 4).generator
    return f"down{generator.num_downs - 1}" if hasattr(generator, "num_downs") else ""


@pytest.fixture(scope="module", params=["pix2pix", "cycle_gan"])
def two_by_two(request, tmp_path_factory):
    """A 2-process x 2-device job of `model`, and the same training on 1x4 and on 1x1."""
    model = request.param
    root = tmp_path_factory.mktemp(model)
    output = launch(2, 2, model, str(root / "run"), str(root / "dumps"))
    config = get_config(model)
    config.update(OVERRIDES[model])
    batches = fixed_batches(config, STEPS)
    one_by_four, _ = run_steps(config, jax.devices()[:4], batches)
    one_by_one, _ = run_steps(config, jax.devices()[:1], batches)
    return dict(
        model=model,
        root=root,
        output=output,
        config=config,
        one_by_four=one_by_four,
        one_by_one=one_by_one,
    )


def test_every_device_of_both_processes_holds_the_parameters_of_one_device(two_by_two):
    config, reference = two_by_two["config"], final_state_tree(two_by_two["one_by_one"])
    copies = [
        copy
        for process in (0, 1)
        for copy in dumped_copies(
            str(two_by_two["root"] / "dumps" / f"process_{process}.npz"), reference
        )
    ]
    assert len(copies) == 4  # 2 processes x 2 devices.
    for copy in copies[1:]:  # The replicas of the job agree exactly.
        jax.tree.map(np.testing.assert_array_equal, copy, copies[0])
    for other in (two_by_two["one_by_four"], two_by_two["one_by_one"]):
        assert_same_parameters(
            copies[0], final_state_tree(other), config.norm, innermost(config), rtol=1e-4, atol=1e-4
        )


def test_only_process_0_reports_and_the_evaluation_is_the_single_process_one(two_by_two):
    output, config = two_by_two["output"], two_by_two["config"]
    assert "process 0 of 2: 2 local cpu devices" in output
    assert "process 1 of 2: 2 local cpu devices" in output
    assert "[0] " in output and f"eval at step {STEPS}" in output
    assert not [
        line
        for line in output.splitlines()
        if line.startswith("[1]") and ("eval at step" in line or "step 2/" in line)
    ]
    with open(two_by_two["root"] / "run" / "eval_metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records] == [0, 2, 4]

    # The same state evaluated by this single process over its 4 devices. The test split (6)
    # does not fill the last batches, so padding must be masked out the same way.
    mesh = parallel.make_mesh(jax.devices()[:4])
    task = tasks.build_task(config, 4)
    state = jax.device_put(two_by_two["one_by_four"], parallel.replicated(mesh))
    results, _ = train.Evaluator(task, sources.eval_sources(config), config, mesh)(state)
    assert set(results) == set(records[-1]) - {"step"}
    for key, value in results.items():
        assert records[-1][key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


def test_a_checkpoint_of_the_two_process_job_resumes_on_one_device(two_by_two):
    """Saved on 2 x 2 at step 2, resumed on 1 x 1: the same parameters as uninterrupted 1 x 1."""
    root, model = two_by_two["root"], two_by_two["model"]
    workdir = root / "resumed"
    shutil.copytree(root / "run", workdir)
    shutil.rmtree(workdir / "checkpoints" / str(STEPS))
    output = launch(1, 1, model, str(workdir), str(root / "resumed_dumps"))
    assert "resumed from" in output and "at step 2" in output
    reference = final_state_tree(two_by_two["one_by_one"])
    (resumed,) = dumped_copies(str(root / "resumed_dumps" / "process_0.npz"), reference)
    assert_same_parameters(
        resumed,
        reference,
        two_by_two["config"].norm,
        innermost(two_by_two["config"]),
        rtol=1e-4,
        atol=1e-4,
    )
