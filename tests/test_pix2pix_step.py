"""The Pix2Pix train step: it learns, and data parallelism does not change its mathematics."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from i2i_jax import parallel, tasks

from helpers import assert_same_parameters, eps_scale_gradients, fixed_batches, run_steps


@pytest.mark.slow
def test_the_l1_loss_falls_on_a_fixed_batch(tiny_config):
    tiny_config.lr = 1e-3
    tiny_config.num_train_steps = 1000  # Keep the learning rate constant over these steps.
    batch = fixed_batches(tiny_config, 1)[0]
    _, history = run_steps(tiny_config, jax.devices()[:1], [batch] * 30)
    assert history[-1]["G_L1"] < 0.7 * history[0]["G_L1"]
    assert history[0]["lr"] == pytest.approx(tiny_config.lr)


@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_four_devices_give_the_single_device_parameters(tiny_config, norm):
    """Same global batches on 1 and on 4 devices; batch norm in its synchronised form.

    With instance norm, XLA's own convolutions: the norm cancels some conv biases exactly, Adam
    turns their noise gradients into +-lr steps (conftest.inert_bias), and the cpu forms' noise
    moves a kernel by 1.1e-5 there; batch norm runs the cpu forms, and test_lowering checks them
    under shard_map."""
    tiny_config.norm = norm
    if norm == "instance":
        tiny_config.conv_lowering = "native"
    tiny_config.sync_batch_stats = True
    batches = fixed_batches(tiny_config, 2)
    one, one_history = run_steps(tiny_config, jax.devices()[:1], batches)
    four, four_history = run_steps(tiny_config, jax.devices()[:4], batches)
    assert int(one.step) == int(four.step) == 2
    innermost = f"down{tasks.build_task(tiny_config, 4).generator.num_downs - 1}"
    # About 1 element in 3000 gets a first gradient at Adam's eps scale; each may differ by
    # 2 lr a step (helpers.eps_scale_gradients).
    first, _ = run_steps(tiny_config, jax.devices()[:1], batches[:1])
    noisy = eps_scale_gradients(first.nets)
    assert_same_parameters(
        one.nets,
        four.nets,
        norm,
        innermost,
        noisy,
        noisy_atol=2 * 2 * tiny_config.lr,
        rtol=1e-4,
        atol=1e-5,
    )
    for a, b in zip(one_history, four_history, strict=True):
        for key in a:
            np.testing.assert_allclose(a[key], b[key], rtol=1e-4)


def test_per_device_batch_norm_differs_from_synchronised(tiny_config):
    """With `sync_batch_stats=False` each device normalises its own share of the batch."""
    batches = fixed_batches(tiny_config, 1)
    tiny_config.sync_batch_stats = True
    synced, _ = run_steps(tiny_config, jax.devices()[:4], batches)
    tiny_config.sync_batch_stats = False
    per_device, _ = run_steps(tiny_config, jax.devices()[:4], batches)
    difference = jax.tree.map(
        lambda a, b: float(np.abs(a - b).max()),
        synced.nets["G"].params,
        per_device.nets["G"].params,
    )
    assert max(jax.tree.leaves(difference)) > 1e-4


def _bce(logits, label):
    """Binary cross-entropy on logits, written out: max(x, 0) - x y + log(1 + exp(-|x|))."""
    return jnp.mean(jnp.maximum(logits, 0) - logits * label + jnp.log1p(jnp.exp(-jnp.abs(logits))))


@pytest.mark.slow
def test_one_step_equals_a_hand_written_reference_iteration(tiny_config):
    """A second code path: plain jax.grad of each objective, in the reference's order (G forward,
    D on fake then real with the loss halved, then G against the updated D), with batch norm so
    that D's three running-statistics updates are checked too."""
    tiny_config.no_dropout = True
    task = tasks.build_task(tiny_config, steps_per_epoch=4)
    state = jax.jit(task.init_state, static_argnums=0)(tiny_config.seed)
    batch = fixed_batches(tiny_config, 1)[0]
    mesh = parallel.make_mesh(jax.devices()[:1])
    step = parallel.jit_train_step(task.train_step, mesh)  # It donates the state it is given.
    new_state, step_metrics = step(jax.tree.map(jnp.copy, state), batch)

    G, D = task.generator, task.discriminator
    adam = optax.adam(tiny_config.lr, b1=0.5, b2=0.999)

    @jax.jit  # Compiled as a whole (op by op it took a minute); still a path of its own.
    def reference_iteration(g, d, a, b):
        def run(module, params, stats, x):
            out, updates = module.apply(
                {"params": params, "batch_stats": stats}, x, train=True, mutable=["batch_stats"]
            )
            return out, updates["batch_stats"]

        fake, g_stats = run(G, g.params, g.batch_stats, a)

        def d_objective(params):
            fake_logits, stats = run(
                D, params, d.batch_stats, jnp.concatenate([a, jax.lax.stop_gradient(fake)], -1)
            )
            real_logits, stats = run(D, params, stats, jnp.concatenate([a, b], -1))
            return 0.5 * (_bce(fake_logits, 0.0) + _bce(real_logits, 1.0)), stats

        d_grads, d_stats = jax.grad(d_objective, has_aux=True)(d.params)
        updates, _ = adam.update(d_grads, adam.init(d.params), d.params)
        d_params = optax.apply_updates(d.params, updates)

        def g_objective(params):
            out, _ = run(G, params, g.batch_stats, a)
            logits, stats = run(D, d_params, d_stats, jnp.concatenate([a, out], -1))
            return _bce(logits, 1.0) + tiny_config.lambda_L1 * jnp.mean(jnp.abs(out - b)), stats

        g_grads, d_stats = jax.grad(g_objective, has_aux=True)(g.params)
        updates, _ = adam.update(g_grads, adam.init(g.params), g.params)
        g_params = optax.apply_updates(g.params, updates)
        return fake, g_params, g_stats, d_params, d_stats

    a, b = batch["A"] / 127.5 - 1, batch["B"] / 127.5 - 1
    fake, g_params, g_stats, d_params, d_stats = reference_iteration(
        state.nets["G"], state.nets["D"], a, b
    )

    # Adam's first step is lr * g / (|g| + 1e-8): a weight whose gradient is near 1e-8 moves by a
    # float-noise-sensitive fraction of lr (2e-4), hence the absolute tolerance.
    expected = {"G": (g_params, g_stats), "D": (d_params, d_stats)}
    for name, (params, stats) in expected.items():
        actual = new_state.nets[name]
        jax.tree.map(
            lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-4, atol=3e-5),
            (actual.params, actual.batch_stats),
            (params, stats),
        )
    assert float(step_metrics["G_L1"]) == pytest.approx(
        float(jnp.mean(jnp.abs(fake - b))), rel=1e-5
    )


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_parameters_and_optimizer_state(tiny_config):
    tiny_config.dtype = "bfloat16"
    batches = fixed_batches(tiny_config, 2)
    state, history = run_steps(tiny_config, jax.devices()[:1], batches)
    leaves = jax.tree.leaves(
        (state.nets["G"].params, state.nets["G"].opt_state, state.nets["D"].params)
    )
    assert {leaf.dtype for leaf in leaves if leaf.ndim} == {np.dtype("float32")}
    tiny_config.dtype = "float32"
    _, reference = run_steps(tiny_config, jax.devices()[:1], batches)
    # bf16 keeps ~3 significant digits: the losses agree to a few percent.
    for key in ("G_L1", "D_real", "D_fake"):
        assert history[0][key] == pytest.approx(reference[0][key], rel=0.05), key
