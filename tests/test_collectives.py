"""The compiled train step communicates what the task asks for, and copies no parameter, read
from its HLO.

Pix2Pix reduces twice (D's gradient before D's update, then G's gradient with the running
statistics and metrics); CycleGAN gathers the fakes for its image pools once and reduces
everything once. Synchronised batch norm adds one small reduction of statistics per use.
"""

import math
import re

import jax
import jax.numpy as jnp
import pytest

from i2i_jax import benchmark, parallel, tasks


def test_the_hlo_reader_finds_each_collective_and_its_size():
    hlo = """
  %all-reduce.1 = (f32[1,1,1,64]{3,2,1,0}, f32[64]{0}) all-reduce(%a, %b), channel_id=1
  %psum_invariant.7 = f32[45033]{0} all-reduce(%concatenate.33), replica_groups={{0,1}}
  %gather = bf16[4,6144]{1,0} all-gather-start(%concatenate.2), dimensions={0}
  %add.3 = f32[8]{0} add(%x, %y)
"""
    assert benchmark.collectives(hlo) == [
        ("all-reduce", 4 * 128),
        ("all-reduce", 4 * 45033),
        ("all-gather", 2 * 4 * 6144),
    ]


def compiled_collectives(config, num_devices: int = 4) -> list[tuple[str, int]]:
    """(kind, float32 elements moved) of every collective in the compiled train step."""
    return [
        (kind, size // 4)
        for kind, size in benchmark.collectives(compiled_step(config, num_devices))
    ]


def compiled_step(config, num_devices: int) -> str:
    """The optimised HLO of the train step on `num_devices` devices."""
    mesh = parallel.make_mesh(jax.devices()[:num_devices])
    task = tasks.build_task(config, steps_per_epoch=4)
    state = jax.eval_shape(task.init_state, config.seed)
    state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=parallel.replicated(mesh)), state
    )
    batch = {
        k: jax.ShapeDtypeStruct(
            (config.batch_size, config.crop_size, config.crop_size, 3),
            jnp.uint8,
            sharding=parallel.batch_sharded(mesh),
        )
        for k in ("A", "B")
    }
    return parallel.jit_train_step(task.train_step, mesh).lower(state, batch).compile().as_text()


def parameter_count(config) -> int:
    state = jax.eval_shape(tasks.build_task(config, 4).init_state, config.seed)
    return sum(
        math.prod(leaf.shape) for net in state.nets.values() for leaf in jax.tree.leaves(net.params)
    )


@pytest.mark.parametrize("norm, sync", [("instance", True), ("batch", False)])
def test_pix2pix_step_has_two_all_reduces(tiny_config, norm, sync):
    tiny_config.norm, tiny_config.sync_batch_stats = norm, sync
    found = compiled_collectives(tiny_config)
    assert [kind for kind, _ in found] == ["all-reduce", "all-reduce"]
    # Together they carry every parameter's gradient once (plus statistics and metrics).
    moved = sum(elements for _, elements in found)
    assert parameter_count(tiny_config) <= moved < parameter_count(tiny_config) + 2000


@pytest.mark.slow
@pytest.mark.parametrize("norm, sync", [("instance", True), ("batch", False)])
def test_cyclegan_step_gathers_once_and_reduces_once(tiny_cycle_config, norm, sync):
    tiny_cycle_config.norm, tiny_cycle_config.sync_batch_stats = norm, sync
    c = tiny_cycle_config
    collectives = compiled_collectives(c)
    assert sorted(kind for kind, _ in collectives) == ["all-gather", "all-reduce"]
    found = dict(collectives)
    assert found["all-gather"] == c.batch_size * c.crop_size**2 * (c.input_nc + c.output_nc)
    assert parameter_count(c) <= found["all-reduce"] < parameter_count(c) + 2000


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pix2pix", "cycle_gan"])
def test_synchronised_batch_norm_adds_only_small_statistics_reductions(
    tiny_config, tiny_cycle_config, model
):
    config = tiny_config if model == "pix2pix" else tiny_cycle_config
    config.norm, config.sync_batch_stats = "batch", True
    found = compiled_collectives(config)
    widest = 8 * max(config.ngf, config.ndf)  # The widest layer of these tiny networks.
    large = [kind for kind, elements in found if elements > 3 * widest]
    # Pix2Pix's two gradient reductions; CycleGAN's gathered fakes and its one reduction.
    expected = ["all-reduce"] * 2 if model == "pix2pix" else ["all-gather", "all-reduce"]
    assert sorted(large) == expected
    small = [kind for kind, elements in found if elements <= 3 * widest]
    assert small and set(small) == {"all-reduce"}


@pytest.mark.slow
@pytest.mark.parametrize("model", ["pix2pix", "cycle_gan"])
def test_step_updates_the_donated_state_in_place(tiny_config, tiny_cycle_config, model):
    """No copy of an input buffer: XLA:CPU's default copy insertion copied every parameter
    before the step (`parallel.compiler_options` turns on its region analysis)."""
    config = tiny_config if model == "pix2pix" else tiny_cycle_config
    entry = compiled_step(config, num_devices=1).split("\nENTRY ")[1]
    inputs = set(re.findall(r"%(\S+) = \S+ parameter\(\d+\)", entry))
    copied = [name for name in re.findall(r" copy\(%([^),]+)\)", entry) if name in inputs]
    assert len(inputs) > 50 and copied == [], copied


@pytest.mark.parametrize("model", ["pix2pix", pytest.param("cycle_gan", marks=pytest.mark.slow)])
def test_one_device_step_moves_no_gradients(tiny_config, tiny_cycle_config, model):
    """On one device a gradient all-reduce would be two copies of every gradient on XLA:CPU
    (into one vector, then through the collective), and gathering the fakes another copy: with
    instance norm the step has no collective at all; synchronised batch norm keeps only its
    small reductions of statistics."""
    config = tiny_config if model == "pix2pix" else tiny_cycle_config
    config.norm = "instance"
    assert compiled_collectives(config, num_devices=1) == []
    config.norm, config.sync_batch_stats = "batch", True
    found = compiled_collectives(config, num_devices=1)
    assert found, "synchronised batch norm lost its statistics reductions"
    assert all(
        kind == "all-reduce" and elements < parameter_count(config) // 10
        for kind, elements in found
    ), found
