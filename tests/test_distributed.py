"""Start-up of a multi-process job: which flags join it and which are refused.

Joining itself runs for real in test_multihost.py; these cases never reach
`jax.distributed.initialize`, which would block waiting for the other processes.
"""

import pytest

from i2i_jax import distributed


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
