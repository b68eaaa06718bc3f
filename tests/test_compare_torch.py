"""`benchmark --compare-torch` end to end on tiny rows: real worker processes of both
frameworks, the same work on each side, and the figures and table it promises."""

import io
import json

import pytest

pytest.importorskip(
    "torch",
    reason="the comparison needs PyTorch; install the optional extra: pip install -e '.[torch]'",
)

from i2i_jax import allocator, compare_torch

pytestmark = pytest.mark.slow

TINY = {"netG": "unet_32", "ngf": 8, "ndf": 8}
ROWS = [
    {
        "name": "tiny pix2pix train",
        "kind": "train",
        "model": "pix2pix",
        "size": 32,
        "batch": 2,
        "overrides": TINY,
    },
    {
        "name": "tiny resnet inference",
        "kind": "generate",
        "model": "cycle_gan",
        "size": 32,
        "batch": 1,
        "overrides": {"netG": "resnet_2blocks", "ngf": 8},
    },
]


def test_compare_times_both_frameworks_on_the_same_work():
    out = io.StringIO()
    results = compare_torch.compare(ROWS, rounds=2, steps_per_round=1, out=out)
    lines = out.getvalue().splitlines()
    machine = json.loads(lines[0])
    assert machine["machine_peak_gflops"] > 0 and machine["cores"] >= 1
    assert machine["jax_allocator"] == (
        "tcmalloc" if allocator.tcmalloc_library() else "system malloc"
    )
    assert [json.loads(line)["row"] for line in lines[1:3]] == [row["name"] for row in ROWS]
    for result in results:
        ours, theirs = result["jax"], result["torch"]
        # Both counted, on the same networks. At 32 px with 8 filters XLA's count is a third
        # higher: it counts elementwise work (norms, Adam) that FlopCounterMode leaves out and
        # that weighs little at full size (test_torch_baseline: within 2 % at 256 px).
        assert 0.9 < ours["flops"] / theirs["flops"] < 1.5, result
        assert result["ratio"] == round(ours["ms_per_step"] / theirs["ms_per_step"], 3)
        for side in (ours, theirs):
            assert side["ms_per_step"] > 0 and side["peak_rss_mb"] > 100
            # Both figures are printed rounded to 0.1 (ms and GFLOP/s): the bounds allow
            # exactly that much, which at tiny rows of a few ms is a few per cent.
            fastest, slowest = side["ms_per_step"] - 0.05, side["ms_per_step"] + 0.05
            assert (
                theirs["flops"] / slowest / 1e6 - 0.05
                <= side["gflops_per_s"]
                <= theirs["flops"] / fastest / 1e6 + 0.05
            ), side
    assert ours["compile_s"] > 0 and theirs["compile_s"] == 0  # Eager.
    table = lines[-len(ROWS) - 2 :]
    assert table[0].startswith("| row |") and all(r["row"] in out.getvalue() for r in results)


def test_the_gpu_comparison_has_the_cpu_rows_and_each_at_batch_16():
    gpu = {row["name"]: row for row in compare_torch.GPU_ROWS}
    assert all(gpu[row["name"]] == row for row in compare_torch.ROWS)
    for row in compare_torch.ROWS:
        if row["size"] == 256 and row["batch"] == 1:
            wide = gpu[row["name"].replace(" b1", " b16")]
            assert wide == {**row, "name": wide["name"], "batch": 16}
    assert len(gpu) == len(compare_torch.ROWS) + 4
