"""One process of a multi-process test job: `i2i_jax.main`'s start-up and training, then it
saves what each of its devices holds of the final networks (parameters, statistics, optimizer
state) and image pools.

    launch/local.sh -n 2 -d 2 -- python tests/multihost_worker.py \
        --config=tests/tiny_configs.py:pix2pix --workdir=DIR --dump_dir=DUMPS
"""

import os

import jax
import numpy as np
from absl import flags

from i2i_jax import cli, train
from i2i_jax import main as entry

_DUMP_DIR = flags.DEFINE_string("dump_dir", None, "Where to save process_<i>.npz.")


def device_copies(tree) -> dict[str, np.ndarray]:
    """Every device's copy of every leaf, keyed by leaf path and device id."""
    copies = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        for shard in leaf.addressable_shards:
            copies[f"{jax.tree_util.keystr(path)}@{shard.device.id}"] = np.asarray(shard.data)
    return copies


def run():
    entry.start()
    state, _ = train.train_and_evaluate(entry.CONFIG.value, entry.WORKDIR.value)
    os.makedirs(_DUMP_DIR.value, exist_ok=True)
    np.savez(
        os.path.join(_DUMP_DIR.value, f"process_{jax.process_index()}.npz"),
        **device_copies({"nets": state.nets, "pools": state.pools}),
    )


if __name__ == "__main__":
    cli.run(run)
