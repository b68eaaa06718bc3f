"""What the benchmark and the comparison's JAX worker share to time a step: its inputs (random
batches of a config's shape) and its compilation with XLA's FLOP count. A leaf module, so that
`benchmark` and `compare_torch` need not import each other."""

import time
from typing import Any

import jax
import numpy as np

from i2i_jax import host_memory, parallel, tasks


def random_batch(config, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """This process's share of a global batch of random uint8 images."""
    shape = (config.batch_size // jax.process_count(), config.crop_size, config.crop_size)
    return {
        "A": rng.integers(0, 256, (*shape, config.input_nc), dtype=np.uint8),
        "B": rng.integers(0, 256, (*shape, config.output_nc), dtype=np.uint8),
    }


def train_step_inputs(config, mesh):
    """(task, initial state, random batch) for timing `config`'s train step on `mesh`."""
    task = tasks.build_task(config, steps_per_epoch=1000)
    state = parallel.init_replicated(task.init_state, config.seed, mesh)
    host_memory.release_freed_memory()
    batch = parallel.to_global(random_batch(config, np.random.default_rng(config.seed)), mesh)
    return task, state, batch


def compile_with_cost(function, *args) -> tuple[Any, float, float]:
    """(`function` compiled for `args`, seconds that took, FLOPs per call by XLA's cost
    analysis); the memory compilation freed goes back to the OS, as in training."""
    start = time.perf_counter()
    compiled = function.lower(*args).compile()
    compile_s = time.perf_counter() - start
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    host_memory.release_freed_memory()
    return compiled, compile_s, float(cost.get("flops", float("nan"))) if cost else float("nan")
