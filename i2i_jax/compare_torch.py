"""i2i_jax and the PyTorch baseline side by side: `python -m i2i_jax.benchmark --compare_torch`.

Each row (a train step or a generator's inference at one size) starts two worker processes
(`compare_workers.py`), one per framework, so that each has its own peak RSS and neither's
threads linger in the other's timings. After set-up and a warm-up step in each, the parent
alternates them, A B A B, a few steps at a time, and reports per framework the median step
time, FLOPs (XLA's cost analysis; PyTorch's FlopCounterMode), achieved GFLOP/s of useful work
(the baseline's count over each one's time), the share of the machine's peak, compile time and
peak RSS, with the ratio i2i_jax / PyTorch (below 1: i2i_jax is faster). It warns when other
processes used the CPU during the timed steps: the ratios are then not trustworthy.

`--platform=gpu` runs both on the first CUDA GPU instead, on the same rows plus batch 16
(`GPU_ROWS`): PyTorch timed with `torch.cuda.synchronize`, JAX with `block_until_ready`, each at
its default float32 precision, `conv_lowering=auto` taking XLA's own convolutions, and each
side's peak GPU memory beside its RSS. There is no peak % on a GPU. The JAX worker imports no
TensorFlow: beside jax, flax, optax and torch, ml_collections is all it needs.

The baseline is `i2i_jax/torch_iterations.py` (on the networks of `torch_reference.py`); it
needs torch (`pip install -e '.[torch]'`).
"""

import json
import os
import statistics
import subprocess
import sys
import time

from i2i_jax import allocator
from i2i_jax.errors import UsageError
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


# On a GPU the same rows, and batch 16 where a GPU's throughput shows.
GPU_ROWS = ROWS + tuple(
    {**row, "name": row["name"].replace(" b1", " b16"), "batch": 16}
    for row in ROWS
    if row["size"] == 256 and row["batch"] == 1
)
PLATFORMS = {"cpu": ROWS, "gpu": GPU_ROWS}
# What JAX calls the platform.
_JAX_PLATFORM = {"cpu": "cpu", "gpu": "cuda"}


def _on_platform(env: dict, platform: str) -> dict:
    """`env` for a process that runs JAX on `platform`. On a GPU it shares the device with the
    other worker: JAX takes memory as it needs it, as PyTorch does, not 75 % of it up front."""
    return {
        **env,
        "JAX_PLATFORMS": _JAX_PLATFORM[platform],
        "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    }


class WorkerProcess:
    def __init__(self, framework: str, row: dict, platform: str = "cpu"):
        # The JAX worker runs under the allocator training runs under (`allocator`); the
        # PyTorch baseline as its users run it, with the C library's malloc.
        env = allocator.environment() if framework == "jax" else dict(os.environ)
        env = _on_platform(env, platform)
        env.pop("JAX_NUM_CPU_DEVICES", None)
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "i2i_jax.compare_workers",
                framework,
                json.dumps(row),
                platform,
            ],
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


def compare_row(
    row: dict, rounds: int, steps_per_round: int, peak: float | None, platform: str = "cpu"
) -> dict:
    """Both frameworks on one row, alternating; the figures of each and their ratio."""
    workers = {}
    try:
        for framework in ("jax", "torch"):  # One after the other: set-up is not timed.
            workers[framework] = WorkerProcess(framework, row, platform)
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
            peaks = worker.ask("rss")
            result[framework] = {
                "ms_per_step": round(median * 1e3, 1),
                "flops": worker.ready["flops"],
                "gflops_per_s": round(useful / median / 1e9, 1),
                "peak_fraction": round(useful / median / 1e9 / peak, 3) if peak else None,
                "compile_s": round(worker.ready["compile_s"], 1),
                "peak_rss_mb": round(peaks["peak_rss_mb"]),
            }
            if peaks["peak_device_mb"] is not None:
                result[framework]["peak_device_mb"] = round(peaks["peak_device_mb"])
        result["ratio"] = round(result["jax"]["ms_per_step"] / result["torch"]["ms_per_step"], 3)
        result["rss_ratio"] = round(
            result["jax"]["peak_rss_mb"] / result["torch"]["peak_rss_mb"], 2
        )
        return result
    finally:
        for worker in workers.values():
            worker.close()


_GPU_CHECK = (
    "import jax, torch; "
    "assert torch.cuda.is_available(), 'torch sees no CUDA GPU (torch.cuda.is_available())'; "
    "print(jax.devices()[0].device_kind, '/', torch.cuda.get_device_name(0))"
)


def gpu_description() -> str:
    """The GPU both frameworks see, by name; a UsageError with the fix where either sees none.
    Asked in a child process: JAX in this one would take the GPU's memory for the run."""
    found = subprocess.run(
        [sys.executable, "-c", _GPU_CHECK],
        env=_on_platform(dict(os.environ), "gpu"),
        capture_output=True,
        text=True,
    )
    if found.returncode != 0:
        reason = (found.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(
            f"--platform=gpu: JAX or PyTorch finds no CUDA GPU here ({reason}).\nFix: run on "
            "a machine with an NVIDIA GPU, with jax[cuda12] and a CUDA build of torch "
            "installed; or --platform=cpu"
        )
    return found.stdout.strip()


def compare(
    rows=ROWS, rounds: int = 5, steps_per_round: int = 2, out=sys.stdout, platform: str = "cpu"
) -> list[dict]:
    """Every row, one JSON line each, then a table; warns about other processes' CPU use."""
    if platform == "cpu":
        peak, how = peak_gflops()
    else:
        peak, how = None, f"not computed for a GPU ({gpu_description()})"
    machine = {"platform": platform, "peak_is": how, "cores": usable_cores()}
    if peak:
        machine["machine_peak_gflops"] = round(peak, 1)
    if platform == "cpu":
        machine["jax_allocator"] = _jax_worker_allocator()
    print(json.dumps(machine), file=out, flush=True)
    results = []
    for row in rows:
        result = compare_row(row, rounds, steps_per_round, peak, platform)
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


def _jax_worker_allocator() -> str:
    """The host allocator the JAX worker will run under, with a warning where it is not the
    one training runs under: without tcmalloc this machine's train rows measured 1.14-1.38,
    with it 0.78-0.94 (docs/performance.md)."""
    if allocator.preloads_tcmalloc(allocator.environment()):
        return "tcmalloc"
    if allocator.wants_tcmalloc():
        print(
            "WARNING: tcmalloc is not installed, so i2i_jax's worker runs under the C library's "
            "malloc and its train rows are slower than training runs elsewhere.\nFix: "
            + allocator.INSTALL_HINT,
            file=sys.stderr,
            flush=True,
        )
    return "system malloc"


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

        memory = f"{jax_row['peak_rss_mb']} / {torch_row['peak_rss_mb']}"
        if "peak_device_mb" in jax_row:
            memory += f" (GPU {jax_row['peak_device_mb']} / {torch_row['peak_device_mb']})"
        lines.append(
            f"| {r['row']} | {jax_row['ms_per_step']} | {torch_row['ms_per_step']} | "
            f"{r['ratio']} | {speed(jax_row)} | {speed(torch_row)} | "
            f"{jax_row['flops'] / 1e9:.1f} / {torch_row['flops'] / 1e9:.1f} | "
            f"{jax_row['compile_s']} | {memory} |"
        )
    return "\n".join(lines)
