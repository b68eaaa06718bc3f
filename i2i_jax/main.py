"""Trains Pix2Pix or CycleGAN: `python -m i2i_jax.main --config=CONFIG --workdir=DIR`.

Tasks (config.model): pix2pix (paired A -> B, e.g. labels -> photo) and cycle_gan (unpaired
A <-> B). Shipped configs: configs/pix2pix_synthetic.py and configs/cyclegan_synthetic.py (the
embedded data, offline), configs/pix2pix_facades.py and configs/cyclegan_horse2zebra.py (the
papers' setups). Any config key can be overridden with `--config.<key>=<value>`. Rerunning the
same command on the same workdir resumes from its latest checkpoint. The same command runs as
one process of a multi-process job (TPU pod slice, GPU cluster) with `--distributed`; see
launch/README.md.
"""

from i2i_jax import allocator, cli, config_file
from i2i_jax.errors import UserError

if __name__ == "__main__":
    try:  # Before the imports below (seconds of them), which the replaced process repeats.
        allocator.run_under_tcmalloc()
    except UserError as error:
        cli.exit_with(str(error))

import difflib
import logging
import signal
import sys

import jax
import ml_collections
from absl import app, flags
from ml_collections import config_flags

from i2i_jax import compilation_cache, distributed, host_memory, preemption, train
from i2i_jax import config as config_lib

__doc__ += (
    "\nConfig keys (default, Pix2Pix / CycleGAN where they differ: meaning):\n"
    + config_lib.describe_keys()
    + "\n"
)

CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file.", lock_config=True
)
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_DISTRIBUTED = flags.DEFINE_enum(
    "distributed",
    "auto",
    distributed.MODES,
    "Join a multi-process job: 'on' detects the cluster (Cloud TPU VM, SLURM, Open MPI); "
    "'auto' joins when the flags below are given or srun/mpirun started several tasks.",
)
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for a multi-process job."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the job.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, 0-based.")
_ALLOW_CONFIG_CHANGE = flags.DEFINE_bool(
    "allow_config_change",
    False,
    "Resume a workdir even though the config differs from the one it was trained with.",
)
_PROFILE = flags.DEFINE_bool(
    "profile",
    False,
    "Write a jax.profiler trace of --profile_steps steps after the first "
    "(compiled) one to <workdir>/profile, for TensorBoard's profile plugin.",
)
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 5, "Steps the --profile trace covers.")
flags.mark_flags_as_required(["config", "workdir"])


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, but an override of a key the config does not have is one line
    naming the key and the nearest one it has, not a traceback."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError):  # ml_collections' answer to an unknown key.
        message = unknown_override(argv)
        if message is None:
            raise
        cli.exit_with(message)


def unknown_override(argv: list[str]) -> str | None:
    """What is wrong with the first `--config.<key>=...` whose key the config file lacks, found
    by loading the file and walking its keys (ml_collections' own error text changes between
    versions); None if every override names a key."""
    config = config_file.load(argv)
    if config is None:
        return None
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config.") :].split("=")[0]
        node, parts = config, key.split(".")
        for depth, part in enumerate(parts):
            if isinstance(node, ml_collections.ConfigDict) and part in node:
                node = node[part]
                continue
            siblings = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            nearest = difflib.get_close_matches(part, siblings, n=1)
            parent = "".join(f"{p}." for p in parts[:depth])
            fix = f"did you mean --config.{parent}{nearest[0]}? " if nearest else ""
            return (
                f"--config.{key}: the config has no such key.\nFix: {fix}"
                "`python -m i2i_jax.main --help` lists the keys."
            )
    return None


def start() -> None:
    """Joins the job (before any other JAX call): every process reports its devices once, then
    only process 0 logs progress."""
    host_memory.run_cpu_calls_inline()
    distributed.initialize(
        _DISTRIBUTED.value, _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value
    )
    log = logging.getLogger("i2i_jax")
    log.info("%s", distributed.describe_devices())
    log.info("%s", allocator.describe())
    if not distributed.is_first_process():
        log.setLevel(logging.WARNING)


def main():
    start()
    cache = compilation_cache.enable(CONFIG.value.compilation_cache_dir)
    logging.getLogger("i2i_jax").info("compilation cache: %s", cache or "off")
    try:
        train.train_and_evaluate(
            CONFIG.value,
            WORKDIR.value,
            _ALLOW_CONFIG_CHANGE.value,
            _PROFILE_STEPS.value if _PROFILE.value else 0,
        )
    except Exception as error:  # A failed collective may be a process gone: say which.
        if jax.process_count() > 1 and not isinstance(error, UserError):
            distributed.wait_for_vanished_processes()
        raise
    if preemption.stopped():
        # Saved and stopped early: a status the launchers requeue on. A later TERM (a launcher
        # stopping the other processes once one has exited) must not turn it into 143 while
        # this one leaves the job.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(preemption.EXIT_STATUS)


if __name__ == "__main__":
    cli.run(main, flags_parser=parse_flags)
