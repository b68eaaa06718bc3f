"""Start-up of a multi-process job: which flags join it and which are refused.

Joining itself runs for real in test_multihost.py and, for where the coordinator listens,
here; the other cases never reach `jax.distributed.initialize`, which would block waiting for
the other processes.
"""

import os
import sys

import pytest

from i2i_jax import distributed

from helpers import job_failure_report, one_multiprocess_job_at_a_time, started

LAUNCHER = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch", "local.sh"
)


def test_a_single_process_run_does_not_join_anything(monkeypatch):
    for name in ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    distributed.initialize("auto")
    distributed.initialize("off")
    assert "process 0 of 1" in distributed.describe_devices()


@pytest.mark.parametrize(
    "environment, expected",
    [
        ({"SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS": "8"}, True),
        ({"SLURM_NTASKS": "8"}, False),  # The batch script of a job, not one of its srun tasks.
        ({"SLURM_STEP_NUM_TASKS": "1"}, False),
        ({"OMPI_COMM_WORLD_SIZE": "4"}, True),
        ({}, False),
    ],
)
def test_auto_mode_recognises_several_tasks_of_srun_or_mpirun(monkeypatch, environment, expected):
    for name in ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert distributed.launched_by_a_cluster_manager() == expected


def test_explicit_addresses_must_come_together():
    with pytest.raises(ValueError, match="missing --num_processes, --process_id"):
        distributed.initialize("auto", coordinator_address="127.0.0.1:1234")


def test_off_contradicts_explicit_addresses():
    with pytest.raises(ValueError, match="--distributed=off contradicts --process_id"):
        distributed.initialize("off", process_id=1)


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="'yes' is not one of"):
        distributed.initialize("yes")


@pytest.mark.parametrize(
    "coordinator, bound",
    [
        ("127.0.0.1:1234", "127.0.0.1:1234"),
        ("10.0.0.2:1234", "10.0.0.2:1234"),
        ("[::1]:1234", "[::1]:1234"),
        ("localhost:1234", "localhost:1234"),
        ("node-0:1234", None),  # A name may be a loopback alias on its own machine.
        (None, None),  # A detected cluster: JAX finds the address itself.
    ],
)
def test_the_coordinator_binds_to_the_address_it_was_given(monkeypatch, coordinator, bound):
    monkeypatch.delenv("JAX_COORDINATOR_BIND_ADDRESS", raising=False)
    assert distributed.bind_address(coordinator) == bound


def test_jax_coordinator_bind_address_in_the_environment_is_left_to_jax(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_BIND_ADDRESS", "0.0.0.0:1234")
    assert distributed.bind_address("127.0.0.1:1234") is None


# Joins a job through `distributed.initialize`; process 0 then prints the addresses that listen
# on the coordinator's port, read from the kernel's socket tables.
_LISTENERS = """
import ipaddress, sys
from i2i_jax import distributed

args = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
distributed.initialize(
    "auto", args["coordinator_address"], int(args["num_processes"]), int(args["process_id"])
)

def listening(table, port):
    with open(table) as f:
        rows = [line.split() for line in f.readlines()[1:]]
    for row in rows:
        address, hex_port = row[1].split(":")
        if row[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN.
            raw = bytes.fromhex(address)
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(words)
            yield str(getattr(ip, "ipv4_mapped", None) or ip)  # gRPC's IPv4 on an IPv6 socket.

if args["process_id"] == "0":
    port = int(args["coordinator_address"].rsplit(":", 1)[1])
    found = [*listening("/proc/net/tcp", port), *listening("/proc/net/tcp6", port)]
    print("listening on", sorted(found))
"""


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.skipif(not os.path.exists("/proc/net/tcp6"), reason="reads Linux's socket tables")
def test_a_local_job_s_coordinator_listens_on_127_0_0_1_only():
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("JAX_COORDINATOR_BIND_ADDRESS", None)
    with (
        one_multiprocess_job_at_a_time(),
        started([LAUNCHER, "-n", "2", "--", sys.executable, "-c", _LISTENERS], env) as job,
    ):
        output, _ = job.communicate(timeout=120)
    assert job.returncode == 0, job_failure_report(output)
    assert "[0] listening on ['127.0.0.1']" in output, job_failure_report(output)
