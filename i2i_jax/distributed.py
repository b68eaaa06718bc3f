"""Multi-process start-up: one JAX process per host (TPU VM worker, GPU node, local process).

JAX's own multi-controller runtime does the work: `jax.distributed.initialize` connects the
processes through a coordinator, after which `jax.devices()` lists every device of every
process and one jitted step runs on all of them. It must run before any other JAX call.
"""

import os

import jax

from i2i_jax.errors import UsageError

MODES = ("auto", "on", "off")


def launched_by_a_cluster_manager() -> bool:
    """Several tasks started by SLURM's `srun` or Open MPI's `mpirun`, whose environment JAX
    reads to find the coordinator, the process count and this process's index. (A batch
    script itself, outside `srun`, is one task even when the job has many.)"""
    counts = (os.environ.get("SLURM_STEP_NUM_TASKS"), os.environ.get("OMPI_COMM_WORLD_SIZE"))
    return any(count and count.isdigit() and int(count) > 1 for count in counts)


def initialize(
    mode: str = "auto",
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> None:
    """Joins the multi-process job, if this is one.

    `on` without addresses lets JAX detect the cluster (Cloud TPU VMs, SLURM, Open MPI,
    Kubernetes); explicit `coordinator_address`, `num_processes` and `process_id` work
    anywhere, e.g. for processes on one machine. `auto` joins when the addresses are given or
    a cluster manager started several tasks; `off` never joins.
    """
    if mode not in MODES:
        raise UsageError(f"--distributed={mode!r} is not one of {MODES}")
    explicit = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    given = {name for name, value in explicit.items() if value is not None}
    if mode == "off":
        if given:
            raise UsageError(f"--distributed=off contradicts --{', --'.join(sorted(given))}")
        return
    if given and given != set(explicit):
        missing = sorted(set(explicit) - given)
        raise UsageError(
            f"a multi-process run needs all of --coordinator_address, "
            f"--num_processes and --process_id; missing --{', --'.join(missing)}"
        )
    if mode == "auto" and not given and not launched_by_a_cluster_manager():
        return
    jax.distributed.initialize(**explicit)


def describe_devices() -> str:
    """This process's place in the job, for the log."""
    local = ", ".join(str(d.id) for d in jax.local_devices())
    return (
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} local {jax.devices()[0].platform} devices ({local}), "
        f"{jax.device_count()} in all"
    )


def is_first_process() -> bool:
    """Process 0 alone writes logs, metrics, images and exports."""
    return jax.process_index() == 0
