"""Multi-process start-up: one JAX process per host (TPU VM worker, GPU node, local process).

JAX's own multi-controller runtime does the work: `jax.distributed.initialize` connects the
processes through a coordinator, after which `jax.devices()` lists every device of every
process and one jitted step runs on all of them. It must run before any other JAX call.
"""

import atexit
import ipaddress
import os
import signal
import sys
import threading

import jax
from jax._src import distributed as jax_distributed

from i2i_jax.errors import UsageError

MODES = ("auto", "on", "off")
# A process that sends the coordinator no heartbeat for this long counts as dead: the others
# then stop, rather than wait in a collective until its own timeout (JAX's default is 100 s).
HEARTBEAT_TIMEOUT_S = 30
_WATCH_EVERY_S = 2


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
    jax.distributed.initialize(
        **explicit,
        heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT_S,
        coordinator_bind_address=bind_address(coordinator_address),
    )
    if jax.process_count() > 1:
        _watcher.start()


def bind_address(coordinator_address: str | None) -> str | None:
    """Where process 0's coordinator listens: on the host of `coordinator_address` when that is
    an IP address or `localhost` (launch/local.sh's 127.0.0.1 stays unreachable from other
    machines), rather than JAX's default of every interface ([::]:port).

    None (JAX's default, or JAX_COORDINATOR_BIND_ADDRESS when set) for a host name, whose
    address on process 0's own machine may be a loopback alias (Debian maps a machine's own
    name to 127.0.1.1) that would shut the other hosts out, and for a detected cluster, whose
    address JAX finds only inside `initialize`.
    """
    if coordinator_address is None or os.environ.get("JAX_COORDINATOR_BIND_ADDRESS"):
        return None
    host = coordinator_address.rsplit(":", 1)[0]
    if host == "localhost":
        return coordinator_address
    try:
        ipaddress.ip_address(host.removeprefix("[").removesuffix("]"))
    except ValueError:
        return None
    return coordinator_address


class _VanishedProcessWatcher:
    """A thread that asks the coordinator every few seconds which processes are alive, and
    stops this one with a message naming those that vanished (killed, out of memory, their
    host gone). Without it a survivor learns of it from a failed collective or from JAX's
    runtime aborting it, neither of which says which process is gone.

    The coordinator answers once every live process has asked (or once the missing ones'
    heartbeats time out), so the thread runs in every process, from `initialize` until exit.
    """

    def __init__(self):
        self.thread: threading.Thread | None = None
        self.exiting = threading.Event()

    def start(self) -> None:
        self.thread = threading.Thread(target=self._watch, daemon=True, name="i2i_jax-watcher")
        self.thread.start()
        # Runs before JAX's own exit handler (registered earlier, run later).
        atexit.register(self._stop_at_exit)

    def _stop_at_exit(self) -> None:
        """A normal end is no vanished process; and the thread must be out of its call into
        the coordinator before Python finalizes, which aborts a thread still inside one
        ("FATAL: exception not rethrown"). Leaving the job (its shutdown barrier, where every
        process meets) is what ends that call, so leave it here, then wait for the thread."""
        self.exiting.set()
        try:
            jax.distributed.shutdown()
        except Exception as error:  # A peer gone by now: nothing left to wait for.
            sys.stderr.write(f"i2i_jax: leaving the job: {str(error).splitlines()[0][:200]}\n")
        self.thread.join(HEARTBEAT_TIMEOUT_S)

    def _watch(self) -> None:
        everyone = list(range(jax.process_count()))
        while not self.exiting.is_set():
            try:
                live = jax_distributed.global_state.client.get_live_nodes(everyone)
            except Exception as error:  # The coordinator (process 0) is unreachable.
                if not self.exiting.is_set():
                    _stop(
                        f"process 0 of {len(everyone)}, the coordinator "
                        f"({jax_distributed.global_state.coordinator_address}), vanished "
                        f"({str(error).splitlines()[0][:200]})"
                    )
                return
            vanished = sorted(set(everyone) - set(live))
            if vanished and not self.exiting.is_set():
                _stop(
                    f"process{'es' * (len(vanished) > 1)} "
                    f"{', '.join(map(str, vanished))} of {len(everyone)} vanished: it "
                    "stopped answering the coordinator (killed, out of memory, or its host "
                    "went down)"
                )
            self.exiting.wait(_WATCH_EVERY_S)

    def wait_for_verdict(self) -> None:
        """After a failed collective: gives the thread the time it needs to find a vanished
        process (it then ends this one); returns if it finds none. A launcher's SIGTERM to
        the job does not cut the wait short."""
        if self.thread is not None and self.thread.is_alive():
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            self.thread.join(HEARTBEAT_TIMEOUT_S + 3 * _WATCH_EVERY_S)


_watcher = _VanishedProcessWatcher()


def wait_for_vanished_processes() -> None:
    """See `_VanishedProcessWatcher.wait_for_verdict`; nothing in a single-process run."""
    _watcher.wait_for_verdict()


def _stop(what: str) -> None:
    """Ends this process at once (a collective with the vanished process would never end, and
    neither would JAX's shutdown barrier), saying what happened and what to do."""
    sys.stdout.flush()
    sys.stderr.write(
        f"\ni2i_jax: error: {what}; process {jax.process_index()} stops too.\n"
        "Fix: rerun the same command on every host; the job resumes from its last checkpoint\n"
    )
    sys.stderr.flush()
    os._exit(1)


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
