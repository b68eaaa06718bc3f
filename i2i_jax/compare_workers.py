"""The two workers of `python -m i2i_jax.benchmark --compare_torch`, one process per framework
and row (`compare_torch.WorkerProcess` starts them): each builds its row, then answers the
parent's `run N`, `rss` and `quit` on stdin with one JSON line each. The JAX worker imports no
TensorFlow (a GPU machine for the comparison may have none).
"""

import functools
import json
import sys
import time

import numpy as np

from i2i_jax import host_memory
from i2i_jax.machine import usable_cores

# What PyTorch calls the platform.
_TORCH_DEVICE = {"cpu": "cpu", "gpu": "cuda"}


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

    def __init__(self, row: dict, platform: str):
        import jax

        from i2i_jax import models, parallel, step_timing
        from i2i_jax.tasks.common import to_model_range

        host_memory.run_cpu_calls_inline()  # As training runs.
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

    def peak_device_mb(self) -> float | None:
        """The GPU's peak memory in use (None on the CPU, which has no such figure)."""
        stats = self.jax.local_devices()[0].memory_stats()
        return stats["peak_bytes_in_use"] / 2**20 if stats else None


class TorchWorker:
    """One row in the PyTorch baseline, on every core."""

    def __init__(self, row: dict, platform: str):
        import torch
        from torch.utils.flop_counter import FlopCounterMode

        from i2i_jax import torch_iterations

        torch.set_num_threads(usable_cores())
        self.torch, self.device = torch, torch.device(_TORCH_DEVICE[platform])
        config = jax_config(row)
        generator = torch.Generator().manual_seed(0)
        shape = (row["batch"], 3, row["size"], row["size"])
        self.real_a = (torch.rand(shape, generator=generator) * 2 - 1).to(self.device)
        self.real_b = (torch.rand(shape, generator=generator) * 2 - 1).to(self.device)
        options = dict(netG=config.netG, ngf=config.ngf, ndf=config.ndf, norm=config.norm)
        iteration = (
            torch_iterations.Pix2PixIteration
            if row["model"] == "pix2pix"
            else torch_iterations.CycleGANIteration
        )(**options)
        for net in iteration.nets().values():
            net.to(self.device)  # In place: the optimizers keep the same parameters.
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
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def peak_device_mb(self) -> float | None:
        if self.device.type != "cuda":
            return None
        return self.torch.cuda.max_memory_allocated() / 2**20


def serve(framework: str, row: dict, platform: str) -> None:
    """The worker's loop: builds the row, then answers `run N` with N step times, `rss` with its
    peak RSS (and peak GPU memory), and stops at `quit`."""
    worker = (JaxWorker if framework == "jax" else TorchWorker)(row, platform)
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
            peaks = {"peak_rss_mb": host_memory.peak_rss_mb()}
            print(json.dumps({**peaks, "peak_device_mb": worker.peak_device_mb()}), flush=True)
        else:
            return


if __name__ == "__main__":
    serve(sys.argv[1], json.loads(sys.argv[2]), sys.argv[3])
