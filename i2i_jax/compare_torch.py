"""i2i_jax and the PyTorch baseline side by side: `python -m i2i_jax.benchmark --compare_torch`.

Each row (a train step or a generator's inference at one size) starts two worker processes,
one per framework, so that each has its own peak RSS and neither's threads linger in the
other's timings. After set-up and a warm-up step in each, the parent alternates them, A B A B,
a few steps at a time, and reports per framework the median step time, FLOPs (XLA's cost
analysis; PyTorch's FlopCounterMode), achieved GFLOP/s of useful work (the baseline's count
over each one's time), the share of the machine's peak, compile time and peak RSS, with the
ratio i2i_jax / PyTorch (below 1: i2i_jax is faster). It warns when other processes used the
CPU during the timed steps: the ratios are then not trustworthy.

The baseline is `i2i_jax/torch_iterations.py` (on the networks of `torch_reference.py`); it
needs torch (`pip install -e '.[torch]'`).
"""

import functools
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

from i2i_jax import allocator, host_memory
from i2i_jax.machine import busy_jiffies, peak_gflops, process_jiffies, usable_cores

_PAUSE_S = 0.5

# The paper's settings: Pix2Pix unet_256 with batch norm and dropout; CycleGAN resnet_9blocks
# (the reference's default at any size) with instance norm; inference in eval mode.
ROWS = (
    {"name": "pix2pix train 256 b1", "kind": "train", "model": "pix2pix", "size": 256, "batch": 1},
    {"name": "pix2pix train 256 b4", "kind": "train", "model": "pix2pix", "size": 256, "batch": 4},
    {
        "name": "cyclegan train 128 b1",
        "kind": "train",
        "model": "cycle_gan",
        "size": 128,
        "batch": 1,
    },
    {
        "name": "cyclegan train 256 b1",
        "kind": "train",
        "model": "cycle_gan",
        "size": 256,
        "batch": 1,
    },
    {
        "name": "unet_256 inference 256 b1",
        "kind": "generate",
        "model": "pix2pix",
        "size": 256,
        "batch": 1,
    },
    {
        "name": "resnet_9blocks inference 256 b1",
        "kind": "generate",
        "model": "cycle_gan",
        "size": 256,
        "batch": 1,
    },
)


# --- Workers --------------------------------------------------------------------------------


def jax_config(row: dict):
    from i2i_jax import config as config_lib

    config = config_lib.pix2pix() if row["model"] == "pix2pix" else config_lib.cyclegan()
    config.crop_size = config.load_size = row["size"]
    config.batch_size = row["batch"]
    for key, value in row.get("overrides", {}).items():
        config[key] = value
    return config


class JaxWorker:
    """One row in i2i_jax: the jitted train step of `parallel`, or the generator in eval mode."""

    def __init__(self, row: dict):
        import jax

        from i2i_jax import models, parallel, step_timing
        from i2i_jax.tasks.common import to_model_range

        self.jax = jax
        config = jax_config(row)
        mesh = parallel.make_mesh(jax.local_devices()[:1])
        if row["kind"] == "train":
            task, self.state, batch = step_timing.train_step_inputs(config, mesh)
            function, self.args = parallel.jit_train_step(task.train_step, mesh), (batch,)
        else:  # The generator's variables alone, as a served model holds them.
            module = models.build_generator(config)
            batch = step_timing.random_batch(config, np.random.default_rng(config.seed))
            images = to_model_range(jax.numpy.asarray(batch["A"]))
            self.state = jax.jit(functools.partial(module.init, train=False))(
                jax.random.key(config.seed), images
            )
            host_memory.release_freed_memory()

            def generate(variables, images):
                return module.apply(variables, images, train=False)

            function, self.args = jax.jit(generate), (images,)
        self.train = row["kind"] == "train"
        self.compiled, self.compile_s, self.flops = step_timing.compile_with_cost(
            function, self.state, *self.args
        )

    def step(self) -> None:
        """A train step carries its state to the next; inference returns only the images (a
        copy of the variables as a second output cost U-Net inference 50 ms a call, 218 MB
        copied, which a served model never pays)."""
        if self.train:
            self.state, outputs = self.compiled(self.state, *self.args)
        else:
            outputs = self.compiled(self.state, *self.args)
        self.jax.block_until_ready(outputs)


class TorchWorker:
    """One row in the PyTorch baseline, on every core."""

    def __init__(self, row: dict):
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from i2i_jax import torch_iterations

        torch.set_num_threads(usable_cores())
        self.torch = torch
        config = jax_config(row)
        generator = torch.Generator().manual_seed(0)
        shape = (row["batch"], 3, row["size"], row["size"])
        self.real_a = torch.rand(shape, generator=generator) * 2 - 1
        self.real_b = torch.rand(shape, generator=generator) * 2 - 1
        options = dict(netG=config.netG, ngf=config.ngf, ndf=config.ndf, norm=config.norm)
        iteration = (
            torch_iterations.Pix2PixIteration
            if row["model"] == "pix2pix"
            else torch_iterations.CycleGANIteration
        )(**options)
        if row["kind"] == "train":
            self.run = lambda: iteration(self.real_a, self.real_b)
        else:
            generator_net = next(iter(iteration.nets().values())).eval()

            def run():
                with torch.no_grad():
                    return generator_net(self.real_a)

            self.run = run
        self.compile_s = 0.0  # Eager.
        with FlopCounterMode(display=False) as counter:
            self.run()
        self.flops = float(counter.get_total_flops())

    def step(self) -> None:
        self.run()


def serve(framework: str, row: dict) -> None:
    """The worker's loop: builds the row, then answers `run N` with N step times, `rss` with its
    peak RSS, and stops at `quit`."""
    worker = (JaxWorker if framework == "jax" else TorchWorker)(row)
    worker.step()  # Warm-up: first-run allocations.
    print(json.dumps({"compile_s": worker.compile_s, "flops": worker.flops}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "run":
            times = []
            for _ in range(int(command[1])):
                start = time.perf_counter()
                worker.step()
                times.append(time.perf_counter() - start)
            print(json.dumps({"times": times}), flush=True)
        elif command[0] == "rss":
            print(json.dumps({"peak_rss_mb": host_memory.peak_rss_mb()}), flush=True)
        else:
            return


class WorkerProcess:
    def __init__(self, framework: str, row: dict):
        # The JAX worker runs under the allocator training runs under (`allocator`); the
        # PyTorch baseline as its users run it, with the C library's malloc.
        env = allocator.environment(row["model"]) if framework == "jax" else dict(os.environ)
        env["JAX_PLATFORMS"] = os.environ.get("JAX_PLATFORMS", "cpu")
        env.pop("JAX_NUM_CPU_DEVICES", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "i2i_jax.compare_torch", framework, json.dumps(row)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.ready = self.answer()

    def answer(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(
                f"a benchmark worker ({self.process.args[3]}) died; its error is above"
            )
        return json.loads(line)

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.answer()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=60)


def compare_row(row: dict, rounds: int, steps_per_round: int, peak: float) -> dict:
    """Both frameworks on one row, alternating; the figures of each and their ratio."""
    workers = {}
    try:
        for framework in ("jax", "torch"):  # One after the other: set-up is not timed.
            workers[framework] = WorkerProcess(framework, row)
        times = {framework: [] for framework in workers}
        ours = [os.getpid()] + [w.process.pid for w in workers.values()]
        busy_before = busy_jiffies()
        ours_before = sum(process_jiffies(pid) for pid in ours)
        start = time.perf_counter()
        for _ in range(rounds):
            for framework, worker in workers.items():
                # Both runtimes' worker threads spin a while after their last op before they
                # sleep; a pause keeps one framework's spinning out of the other's timings.
                time.sleep(_PAUSE_S)
                times[framework] += worker.ask(f"run {steps_per_round}")["times"]
        elapsed = time.perf_counter() - start
        clock_ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        others = (
            (busy_jiffies() - busy_before - sum(process_jiffies(pid) for pid in ours) + ours_before)
            / clock_ticks
            / elapsed
        )
        result = {"row": row["name"], "other_processes_cores": round(max(others, 0.0), 2)}
        # GFLOP/s of useful work: the baseline's count (the iteration's convolutions and
        # matmuls) over each framework's time. XLA's own count is reported beside it.
        useful = workers["torch"].ready["flops"]
        for framework, worker in workers.items():
            median = statistics.median(times[framework])
            result[framework] = {
                "ms_per_step": round(median * 1e3, 1),
                "flops": worker.ready["flops"],
                "gflops_per_s": round(useful / median / 1e9, 1),
                "peak_fraction": round(useful / median / 1e9 / peak, 3) if peak else None,
                "compile_s": round(worker.ready["compile_s"], 1),
                "peak_rss_mb": round(worker.ask("rss")["peak_rss_mb"]),
            }
        result["ratio"] = round(result["jax"]["ms_per_step"] / result["torch"]["ms_per_step"], 3)
        result["rss_ratio"] = round(
            result["jax"]["peak_rss_mb"] / result["torch"]["peak_rss_mb"], 2
        )
        return result
    finally:
        for worker in workers.values():
            worker.close()


def compare(rows=ROWS, rounds: int = 5, steps_per_round: int = 2, out=sys.stdout) -> list[dict]:
    """Every row, one JSON line each, then a table; warns about other processes' CPU use."""
    peak, how = peak_gflops()
    print(
        json.dumps(
            {"machine_peak_gflops": round(peak, 1), "peak_is": how, "cores": usable_cores()}
        ),
        file=out,
        flush=True,
    )
    results = []
    for row in rows:
        result = compare_row(row, rounds, steps_per_round, peak)
        if result["other_processes_cores"] > 0.1:
            print(
                f"WARNING: other processes used {result['other_processes_cores']} cores "
                f"during '{row['name']}': its ratio is not trustworthy",
                file=sys.stderr,
                flush=True,
            )
        print(json.dumps(result), file=out, flush=True)
        results.append(result)
    print(table(results), file=out, flush=True)
    return results


def table(results: list[dict]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| row | i2i_jax ms | PyTorch ms | ratio | i2i_jax GFLOP/s (peak %) | PyTorch "
        "GFLOP/s (peak %) | GFLOPs per step (XLA / torch) | compile s | peak RSS MB "
        "(i2i_jax / PyTorch) |",
        "| --- |" + " ---: |" * 8,
    ]
    for r in results:
        jax_row, torch_row = r["jax"], r["torch"]

        def speed(row):
            fraction = row["peak_fraction"]
            return (
                f"{row['gflops_per_s']} ({fraction * 100:.0f} %)"
                if fraction
                else str(row["gflops_per_s"])
            )

        lines.append(
            f"| {r['row']} | {jax_row['ms_per_step']} | {torch_row['ms_per_step']} | "
            f"{r['ratio']} | {speed(jax_row)} | {speed(torch_row)} | "
            f"{jax_row['flops'] / 1e9:.1f} / {torch_row['flops'] / 1e9:.1f} | "
            f"{jax_row['compile_s']} | {jax_row['peak_rss_mb']} / {torch_row['peak_rss_mb']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]))
