"""`init_from`: a new run starts from another run's networks (the average where one was kept),
with its own fresh optimizer, step and RNG; a preempted fine-tuning run resumes from its own
checkpoints; shapes that differ, and workdirs or steps that do not exist, are refused by name."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from i2i_jax import init_from, parallel, tasks, train
from i2i_jax.errors import NotFoundError

from tiny_configs import tiny_pix2pix_config


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def fresh_state(config):
    task = tasks.build_task(config, steps_per_epoch=4)
    return parallel.init_replicated(task.init_state, config.seed, parallel.make_mesh())


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    """A finished 8-step Pix2Pix run (checkpoints at 4 and 8) and its final state; tests that
    change the workdir make their own."""
    workdir = str(tmp_path_factory.mktemp("init_from") / "source")
    final_state, _ = train.train_and_evaluate(tiny_pix2pix_config(), workdir)
    return workdir, jax.device_get(final_state)


def test_spec_parsing():
    assert init_from.parse("/runs/a") == ("/runs/a", None)
    assert init_from.parse("/runs/a:1200") == ("/runs/a", 1200)
    assert init_from.parse("gs://bucket/run") == ("gs://bucket/run", None)
    assert init_from.parse("gs://bucket/run:40") == ("gs://bucket/run", 40)


def test_networks_come_from_the_run_and_the_rest_is_fresh(source_run, tiny_config):
    workdir, final = source_run
    tiny_config.seed = 7
    fresh = fresh_state(tiny_config)
    files_before = sorted(os.walk(workdir))
    started = jax.device_get(init_from.load_networks(workdir, fresh))
    assert sorted(os.walk(workdir)) == files_before  # Read, never written.
    for name, net in started.nets.items():
        source = final.nets[name]
        jax.tree.map(np.testing.assert_array_equal, net.params, source.params)
        jax.tree.map(np.testing.assert_array_equal, net.batch_stats, source.batch_stats)
        # A fresh optimizer: this seed's initial state, not the source's moments.
        jax.tree.map(
            np.testing.assert_array_equal, net.opt_state, jax.device_get(fresh.nets[name].opt_state)
        )
        assert not np.array_equal(
            jax.tree.leaves(net.params)[0], jax.tree.leaves(fresh.nets[name].params)[0]
        )
    assert int(started.step) == 0
    np.testing.assert_array_equal(started.rng, jax.device_get(fresh.rng))


def test_a_step_is_chosen_and_a_missing_one_is_named(source_run, tiny_config, tmp_path):
    """Fine-tuning from step 4 evaluates at its step 0 what the source evaluated at step 4."""
    workdir, _ = source_run
    tiny_config.init_from = f"{workdir}:4"
    tiny_config.num_train_steps = 2
    tuned = str(tmp_path / "tuned")
    train.train_and_evaluate(tiny_config, tuned)
    source = {r["step"]: r for r in read_jsonl(os.path.join(workdir, "eval_metrics.jsonl"))}
    first = read_jsonl(os.path.join(tuned, "eval_metrics.jsonl"))[0]
    assert first["step"] == 0
    assert first == pytest.approx({**source[4], "step": 0}, rel=1e-5)
    assert first != pytest.approx({**source[8], "step": 0}, rel=1e-5)

    with pytest.raises(NotFoundError, match=r"no checkpoint at step 5; it has steps 4, 8"):
        init_from.load_networks(f"{workdir}:5", fresh_state(tiny_config))


@pytest.mark.slow
def test_a_preempted_fine_tuning_run_resumes_from_its_own_checkpoint(tiny_config, tmp_path):
    workdir = str(tmp_path / "source")
    train.train_and_evaluate(tiny_config.copy_and_resolve_references(), workdir)
    tiny_config.init_from = workdir
    tiny_config.num_train_steps = 4
    tuned = str(tmp_path / "tuned")
    train.train_and_evaluate(tiny_config, tuned)
    shutil.rmtree(workdir)  # Reading it again would now fail.
    tiny_config.num_train_steps = 8
    state, _ = train.train_and_evaluate(tiny_config, tuned, allow_config_change=True)
    assert int(state.step) == 8
    assert [r["step"] for r in read_jsonl(os.path.join(tuned, "eval_metrics.jsonl"))] == [0, 4, 8]


def test_the_moving_average_is_what_a_generator_starts_from(tiny_config, tmp_path):
    tiny_config.ema_decay = 0.9
    tiny_config.num_train_steps = 4
    workdir = str(tmp_path / "averaged")
    final, _ = train.train_and_evaluate(tiny_config, workdir)
    final = jax.device_get(final)
    started = jax.device_get(init_from.load_networks(workdir, fresh_state(tiny_config)))
    generator = started.nets["G"]
    jax.tree.map(np.testing.assert_array_equal, generator.params, final.nets["G"].average["params"])
    jax.tree.map(np.testing.assert_array_equal, generator.average, final.nets["G"].average)
    jax.tree.map(np.testing.assert_array_equal, started.nets["D"].params, final.nets["D"].params)


def test_shapes_that_differ_name_the_first_parameter_and_the_options(source_run, tiny_config):
    workdir, _ = source_run
    tiny_config.ngf = 16
    with pytest.raises(init_from.NetworkMismatchError) as error:
        init_from.load_networks(workdir, fresh_state(tiny_config))
    message = str(error.value)
    # The first in the tree's order: the norm after the second 4x4 convolution (ngf * 2).
    assert "G's params/BatchNorm_0/bias is shape (16,) there but shape (32,) in this" in message
    assert "ngf=8" in message and "netG='unet_32'" in message and "Fix:" in message


def test_another_model_and_a_missing_workdir_are_refused(source_run, tiny_cycle_config, tmp_path):
    workdir, _ = source_run
    with pytest.raises(init_from.NetworkMismatchError, match=r"no network D_A \(it has D, G\)"):
        init_from.load_networks(workdir, fresh_state(tiny_cycle_config))
    missing = str(tmp_path / "nowhere")
    with pytest.raises(NotFoundError, match=r"nowhere/checkpoints does not exist"):
        init_from.load_networks(missing, fresh_state(tiny_cycle_config))


def test_a_converted_reference_generator_is_a_starting_point(tiny_config, tmp_path):
    """From a workdir that convert_torch wrote: the generator computes what the reference's
    own network computes."""
    torch = pytest.importorskip(
        "torch", reason="needs the optional extra: pip install -e '.[torch]'"
    )
    from i2i_jax import convert_torch, models, torch_reference

    generator = torch_reference.randomize(
        torch_reference.define_G("unet_32", ngf=8, use_dropout=True), seed=4
    )
    torch.save(generator.state_dict(), tmp_path / "latest_net_G.pth")
    converted = str(tmp_path / "converted")
    convert_torch.build_workdir(tiny_config, {"G": str(tmp_path / "latest_net_G.pth")}, converted)
    tiny_config.seed = 3
    started = jax.device_get(init_from.load_networks(converted, fresh_state(tiny_config)))

    images = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    variables = {"params": started.nets["G"].params, "batch_stats": started.nets["G"].batch_stats}
    ours = models.build_generator(tiny_config).apply(variables, images, train=False)
    with torch.no_grad():
        theirs = generator(torch.from_numpy(images.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs.transpose(0, 2, 3, 1), rtol=0, atol=1e-4)
