"""One process of a 2-process job that restores the latest checkpoint of `--workdir`, where
process 1 alone finds step 4 damaged (a fault of its own reads, as a file cut short on one
host's cache or mount would be); prints which step each process restored.

    launch/local.sh -n 2 -- python tests/restore_verdict_worker.py \
        --config=tests/tiny_configs.py:pix2pix --workdir=DIR
"""

import jax

from i2i_jax import cli, parallel, tasks
from i2i_jax import main as entry
from i2i_jax.checkpointing import Checkpointer

DAMAGED_STEP = 4


def run():
    entry.start()
    config = entry.CONFIG.value
    task = tasks.build_task(config, steps_per_epoch=4)
    template = parallel.init_replicated(task.init_state, config.seed, parallel.make_mesh())
    checkpointer = Checkpointer(entry.WORKDIR.value, every_steps=2, keep=5)
    if jax.process_index() == 1:
        restore = checkpointer._restore

        def damaged_here(step, abstract):
            if step == DAMAGED_STEP:
                raise ValueError(
                    f"DATA_LOSS: checkpoint {step} is cut short, as process 1 reads it"
                )
            return restore(step, abstract)

        checkpointer._restore = damaged_here
    state = checkpointer.restore_latest(template)
    checkpointer.close()
    print(f"process {jax.process_index()} restored step {int(state.step)}", flush=True)


if __name__ == "__main__":
    cli.run(run)
