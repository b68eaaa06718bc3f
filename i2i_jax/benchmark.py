"""Times a config's jitted train step: `python -m i2i_jax.benchmark --config=... [--config.x=y]`.

Prints one JSON line: median step time after compilation, images/s, compile time, peak RSS,
FLOPs per step from XLA's cost analysis, the collectives of the compiled step and the bytes
they move, and the devices used. The batch is random uint8 data of the config's shape, so the
figure is the model's cost, not the input pipeline's.

`--compare_torch` (no --config) instead times i2i_jax against the PyTorch baseline on the rows
of `compare_torch.ROWS` (Pix2Pix and CycleGAN train steps, generator inference), alternating the
two; `--platform=gpu` does it on a CUDA GPU; see `compare_torch.py`.

`--scaling=1,2,4,8` instead times the step on each of those numbers of virtual CPU devices, at
the config's `batch_size` per device, each in a fresh process (the device count is fixed when
JAX starts). Virtual devices share this machine's cores, so each row adds its images/s
relative to the first row's: 1.0 means that splitting the batch over more device programs and
reducing across them cost nothing.
"""

import collections
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

import jax
from absl import flags
from ml_collections import config_flags

from i2i_jax import cli, compare_torch, host_memory, parallel, step_timing
from i2i_jax import config as config_lib
from i2i_jax.errors import UsageError

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps after the warm-up step.")
_SCALING = flags.DEFINE_list(
    "scaling", None, "Virtual CPU device counts to time the step on, at batch_size per device."
)
_COMPARE_TORCH = flags.DEFINE_bool(
    "compare_torch", False, "Time i2i_jax against the PyTorch baseline, side by side."
)
flags.DEFINE_alias("compare-torch", "compare_torch")  # The spelling of earlier releases.
_ROWS = flags.DEFINE_list(
    "rows",
    None,
    "With --compare_torch: the rows to run (names from compare_torch.ROWS; default all).",
)
_PLATFORM = flags.DEFINE_enum(
    "platform",
    "cpu",
    list(compare_torch.PLATFORMS),
    "With --compare_torch: where both frameworks run (gpu: the first CUDA GPU, rows at batch 1 "
    "and 16).",
)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "With --compare_torch: A B rounds per row.")
_STEPS_PER_ROUND = flags.DEFINE_integer(
    "steps_per_round", 2, "With --compare_torch: steps per turn."
)

_COLLECTIVE = re.compile(
    r"=\s*(.+?)\s+(all-reduce|all-gather|reduce-scatter|all-to-all|"
    r"collective-permute)(?:-start)?\("
)
_ARRAY = re.compile(r"\b([a-z]+)(\d+)\[([\d,]*)\]")


def collectives(hlo_text: str) -> list[tuple[str, int]]:
    """(kind, bytes of its result) of every collective in an HLO module's text."""
    found = []
    for result_type, kind in _COLLECTIVE.findall(hlo_text):
        size = sum(
            int(bits) // 8 * math.prod(int(d) for d in dims.split(",") if d)
            for _, bits, dims in _ARRAY.findall(result_type)
        )
        found.append((kind, size))
    return found


def benchmark_train_step(config, steps: int) -> dict:
    mesh = parallel.make_mesh()
    config_lib.validate(config, mesh.size)
    task, state, batch = step_timing.train_step_inputs(config, mesh)
    compiled, compile_s, flops = step_timing.compile_with_cost(
        parallel.jit_train_step(task.train_step, mesh), state, batch
    )
    state, metrics = compiled(state, batch)  # Warm-up: first-run allocations.
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    found = collectives(compiled.as_text())
    return {
        "model": config.model,
        "netG": config.netG,
        "netD": config.netD,
        "crop_size": config.crop_size,
        "batch_size": config.batch_size,
        "step_time_ms": round(step_s * 1e3, 3),
        "images_per_sec": round(config.batch_size / step_s, 3),
        "compile_s": round(compile_s, 3),
        "peak_rss_mb": round(host_memory.peak_rss_mb(), 1),
        "flops_per_step": flops,
        "collectives": dict(collections.Counter(kind for kind, _ in found)),
        "collective_bytes": sum(size for _, size in found),
        "devices": jax.device_count(),
        "platform": jax.devices()[0].platform,
        "timed_steps": steps,
    }


def scaling(device_counts: list[int], per_device_batch: int) -> list[dict]:
    """The benchmark in a fresh process per device count, at a fixed per-device batch."""
    arguments = sys.argv[1:]
    forwarded = [
        arg
        for i, arg in enumerate(arguments)
        if not arg.startswith("--scaling") and (i == 0 or arguments[i - 1] != "--scaling")
    ]
    rows = []
    for count in device_counts:
        command = [
            sys.executable,
            "-m",
            "i2i_jax.benchmark",
            *forwarded,
            f"--config.batch_size={count * per_device_batch}",
        ]
        env = {**os.environ, "JAX_NUM_CPU_DEVICES": str(count), "JAX_PLATFORMS": "cpu"}
        output = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
        row = json.loads(output.stdout.strip().splitlines()[-1])
        first = rows[0] if rows else row
        row["relative_throughput"] = round(row["images_per_sec"] / first["images_per_sec"], 3)
        rows.append(row)
    return rows


def main():
    host_memory.run_cpu_calls_inline()  # As training runs.
    if _COMPARE_TORCH.value:
        every_row = compare_torch.PLATFORMS[_PLATFORM.value]
        rows = [row for row in every_row if not _ROWS.value or row["name"] in _ROWS.value]
        if not rows:
            raise UsageError(
                f"--rows={','.join(_ROWS.value)} matches none of the rows.\nFix: "
                f"--rows= some of {[row['name'] for row in every_row]}"
            )
        compare_torch.compare(rows, _ROUNDS.value, _STEPS_PER_ROUND.value, platform=_PLATFORM.value)
        return
    if _CONFIG.value is None:
        raise UsageError(
            "no config to time.\nFix: --config=configs/pix2pix_facades.py (or --compare_torch)"
        )
    if _SCALING.value:
        for row in scaling([int(n) for n in _SCALING.value], _CONFIG.value.batch_size):
            print(json.dumps(row), flush=True)
        return
    print(json.dumps(benchmark_train_step(_CONFIG.value, _STEPS.value)))


if __name__ == "__main__":
    cli.run(main)
