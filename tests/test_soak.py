"""The kill-anywhere soak as the user runs it: a tiny CycleGAN SIGKILLed at random moments (one
of each kind of phase at least) and rerun each time ends bit-identical to an uninterrupted
run, with each evaluation recorded once; and the metrics file a rerun starts from."""

import json
import re
import subprocess
import sys

import pytest

from i2i_jax import kill_harness
from i2i_jax.reporting import keep_evaluations_up_to


@pytest.mark.slow
def test_six_kills_one_in_each_phase_are_survived_bit_for_bit(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "i2i_jax.soak", "--kills=6", "--seed=3", f"--workdir={tmp_path}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert "kills survived: 6/6, steps recomputed: " in result.stdout
    phases = re.findall(r"kill +\d+: (.+?) +\d+\.\d+ s in", result.stdout)
    assert sorted(phases) == sorted(kill_harness.PHASES), result.stdout
    assert "final state and eval_metrics.jsonl: bit-identical" in result.stdout
    assert re.search(r"arrays compared: \d{3}", result.stdout)


def write_records(path, steps, torn_line=False):
    lines = [json.dumps({"step": step, "l1": step / 100}) for step in steps]
    path.write_text("\n".join(lines) + "\n" + ('{"step": 9' if torn_line else ""))


def read_steps(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_a_resumed_run_keeps_the_evaluations_up_to_its_checkpoint(tmp_path):
    metrics = tmp_path / "eval_metrics.jsonl"
    write_records(metrics, [0, 4, 8, 12], torn_line=True)
    keep_evaluations_up_to(str(metrics), 8)  # Step 8's evaluation came before its checkpoint.
    assert read_steps(metrics) == [0, 4, 8]
    assert json.loads(metrics.read_text().splitlines()[1]) == {"step": 4, "l1": 0.04}


def test_a_run_starting_afresh_evaluates_step_0_again_and_keeps_nothing(tmp_path):
    metrics = tmp_path / "eval_metrics.jsonl"
    write_records(metrics, [0])  # A run killed after its step-0 evaluation, before a checkpoint.
    keep_evaluations_up_to(str(metrics), 0)
    assert metrics.read_text() == ""


def test_no_metrics_file_is_no_change(tmp_path):
    keep_evaluations_up_to(str(tmp_path / "eval_metrics.jsonl"), 5)
    assert list(tmp_path.iterdir()) == []
