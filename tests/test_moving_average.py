"""`ema_decay`: the generators' moving average follows its formula over the run's own weights,
leaves training alone, and is what evaluation uses."""

import jax
import numpy as np
import pytest

from i2i_jax import parallel, tasks

from helpers import fixed_batches

DECAY = 0.6  # Below the warm-up's (1 + t) / (10 + t) from step 5 on: both branches are run.


def _weights_after_each_step(config, batches):
    """The train state after every step on `batches` (one device), on the host."""
    mesh = parallel.make_mesh(jax.devices()[:1])
    task = tasks.build_task(config, steps_per_epoch=4)
    state = parallel.init_replicated(task.init_state, config.seed, mesh)
    step = parallel.jit_train_step(task.train_step, mesh)
    states = [jax.device_get(state)]
    for batch in batches:
        state, _ = step(state, parallel.to_global(batch, mesh))
        states.append(jax.device_get(state))
    return states


@pytest.mark.parametrize("model", ["pix2pix", pytest.param("cycle_gan", marks=pytest.mark.slow)])
def test_the_average_follows_its_formula_and_leaves_training_alone(
    model, tiny_config, tiny_cycle_config
):
    config = tiny_config if model == "pix2pix" else tiny_cycle_config
    batches = fixed_batches(config, 7)
    plain = _weights_after_each_step(config, batches)
    config.ema_decay = DECAY
    averaged = _weights_after_each_step(config, batches)
    generators = [name for name, _, _ in tasks.build_task(config, 4).generators().values()]
    for name, net in averaged[-1].nets.items():
        # The same training run, to the bit: the average never feeds back.
        jax.tree.map(np.testing.assert_array_equal, net.params, plain[-1].nets[name].params)
        if name not in generators:
            assert net.average is None, name
            continue
        # By hand, in float64, from the plain run's weights after every step.
        initial = plain[0].nets[name]
        expected = jax.tree.map(
            np.float64, {"params": initial.params, "batch_stats": initial.batch_stats}
        )
        for t, state in enumerate(plain[1:]):
            keep = min(DECAY, (1 + t) / (10 + t))
            current = {
                "params": state.nets[name].params,
                "batch_stats": state.nets[name].batch_stats,
            }
            expected = jax.tree.map(lambda a, w, k=keep: k * a + (1 - k) * w, expected, current)
        jax.tree.map(
            lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7),
            net.average,
            expected,
        )
        assert not np.allclose(
            jax.tree.leaves(net.average["params"])[0], jax.tree.leaves(net.params)[0]
        )


def test_evaluation_scores_the_average(tiny_cycle_config):
    """The task keeping averages scores what a task without them scores when the averages are
    put in place of the weights, and not what it scores with the last weights."""
    tiny_cycle_config.ema_decay = 0.99
    batches = fixed_batches(tiny_cycle_config, 3)
    final = _weights_after_each_step(tiny_cycle_config, batches)[-1]
    task = tasks.build_task(tiny_cycle_config, steps_per_epoch=4)
    tiny_cycle_config.ema_decay = 0.0
    plain_task = tasks.build_task(tiny_cycle_config, steps_per_epoch=4)
    batch = {**batches[0], "index": np.arange(len(batches[0]["A"]))}

    def psnr(task, nets):
        state = final.replace(nets={**final.nets, **nets})
        return float(np.mean(task.eval_step(state, batch, "AtoB")["psnr_AtoB"]))

    generators = {name: final.nets[name] for name in ("G_A", "G_B")}
    averages_in_place = {
        name: net.replace(**net.average, average=None) for name, net in generators.items()
    }
    last_weights = {name: net.replace(average=None) for name, net in generators.items()}
    scored = psnr(task, {})
    assert scored == pytest.approx(psnr(plain_task, averages_in_place), abs=1e-5)
    assert abs(scored - psnr(plain_task, last_weights)) > 1e-3
