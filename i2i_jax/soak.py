"""Kill-anywhere soak: `python -m i2i_jax.soak --kills=20 --seed=0 [--processes=2]`.

Trains a tiny CycleGAN (its state holds every kind there is: parameters, Adam moments, batch
statistics, image pools, RNG, a moving average) to its end once, uninterrupted; then trains it
again in another workdir, SIGKILLed `--kills` times at moments drawn at random over its life
(start-up, compilation, the first step after a resume, inside an asynchronous checkpoint write,
inside an evaluation, anywhere) and rerun with the same command after each kill. With
`--processes=2` the run is a 2-process job started by launch/local.sh, and each kill takes one
process: the other must stop by itself.

A kill is survived when the rerun resumes from the last checkpoint that was complete at the kill
(it lost only the steps since). The soak passes when every kill is survived, the final
checkpoints of both workdirs are bit-identical array by array, and their `eval_metrics.jsonl`
files are identical (each evaluated step once). Prints `kills survived: K/K, steps recomputed:
N`, then every kill; exits 1 if anything differs, keeping the workdirs to look into.
"""

import json
import os
import shutil
import statistics
import sys
import tempfile

import numpy as np
from absl import flags

from i2i_jax import cli, kill_harness
from i2i_jax.errors import UsageError
from i2i_jax.kill_harness import PHASES, Kill

_KILLS = flags.DEFINE_integer("kills", 20, "How many times to SIGKILL the run.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the kill moments (the training seed is fixed).")
_PROCESSES = flags.DEFINE_integer("processes", 1, "Processes of the job (1, or more with -d 1).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where both runs go (default: a temporary dir).")

STEPS, EVAL_EVERY, CHECKPOINT_EVERY = 120, 30, 10
TINY_CYCLEGAN = {
    "data.synthetic_train_size": 12,
    "data.synthetic_test_size": 6,
    "load_size": 36,
    "crop_size": 32,
    "netG": "resnet_2blocks",
    "ngf": 8,
    "ndf": 8,
    "pool_size": 3,
    "eval_batch_size": 4,
    "num_sample_images": 2,
    "num_train_steps": STEPS,
    "log_every_steps": 1,
    "eval_every_steps": EVAL_EVERY,
    "checkpoint_every_steps": CHECKPOINT_EVERY,
    "keep_checkpoints": 3,
}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCHER = os.path.join(REPO, "launch", "local.sh")


def command(workdir: str, processes: int) -> list[str]:
    launcher = [LAUNCHER, "-n", str(processes), "-d", "1", "--"] if processes > 1 else []
    return [
        *launcher,
        sys.executable,
        "-u",
        "-m",
        "i2i_jax.main",
        f"--config={os.path.join(REPO, 'configs', 'cyclegan_synthetic.py')}",
        f"--workdir={workdir}",
        *(f"--config.{key}={value}" for key, value in TINY_CYCLEGAN.items()),
    ]


def phase_lengths(attempt: kill_harness.Attempt) -> dict[str, float]:
    """How long each phase lasted in `attempt`, those it went through: the range of a kill's
    delay. The first run compiles; its reruns read the compiled step from the cache."""
    times = {
        text: attempt.time_of(text)
        for text in ("train data:", "eval data:", "training ", "eval at step 0:", "step 1/")
    }
    lengths = {"checkpoint write": 0.02, "start-up": times["train data:"]}
    if times["training "] is not None and times["eval data:"] is not None:
        lengths["compilation"] = times["training "] - times["eval data:"]
        lengths["before training"] = times["training "]
    if times["step 1/"] is not None and times["eval at step 0:"] is not None:
        lengths["first step after a resume"] = times["step 1/"] - times["eval at step 0:"]
    evaluations = [
        attempt.time_of(f"eval at step {step}:") - attempt.time_of(f"step {step}/{STEPS} ")
        for step in range(EVAL_EVERY, STEPS + 1, EVAL_EVERY)
        if attempt.time_of(f"eval at step {step}:") is not None
    ]
    if evaluations:
        lengths["evaluation"] = statistics.median(evaluations)
    if attempt.returncode == 0 and times["training "] is not None:
        lengths["training"] = attempt.timed[-1][0] - times["training "]
    return {phase: length for phase, length in lengths.items() if length is not None}


def kill_phases(rng, kills: int) -> list[str]:
    """The phase of each kill: every phase once a round, each round in a new random order."""
    rounds = -(-kills // len(PHASES))
    return [PHASES[k] for _ in range(rounds) for k in rng.permutation(len(PHASES))][:kills]


def draw_kill(rng, phase: str, lengths: dict[str, float], resume_step: int, processes: int):
    """A kill in `phase`, its delay drawn uniformly over the phase's length; `anywhere` over
    the attempt's expected life, which shrinks as the run progresses, so that the kill still
    lands before the run ends."""
    if phase == "anywhere":
        length = lengths["before training"] + lengths["training"] * (STEPS - resume_step) / STEPS
    else:
        length = lengths[phase]
    return Kill(phase, float(rng.uniform(0, length)), int(rng.integers(processes)))


def final_arrays(workdir: str) -> dict[str, np.ndarray]:
    """Every array of the workdir's last checkpoint, by its path in the state, read onto one
    device whatever the layout it was saved from."""
    import jax
    import orbax.checkpoint as ocp

    step = kill_harness.committed_steps(workdir)[-1]
    manager = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"))
    metadata = ocp.StandardCheckpointHandler().metadata(manager.directory / str(step) / "default")
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree.map(
        lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=one_device),
        metadata.tree,
    )
    state = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    manager.close()
    return {
        jax.tree_util.keystr(key): np.asarray(leaf)
        for key, leaf in jax.tree_util.tree_leaves_with_path(state)
    }


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def differences(one: str, other: str) -> list[str]:
    """What differs between the two workdirs' final states and evaluation records."""
    a, b = final_arrays(one), final_arrays(other)
    found = [f"only in one run: {key}" for key in sorted(a.keys() ^ b.keys())]
    found += [
        f"{key} differs"
        for key in sorted(a.keys() & b.keys())
        if a[key].dtype != b[key].dtype or not np.array_equal(a[key], b[key])
    ]
    metrics = [_read(os.path.join(w, "eval_metrics.jsonl")) for w in (one, other)]
    if metrics[0] != metrics[1]:
        steps = [[json.loads(line)["step"] for line in m.splitlines()] for m in metrics]
        found.append(f"eval_metrics.jsonl differs: steps {steps[0]} against {steps[1]}")
    return found + [f"arrays compared: {len(a)}"] * (not found)


def soak(workdir: str, kills: int, seed: int, processes: int) -> bool:
    rng = np.random.default_rng(seed)
    print(f"uninterrupted run in {workdir}/uninterrupted ...", flush=True)
    reference = kill_harness.run(
        command(f"{workdir}/uninterrupted", processes),
        f"{workdir}/uninterrupted",
        None,
        processes,
        EVAL_EVERY,
    )
    if reference.returncode != 0:
        print("".join(reference.lines[-40:]))
        raise UsageError("the uninterrupted run failed (its output is above)")
    lengths = phase_lengths(reference)
    killed_dir = f"{workdir}/killed"
    print(f"run killed {kills} times in {killed_dir} ...", flush=True)
    records, unresolved = [], []  # Kills; those whose rerun has not said where it resumed.
    for phase in [*kill_phases(rng, kills), None]:
        resume_step = (kill_harness.committed_steps(killed_dir) or [0])[-1]
        kill = draw_kill(rng, phase, lengths, resume_step, processes) if phase else None
        attempt = kill_harness.run(
            command(killed_dir, processes), killed_dir, kill, processes, EVAL_EVERY
        )
        lengths.update(phase_lengths(attempt))  # Compilation: from the cache now.
        if attempt.start_step is not None:
            for record in unresolved:
                record["resumed"] = attempt.start_step
            unresolved = []
        if attempt.killed_at_s is None:  # It ran to its end (before its kill, if it had one).
            break
        record = {
            "kill": kill,
            "at": attempt.killed_at_s,
            "last step": attempt.last_logged_step,
            "checkpoint": (kill_harness.committed_steps(killed_dir) or [0])[-1],
            "survivor": attempt.survivor_stop_s,
            "resumed": None,
        }
        records.append(record)
        unresolved.append(record)
    if attempt.returncode != 0:
        print("".join(attempt.lines[-40:]))
        print(f"the run failed with status {attempt.returncode} (its output is above)")
        return False
    report(records, kills)
    found = differences(f"{workdir}/uninterrupted", killed_dir)
    identical = found[-1].startswith("arrays compared")
    print("final state and eval_metrics.jsonl: " + ("bit-identical" if identical else "DIFFER"))
    print("  " + "\n  ".join(found))
    if len(records) < kills:
        print(f"the run reached its end after {len(records)} of the {kills} kills")
    return (
        identical
        and len(records) == kills
        and all(r["resumed"] == r["checkpoint"] for r in records)
    )


def report(records: list[dict], kills: int) -> None:
    """The summary line, then a line per kill."""
    survived = sum(r["resumed"] == r["checkpoint"] for r in records)
    recomputed = sum(
        max(0, r["last step"] - r["resumed"]) for r in records if r["last step"] is not None
    )
    print(f"kills survived: {survived}/{kills}, steps recomputed: {recomputed}")
    for number, r in enumerate(records, 1):
        survivor = "" if r["survivor"] is None else f", peer stopped {r['survivor']:.1f} s later"
        last = "-" if r["last step"] is None else r["last step"]
        print(
            f"  kill {number:2d}: {r['kill'].phase:26s} {r['at']:6.2f} s in "
            f"(process {r['kill'].victim}): last step logged {last:>3}, last checkpoint "
            f"{r['checkpoint']:3d}, resumed from {r['resumed']:3d}{survivor}"
        )


def main() -> None:
    if _KILLS.value < 1 or _PROCESSES.value < 1:
        raise UsageError("--kills and --processes take positive integers")
    workdir = _WORKDIR.value or tempfile.mkdtemp(prefix="i2i_jax_soak_")
    passed = soak(os.path.abspath(workdir), _KILLS.value, _SEED.value, _PROCESSES.value)
    if not passed:
        print(f"the workdirs are kept in {workdir}")
        sys.exit(1)
    if _WORKDIR.value is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    cli.run(main)
