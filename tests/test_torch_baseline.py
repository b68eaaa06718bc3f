"""The PyTorch baseline of the benchmark does the same work as i2i_jax: the same parameters as
i2i_jax's networks and the reference's published counts, and the same FLOPs per iteration as
XLA counts in i2i_jax's compiled step."""

import jax
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="the baseline's tests need PyTorch; install the optional extra: "
    "pip install -e '.[torch]'",
)

from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from i2i_jax import config as config_lib  # noqa: E402
from i2i_jax import (  # noqa: E402
    parallel,
    step_timing,
    tasks,
    torch_iterations,
)

pytestmark = pytest.mark.slow

# From REFERENCE.md: what the reference prints for its networks.
REFERENCE_COUNTS = {
    ("pix2pix", "G"): 54_413_955,
    ("pix2pix", "D"): 2_768_705,
    ("cycle_gan", "G_A"): 11_378_179,
    ("cycle_gan", "D_A"): 2_764_737,
}


def iteration(model: str, **options):
    cls = (
        torch_iterations.Pix2PixIteration
        if model == "pix2pix"
        else torch_iterations.CycleGANIteration
    )
    return cls(**options)


@pytest.mark.parametrize("model", ["pix2pix", "cycle_gan"])
def test_parameter_counts_equal_i2i_jax_and_the_reference(model):
    config = config_lib.pix2pix() if model == "pix2pix" else config_lib.cyclegan()
    task = tasks.build_task(config, steps_per_epoch=1)
    shapes = jax.eval_shape(task.init_state, 0)
    baseline = iteration(model)
    for name, net in baseline.nets().items():
        ours = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(shapes.nets[name].params))
        theirs = sum(p.numel() for p in net.parameters())
        assert ours == theirs, name
        if (model, name) in REFERENCE_COUNTS:
            assert theirs == REFERENCE_COUNTS[model, name], name


@pytest.mark.parametrize("model", ["pix2pix", "cycle_gan"])
def test_flops_per_iteration_match_xla_within_two_percent(model):
    """At the paper's sizes (256 px, batch 1), with the direct CPU forms (they recompute a
    few borders, within the 2 %; the default's Winograd forms do fewer multiplications)."""
    config = config_lib.pix2pix() if model == "pix2pix" else config_lib.cyclegan()
    config.conv_lowering = "cpu"
    mesh = parallel.make_mesh(jax.devices()[:1])
    task, state, batch = step_timing.train_step_inputs(config, mesh)
    compiled, _, xla_flops = step_timing.compile_with_cost(
        parallel.jit_train_step(task.train_step, mesh), state, batch
    )
    del state, compiled

    baseline = iteration(model)
    images = torch.rand(1, 3, 256, 256) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        baseline(images, images.flip(3))
    torch_flops = counter.get_total_flops()
    assert abs(xla_flops / torch_flops - 1) < 0.02, (xla_flops, torch_flops)
