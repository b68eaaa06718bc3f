"""Device mesh, shardings and host-to-global batches: data parallelism over every device.

The batch is sharded over the mesh's `data` axis and the train state is replicated; XLA's
partitioner inserts the gradient all-reduces. Under `jax.jit` a reduction over the batch (the
losses, and batch-norm statistics with `sync_batch_stats`) spans the global batch.
"""

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh(devices=None) -> Mesh:
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def data_parallel_size(mesh: Mesh) -> int:
    return mesh.shape[DATA_AXIS]


def check_batch_size(global_batch: int, mesh: Mesh, key: str) -> None:
    """Each device takes an equal share of a global batch."""
    devices = data_parallel_size(mesh)
    if global_batch <= 0 or global_batch % devices:
        fix = devices * max(1, global_batch // devices)
        raise ValueError(f"{key}={global_batch} is not a positive multiple of the {devices} "
                         f"devices of the mesh; use e.g. --config.{key}={fix}")


def to_global(host_batch, mesh: Mesh):
    """Assembles each process's slice of the batch into global arrays sharded on `data`."""
    sharding = batch_sharded(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), host_batch)


def stats_groups(config, mesh: Mesh) -> int:
    """Batch-norm statistics: global (`sync_batch_stats`) or per device (one group per shard)."""
    return 1 if config.sync_batch_stats else data_parallel_size(mesh)


def jit_train_step(train_step, mesh: Mesh):
    """`(state, batch) -> (state, metrics)`: state replicated and donated, batch sharded."""
    return jax.jit(train_step, in_shardings=(replicated(mesh), batch_sharded(mesh)),
                   out_shardings=(replicated(mesh), replicated(mesh)), donate_argnums=0)


def init_replicated(init_state, seed: int, mesh: Mesh):
    """Builds the initial state directly on every device of the mesh."""
    return jax.jit(init_state, static_argnums=0, out_shardings=replicated(mesh))(seed)
