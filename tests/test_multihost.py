"""Multi-process data parallelism, run for real: 2 processes x 2 CPU devices on 127.0.0.1,
started by `launch/local.sh` and connected by `jax.distributed` (Gloo collectives).

Each job trains a tiny config for 4 steps and saves after every step. The tests step this
process, on 4 devices and on 1, from each of the job's checkpoints and compare with the next
one; evaluate the job's final state here; and resume its step-2 checkpoint on 1 x 1.

Steps are compared one at a time from the same state, because GAN training amplifies float
differences of reduction order: two whole runs on different meshes drift apart by more than
any one step does. Even one step is not always smooth: where a ReLU input lies within float
noise of 0, Gloo's reduction order and this process's fall on either side of the kink, and
the gradients differ by that element's cotangent (helpers.assert_same_step, measured there).
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
import orbax.checkpoint as ocp
import pytest

from i2i_jax import parallel, tasks, train
from i2i_jax.data import sources

from helpers import (
    assert_same_step,
    fixed_batches,
    job_failure_report,
    one_multiprocess_job_at_a_time,
)
from tiny_configs import get_config

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
LAUNCHER = os.path.join(REPO, "launch", "local.sh")
WORKER = os.path.join(TESTS, "multihost_worker.py")
STEPS = 4
SCHEDULE = {
    "num_train_steps": STEPS,
    "checkpoint_every_steps": 1,
    "keep_checkpoints": STEPS,
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
    with one_multiprocess_job_at_a_time():
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
            report = job_failure_report(output)
            pytest.fail(f"the job hung for {timeout} s and was killed:\n{report}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode == 0, job_failure_report(output)
    return output


def final_state_tree(state) -> dict:
    return {"nets": state.nets, "pools": state.pools}


class OneProcess:
    """The training step on a mesh of this process's first `devices` devices, started from
    the initial state or from the job's checkpoints in `workdir`."""

    def __init__(self, config, devices: int, workdir: str):
        self.config = config
        self.mesh = parallel.make_mesh(jax.devices()[:devices])
        self.task = tasks.build_task(config, steps_per_epoch=4)
        self.step = parallel.jit_train_step(self.task.train_step, self.mesh)
        self.manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))

    def state_at(self, step: int):
        initial = parallel.init_replicated(self.task.init_state, self.config.seed, self.mesh)
        if step == 0:
            return initial
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, initial)
        return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))

    def train(self, state, batches):
        for batch in batches:
            state, _ = self.step(state, parallel.to_global(batch, self.mesh))
        return jax.device_get(state)

    def close(self):
        self.manager.close()


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


def state_template(config) -> dict:
    """The shape of `final_state_tree`'s tree, without computing it."""
    task = tasks.build_task(config, 4)
    return final_state_tree(jax.eval_shape(task.init_state, config.seed))


def innermost(config) -> str:
    generator = tasks.build_task(config, 4).generator
    return f"down{generator.num_downs - 1}" if hasattr(generator, "num_downs") else ""


@pytest.fixture(scope="module", params=["pix2pix", "cycle_gan"])
def two_by_two(request, tmp_path_factory):
    """A 2-process x 2-device job of `model`, and the global batches it trained on."""
    model = request.param
    root = tmp_path_factory.mktemp(model)
    output = launch(2, 2, model, str(root / "run"), str(root / "dumps"))
    config = get_config(model)
    config.update(OVERRIDES[model])
    return dict(
        model=model,
        root=root,
        output=output,
        config=config,
        batches=fixed_batches(config, STEPS),
    )


def test_every_device_of_both_processes_holds_the_parameters_of_one_device(two_by_two):
    config, batches, run = two_by_two["config"], two_by_two["batches"], two_by_two["root"] / "run"
    template = state_template(config)
    copies = [
        copy
        for process in (0, 1)
        for copy in dumped_copies(
            str(two_by_two["root"] / "dumps" / f"process_{process}.npz"), template
        )
    ]
    assert len(copies) == 4  # 2 processes x 2 devices.
    for copy in copies[1:]:  # The replicas of the job agree exactly.
        jax.tree.map(np.testing.assert_array_equal, copy, copies[0])
    for devices in (4, 1):
        here = contextlib.closing(OneProcess(config, devices, str(run)))
        with here as one:
            saved = [one.state_at(step) for step in range(STEPS + 1)]
            # What the devices hold is what the job saved last.
            last = jax.device_get(final_state_tree(saved[STEPS]))
            jax.tree.map(np.testing.assert_array_equal, last, copies[0])
            for step in range(STEPS):
                before, job = jax.device_get(saved[step]), jax.device_get(saved[step + 1])
                stepped = one.train(saved[step], batches[step : step + 1])
                assert_same_step(
                    before.nets,
                    job.nets,
                    stepped.nets,
                    config.norm,
                    innermost(config),
                    rtol=1e-5,
                    atol=1e-5,
                )
                jax.tree.map(
                    lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5),
                    job.pools,
                    stepped.pools,
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

    # The job's final state evaluated by this single process over its 4 devices. The test
    # split (6) does not fill the last batches, so padding must be masked out the same way.
    with contextlib.closing(OneProcess(config, 4, str(two_by_two["root"] / "run"))) as one:
        state = one.state_at(STEPS)
        results, _ = train.Evaluator(one.task, sources.eval_sources(config), config, one.mesh)(
            state
        )
    assert set(results) == set(records[-1]) - {"step"}
    for key, value in results.items():
        assert records[-1][key] == pytest.approx(value, rel=1e-3, abs=1e-4), key


def test_a_checkpoint_of_the_two_process_job_resumes_on_one_device(two_by_two):
    """Saved on 2 x 2 at step 2, resumed on 1 x 1: what this process gets from that checkpoint
    in two steps on 1 device, so the resumed job read the batches of steps 3 and 4."""
    root, model, config = two_by_two["root"], two_by_two["model"], two_by_two["config"]
    workdir = root / "resumed"
    shutil.copytree(root / "run", workdir)
    for later in range(3, STEPS + 1):
        shutil.rmtree(workdir / "checkpoints" / str(later))
    output = launch(1, 1, model, str(workdir), str(root / "resumed_dumps"))
    assert "resumed from" in output and "at step 2" in output
    with contextlib.closing(OneProcess(config, 1, str(root / "run"))) as one:
        before = jax.device_get(one.state_at(2))
        expected = final_state_tree(one.train(one.state_at(2), two_by_two["batches"][2:]))
    (resumed,) = dumped_copies(str(root / "resumed_dumps" / "process_0.npz"), expected)
    assert_same_step(
        before.nets,
        resumed["nets"],
        expected["nets"],
        config.norm,
        innermost(config),
        rtol=1e-5,
        atol=1e-6,
    )
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        resumed["pools"],
        expected["pools"],
    )
